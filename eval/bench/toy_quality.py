"""Issue 3's SJC quality bar on a GPU: every toy caption x seeds, SJC and SDS with the `toy` preset, scored
against the truth (3D IoU at the best yaw, colour error) and by the toy CLIP (multi-view R-Precision@1 over
all 25 captions). One process per (method, seed) runs all captions as one SceneBatch; run several at once.

  python eval/bench/toy_quality.py --method sjc --seed 0 --out OUT       # -> OUT/sjc_s0.json, OUT/sjc_s0.png
  python eval/bench/toy_quality.py --summarize OUT                      # -> OUT/toy_quality.md
"""
import argparse
import json
import math
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import torch

from sjc_dist.artifacts import render_eval
from sjc_dist.config import load_config
from sjc_dist.diffusion.load import load_model
from sjc_dist.evaluation.truth import toy_caption_accuracy, truth_scores
from sjc_dist.optim.multiscene import SceneBatch
from sjc_dist.optim.run import SJCRun
from sjc_dist.scene.export import save_grid
from sjc_dist.toyworld.clip_model import encode_renders, encode_texts, load_toy_clip
from sjc_dist.toyworld.shapes import captions

METHODS = {"sjc": "paas", "sds": "sds"}


def generate(method: str, seed: int, prompts: list[str], overrides: list[str]):
    runs, model = [], None
    for i, p in enumerate(prompts):
        cfg = load_config("toy", [f"guidance.kind={METHODS[method]}", f"prompt.text={p}", f"seed={seed * 1000 + i}",
                                  *overrides])
        model = model or load_model(cfg.model, p, cfg.guidance.weight)
        runs.append(SJCRun(cfg, model))
    batch, t0 = SceneBatch(runs), time.time()
    for s in range(runs[0].cfg.steps):
        batch.step_all()
        if (s + 1) % 200 == 0:
            print(f"{method} seed {seed}: step {s + 1} {time.time() - t0:.0f}s", flush=True)
    for r in runs:
        r.check_finite()
    return runs, model, time.time() - t0


def score(runs, model, prompts, out: Path, tag: str) -> list[dict]:
    clip, _, tok = load_toy_clip(model.device)
    cap_emb = encode_texts(clip, tok, captions())
    rows, grids = [], []
    for r, p in zip(runs, prompts):
        rgb, _, _ = render_eval(r.scene, model, 8)
        grids.append(rgb)
        acc = toy_caption_accuracy(encode_renders(clip, rgb.to(model.device)), cap_emb, p)
        t = truth_scores(r.scene.field, p, level=0.1)
        rows.append({"prompt": p, "r_precision": acc, **asdict(t)})
    save_grid(torch.cat(grids), out / f"{tag}.png", cols=8)
    return rows


def summarize(out: Path) -> str:
    lines = ["| method | seeds | objects | R-Precision@1 (toy CLIP, 8 views) | mean 3D IoU (best yaw) | IoU centred | "
             "colour error | seconds (all steps, one batch) |", "|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        files = sorted(out.glob(f"{method}_s*.json"))
        if not files:
            continue
        data = [json.loads(f.read_text()) for f in files]
        rows = [r for d in data for r in d["rows"]]
        mean = lambda k: statistics.fmean([r[k] for r in rows if not math.isnan(r[k])] or [math.nan])  # noqa: E731
        lines.append(f"| {method} | {len(files)} | {len(rows)} | {mean('r_precision'):.3f} | {mean('iou'):.3f} | "
                     f"{mean('iou_centred'):.3f} | {mean('color_error'):.3f} | "
                     f"{statistics.fmean(d['seconds'] for d in data):.0f} |")
    text = "\n".join(lines) + "\n"
    (out / "toy_quality.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--method", choices=list(METHODS), default="sjc")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompts", type=int, default=25)
    ap.add_argument("--every", type=int, default=1, help="take every k-th caption (6: one per shape and colour)")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--summarize", type=Path)
    a = ap.parse_args()
    if a.summarize:
        print(summarize(a.summarize))
        return
    a.out.mkdir(parents=True, exist_ok=True)
    prompts = captions()[:: a.every][: a.prompts]
    runs, model, secs = generate(a.method, a.seed, prompts, a.sets)
    tag = f"{a.method}_s{a.seed}"
    rows = score(runs, model, prompts, a.out, tag)
    info = {"method": a.method, "seed": a.seed, "seconds": secs, "device": str(model.device),
            "overrides": a.sets, "rows": rows}
    (a.out / f"{tag}.json").write_text(json.dumps(info, indent=1))
    print(f"{tag}: R@1 {statistics.fmean(r['r_precision'] for r in rows):.3f} "
          f"IoU {statistics.fmean(r['iou'] for r in rows):.3f} in {secs:.0f}s", flush=True)


if __name__ == "__main__":
    main()
