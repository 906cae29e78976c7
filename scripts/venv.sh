#!/usr/bin/env bash
# Project Python venv (./.venv) holding the tools the Makefile needs:
# moto (SQS emulator), cfn-lint, cargo-lambda + ziglang, aws-sam-cli.
#
#   scripts/venv.sh ensure REQ_FILE...   create .venv if missing, install each
#                                        pinned requirements file once
#   scripts/venv.sh path                 print the venv's bin directory
#
# A requirements file is reinstalled only when its content changes (a stamp
# with its sha256 lives in .venv), so a second run costs a few milliseconds.
# All progress goes to stderr: stdout stays clean for callers that eval it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SUNDIAL_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

log() { printf '[venv] %s\n' "$*" >&2; }
die() { printf '[venv] error: %s\n' "$*" >&2; exit 1; }

create_venv() {
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    return
  fi
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found; install Python 3.9+ (apt-get install python3 python3-venv)"
  log "creating $VENV"
  rm -rf "$VENV"
  if ! "$PYTHON" -m venv "$VENV" >&2; then
    die "'$PYTHON -m venv' failed; on Debian install python3-venv (apt-get install -y python3-venv)"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2 ||
    log "warning: could not upgrade pip; continuing with the bundled one"
}

install_requirements() {
  local req="$1" name sum stamp
  [[ -f "$req" ]] || die "requirements file not found: $req"
  name="$(basename "$req")"
  sum="$(sha256sum "$req" | cut -d' ' -f1)"
  stamp="$VENV/.installed-$name"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" ]]; then
    return
  fi
  log "installing $name into $VENV (first run only; takes a minute)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$req" >&2
  printf '%s\n' "$sum" >"$stamp"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  ensure)
    create_venv
    for req in "$@"; do
      case "$req" in /*) ;; *) req="$ROOT/$req" ;; esac
      install_requirements "$req"
    done
    ;;
  path)
    printf '%s\n' "$VENV/bin"
    ;;
  *)
    die "usage: $0 ensure REQ_FILE... | path"
    ;;
esac
