#!/usr/bin/env bash
# Issue 12's measurements on one GPU, side by side: the signal-validation sweep (tune_configs/toy_validation.yaml,
# 60 trials, then `sjc results --validate`) and the SJC-vs-SDS benchmark (25 captions x 2 methods x 2 seeds, one
# batch of 100 scenes in this process). Run from the project root on the GPU machine with the site archive
# unpacked (shared/gpu/README.md); no MLflow needed (--mlflow-uri none). Writes $OUT/validation.tar and
# $OUT/bench.tar (reports, tables, logs) and prints the validation table and the bench's verdicts last.
#   OUT=/tmp/out bash eval/bench/validation_gpu.sh [SECONDS_PER_PART]
# CPU check of the glue: PY=.venv/bin/python SWEEP=small.yaml BENCH_ARGS="--limit 2 --set steps=10" OUT=... bash ...
set -uo pipefail
OUT=${OUT:?set OUT}; runs=${RUNS:-/tmp/sjc_validation}; limit=${1:-300}; py=${PY:-python3}
mkdir -p "$runs"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || echo no GPU; } > "$runs/device.txt"
( timeout "$limit" $py -m sjc_dist.cli sweep "${SWEEP:-tune_configs/toy_validation.yaml}" --out "$runs/val" --mlflow-uri none \
    ${SWEEP_ARGS:-} > "$runs/sweep.log" 2>&1
  $py -m sjc_dist.cli results "$runs/val" --validate > "$runs/validate.log" 2>&1 ) & p1=$!
timeout "$limit" $py -m sjc_dist.cli bench toy --methods sjc,sds --seeds 0,1 --executor local --max-batch 100 \
    --mlflow-uri none --set output.turntable_frames=0 --out "$runs/bench" ${BENCH_ARGS:-} > "$runs/bench.log" 2>&1 & p2=$!
wait $p1; wait $p2
tar -cf "$OUT/validation.tar" -C "$runs" device.txt sweep.log validate.log \
    $(cd "$runs" && ls -d val/results.parquet val/ranking.txt val/summary.json val/validation.* val/plots 2>/dev/null)
tar -cf "$OUT/bench.tar" -C "$runs" bench.log $(cd "$runs" && ls -d bench/report bench/results.parquet 2>/dev/null)
tail -n 30 "$runs/validate.log"; tail -n 3 "$runs/sweep.log"
grep -A 40 "Paired per-prompt" "$runs/bench/report/report.md" 2>/dev/null | head -n 30; tail -n 2 "$runs/bench.log"
