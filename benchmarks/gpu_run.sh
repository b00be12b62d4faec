#!/usr/bin/env bash
# The device-machine script (Fashion-MNIST carried in .devdata/), everything in one call:
# 1. (GPU_CHECK=1) CUDA-path checks: fast vs plain, streamed, ClaDec + RefAE together vs separately;
# 2. the whole pipeline (classifier + ClaDec + RefAE, 64 epochs each) in fresh processes with empty compile
#    caches (cold start), once per PIPELINES entry;
# 3. the speed benchmark (phases × VARIANTS, plain loops, per-kernel profile of PROFILE_VARIANTS).
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
if [ "${GPU_CHECK:-0}" = 1 ]; then
  timeout ${CHECK_TIMEOUT:-150} python3 benchmarks/gpu_check.py --data-root .devdata --train 10000 --only "${CHECK_ONLY:-}" > "$OUT/gpu_check.log" 2>&1
  grep -v "^ \|^\[\|^{\|^}" "$OUT/gpu_check.log" | tail -c 6000
fi
i=0
for pv in ${PIPELINES:-classifier=default,together=default}; do
  i=$((i + 1))
  cache=$(mktemp -d)
  TORCHINDUCTOR_CACHE_DIR=$cache/inductor TRITON_CACHE_DIR=$cache/triton timeout ${PIPE_TIMEOUT:-120} \
    python3 benchmarks/speed.py --device cuda --data-root .devdata --train 60000 --test 10000 --pipeline-only \
    --pipeline-epochs 64 --pipeline-variants "$pv" --json "$OUT/pipeline_$i.json" > "$OUT/pipeline_$i.log" 2>&1
  grep "pipeline" "$OUT/pipeline_$i.log" | tail -3
done
if [ "${SPEED:-1}" = 1 ]; then
  timeout ${SPEED_TIMEOUT:-260} python3 benchmarks/speed.py --device cuda --data-root .devdata --train 60000 --test 10000 --epochs 3 \
    --phases ${PHASES:-classifier,cladec,refae,cladec-streamed,together} \
    --pipeline-epochs ${PIPE_EPOCHS:-0} --max-pipeline-s ${PIPE_S:-90} --variants ${VARIANTS:-default,compile} \
    --profile "$OUT/profile" --profile-variants "${PROFILE_VARIANTS-compile}" --json "$OUT/speed_gpu.json" > "$OUT/speed_gpu.log" 2>&1
  grep -v "^ \|^---\|Warning\|warn" "$OUT/speed_gpu.log" | tail -60
fi
