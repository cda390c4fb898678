"""CPU time of one SJC iteration: a 64^3 grid rendered at 32x32 with a tiny UNet (issue 2's closing figure).

  python eval/bench/cpu_iteration.py [--model toy] [--grid 64] [--res 32] [--views 1] [--steps 30]
Prints the median milliseconds of a whole step and of its parts (render forward, denoiser call, backward and
Adamax step), and writes the same as JSON with --json PATH. A CPU figure: it depends on the machine and its load.
"""
import argparse
import json
import statistics
import time

import torch

from sjc_dist.config import load_config
from sjc_dist.diffusion.load import load_model
from sjc_dist.guidance.passes import drive
from sjc_dist.optim.run import SJCRun


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, 1000 * (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="toy")
    ap.add_argument("--grid", type=int, default=64)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    cfg = load_config("toy", [f"model.name={a.model}", "prompt.text=a red cube", "model.device=cpu",
                              f"field.grid_size={a.grid}", f"render.resolution={a.res}",
                              f"render.views_per_step={a.views}", "render.step=0.02", "output.progress=false"])
    run = SJCRun(cfg, load_model(cfg.model, cfg.prompt.text, cfg.guidance.weight))
    parts = {"render_ms": [], "denoise_ms": [], "backward_step_ms": [], "total_ms": []}
    for i in range(a.steps + 3):
        p, t_begin = timed(run.begin)
        d, t_den = timed(lambda: drive([run.passes(p)], run.guidance.denoise)[0])  # the update (all passes)
        _, t_fin = timed(lambda: run.finish(p, d))
        if i >= 3:  # warm-up excluded
            for k, v in zip(parts, (t_begin, t_den, t_fin, t_begin + t_den + t_fin)):
                parts[k].append(v)
    result = {k: statistics.median(v) for k, v in parts.items()}
    result.update(grid=a.grid, res=a.res, views=a.views, samples_per_ray=int(3.4642 / 0.02) + 1,
                  threads=torch.get_num_threads(), model=a.model, torch=torch.__version__)
    print(json.dumps(result, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
