#!/usr/bin/env bash
# Install what the browser tests in tests/report/ need: Debian's Chromium (+ chromedriver) and the
# Playwright Python client, which drives that Chromium (Playwright's own browser download is not used).
# Idempotent, and quick (no network) when everything is already there.
#
#   bash scripts/install_browser.sh            # uses ./.venv/bin/python if present, else python3
#   PYTHON=/path/to/python bash scripts/install_browser.sh
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "install_browser: installing chromium and chromium-driver (apt)"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

if ! "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
  echo "install_browser: installing the playwright client (pip)"
  "$PY" -m pip install -q "playwright>=1.40"
fi

echo "install_browser: $(chromium --version 2>/dev/null | head -1); playwright $("$PY" -c 'from importlib.metadata import version; print(version("playwright"))')"
