#!/usr/bin/env bash
# chromium.sh — make sure Debian's headless Chromium is installed, for the
# console's browser test (tests/tests/console_browser.rs) and screenshots.
# Idempotent: does nothing when `chromium` (or $SUNDIAL_CHROMIUM) exists.
# Installs with apt-get as root (as scripts/services.sh does for
# PostgreSQL); otherwise says what to install.
set -euo pipefail

bin="${SUNDIAL_CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$bin" ]]; then
  exit 0
fi
if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "chromium.sh: $bin not found; install Debian's chromium (apt-get install chromium) or set SUNDIAL_CHROMIUM" >&2
  exit 1
fi
echo "chromium.sh: installing chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# fonts-dejavu-core: legible text in the screenshots.
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
[[ -x "$bin" ]] || { echo "chromium.sh: apt-get ran but $bin is still missing" >&2; exit 1; }
