"""Does the toy diffusion model itself know the oriented objects' fronts? For each oriented shape (one colour),
ancestral samples of "front view of ...", "backside view of ...", "side view of ..." and the plain caption, and
their mean ink (evaluation/janus.py's rule, the front feature's dark colour) beside the true object's mean ink at
azimuth 0 (front) and 180 (back). If the front samples carry the truth's front ink and the back ones none, the 2D
prior knows the front, and a 3D result without it failed to distil it (issue 16's report).

  python eval/bench/janus_prior.py --out eval/reports/janus/prior [--per-view 8] [--weight 3] [--steps 50]
Writes OUT/prior_ink.json and OUT/samples_<shape>.png (rows: front, backside, side, plain).
"""
import argparse
import json
from pathlib import Path

import torch

from sjc_dist.config import CameraConfig
from sjc_dist.diffusion.load import ModelConfig, load_model
from sjc_dist.diffusion.sampling import sample_ancestral
from sjc_dist.evaluation.janus import JanusConfig, inkness, truth_ink
from sjc_dist.scene.export import save_grid
from sjc_dist.toyworld.shapes import ORIENTED_SHAPES

VIEWS = ("front view of ", "backside view of ", "side view of ", "")


def shape_ink(model, shape: str, color: str, n: int, weight: float, steps: int) -> tuple[dict, torch.Tensor]:
    """Mean ink per prompt form (samples [4 n, 3, 32, 32] in [-1, 1] returned too) and the truth's."""
    caption = f"a {color} {shape}"
    prompts = [f"{v}{caption}" for v in VIEWS for _ in range(n)]
    x = sample_ancestral(model.denoiser, (len(prompts), 3, 32, 32), model.text.cond(prompts, "", weight), steps,
                         torch.Generator().manual_seed(0), model.device).clamp(-1, 1).cpu()
    ink = inkness((x + 1) / 2).mean((-2, -1)).reshape(len(VIEWS), n).mean(1).tolist()
    truth = truth_ink(caption, JanusConfig(), CameraConfig())
    half = len(truth) // 2
    return {"caption": caption, "front": ink[0], "backside": ink[1], "side": ink[2], "plain": ink[3],
            "truth_front": float(truth[0]), "truth_back": float(truth[half])}, x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-view", type=int, default=8)
    ap.add_argument("--weight", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--color", default="red")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    model = load_model(ModelConfig(name="toy", device=a.device))
    rows = []
    for shape in ORIENTED_SHAPES:
        row, x = shape_ink(model, shape, a.color, a.per_view, a.weight, a.steps)
        save_grid(x, a.out / f"samples_{shape}.png", cols=a.per_view)
        rows.append(row)
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else str(v) for k, v in row.items()), flush=True)
    info = {"weight": a.weight, "steps": a.steps, "per_view": a.per_view, "rows": rows}
    (a.out / "prior_ink.json").write_text(json.dumps(info, indent=1))
    print(f"-> {a.out / 'prior_ink.json'}, {a.out}/samples_<shape>.png")


if __name__ == "__main__":
    main()
