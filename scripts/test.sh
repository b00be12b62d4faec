#!/usr/bin/env bash
# Set up (or reuse) .venv with torch 2.13.0 and cladec[test], then run the test suite.
#   bash scripts/test.sh                 # all tests
#   bash scripts/test.sh tests/test_cli.py -k layers --durations=10
# A second run skips the installation unless pyproject.toml changed (or FORCE_INSTALL=1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_venv.sh "[test]"

# the browser tests (tests/report/) drive Debian's Chromium through Playwright's client
PYTHON="$VENV/bin/python" bash scripts/install_browser.sh

exec "$VENV/bin/python" -m pytest -q "$@"
