#!/usr/bin/env bash
# dev-smoke.sh — proves the README's `make dev` works, for CI.
#
# Starts `sundial dev --demo --port 0` against $DATABASE_URL with the
# in-process queue, waits until the demo task has fired successfully twice
# (the demo fires every 10 s), checks that the console's address is
# printed and its login page answers, sends SIGTERM and checks for a clean
# exit within the grace period. Exits 0 on success, 1 with the log on failure.
#
# Usage: scripts/dev-smoke.sh [path/to/sundial]
#   Without a path the binary is built with cargo first.
#   SMOKE_TIMEOUT (default 60) and SMOKE_GRACE (default 5) are in seconds.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-}"
timeout="${SMOKE_TIMEOUT:-60}"
grace="${SMOKE_GRACE:-5}"

fail() {
    echo "dev-smoke: FAIL: $*" >&2
    if [[ -n "${log:-}" && -s "$log" ]]; then
        echo "---- sundial dev output (last 40 lines) ----" >&2
        tail -n 40 "$log" >&2
    fi
    exit 1
}

[[ -n "${DATABASE_URL:-}" ]] || fail "DATABASE_URL is not set (start the services: eval \"\$(make -s services)\")"

if [[ -z "$bin" ]]; then
    (cd "$root" && cargo build --quiet -p sundial-cli) || fail "cargo build failed"
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/sundial"
fi
[[ -x "$bin" ]] || fail "no sundial binary at $bin"

log="$(mktemp "${TMPDIR:-/tmp}/sundial-dev-smoke.XXXXXX")"
pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

# The in-process queue (no SQS), plain-text logs.
env -u SUNDIAL_QUEUE_URL NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}" \
    "$bin" dev --demo --port 0 --grace "$grace" >"$log" 2>&1 &
pid=$!

# Log lines without colour codes, in case the terminal settings leak in.
plain() { sed 's/\x1b\[[0-9;]*m//g' "$log"; }

fired=0
deadline=$((SECONDS + timeout))
while ((fired < 2)); do
    kill -0 "$pid" 2>/dev/null || fail "sundial dev exited early"
    ((SECONDS < deadline)) || fail "the demo task did not fire successfully twice within ${timeout}s (fired: $fired)"
    sleep 1
    fired=$(plain | grep -cE 'fired.*task=sundial-demo.*outcome="?succeeded' || true)
done
admin="$(sed -n '/^admin API listening on /{s///p;q}' "$log")"
echo "dev-smoke: demo task fired successfully $fired times (admin API at ${admin:-?})"
# `make dev` prints the console's address, and the console answers there.
console="$(sed -n '/^console: /{s///;s/ .*//;p;q}' "$log")"
[[ "$console" == "$admin/ui" ]] || fail "sundial dev did not print the console's address (got '${console}')"
code="$(curl -s -o /dev/null -w '%{http_code}' "$console/login")"
[[ "$code" == 200 ]] || fail "the console's login page at $console/login answered $code"
echo "dev-smoke: console at $console"

kill -TERM "$pid"
stop_deadline=$((SECONDS + grace + 5))
while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < stop_deadline)) || fail "still running $((grace + 5))s after SIGTERM (grace ${grace}s)"
    sleep 0.2
done
rc=0
wait "$pid" || rc=$?
pid=""
((rc == 0)) || fail "sundial dev exited with status $rc after SIGTERM"
grep -q '^stopped:' "$log" || fail "no exit summary after SIGTERM"
echo "dev-smoke: OK (clean exit after SIGTERM)"
