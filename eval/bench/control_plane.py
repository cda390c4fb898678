"""Issue 18: a control-plane load test. A sweep of thousands of trials that cost almost nothing
(tune_configs/load_control_plane.yaml: the empirical model, 2 steps on 8^3 voxels, no evaluation) through the
project's own `run_sweep`, in this process, so that the driver can be watched while it runs:

  - trial completions per second over time (from the ledger's callback), and in the steady middle (the 10th to
    the 90th percentile of completion times);
  - the driver's CPU (all its threads) and memory (RSS, USS) every `--sample-every` s, and the memory slope;
  - the time per Tune loop iteration (TuneController.step), per experiment-state snapshot (save_to_dir, with the
    state file's size), in the MLflow tracker's callbacks and in Tune's CSV/JSON loggers (control_probes.py);
  - MLflow rows written (runs, params, metrics, tags) per second of the sweep;
  - where the driver's time goes: a py-spy profile of this process (`--profile-seconds`, once
    `--profile-after` trials ended), summarised by function (`pip install py-spy` into the venv; skipped without it);
  - what bounds it: the driver's CPU share in the steady window, and the cluster size that rate feeds
    (72 ten-thousand-step trials per GPU-hour: 0.02 trials/s per GPU).
`--budget-seconds` interrupts the sweep (SIGINT, as Ctrl+C; the rows say interrupted) and the report keeps the
rates measured up to there. OUT gets report.json and report.md (bench_report.Report); the sweep folder goes to
OUT/sweep (`--keep-sweep`; deleted otherwise, it holds thousands of run folders).

  python eval/bench/control_plane.py --out OUT                                  # 2,000 trials, SQLite
  python eval/bench/control_plane.py --out OUT --mlflow none                    # tracking off
  python eval/bench/control_plane.py --out OUT --mlflow postgresql://USER@127.0.0.1:PORT/DB
  python eval/bench/control_plane.py --out OUT --trials 200 --budget-seconds 300   # a shorter look
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import Report, now_utc, python_env
from control_probes import Profile, Sampler, Timers, db_rows, install
from control_report import analyse, markdown
from sweep_control import Alarm

SPEC = Path(__file__).resolve().parents[2] / "tune_configs" / "load_control_plane.yaml"
GRID = 8  # values of the spec's one swept key


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--trials", type=int, default=2000, help="trials (rounded up to a multiple of 8)")
    p.add_argument("--mlflow", default="sqlite", help="'sqlite' (the default store in the sweep folder), 'none', "
                                                      "or a tracking URI (postgresql://...)")
    p.add_argument("--workers", type=int, default=2, help="CPU SceneWorkers")
    p.add_argument("--slots", type=int, default=8, help="slots per worker")
    p.add_argument("--concurrent", type=int, default=0, help="trials at once (default workers x slots)")
    p.add_argument("--steps", type=int, default=2, help="steps per trial")
    p.add_argument("--report-every", type=int, default=0, help="steps per Tune iteration (default: --steps)")
    p.add_argument("--num-cpus", type=int, default=8, help="logical CPUs of the local Ray")
    p.add_argument("--budget-seconds", type=float, default=3000.0, help="interrupt the sweep after this")
    p.add_argument("--sample-every", type=float, default=2.0, help="seconds between driver samples")
    p.add_argument("--profile-after", type=int, default=100, help="py-spy: start once this many trials ended")
    p.add_argument("--profile-seconds", type=int, default=60, help="py-spy: seconds recorded (0: no profile)")
    p.add_argument("--keep-sweep", action="store_true", help="keep OUT/sweep (thousands of run folders)")
    p.add_argument("--set", dest="sweep_sets", action="append", default=[], metavar="KEY=VALUE",
                   help="another sweep key, as sjc sweep --sweep-set")
    return p.parse_args(argv)


def load_spec(args):
    """The load-test spec with this run's size: trials, workers, slots, concurrency, steps."""
    from sjc_dist.distributed.spec import load_sweep

    every = args.report_every or args.steps
    sets = [f"num_samples={-(-args.trials // GRID)}", f"resources.workers={args.workers}",
            f"resources.slots_per_worker={args.slots}",
            f"max_concurrent={args.concurrent or args.workers * args.slots}",
            f"report_every={every}", *args.sweep_sets]
    return load_sweep(str(SPEC), [f"steps={args.steps}"], sets)


