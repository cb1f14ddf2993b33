#!/usr/bin/env bash
# One device call: full-size SDXL (random weights) through Ray Serve, images/s at 1 and N
# concurrent clients, batched (max_batch_size 4) and unbatched, in one run bounded by BUDGET.
# Ray must be importable there: preinstalled, or its wheel carried in .whl/ with the others.
#
# Usage on the device (repo root):  BUDGET=540 bash benchmarks/gpu/run_ray_serve_gpu.sh
# Locally, as a check of the script's logic: DRY_RUN=1 OUT=/tmp/out bash benchmarks/gpu/run_ray_serve_gpu.sh
set -u -o pipefail

OUT=${OUT:-$PWD/out-gpu}
BUDGET=${BUDGET:-540}
DRY_RUN=${DRY_RUN:-0}
CLIENTS=${CLIENTS:-1,4,8}
mkdir -p "$OUT"
LOG="$OUT/ray_serve_log.txt"
: >"$LOG"

if [ "$DRY_RUN" = 1 ]; then
    ARGS=(--dry-run --clients 1,2 --rounds 1 --per-client 2)
    PY=${PY:-python}
else
    ARGS=(--clients "$CLIENTS" --rounds 2 --per-client 4 --batch 4 --dtype bf16)
    PY=python3
    if ls .whl/*.whl >/dev/null 2>&1; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
        export PYTHONPATH=/tmp/site:$PWD
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$LOG"
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 RAY_USAGE_STATS_ENABLED=0

$PY -c "import torch, diffusers, ray, lightning_client; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'ray', ray.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$LOG" \
    || { echo "ray, torch or diffusers missing on this machine" | tee -a "$LOG"; exit 1; }
timeout -k 15 "$BUDGET" $PY benchmarks/gpu/ray_serve_sdxl.py "${ARGS[@]}" --json "$OUT/ray_serve_sdxl.json" 2>&1 | tee -a "$LOG"
echo "ray_serve_sdxl exit ${PIPESTATUS[0]}" | tee -a "$LOG"
