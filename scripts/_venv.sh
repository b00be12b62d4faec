# Sourced by scripts/demo.sh and scripts/test.sh: create .venv if missing and install torch 2.13.0 and cladec
# (with the extras in $1) into it, skipped when already done for this pyproject.toml (FORCE_INSTALL=1 forces it).
#   usage: source scripts/_venv.sh "" || source scripts/_venv.sh "[test]"
PYTHON="${PYTHON:-python3}"
VENV=.venv
TORCH_VERSION=2.13.0   # this exact version: it installs a local CPU build (other versions download GBs)
# Idle OpenMP threads sleep instead of spinning: on a busy CPU, spinning threads made small models 10-100x slower.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

_extras="${1:-}"
_stamp="$VENV/.cladec-installed${_extras//[^a-z]/-}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "cladec needs Python >= 3.10"' || {
    echo "$0: $PYTHON is older than 3.10; set PYTHON=/path/to/python3.10+" >&2; exit 1; }
  echo "creating $VENV ..."
  "$PYTHON" -m venv "$VENV"
fi

_want="torch==$TORCH_VERSION $(sha256sum pyproject.toml | cut -d' ' -f1) $_extras"
if [ "${FORCE_INSTALL:-0}" = 1 ] || [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ] \
   || ! "$VENV/bin/python" -c 'import torch, cladec' >/dev/null 2>&1; then
  echo "installing torch==$TORCH_VERSION and cladec$_extras into $VENV ..."
  "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION"
  "$VENV/bin/python" -m pip install --quiet -e ".$_extras"
  echo "$_want" > "$_stamp"
fi