def mlflow_option(choice: str) -> str | None:
    """run_sweep's mlflow_uri: None = the default SQLite store in the sweep folder."""
    return None if choice == "sqlite" else choice


def run(args, report: Report) -> None:
    from sjc_dist.distributed.sweep import SweepOptions, run_sweep

    spec, out = load_spec(args), Path(args.out) / "sweep"
    if out.exists():
        shutil.rmtree(out)
    timers, before = Timers(), db_rows(args.mlflow) if "://" in args.mlflow else {}  # a shared server's old rows
    install(timers)
    opts = SweepOptions(out=str(out), mlflow_uri=mlflow_option(args.mlflow), num_cpus=args.num_cpus)
    report.data["setup"] = {"trials": len(spec.points()), "spec": spec.to_dict(), "options": vars(args)}
    report.write()
    sampler, profile = Sampler(timers, args.sample_every).start(), Profile(Path(args.out) / "pyspy_raw.txt")
    if args.profile_seconds:
        profile.start_when(lambda: sampler.ended() >= args.profile_after, args.profile_seconds)
    alarm, start, outcome = Alarm(args.budget_seconds), time.time(), None
    try:
        outcome = run_sweep(spec, opts)
    except KeyboardInterrupt:
        report.note("interrupted before run_sweep returned")
    finally:
        alarm.cancel()
        sampler.stop()
    report.data["mlflow_rows_before"] = before
    record(report, args, outcome, timers, sampler, profile, time.time() - start, alarm.fired)
    if not args.keep_sweep:
        shutil.rmtree(out, ignore_errors=True)


def record(report: Report, args, outcome, timers, sampler, profile, wall: float, interrupted: bool) -> None:
    """Everything measured, into the report."""
    uri = outcome.mlflow_uri if outcome is not None else ""
    statuses: dict[str, int] = {}
    for r in outcome.rows if outcome else []:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    before = report.data.get("mlflow_rows_before", {})
    rows = {k: v - before.get(k, 0) for k, v in db_rows(uri).items()}  # this sweep's rows only
    state = sorted((Path(args.out) / "sweep" / "tune").glob("experiment_state-*.json"))
    report.data.update({
        "wall_s": wall, "interrupted_by_budget": interrupted, "statuses": statuses, "mlflow_uri": uri,
        "mlflow_rows": rows, "timers": timers.summary(), "samples": sampler.rows,
        "snapshots_at": timers.events.get("tune.experiment_state snapshot", []), "t0": sampler.t0,
        "ended_at": sorted(timers.events.get("ledger.on_trial_complete", []) + timers.events.get(
            "ledger.on_trial_error", [])),
        "state_file_bytes": state[-1].stat().st_size if state else None,
        "workers": [{k: w.get(k) for k in ("name", "loads", "rounds", "scene_steps", "mean_batch", "dead")}
                    for w in (outcome.workers if outcome else [])],
        "profile": profile.finish()})
    report.data["analysis"] = analyse(report.data)
    report.write()


def main(argv=None) -> int:
    from sjc_dist.distributed.sweep import prepare_env

    prepare_env(None)  # before anything imports Ray (python_env, the probes): a local Ray on loopback only
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out, {"title": "control-plane load test (issue 18)", "date": now_utc(), "env": python_env(),
                          "command": " ".join(sys.argv)}, markdown)
    run(args, report)
    print(report.markdown())
    print(json.dumps({"report": str(out / "report.md")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
