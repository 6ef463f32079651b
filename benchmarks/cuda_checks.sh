#!/usr/bin/env bash
# The CUDA checks, in one call on a lent GPU machine (at most 9 minutes; every step has its own time limit, so a
# slow one cannot starve the rest). From the repository root there:
#
#   OUT=/some/dir bash benchmarks/cuda_checks.sh
#
# Packages the machine lacks travel as wheels in .whl/, made here beforehand by benchmarks/cuda_wheels.sh.
# Writes to $OUT:
# checks.jsonl (benchmarks/cuda_checks.py), console.log, the default search's and the training search's report.md
# and trials.csv, and the latency calibration's JSON.
set -u
OUT=${OUT:-/tmp/cuda_checks}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu CHECKS="--quick" WHEELS=no: a try of the script on a CPU
WORK=$(mktemp -d)
mkdir -p "$OUT"
if [ -d .whl ] && [ "${WHEELS:-yes}" = yes ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 NAS_CACHE_DIR=$WORK/cache
LOG=$OUT/console.log

step() {  # step NAME SECONDS COMMAND...: run under a limit, log its output and how long it took
    local name=$1 limit=$2
    shift 2
    [[ ",${STEPS:-all}," == *",all,"* || ",${STEPS:-}," == *",$name,"* ]] || return 0  # STEPS=checks,...: some
    echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start))s" | tee -a "$LOG"
}

step environment 30 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; \
    python3 -c 'import torch, optuna, pydantic, fvcore; print(torch.__version__, optuna.__version__)'"
step checks "${CHECKS_LIMIT:-180}" python3 benchmarks/cuda_checks.py --out "$OUT/checks.jsonl" --device "$DEVICE" ${CHECKS:-}
step default-search 180 python3 -m nas search --device "$DEVICE" --budget 4GFLOPs --timeout 90s --out "$WORK/default"
cp "$WORK/default/report.md" "$OUT/default_report.md" 2>/dev/null
cp "$WORK/default/trials.csv" "$OUT/default_trials.csv" 2>/dev/null
step train-search 80 python3 -m nas search --space tiny --data digits --data-limit 500 --objective train \
    --device "$DEVICE" --timeout 45s --references none --out "$WORK/train"
cp "$WORK/train/report.md" "$OUT/train_report.md" 2>/dev/null
step calibrate 70 python3 -m nas latency calibrate --device "$DEVICE" --genomes 10 --table "$WORK/latency.sqlite" \
    --json "$OUT/calibrate.json"
# The same with three times the timings and more warm-up: whether the two passes then agree (the first run's moved
# by a median of 47% at 10 timings after 3 warm-ups). Not in a full run (STEPS=all): name it.
if [[ ",${STEPS:-}," == *",calibrate-steady,"* ]]; then
    step calibrate-steady 170 python3 -m nas latency calibrate --device "$DEVICE" --genomes 10 --repeats 30 \
        --warmup 10 --table "$WORK/latency_steady.sqlite" --json "$OUT/calibrate_steady.json"
fi
echo "=== done $(date -u +%H:%M:%S)" | tee -a "$LOG"
