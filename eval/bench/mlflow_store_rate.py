"""Issue 18: the MLflow tracker alone against a tracking store, without Ray or Tune: the callbacks a sweep's
driver makes for N one-report trials (on_trial_start, on_trial_result, on_trial_complete with two artifacts;
the params of tune_configs/load_control_plane.yaml), fed to `SweepTracker` as the sweep would, then `finish`.
Measured: the time the callbacks hold the caller (Tune's loop) per trial, the wall until everything is in the
store, store calls per trial, and MLflow rows written per second.

`--compare-with ROOT` runs the same again with the `sjc_dist` found in ROOT (e.g. a checkout of main, the
tracker before issue 18: one synchronous store call per write), in a subprocess, so both lie in one table; on
SQLite, this tree is also measured with MLflow's default rollback journal (tracking.sqlite_wal switched off).

  python eval/bench/mlflow_store_rate.py --out OUT --trials 300 --uri sqlite          # a new SQLite file
  python eval/bench/mlflow_store_rate.py --out OUT --uri postgresql://postgres@127.0.0.1:PORT/mlflow \\
      --compare-with /tmp/main_checkout
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import Report, fmt, now_utc, python_env, table
from control_probes import db_rows

SPEC = Path(__file__).resolve().parents[2] / "tune_configs" / "load_control_plane.yaml"
WEIGHTS = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.5]
CALLS = ("create_run", "log_batch", "log_metric", "log_param", "set_tag", "log_artifact", "log_artifacts",
         "set_terminated", "search_runs", "get_run", "get_experiment_by_name")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--trials", type=int, default=300)
    p.add_argument("--uri", default="sqlite", help="'sqlite' (a new file in OUT) or a tracking URI")
    p.add_argument("--compare-with", default="", help="a folder holding an older sjc_dist to measure as well")
    p.add_argument("--label", default="this tree", help="this measurement's name in the table")
    p.add_argument("--one", action="store_true", help="(internal) measure once, print the JSON, no report")
    return p.parse_args(argv)


def count_calls(client) -> dict[str, list]:
    """Wrap the client's store methods so each call is counted and timed: name -> [calls, seconds]."""
    counts: dict[str, list] = {}
    for name in CALLS:
        original = getattr(client, name)

        def counted(*a, _name=name, _fn=original, **k):
            start = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                entry = counts.setdefault(_name, [0, 0.0])
                entry[0], entry[1] = entry[0] + 1, entry[1] + time.perf_counter() - start

        setattr(client, name, counted)
    return counts


def fake_trial(i: int, files: list[Path], done: bool = False):
    """A Tune trial as the callbacks see it: id, config, and (once done) a last result naming artifacts."""
    last = {"sjc_status": "ok", "score": 0.5, "artifact/views": str(files[0]), "artifact/config": str(files[1])}
    return SimpleNamespace(trial_id=f"t{i:05d}", config={"params": {"guidance.weight": WEIGHTS[i % 8]}},
                           last_result=last if done else {}, error_file=None, error_msg="")


def result(i: int) -> dict:
    """One report of a 2-step trial (the numbers a trial of the load test reports)."""
    return {"sjc_step": 2, "score": 0.1 * (i % 7), "loss": 1.0, "grad_norm": 0.3, "step_s": 0.01, "eval/iou": 0.2,
            "sjc_status": "ok", "lr": 0.05, "training_iteration": 1, "time_this_iter_s": 0.2}


