#!/usr/bin/env bash
# The device-machine script: (optionally) CUDA-path checks, then the speed benchmark with a per-kernel
# profile (Fashion-MNIST carried in .devdata/).
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
if [ "${GPU_CHECK:-0}" = 1 ]; then
  timeout 90 python3 benchmarks/gpu_check.py --data-root .devdata --train 10000 > "$OUT/gpu_check.log" 2>&1
  tail -c 1500 "$OUT/gpu_check.log"
fi
timeout ${SPEED_TIMEOUT:-260} python3 benchmarks/speed.py --device cuda --data-root .devdata --train 60000 --test 10000 --epochs 3 \
  --phases ${PHASES:-classifier,cladec,refae,cladec-streamed} \
  --pipeline-epochs 64 --max-pipeline-s ${PIPE_S:-90} --variants ${VARIANTS:-default,compile} \
  --profile "$OUT/profile" --profile-variants ${PROFILE_VARIANTS:-compile} --json "$OUT/speed_gpu.json" > "$OUT/speed_gpu.log" 2>&1
grep -v "^ \|^---\|Warning\|warn" "$OUT/speed_gpu.log" | tail -60
