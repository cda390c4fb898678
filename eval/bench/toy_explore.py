"""Explore SJC/SDS settings on the toy world on a GPU: all captions as one SceneBatch per setting.

  python eval/bench/toy_explore.py --model sjc_dist/toyworld/weights --out OUT --steps 1000 \
      --setting "guidance.weight=30" --setting "guidance.weight=100" ...
Writes OUT/<i>.png (8 views of every caption, one row each) and OUT/explore.json (opacity, time per setting).
"""
import argparse
import json
import time
from pathlib import Path

import torch

from sjc_dist.artifacts import render_eval
from sjc_dist.config import load_config
from sjc_dist.diffusion.load import load_model
from sjc_dist.optim.multiscene import SceneBatch
from sjc_dist.optim.run import SJCRun
from sjc_dist.scene.export import save_grid
from sjc_dist.toyworld.shapes import captions


def run_setting(model, overrides, prompts, steps, seed):
    runs = []
    for i, p in enumerate(prompts):
        cfg = load_config("toy", [f"model.name={model.name}", f"prompt.text={p}", f"steps={steps}",
                                  f"seed={seed + i}", *overrides])
        runs.append(SJCRun(cfg, model))
    batch = SceneBatch(runs)
    t0 = time.time()
    for s in range(steps):
        batch.step_all()
        if (s + 1) % max(1, steps // 5) == 0:
            print(f"  step {s + 1} {time.time() - t0:.1f}s", flush=True)
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    return runs, time.time() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--setting", action="append", default=[])
    ap.add_argument("--prompts", type=int, default=25)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    cfg0 = load_config("toy", [f"model.name={a.model}", "prompt.text=a red cube"])
    model = load_model(cfg0.model, "a red cube", cfg0.guidance.weight)
    model.name = a.model
    prompts = captions()[: a.prompts]
    results = []
    for i, setting in enumerate(a.setting):
        overrides = [s for s in setting.split(",") if s]
        print(f"setting {i}: {overrides}", flush=True)
        try:
            runs, secs = run_setting(model, overrides, prompts, a.steps, a.seed)
        except Exception as err:  # keep going: one bad setting must not lose the others
            print(f"  failed: {err!r}", flush=True)
            results.append({"setting": overrides, "error": repr(err)})
            continue
        rows, ops = [], []
        for r in runs:
            rgb, _, opac = render_eval(r.scene, model, 8)
            rows.append(rgb)
            ops.append(float(opac.mean()))
        save_grid(torch.cat(rows), a.out / f"{i}.png", cols=8)
        results.append({"setting": overrides, "seconds": secs, "ms_per_batch_step": 1000 * secs / a.steps,
                        "mean_opacity": sum(ops) / len(ops), "opacity": ops})
        (a.out / "explore.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