def measure(uri: str, trials: int, out: Path) -> dict:
    """Feed `trials` trials' callbacks to a SweepTracker on `uri`; the timings, calls and rows."""
    import yaml

    from sjc_dist.distributed import tracking
    from sjc_dist.distributed.tracking import SweepTracker

    if os.environ.get("SJC_BENCH_NO_WAL") and hasattr(tracking, "sqlite_wal"):
        tracking.sqlite_wal = lambda uri: None  # the measurement of MLflow's default journal

    files = [out / "views.png", out / "config.json"]
    for f in files:
        f.write_bytes(b"x" * 3000)
    base = yaml.safe_load(SPEC.read_text())["base"]
    tracker = SweepTracker(uri, f"sjc/store-rate-{int(time.time())}", str(out / "sweep"), base)
    tracker.start_parent("store-rate", {"name": "store-rate"})
    before = db_rows(uri)  # a shared server holds earlier runs' rows too
    counts, held, start, cpu = count_calls(tracker.client), [], time.perf_counter(), time.process_time()
    for i in range(trials):
        t = time.perf_counter()
        tracker.on_trial_start(i, [], fake_trial(i, files))
        tracker.on_trial_result(i, [], fake_trial(i, files), result(i))
        tracker.on_trial_complete(i, [], fake_trial(i, files, done=True))
        held.append(time.perf_counter() - t)
    posted = time.perf_counter() - start
    tracker.on_experiment_end([])
    tracker.finish([], {"best/score": 0.6}, "FINISHED")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu  # cpu: every thread of this process
    rows = {k: v - before.get(k, 0) for k, v in db_rows(uri).items()}
    total = sum(v for k, v in rows.items() if k != "latest_metrics")
    return {"trials": trials, "held_ms_per_trial": 1e3 * sum(held) / trials,
            "held_ms_p50": 1e3 * sorted(held)[trials // 2], "held_ms_first": 1e3 * held[0], "posted_s": posted,
            "wall_s": wall, "trials_per_s": trials / wall, "cpu_ms_per_trial": 1e3 * cpu / trials,
            "calls_per_trial": sum(c for c, _ in counts.values()) / trials, "calls": counts,
            "rows": rows, "rows_per_s": total / wall, "rows_per_trial": total / trials}


def run_other(root: str, args, out: Path, env_extra: dict | None = None) -> dict:
    """The same measurement with the sjc_dist under `root`, in a subprocess."""
    env = {**os.environ, "PYTHONPATH": root, **(env_extra or {})}
    cmd = [sys.executable, __file__, "--out", str(out), "--trials", str(args.trials), "--uri", args.uri, "--one"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        return {"error": done.stderr[-1500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def store_uri(choice: str, out: Path) -> str:
    return f"sqlite:///{out / 'mlflow.db'}" if choice == "sqlite" else choice


def markdown(data: dict) -> str:
    lines = [f"# {data['title']}", "", f"{data['date']}; `{data['command']}`", "",
             f"store: {data.get('store')}; trials: {data.get('trials')}", ""]
    rows = [[name, fmt(m.get("held_ms_per_trial")), fmt(m.get("held_ms_p50")), fmt(m.get("trials_per_s")),
             fmt(m.get("cpu_ms_per_trial"), ".0f"), fmt(m.get("calls_per_trial"), ".1f"),
             fmt(m.get("rows_per_trial"), ".0f"), fmt(m.get("rows_per_s"), ".0f"), fmt(m.get("wall_s"), ".1f")]
            if "error" not in m else [name, m["error"][-200:], *[""] * 7]
            for name, m in data.get("runs", {}).items()]
    lines += table(["tracker", "Tune loop held, ms / trial", "p50 ms", "trials / s into the store",
                    "driver CPU ms / trial", "store calls / trial",
                    "rows / trial", "rows / s", "wall s"], rows, "lrrrrrrrr")
    return "\n".join(lines + [f"- {n}" for n in data.get("notes", [])]) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(measure(store_uri(args.uri, out), args.trials, out)))
        return 0
    report = Report(out, {"title": "MLflow tracker against one store (issue 18)", "date": now_utc(),
                          "env": python_env(), "command": " ".join(sys.argv), "trials": args.trials,
                          "store": args.uri.split("@")[-1], "runs": {}}, markdown)
    here = str(Path(__file__).resolve().parents[2])
    runs = [(args.label, here, {})]
    if args.uri == "sqlite":
        runs.append((f"{args.label}, MLflow's default journal (no WAL)", here, {"SJC_BENCH_NO_WAL": "1"}))
    if args.compare_with:
        runs.append((f"sjc_dist of {args.compare_with}", args.compare_with, {}))
    for name, root, env in runs:
        sub = out / f"run{len(report.data['runs'])}"
        sub.mkdir(exist_ok=True)
        report.data["runs"][name] = run_other(root, args, sub, env)
        report.write()
    print(report.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
