#!/usr/bin/env bash
# One device call: install the carried wheels, then run the full-size local-generation
# benchmark in three stages inside a time budget. Results and logs go to $OUT.
#
#   eager:             bf16 and fp16, steps 4/1/2/8, batch 1 (and 4 at 4 steps), the bare pipeline
#                      interleaved as baseline, and a per-part breakdown (prompt, UNet call, VAE, encode)
#   compiled-full:     bf16, compile="full" (UNet + VAE decoder, CUDA graphs), steps 4/1/2/8
#   compiled-regional: bf16, compile="regional" (UNet transformer blocks), steps 4/1/2/8
#   batching:          bf16, 8 concurrent 4-step 1024x1024 requests through LocalGenerator with
#                      max_batch_size=4 against max_batch_size=1: images/s of each (target >= 2x)
# Each stage is one process bounded by `timeout`; each writes its JSON after every configuration.
#
# Usage on the device (repo root):  BUDGET=500 bash benchmarks/gpu/run_local_gpu.sh
# Locally, as a check of the script's logic: DRY_RUN=1 OUT=/tmp/out bash benchmarks/gpu/run_local_gpu.sh
set -u -o pipefail

OUT=${OUT:-$PWD/out-gpu}
BUDGET=${BUDGET:-500}         # seconds for the whole script
STAGE1_MAX=${STAGE1_MAX:-150}          # eager stage
BATCHING_MAX=${BATCHING_MAX:-120}      # dynamic-batching stage (runs first)
REGIONAL_RESERVE=${REGIONAL_RESERVE:-90} # kept for the regional-compile stage after the full-compile one
DRY_RUN=${DRY_RUN:-0}
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"

if [ "$DRY_RUN" = 1 ]; then
    MODE=(--full-size --dry-run)
    REPEATS=(--warmup 1 --repeats 1)
    PY=${PY:-python}
else
    MODE=(--full-size --device cuda --size 1024)
    REPEATS=(--warmup 2 --repeats 6)
    PY=python3
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "wheel install failed" | tee -a "$LOG"; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/inductor-cache}

$PY -c "import torch, diffusers, transformers, pydantic, lightning_client; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$LOG"

stage() {  # stage NAME SECONDS ARGS...: one benchmark process, killed after SECONDS
    local name=$1 seconds=$2; shift 2
    if [ "$seconds" -lt 40 ]; then echo "== $name skipped: ${seconds} s" | tee -a "$LOG"; return; fi
    echo "== $name: up to ${seconds} s ($(left) s left)" | tee -a "$LOG"
    timeout -k 10 "$seconds" $PY benchmarks/local_generation.py "${MODE[@]}" "${REPEATS[@]}" --format jpeg \
        --time-budget "$((seconds - 30))" --json "$OUT/$name.json" "$@" 2>&1 | tee -a "$LOG"
    echo "$name exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}
batching() {  # batching SECONDS: batch 4 against batch 1, 8 concurrent requests
    local seconds=$1
    if [ "$seconds" -lt 40 ]; then echo "== batching skipped: ${seconds} s" | tee -a "$LOG"; return; fi
    echo "== batching: up to ${seconds} s ($(left) s left)" | tee -a "$LOG"
    local args=(--full-size --device cuda --dtype bf16 --rounds 4)
    [ "$DRY_RUN" = 1 ] && args=(--full-size --dry-run --rounds 1)
    timeout -k 10 "$seconds" $PY benchmarks/local_batching.py "${args[@]}" --json "$OUT/batching.json" 2>&1 | tee -a "$LOG"
    echo "batching exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}
batching "$(( $(left) < BATCHING_MAX ? $(left) : BATCHING_MAX ))"
stage eager "$(( $(left) < STAGE1_MAX ? $(left) : STAGE1_MAX ))" \
    --dtypes bf16,fp16 --steps 4,1,2,8 --batches 1,4 --batch-steps 4 --raw --breakdown
stage compiled-full "$(( $(left) - REGIONAL_RESERVE ))" --compile full --dtypes bf16 --steps 4,1,2,8
stage compiled-regional "$(( $(left) - 10 ))" --compile regional --dtypes bf16 --steps 4,1,2,8
echo "== done in $(( $(date +%s) - START )) s" | tee -a "$LOG"
