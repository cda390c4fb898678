"""The score-distillation estimators side by side in the toy world (issue 13): for each guidance kind, every
caption x seed as one SceneBatch on the `toy` preset (plus --set overrides), then per kind: the denoiser
evaluations per view and per step (counted at the denoiser, checked against `evals_per_view`), the step time
per scene, and the truth (3D IoU at the best yaw, voxel opacity >= 0.1, overall and per shape). Writes
OUT/estimators.json and OUT/estimators.md. The engine directly (no Ray): a measurement, not the leaderboard
(that is `sjc bench toy --methods sjc,sds,csd,nfsd,ism`, each at its swept best).

  python eval/bench/estimators.py --out OUT                                  # GPU: 25 captions, 800 steps
  python eval/bench/estimators.py --out OUT --every 6 --steps 20 --set field.grid_size=16 --set render.step=0.1
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from sjc_dist.config import load_config
from sjc_dist.diffusion.load import load_model
from sjc_dist.evaluation.truth import truth_scores
from sjc_dist.guidance.base import KINDS
from sjc_dist.optim.multiscene import SceneBatch
from sjc_dist.optim.run import SJCRun
from sjc_dist.toyworld.shapes import captions, parse


class Counter:
    """Counts the rows (UNet image-evaluations) of every denoiser call it forwards."""

    def __init__(self, fn):
        self.fn, self.rows, self.calls = fn, 0, 0

    def __call__(self, x, sigma, cond):
        self.rows, self.calls = self.rows + x.shape[0], self.calls + 1
        return self.fn(x, sigma, cond)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_kind(kind: str, prompts: list[str], seeds: list[int], sets: list[str], model=None) -> tuple[dict, object]:
    """One SceneBatch of every (prompt, seed) for `kind`; its cost and truth."""
    runs = []
    for seed in seeds:
        for i, p in enumerate(prompts):
            cfg = load_config("toy", [f"guidance.kind={kind}", f"prompt.text={p}", f"seed={seed * 1000 + i}", *sets])
            model = model or load_model(cfg.model, p, cfg.guidance.weight)
            runs.append(SJCRun(cfg, model))
    counter = runs[0].guidance.denoise = Counter(runs[0].guidance.denoise)
    batch, steps, device = SceneBatch(runs), runs[0].cfg.steps, model.device
    batch.step_all()  # warm-up step (shapes, allocator) outside the timing
    sync(device)
    rows0, t0 = counter.rows, time.perf_counter()
    for _ in range(steps - 1):
        batch.step_all()
    sync(device)
    seconds = time.perf_counter() - t0
    for r in runs:
        r.check_finite()
    scored = [(r.cfg.prompt.text, truth_scores(r.scene.field, r.cfg.prompt.text, level=0.1)) for r in runs]
    per_shape: dict[str, list[float]] = {}
    for p, t in scored:
        per_shape.setdefault(parse(p)[0], []).append(t.iou)
    views = runs[0].cfg.render.views_per_step
    return {"kind": kind, "scenes": len(runs), "steps": steps, "views_per_step": views,
            "evals_per_view": runs[0].guidance.evals_per_view(model.text is not None),
            "evals_per_step_counted": (counter.rows - rows0) / ((steps - 1) * len(runs)),
            "passes_per_step": counter.calls / steps,
            "ms_per_step_per_scene": 1000 * seconds / ((steps - 1) * len(runs)),
            "seconds": seconds, "iou": statistics.fmean(t.iou for _, t in scored),
            "iou_per_shape": {s: statistics.fmean(v) for s, v in sorted(per_shape.items())},
            "rows": [{"prompt": p, "iou": t.iou, "occupied": t.occupied_fraction} for p, t in scored]}, model


def table(results: list[dict]) -> str:
    shapes = sorted({s for r in results for s in r["iou_per_shape"]})
    head = ["kind", "evals / view", "evals / step (counted)", "passes / step", "ms / step / scene", "mean IoU",
            *shapes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["kind"], str(r["evals_per_view"]), f"{r['evals_per_step_counted']:.1f}",
                 f"{r['passes_per_step']:.0f}", f"{r['ms_per_step_per_scene']:.2f}", f"{r['iou']:.3f}",
                 *(f"{r['iou_per_shape'].get(s, float('nan')):.3f}" for s in shapes)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--every", type=int, default=1, help="take every k-th caption (6: one per shape and colour)")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    sets = [*a.sets, "output.progress=false"] + ([f"steps={a.steps}"] if a.steps else [])
    prompts, seeds = captions()[:: a.every], [int(s) for s in a.seeds.split(",")]
    results, model = [], None
    for kind in a.kinds.split(","):
        res, model = run_kind(kind, prompts, seeds, sets, model)
        results.append(res)
        print(f"{kind}: {res['evals_per_view']} evals/view, {res['ms_per_step_per_scene']:.2f} ms/step/scene, "
              f"IoU {res['iou']:.3f}", flush=True)
        info = {"device": str(model.device), "torch": torch.__version__, "sets": sets, "prompts": prompts,
                "seeds": seeds, "results": results}
        (a.out / "estimators.json").write_text(json.dumps(info, indent=1))
        (a.out / "estimators.md").write_text(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
