#!/usr/bin/env bash
# One line from a fresh clone to the ClaDec demo:  bash scripts/demo.sh  [cladec demo options, e.g. --quick]
# Creates .venv if missing, installs torch 2.13.0 and cladec (skipped when already done), runs `cladec demo`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.cladec-demo-installed"
TORCH_VERSION=2.13.0   # this exact version: it installs a local CPU build (other versions download GBs)
# Idle OpenMP threads sleep instead of spinning: on a busy CPU, spinning threads made small models 10-100x slower.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "cladec needs Python >= 3.10"' || {
    echo "scripts/demo.sh: $PYTHON is older than 3.10; set PYTHON=/path/to/python3.10+" >&2; exit 1; }
  echo "creating $VENV ..."
  "$PYTHON" -m venv "$VENV"
fi

want="torch==$TORCH_VERSION $(sha256sum pyproject.toml | cut -d' ' -f1) demo"
if [ "${FORCE_INSTALL:-0}" = 1 ] || [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ] \
   || ! "$VENV/bin/python" -c 'import torch, cladec' >/dev/null 2>&1; then
  echo "installing torch==$TORCH_VERSION and cladec into $VENV ..."
  "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
  "$VENV/bin/python" -m pip install --quiet -e .
  echo "$want" > "$STAMP"
fi

exec "$VENV/bin/cladec" demo "$@"
