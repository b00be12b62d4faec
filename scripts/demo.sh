#!/usr/bin/env bash
# One line from a fresh clone to the ClaDec demo:  bash scripts/demo.sh  [cladec demo options, e.g. --quick]
# Creates .venv if missing, installs torch 2.13.0 and cladec (skipped when already done), runs `cladec demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_venv.sh "" demo

exec "$VENV/bin/cladec" demo "$@"
