"""Per-trial overhead of the Ray layer: N plain `sjc run` processes against `sjc sweep` of the same N configs.

Each of the N trials is the same run config with a different seed. Measured side by side, in one go:
  plain      N x `sjc run` (a fresh process each: imports, model load, optimisation, outputs), one at a time
  sweep 1    `sjc sweep` with max_concurrent 1: Ray, the worker pool (one model load), Tune, MLflow, checkpoints
  sweep N    `sjc sweep` with max_concurrent N: the same, the N scenes batched into one denoiser forward
Per trial = wall / N; ratio = sweep per trial / plain per trial (< 1: the sweep is cheaper per trial).
"optimise s" is the time spent in optimisation steps (plain: summary.json seconds; sweep: the trials' share of
their worker's rounds). For the plain side and the sequential sweep the rest splits into a fixed cost (the
sweep's CLI start, Ray, worker pool, MLflow store, Tune start and results; 0 for plain) and an overhead per
trial (plain: process start, imports, model load, outputs; sweep: Tune's trial, reports, checkpoints, outputs,
and the one model load spread over the trials).
Writes JSON (and prints a table); no assertions. Example (about 5 minutes on 2 cores):
  python eval/bench/ray_overhead.py --trials 4 --steps 100 --out /tmp/ray_overhead
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

SJC = str(Path(sys.executable).with_name("sjc"))


def run_config_sets(args) -> list[str]:
    """The `--set` overrides shared by both sides (the sweep's base carries the same values)."""
    return [f"prompt.text={args.prompt}", f"steps={args.steps}", f"field.grid_size={args.grid}",
            "render.views_per_step=1", "output.turntable_frames=8", "output.eval_views=4", "output.progress=false",
            f"output.checkpoint_every={args.report_every * 2}", "model.device=cpu"]


def timed(cmd: list[str], log: Path, threads: int) -> float:
    """Wall seconds of one command; both sides get the same torch/OpenMP thread count."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=True, env=env)
    return time.perf_counter() - start


def plain_runs(args, out: Path) -> list[float]:
    sets = [x for s in run_config_sets(args) for x in ("--set", s)]
    return [timed([SJC, "run", "--config", args.config, *sets, "--seed", str(i), "--out", str(out / f"plain_{i}")],
                  out / f"plain_{i}.log", args.threads) for i in range(args.trials)]


def sweep_spec(args, concurrent: int) -> dict:
    from sjc_dist.configtools import set_dotted

    base: dict = {"preset": args.config}
    for item in run_config_sets(args):
        base = set_dotted(base, item)
    return {"name": f"overhead_c{concurrent}", "base": base, "space": {"seed": {"grid": list(range(args.trials))}},
            "search": {"kind": "grid"}, "scheduler": {"kind": "fifo", "metric": "score"},
            "max_concurrent": concurrent, "report_every": args.report_every, "checkpoint_every": 2,
            "scorer": "fit", "evaluate": False,
            "resources": {"workers": 1, "cpus_per_worker": 1, "slots_per_worker": max(concurrent, 1),
                          "cpus_per_trial": 0.25, "torch_threads": args.threads}}


def sweep_run(args, out: Path, concurrent: int) -> dict:
    spec_file = out / f"sweep_c{concurrent}.yaml"
    spec_file.write_text(yaml.safe_dump(sweep_spec(args, concurrent), sort_keys=False))
    folder = out / f"sweep_c{concurrent}"
    wall = timed([SJC, "sweep", str(spec_file), "--out", str(folder), "--num-cpus", "2"],
                 out / f"sweep_c{concurrent}.log", args.threads)
    summary = json.loads((folder / "summary.json").read_text())
    import pandas as pd

    frame = pd.read_parquet(folder / "results.parquet")
    return {"wall": wall, "driver_seconds": summary["seconds"], "trial_wall": float(frame["wall_seconds"].sum()),
            "device_seconds": float(frame["device_seconds"].sum()), "model_loads": summary["model_loads"],
            "mean_batch": summary["workers"][0].get("mean_batch"), "status": summary["status"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="empirical", help="preset of both sides (default: empirical)")
    p.add_argument("--prompt", default="a red cube")
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--grid", type=int, default=24)
    p.add_argument("--report-every", type=int, default=25)
    p.add_argument("--threads", type=int, default=1, help="torch threads of both sides (plain runs and the worker)")
    p.add_argument("--out", default="/tmp/ray_overhead")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    plain = plain_runs(args, out)
    sweeps = {c: sweep_run(args, out, c) for c in (1, args.trials)}
    report = summarize(args, plain, out, sweeps)
    (out / "ray_overhead.json").write_text(json.dumps(report, indent=2))
    print_table(report)
    return 0


def summarize(args, plain: list[float], out: Path, sweeps: dict) -> dict:
    """Per-trial walls and ratios; the optimisation seconds of each side show what the rest costs."""
    n = args.trials
    per_plain = sum(plain) / n
    optimise = [json.loads((out / f"plain_{i}" / "summary.json").read_text())["seconds"] for i in range(n)]
    rows = {"plain": {"wall": sum(plain), "per_trial": per_plain, "ratio": 1.0, "optimise_seconds": sum(optimise),
                      "overhead_per_trial": (sum(plain) - sum(optimise)) / n, "fixed_seconds": 0.0, "runs": plain}}
    for c, s in sweeps.items():
        rows[f"sweep_c{c}"] = {**s, "per_trial": s["wall"] / n, "ratio": s["wall"] / n / per_plain,
                               "optimise_seconds": s["device_seconds"],
                               "cli_startup_seconds": s["wall"] - s["driver_seconds"]}
    seq = rows["sweep_c1"]  # trials one after another: their walls add up, the rest is the sweep's fixed cost
    seq["overhead_per_trial"] = (seq["trial_wall"] - seq["device_seconds"]) / n
    seq["fixed_seconds"] = seq["wall"] - seq["trial_wall"]
    return {"trials": n, "steps": args.steps, "grid": args.grid, "config": args.config, "rows": rows}


def print_table(report: dict) -> None:
    print(f"{report['trials']} trials x {report['steps']} steps, preset {report['config']}, grid {report['grid']}")
    print(f"{'side':<12}{'wall s':>9}{'per trial s':>13}{'ratio':>8}{'optimise s':>12}{'fixed s':>9}"
          f"{'overhead/trial s':>18}{'loads':>7}{'batch':>7}")
    for name, r in report["rows"].items():
        loads = r.get("model_loads", report["trials"])
        batch = r.get("mean_batch") or 1.0
        fixed = f"{r['fixed_seconds']:.1f}" if "fixed_seconds" in r else "-"
        per = f"{r['overhead_per_trial']:.2f}" if "overhead_per_trial" in r else "-"
        print(f"{name:<12}{r['wall']:>9.1f}{r['per_trial']:>13.2f}{r['ratio']:>8.2f}{r['optimise_seconds']:>12.1f}"
              f"{fixed:>9}{per:>18}{loads:>7}{batch:>7.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
