#!/usr/bin/env bash
# The device-machine script: CUDA-path checks, then the speed benchmark (Fashion-MNIST carried in .devdata/).
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
timeout 90 python3 benchmarks/gpu_check.py --data-root .devdata --train 10000 > "$OUT/gpu_check.log" 2>&1
tail -c 1500 "$OUT/gpu_check.log"
timeout ${SPEED_TIMEOUT:-260} python3 benchmarks/speed.py --device cuda --data-root .devdata --train 60000 --test 10000 --epochs 3 \
  --pipeline-epochs 64 --max-pipeline-s ${PIPE_S:-90} --variants ${VARIANTS:-default,nocl} --json "$OUT/speed_gpu.json" 2>&1 | tee "$OUT/speed_gpu.log"
