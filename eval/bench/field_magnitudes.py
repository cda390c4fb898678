"""How large a healthy field's parameters get: max |theta| per parameter (density grid, features, d_scale,
background) of toy-preset runs, every `--every` steps, SJC and SDS over the given captions (one SceneBatch per
method). It is the measurement behind `check_finite`'s explosion bound (sjc_dist/optim/optimizer.py).

  python eval/bench/field_magnitudes.py --out OUT [--captions 25] [--steps 800] [--set KEY=VALUE ...]
"""
import argparse
import json
import time
from pathlib import Path

import torch

from sjc_dist.config import load_config
from sjc_dist.diffusion.load import load_model
from sjc_dist.optim.multiscene import SceneBatch
from sjc_dist.optim.run import SJCRun
from sjc_dist.toyworld.shapes import captions

METHODS = {"sjc": "paas", "sds": "sds"}


def peaks(run: SJCRun) -> dict[str, float]:
    """max |x| of each parameter; the grid split into its density channel and its feature channels."""
    grid = run.scene.field.grid.detach()
    out = {"density": float(grid[:, 0].abs().max()), "features": float(grid[:, 1:].abs().max())}
    for name, p in run.scene.named_parameters():
        if name != "field.grid":
            out[name] = float(p.detach().abs().max())
    return out


def measure(method: str, prompts: list[str], steps: int, every: int, sets: list[str]) -> dict:
    runs, model = [], None
    for i, p in enumerate(prompts):
        cfg = load_config("toy", [f"guidance.kind={METHODS[method]}", f"prompt.text={p}", f"seed={i}",
                                  f"steps={steps}", "output.progress=false", *sets])
        model = model or load_model(cfg.model, p, cfg.guidance.weight)
        runs.append(SJCRun(cfg, model))
    batch, trace, t0 = SceneBatch(runs), [], time.time()
    for s in range(1, steps + 1):
        batch.step_all()
        if s % every == 0 or s == steps:
            trace.append({"step": s, "runs": [peaks(r) for r in runs]})
    final = trace[-1]["runs"]
    worst = {k: max(max(t[k] for t in row["runs"]) for row in trace) for k in final[0]}
    return {"method": method, "prompts": prompts, "steps": steps, "seconds": time.time() - t0,
            "max_over_runs_and_steps": worst, "lr": runs[0].cfg.optim.lr, "trace": trace}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--captions", type=int, default=25, help="the first N toy captions")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--methods", default="sjc,sds")
    ap.add_argument("--set", dest="sets", action="append", default=[])
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = [measure(m, captions()[:args.captions], args.steps, args.every, args.sets)
               for m in args.methods.split(",")]
    meta = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__}
    (out / "field_magnitudes.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    for r in results:
        print(r["method"], f"{r['seconds']:.0f}s", json.dumps({k: round(v, 3) for k, v in
                                                               r["max_over_runs_and_steps"].items()}))


if __name__ == "__main__":
    main()
