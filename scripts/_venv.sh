# Sourced by scripts/demo.sh and scripts/test.sh: create the virtual environment of one stack if missing and install
# its PyTorch packages and cladec (with the extras in $1) into it, skipped when already done for this pyproject.toml
# (FORCE_INSTALL=1 forces it).
#   usage: source scripts/_venv.sh "" demo   ||   source scripts/_venv.sh "[test]" test
# The two stacks live in separate folders, so that running one command never reinstalls the other:
#   demo  .venv       torch 2.13.0                                  (CPU build, ~35 s to install)
#   test  .venv-test  torch 2.14.1, torchvision 0.29.1, timm 1.0.31 (the suite runs real torchvision/timm models)
# These exact versions install from local files here; other versions of torch/torchvision download gigabytes.
PYTHON="${PYTHON:-python3}"
case "${2:-demo}" in
  demo) VENV=.venv; _stack="torch==2.13.0" ;;
  test) VENV=.venv-test; _stack="torch==2.14.1 torchvision==0.29.1 timm==1.0.31" ;;
  *) echo "scripts/_venv.sh: unknown stack '${2}' (demo or test)" >&2; exit 1 ;;
esac
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

_want="$_stack $(sha256sum pyproject.toml | cut -d' ' -f1) $_extras"
if [ "${FORCE_INSTALL:-0}" = 1 ] || [ ! -f "$_stamp" ] || [ "$(cat "$_stamp")" != "$_want" ] \
   || ! "$VENV/bin/python" -c 'import torch, cladec' >/dev/null 2>&1; then
  echo "installing $_stack and cladec$_extras into $VENV ..."
  # shellcheck disable=SC2086  # the stack is a list of requirements
  "$VENV/bin/python" -m pip install --quiet $_stack
  "$VENV/bin/python" -m pip install --quiet -e ".$_extras"
  echo "$_want" > "$_stamp"
fi
