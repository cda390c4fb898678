#!/usr/bin/env bash
# Issue 12's measurements on one GPU, side by side: the signal-validation sweep (tune_configs/toy_validation.yaml,
# 60 trials, then `sjc results --validate`) and the SJC-vs-SDS benchmark (25 captions x 2 methods x 2 seeds, one
# batch of 100 scenes in this process). With CLIP_SECONDS set, the wide-world toy CLIP (train_clip.py) trains
# beside them, and once all three are done the sweep's runs (then the bench's) are scored again by the shipped
# toy CLIP and the new one (`sjc evaluate`, each writing its own validation section): the judge's agreement
# before and after. Run from the project root on the GPU machine with the site archive unpacked
# (shared/gpu/README.md); no MLflow needed (--mlflow-uri none). Writes $OUT/validation.tar, $OUT/bench.tar (reports,
# tables, logs) and, with CLIP_SECONDS, $OUT/clip.tar (checkpoint, logs, the two re-scorings); prints the
# validation table and the bench's verdicts last. BENCH=0 skips the bench; JUDGE=DIR (a judge folder made by
# prune_clip.py earlier) re-scores with that judge instead of training one (it is copied into clip.tar).
#   OUT=/tmp/out [CLIP_SECONDS=220] [SWEEP=spec.yaml] [BENCH=0] bash eval/bench/validation_gpu.sh [SECONDS_PER_PART [SECONDS_PER_RESCORE]]
#   OUT=/tmp/out JUDGE=DIR SWEEP=spec.yaml BENCH=0 bash eval/bench/validation_gpu.sh 480 90
# CPU check of the glue: PY=.venv/bin/python SWEEP=small.yaml BENCH_ARGS="--limit 2 --set steps=10" CLIP_SECONDS=5
#   CLIP_ARGS="--batch 16 --buffer 32 --fresh 8 --eval-per-caption 1 --calibration-objects 1" DEVICE=cpu OUT=... bash ...
set -uo pipefail
OUT=${OUT:?set OUT}; runs=${RUNS:-/tmp/sjc_validation}; limit=${1:-300}; rescore=${2:-150}; py=${PY:-python3}
clip_s=${CLIP_SECONDS:-}; dev=${DEVICE:-cuda}; judge=${JUDGE:-}; parts="val"; [ "${BENCH:-1}" = 0 ] || parts="val bench"
mkdir -p "$runs" "$OUT"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || echo no GPU; } > "$runs/device.txt"
if [ -n "$clip_s" ]; then
  timeout $((limit + 60)) $py -m sjc_dist.toyworld.train_clip --out "$runs/clip" --seconds "$clip_s" --device "$dev" \
      --refresh-every "${REFRESH:-2}" ${CLIP_ARGS:-} > "$runs/train_clip.log" 2>&1 & p3=$!
fi
( timeout "$limit" $py -m sjc_dist.cli sweep "${SWEEP:-tune_configs/toy_validation.yaml}" --out "$runs/val" --mlflow-uri none \
    ${SWEEP_ARGS:-} > "$runs/sweep.log" 2>&1
  $py -m sjc_dist.cli results "$runs/val" --validate > "$runs/validate.log" 2>&1 ) & p1=$!
[ "${BENCH:-1}" = 0 ] || timeout "$limit" $py -m sjc_dist.cli bench toy --methods sjc,sds --seeds 0,1 --executor local --max-batch 100 \
    --mlflow-uri none --set output.turntable_frames=0 --out "$runs/bench" ${BENCH_ARGS:-} > "$runs/bench.log" 2>&1 & p2=$!
wait $p1; wait $p2 2>/dev/null
tar -cf "$OUT/validation.tar" -C "$runs" device.txt sweep.log validate.log \
    $(cd "$runs" && ls -d val/results.parquet val/ranking.txt val/summary.json val/validation.* val/plots 2>/dev/null)
[ "${BENCH:-1}" = 0 ] || tar -cf "$OUT/bench.tar" -C "$runs" bench.log $(cd "$runs" && ls -d bench/report bench/results.parquet 2>/dev/null)
if [ -n "$clip_s" ] || [ -n "$judge" ]; then
  if [ -n "$judge" ]; then mkdir -p "$runs/clip" && cp -r "$judge" "$runs/newclip" && touch "$runs/train_clip.log" "$runs/prune.log"
  else wait $p3; tail -n 12 "$runs/train_clip.log"
    $py eval/bench/prune_clip.py "$runs/clip/open_clip_model.safetensors" "$runs/newclip" > "$runs/prune.log" 2>&1; fi
  for part in $parts; do
    timeout "$rescore" $py -m sjc_dist.cli evaluate "$runs/$part" --judges "toy,local-dir:$runs/newclip" --executor local \
        --gpus-per-task 1 --out "$runs/rescore_$part" > "$runs/rescore_$part.log" 2>&1
  done
  tar -cf "$OUT/clip.tar" -C "$runs" train_clip.log prune.log $(cd "$runs" && ls rescore_*.log) clip newclip \
      $(cd "$runs" && ls -d rescore_val rescore_bench 2>/dev/null)
  grep -A 14 "within" "$runs/rescore_val/validation.md" 2>/dev/null | head -n 30
fi
tail -n 30 "$runs/validate.log"; tail -n 3 "$runs/sweep.log"
[ "${BENCH:-1}" = 0 ] || { grep -A 40 "Paired per-prompt" "$runs/bench/report/report.md" 2>/dev/null | head -n 30; tail -n 2 "$runs/bench.log"; }
