#!/usr/bin/env bash
# Lint the SAM template offline:
#   1. cfn-lint on infra/template.yaml (SAM schemas),
#   2. the real SAM transform (aws-sam-translator) + dashboard JSON check,
#   3. cfn-lint on the expanded CloudFormation (.services/template.cfn.json),
#   4. bash -n on the scripts (and shellcheck when installed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/venv.sh ensure requirements-dev.txt
VENV_BIN="$(scripts/venv.sh path)"
mkdir -p .services

"$VENV_BIN/cfn-lint" infra/template.yaml
"$VENV_BIN/python" scripts/sam-translate.py infra/template.yaml .services/template.cfn.json
"$VENV_BIN/cfn-lint" .services/template.cfn.json

for f in scripts/*.sh .ci/run; do bash -n "$f"; done
if command -v shellcheck >/dev/null; then
  shellcheck -x scripts/*.sh .ci/run
fi
echo "[lint-infra] ok" >&2
