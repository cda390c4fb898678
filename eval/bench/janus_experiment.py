"""The Janus experiment of issue 16: on the 15 oriented captions x seeds, SJC and SDS with and without
view-dependent prompts, with Perp-Neg, and across guidance weights; then the Janus score of every run and the
report (janus_report.py). One `sjc bench` per setting (every one the toy preset plus its overrides), run
`--jobs` at a time (round robin over `--gpus`), each followed by the Janus scoring of its runs; a setting whose
runs already finished is skipped by `sjc bench` itself, so an interrupted experiment resumes.

Settings: `plain wW` (prompt.view_dependent=false) and `view wW` (true) for each W of --weights, and
`view perp-neg wW` (guidance.cfg=perp_neg, which needs view prompts) for each W of --perp-neg-weights.

  python eval/bench/janus_experiment.py --out runs/janus --report eval/reports/janus \
      [--seeds 0,1,2] [--weights 1.5,3,7.5] [--perp-neg-weights 3] [--jobs 7] [--gpus 0] [--dry-run]
  # the CPU check (tiny runs, minutes):
  python eval/bench/janus_experiment.py --out /tmp/janus --report /tmp/janus/report --limit 2 --seeds 0 \
      --weights 3 --device cpu --set steps=20 --set field.grid_size=16 --set render.step=0.08 --eval fit=false
"""
import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROMPTS = "eval/prompts/toy_oriented_captions.txt"
BENCH_ARGS = ("--executor", "local", "--max-batch", "90", "--mlflow-uri", "none",
              "--set", "output.turntable_frames=0")
HERE = Path(__file__).resolve().parent


def settings(weights: list[float], perp_weights: list[float]) -> list[tuple[str, list[str]]]:
    """(folder name, --set overrides) of every setting."""
    out = []
    for vd in ("plain", "view"):
        out += [(f"{vd}-w{w:g}", [f"prompt.view_dependent={'true' if vd == 'view' else 'false'}",
                                  f"guidance.weight={w:g}"]) for w in weights]
    out += [(f"view-perpneg-w{w:g}", ["prompt.view_dependent=true", "guidance.cfg=perp_neg", f"guidance.weight={w:g}"])
            for w in perp_weights]
    return out


def bench_command(a, name: str, sets: list[str]) -> list[str]:
    """The `sjc bench` command line of one setting."""
    cmd = [sys.executable, "-m", "sjc_dist.cli", "bench", a.prompts, "--methods", a.methods, "--seeds", a.seeds,
           "--out", str(a.out / name), *BENCH_ARGS]
    if a.limit:
        cmd += ["--limit", str(a.limit)]
    for s in [f"model.device={a.device}", *sets, *a.sets]:
        cmd += ["--set", s]
    for e in a.evals:
        cmd += ["--eval", e]
    return cmd


def collect_command(a, name: str) -> list[str]:
    return [sys.executable, str(HERE / "janus_report.py"), "--collect", str(a.out / name), "--device", a.device]


def run_setting(a, index: int, name: str, sets: list[str]) -> tuple[str, int, float]:
    """Bench then score one setting, logging to OUT/<name>.log; returns (name, exit status, seconds)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, a.jobs))))  # no oversubscription
    if a.gpus:
        env["CUDA_VISIBLE_DEVICES"] = a.gpus.split(",")[index % len(a.gpus.split(","))]
    t0 = time.time()
    print(f"{name}: started, log {a.out / f'{name}.log'}", flush=True)
    with open(a.out / f"{name}.log", "w") as log:
        rc = subprocess.call(bench_command(a, name, sets), stdout=log, stderr=subprocess.STDOUT, env=env)
        print(f"{name}: bench exit {rc} after {time.time() - t0:.0f}s; scoring", flush=True)
        if rc == 0:
            rc = subprocess.call(collect_command(a, name), stdout=log, stderr=subprocess.STDOUT, env=env)
    print(f"{name}: exit {rc} after {time.time() - t0:.0f}s", flush=True)
    return name, rc, time.time() - t0


def parse(argv: list[str] | None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="experiment folder: one benchmark folder per setting")
    p.add_argument("--report", type=Path, default=None, help="report folder (default OUT/report)")
    p.add_argument("--prompts", default=PROMPTS)
    p.add_argument("--methods", default="sjc,sds")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--weights", default="1.5,3,7.5", help="CFG weights, with and without view prompts")
    p.add_argument("--perp-neg-weights", default="3", help="CFG weights of the Perp-Neg settings ('' for none)")
    p.add_argument("--only", default="", help="comma-separated setting names to run (default all)")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--device", default="cuda")
    p.add_argument("--gpus", default="", help="comma-separated GPU ids, given round robin to the settings")
    p.add_argument("--jobs", type=int, default=1, help="settings run at once")
    p.add_argument("--set", dest="sets", action="append", default=[], help="more overrides for every setting")
    p.add_argument("--eval", dest="evals", action="append", default=[], help="sjc bench --eval KEY=VALUE")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    a = p.parse_args(argv)
    a.report = a.report or a.out / "report"
    return a


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    todo = settings(floats(a.weights), floats(a.perp_neg_weights))
    if a.only:
        todo = [s for s in todo if s[0] in a.only.split(",")]
    report = [sys.executable, str(HERE / "janus_report.py"), str(a.out), "--out", str(a.report)]
    if a.dry_run:
        for name, sets in todo:
            print(" ".join(bench_command(a, name, sets)) + " && " + " ".join(collect_command(a, name)))
        print(" ".join(report))
        return 0
    a.out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        results = list(pool.map(lambda x: run_setting(a, x[0], *x[1]), enumerate(todo)))
    failed = [name for name, rc, _ in results if rc != 0]
    if failed:
        print(f"failed settings (see OUT/<name>.log): {', '.join(failed)}", flush=True)
    rc = subprocess.call(report)
    return 1 if failed or rc else 0


if __name__ == "__main__":
    raise SystemExit(main())
