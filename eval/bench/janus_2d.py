"""Where is the front lost: in 3D, or already in score distillation? The paper's 2D check (theta = an image, no
renderer) on the oriented captions: SJC (PAAS) and SDS optimise one 32x32 image for "front view of a <colour>
<shape>" (and the plain caption) at several CFG weights, and the image's mean ink (evaluation/janus.py's
fixed-level `inkness`: a 2D image has no opacity to find its body by) is set beside the toy model's own ancestral
samples of the same prompt and the true front view. If the distilled images carry the front while the 3D results
do not, the front is lost where the views must agree, not in distillation (eval/reports/janus/README.md).

  python eval/bench/janus_2d.py --out eval/reports/janus/distill_2d --device cuda [--steps 400] [--weights 3,7.5,30]
Writes OUT/ink_2d.json and OUT/images_<method>.png (rows: shape x prompt form x weight; columns: seeds).
"""
import argparse
import json
import time
from pathlib import Path

import torch
from janus_prior import shape_ink

from sjc_dist.config import load_config
from sjc_dist.diffusion.load import Model, ModelConfig, load_model
from sjc_dist.evaluation.janus import inkness
from sjc_dist.optim.multiscene import SceneBatch
from sjc_dist.optim.run import SJCRun
from sjc_dist.scene.export import save_grid
from sjc_dist.toyworld.shapes import ORIENTED_SHAPES

FORMS = ("front view of ", "")


def settings(a: argparse.Namespace) -> list[dict]:
    """Every (shape, prompt form, weight, seed) of one method."""
    return [{"shape": s, "form": f, "weight": w, "seed": seed} for s in ORIENTED_SHAPES for f in FORMS
            for w in a.weights for seed in a.seeds]


def distil(model: Model, method: str, rows: list[dict], a: argparse.Namespace) -> torch.Tensor:
    """The optimised images [len(rows), 3, 32, 32] in [-1, 1], all rows stepped together (one denoiser call)."""
    runs = []
    for r in rows:
        cfg = load_config("toy", [f"prompt.text={r['form']}a {a.color} {r['shape']}", f"guidance.kind={method}",
                                  f"guidance.weight={r['weight']}", f"seed={r['seed']}", f"steps={a.steps}",
                                  f"model.device={a.device}", "output.progress=false"])
        runs.append(SJCRun(cfg, model, dims=2))
    batch, t0 = SceneBatch(runs), time.perf_counter()
    for step in range(a.steps):
        batch.step_all()
        if (step + 1) % 100 == 0:
            print(f"  {method}: step {step + 1}/{a.steps}, {time.perf_counter() - t0:.0f} s", flush=True)
    return torch.cat([r.scene.image.detach().clamp(-1, 1).cpu() for r in runs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--weights", type=lambda s: [float(x) for x in s.split(",")], default=[3.0, 7.5, 30.0])
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    ap.add_argument("--methods", default="paas,sds")
    ap.add_argument("--color", default="red")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    model = load_model(ModelConfig(name="toy", device=a.device))
    prior = {s: shape_ink(model, s, a.color, 8, 3.0, 50)[0] for s in ORIENTED_SHAPES}
    out = {"steps": a.steps, "color": a.color, "prior_cfg3": prior, "rows": []}
    for method in a.methods.split(","):
        rows = settings(a)
        images = distil(model, method, rows, a)
        ink = inkness((images + 1) / 2).mean((-2, -1))
        out["rows"] += [{**r, "method": method, "ink": float(i)} for r, i in zip(rows, ink)]
        save_grid(images, a.out / f"images_{method}.png", cols=len(a.seeds))
    (a.out / "ink_2d.json").write_text(json.dumps(out, indent=1))
    for line in summary(out, a):
        print(line)
    print(f"-> {a.out / 'ink_2d.json'}, {a.out}/images_<method>.png")


def summary(out: dict, a: argparse.Namespace) -> list[str]:
    """Mean ink per (method, form, weight) and shape, beside the prior's front-view samples and the truth."""
    lines = ["method form weight " + " ".join(f"{s}(prior {out['prior_cfg3'][s]['front']:.3f}, truth "
                                               f"{out['prior_cfg3'][s]['truth_front']:.3f})" for s in ORIENTED_SHAPES)]
    for method in a.methods.split(","):
        for form in FORMS:
            for w in a.weights:
                cells = [sum(r["ink"] for r in out["rows"] if (r["method"], r["form"], r["weight"], r["shape"])
                             == (method, form, w, s)) / len(a.seeds) for s in ORIENTED_SHAPES]
                lines.append(f"{method} {form.strip() or 'plain'!r} {w:g} " + " ".join(f"{c:.3f}" for c in cells))
    return lines


if __name__ == "__main__":
    main()
