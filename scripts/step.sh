#!/usr/bin/env bash
# Run one named build step: `scripts/step.sh NAME CMD...`.
# Prints a header to stderr; with CI=true also the step's wall time.
set -euo pipefail

name="$1"
shift
printf '==> %s\n' "$name" >&2
if [[ "${CI:-}" != "true" ]]; then
  exec "$@"
fi
start="$(date +%s.%N)"
status=0
"$@" || status=$?
elapsed="$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')"
printf '==> %s: %ss (exit %d)\n' "$name" "$elapsed" "$status" >&2
exit "$status"
