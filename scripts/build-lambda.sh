#!/usr/bin/env bash
# Build the three Lambda functions with cargo-lambda:
#   scripts/build-lambda.sh [arm64|x86_64]      (default arm64)
# Output: target/lambda/{scanner,processor,admin}/bootstrap, which is where
# infra/template.yaml's CodeUri points. cargo-lambda and zig come from PyPI
# into ./.venv (no other download).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ARCH="${1:-${ARCH:-arm64}}"
PACKAGES=(sundial-scanner sundial-processor sundial-admin)
BINARIES=(scanner processor admin)

log() { printf '[build] %s\n' "$*" >&2; }
die() { printf '[build] error: %s\n' "$*" >&2; exit 1; }

case "$ARCH" in
  arm64 | aarch64) ARCH=arm64; triple=aarch64-unknown-linux-gnu; arch_flag=--arm64 ;;
  x86_64 | x86-64 | amd64) ARCH=x86_64; triple=x86_64-unknown-linux-gnu; arch_flag=--x86-64 ;;
  *) die "ARCH must be arm64 or x86_64 (got '$ARCH')" ;;
esac

# Artifacts must land in ./target, where the SAM template looks for them.
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  log "ignoring CARGO_TARGET_DIR=$CARGO_TARGET_DIR: Lambda artifacts go to ./target"
  unset CARGO_TARGET_DIR
fi

"$ROOT/scripts/venv.sh" ensure requirements-build.txt
VENV_BIN="$("$ROOT/scripts/venv.sh" path)"
# `cargo lambda` is found on PATH; zig is found as `python3 -m ziglang`.
export PATH="$VENV_BIN:$PATH"

if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
  log "adding Rust target $triple"
  if ! rustup target add "$triple" >&2; then
    if [[ "$ARCH" == arm64 ]]; then
      die "could not add the Rust target $triple (offline?). Build for x86_64 instead: make build ARCH=x86_64 (and deploy with the Architecture=x86_64 parameter)"
    fi
    die "could not add the Rust target $triple"
  fi
fi

# Drop previous artifacts so a stale bootstrap (other arch, old binary name)
# is never mistaken for this build's output.
for b in "${BINARIES[@]}"; do rm -f "target/lambda/$b/bootstrap"; done

args=(--release "$arch_flag")
for p in "${PACKAGES[@]}"; do args+=(-p "$p"); done
log "cargo lambda build ${args[*]}"
cargo lambda build "${args[@]}"

missing=()
for b in "${BINARIES[@]}"; do
  [[ -f "target/lambda/$b/bootstrap" ]] || missing+=("$b")
done
if ((${#missing[@]} > 0)); then
  die "missing target/lambda/{$(IFS=,; echo "${missing[*]}")}/bootstrap: each function crate needs a binary named after its function ([[bin]] name = \"scanner\" etc. in functions/*/Cargo.toml). Found: $(ls target/lambda 2>/dev/null | tr '\n' ' ')"
fi
for b in "${BINARIES[@]}"; do
  log "target/lambda/$b/bootstrap ($ARCH, $(du -h "target/lambda/$b/bootstrap" | cut -f1))"
done
