#!/usr/bin/env bash
# Train the toy world's three models side by side on one GPU, then check the new guiding model's samples with
# the new toy CLIP: the guiding diffusion model (shipped architecture, every world object, view-prefixed captions),
# the independent judge diffusion model (another seed and width; evaluation's judge_fit), and the toy CLIP
# (the wide world of clip_world.py). Run from the project root on the GPU machine with the site archive unpacked
# (shared/gpu/README.md); writes $OUT/weights_main.tar, $OUT/weights_judge_clip.tar, $OUT/logs.tar and leaves an
# installed copy in .gpu/trained/weights (ignored by git) for a following call on the same machine.
#   OUT=/tmp/out bash eval/bench/toy_models_gpu.sh [UNET_SECONDS JUDGE_SECONDS CLIP_SECONDS]
# A CPU check of the glue (seconds): DEVICE=cpu UNET_ARGS="--per-caption 2 --batch 8" CLIP_ARGS="--batch 16
#   --buffer 32 --fresh 8 --eval-per-caption 1 --calibration-objects 1" SAMPLES_ARGS="--per-caption 1 --steps 2"
#   PY=.venv/bin/python WEIGHTS=/tmp/w SAMPLES=0 OUT=/tmp/out bash eval/bench/toy_models_gpu.sh 3 3 3
set -euo pipefail
OUT=${OUT:?set OUT}
unet_s=${1:-270}; judge_s=${2:-150}; clip_s=${3:-180}; dev=${DEVICE:-cuda}
work=.gpu/trained; rm -rf "$work"; mkdir -p "$work/logs"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo no GPU; } \
    | tee "$work/logs/device.txt"
${PY:-python3} -c 'import torch, diffusers, open_clip; print("torch", torch.__version__, "diffusers", diffusers.__version__,
"open_clip", open_clip.__version__)' | tee -a "$work/logs/device.txt"
${PY:-python3} -m sjc_dist.toyworld.train_unet --out "$work/main" --seconds "$unet_s" --device "$dev" ${UNET_ARGS:-} \
    > "$work/logs/train_unet.log" 2>&1 & p1=$!
${PY:-python3} -m sjc_dist.toyworld.train_unet --out "$work/judge" --channels 32,64,64 --text-width 32 --seed 1 \
    --seconds "$judge_s" --device "$dev" ${UNET_ARGS:-} > "$work/logs/train_judge.log" 2>&1 & p2=$!
${PY:-python3} -m sjc_dist.toyworld.train_clip --out "$work/clip" --seconds "$clip_s" --device "$dev" ${CLIP_ARGS:-} \
    > "$work/logs/train_clip.log" 2>&1 & p3=$!
fail=0; for p in $p1 $p2 $p3; do wait $p || fail=1; done
tail -n 3 "$work"/logs/train_*.log
[ $fail = 0 ] || { echo "a training failed: nothing installed"; tar -cf "$OUT/logs.tar" -C "$work" logs; exit 1; }
# install: the guiding model at weights/, the judge at weights/judge/, the CLIP at weights/clip/
w=${WEIGHTS:-sjc_dist/toyworld/weights}
cp -r "$work"/main/. "$w"/
mkdir -p "$w/judge" && cp -r "$work"/judge/. "$w/judge"/
cp "$work"/clip/* "$w/clip"/
cp "$work"/logs/train_unet.log "$w/train_unet.log"; cp "$work"/logs/train_judge.log "$w/judge/train_unet.log"
cp "$work"/logs/train_clip.log "$w/clip/train_clip.log"
${PY:-python3} -m sjc_dist.toyworld.packed "$w"  # ship them xz-packed, as the repository does (packed.py)
[ "${SAMPLES:-1}" = 0 ] || ${PY:-python3} eval/bench/toy_samples.py --out "$work/samples" --weights 1,3,7.5 --device "$dev" ${SAMPLES_ARGS:-} > "$work/logs/toy_samples.log" 2>&1 \
    || echo "toy_samples failed (see logs)"
tail -n 5 "$work/logs/toy_samples.log" 2>/dev/null || true
mkdir -p "$work/samples"
mkdir -p "$work/weights" && cp -r "$w"/. "$work/weights"/
tar -cf "$OUT/weights_main.tar" -C "$w" --exclude=judge --exclude=clip .
tar -cf "$OUT/weights_judge_clip.tar" -C "$w" judge clip
tar -cf "$OUT/logs.tar" -C "$work" logs samples
ls -la "$OUT"
