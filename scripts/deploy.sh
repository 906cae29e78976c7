#!/usr/bin/env bash
# Deploy infra/template.yaml with the AWS SAM CLI (from PyPI into .venv/sam).
# First run (no infra/samconfig.toml): `sam deploy --guided`, which asks for
# the stack name, region and parameters and saves them to samconfig.toml.
# Later runs: `sam deploy` with the saved answers. Extra arguments are
# passed to sam, e.g. `make deploy SAM_ARGS="--no-confirm-changeset"`.
# Build first (`make build`, done by `make deploy`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[deploy] %s\n' "$*" >&2; }
die() { printf '[deploy] error: %s\n' "$*" >&2; exit 1; }

SUNDIAL_VENV="$ROOT/.venv/sam" "$ROOT/scripts/venv.sh" ensure requirements-deploy.txt
SAM="$ROOT/.venv/sam/bin/sam"
export SAM_CLI_TELEMETRY=0

for b in scanner processor admin; do
  [[ -f "target/lambda/$b/bootstrap" ]] || die "target/lambda/$b/bootstrap missing: run make build first"
done

cd infra
if [[ -f samconfig.toml ]]; then
  log "sam deploy (settings from infra/samconfig.toml)"
  exec "$SAM" deploy --template-file template.yaml "$@"
fi
if [[ "${CI:-}" == "true" || ! -t 0 ]]; then
  die "infra/samconfig.toml is missing and there is no terminal for 'sam deploy --guided'; run make deploy interactively once (see infra/README.md)"
fi
log "no infra/samconfig.toml yet: sam deploy --guided"
exec "$SAM" deploy --guided --template-file template.yaml --capabilities CAPABILITY_IAM "$@"
