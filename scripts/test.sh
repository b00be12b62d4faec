#!/usr/bin/env bash
# Set up (or reuse) .venv-test with torch 2.14.1, torchvision 0.29.1, timm and cladec[test], run ruff and mypy, then the test suite.
#   bash scripts/test.sh                 # all tests
#   bash scripts/test.sh tests/cli/test_cli.py -k layers --durations=10
#   CLADEC_TEST_WORKERS=0 bash scripts/test.sh -x      # in one process, no pytest-xdist workers
# A second run skips the installation unless pyproject.toml changed (or FORCE_INSTALL=1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_venv.sh "[test]" test

# lint, format and type checks first, on every call (seconds; the tools are pinned in the test extra)
echo "ruff check ."
"$VENV/bin/ruff" check .
echo "ruff format --check ."
"$VENV/bin/ruff" format --check .
echo "mypy (src/cladec, settings in pyproject.toml)"
"$VENV/bin/mypy"
# the documentation site (mkdocs.yml): a broken reference or a docstring that documents a parameter the function
# does not have fails here; offline, into a temporary folder
echo "mkdocs build --strict"
_site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --quiet --site-dir "$_site"
rm -rf "$_site"

# the browser tests (tests/report/) drive Debian's Chromium through Playwright's client
PYTHON="$VENV/bin/python" bash scripts/install_browser.sh

# two pytest-xdist workers, one torch thread each (the 2-core machine's cores); tests/conftest.py keeps the modules
# that share a trained fixture in one worker and hands out the longest groups first. CLADEC_TEST_WORKERS=0 runs
# everything in this one process (as plain `pytest` does).
WORKERS="${CLADEC_TEST_WORKERS:-2}"
if [ "$WORKERS" != "0" ]; then
  set -- -n "$WORKERS" --dist loadfile --no-loadscope-reorder "$@"
fi
exec "$VENV/bin/python" -m pytest -q "$@"
