#!/usr/bin/env bash
# Set up (or reuse) .venv with torch 2.13.0 and cladec[test], then run the test suite.
#   bash scripts/test.sh                 # all tests
#   bash scripts/test.sh tests/test_cli.py -k layers --durations=10
# A second run skips the installation unless pyproject.toml changed (or FORCE_INSTALL=1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.cladec-test-installed"
TORCH_VERSION=2.13.0   # this exact version: it installs a local CPU build (other versions download GBs)
# Idle OpenMP threads sleep instead of spinning: on a busy CPU, spinning threads made small models 10-100x slower.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "cladec needs Python >= 3.10"' || {
    echo "scripts/test.sh: $PYTHON is older than 3.10; set PYTHON=/path/to/python3.10+" >&2; exit 1; }
  echo "creating $VENV ..."
  "$PYTHON" -m venv "$VENV"
fi

want="torch==$TORCH_VERSION $(sha256sum pyproject.toml | cut -d' ' -f1) test"
if [ "${FORCE_INSTALL:-0}" = 1 ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ] \
   || ! "$VENV/bin/python" -c 'import torch, cladec, pytest' >/dev/null 2>&1; then
  echo "installing torch==$TORCH_VERSION and cladec[test] into $VENV ..."
  "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
  "$VENV/bin/python" -m pip install --quiet -e ".[test]"
  echo "$want" > "$STAMP"
fi

# the browser tests (tests/report/) drive Debian's Chromium through Playwright's client
PYTHON="$VENV/bin/python" bash scripts/install_browser.sh

exec "$VENV/bin/python" -m pytest -q "$@"
