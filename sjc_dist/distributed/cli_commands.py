"""`sjc sweep` and `sjc results`, added to the `sjc` parser by sjc_dist/commands.py. Parse and dispatch only.

  sjc sweep tune_configs/toy_quick.yaml              run a sweep on a local Ray (or --address for a cluster)
  sjc sweep --resume runs/sweeps/toy_quick           continue an interrupted sweep from its folder
  sjc results runs/sweeps/toy_quick [--top 10]       print the ranking and write metric-vs-parameter plots
Ray, MLflow and pandas are imported only when a handler runs, never when the parser is built.
"""
import argparse
import json
import sys
from pathlib import Path

SWEEP_HELP = """Run a Ray Tune sweep of SJC runs on a local Ray (or a cluster with --address).

  sjc sweep tune_configs/toy_quick.yaml        # -> runs/sweeps/toy_quick/: results.parquet, ranking.txt, mlflow.db
  sjc sweep --resume runs/sweeps/toy_quick     # continue an interrupted sweep from its checkpoints
  sjc results runs/sweeps/toy_quick            # the ranking again, plus metric-vs-parameter plots

A sweep YAML has base (a preset or a partial run config), space (dotted --set keys -> choice | grid | uniform |
loguniform | randint), constraints, search{kind: grid|random|optuna}, scheduler{kind: fifo|asha, metric, mode,
grace_period}, num_samples, max_concurrent, report_every, resources{workers, cpus_per_worker, gpus_per_worker,
slots_per_worker}. It is validated before Ray starts. See sjc_dist/distributed/README.md."""


def register(subparsers) -> None:
    """Add `sweep` and `results` to the `sjc` subcommands."""
    _sweep_parser(subparsers)
    _results_parser(subparsers)


def _sweep_parser(sub) -> None:
    p = sub.add_parser("sweep", help="run a Ray Tune sweep of SJC runs (tune_configs/*.yaml)",
                       description=SWEEP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", nargs="?", help="sweep YAML (tune_configs/NAME.yaml), or a sweep folder with --resume")
    p.add_argument("--out", help="sweep folder (default runs/sweeps/<name>)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base run-config field for every trial, e.g. --set model.name=empirical")
    p.add_argument("--sweep-set", dest="sweep_sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep key, e.g. --sweep-set num_samples=64 --sweep-set scheduler.grace_period=5")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="SWEEP_DIR",
                   help="continue an interrupted sweep (its folder, or the spec's default folder)")
    p.add_argument("--address", help="Ray cluster address ('auto', HOST:PORT, ray://HOST:10001); default: local")
    p.add_argument("--storage", help="Tune storage: a shared path or URI (s3://, gs://) for cluster runs")
    p.add_argument("--mlflow-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else a SQLite store "
                                        "in the sweep folder); 'none': no tracking (also the default where mlflow "
                                        "is not installed)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--pool", help="name a worker pool shared by sweeps (workers found alive are reused)")
    p.add_argument("--keep-workers", action="store_true", help="leave the workers (and their loaded models) "
                                                               "running after the sweep, for the next --pool sweep")
    p.add_argument("--dry-run", action="store_true", help="validate the spec, print the trial configs and stop")
    p.set_defaults(handler=sweep_command)


def _results_parser(sub) -> None:
    p = sub.add_parser("results", help="rank a sweep's trials and plot metric vs each swept parameter")
    p.add_argument("path", help="results.parquet, or a sweep folder that has one")
    p.add_argument("--top", type=int, default=10, help="trials to print (default 10)")
    p.add_argument("--metric", help="rank by this metric (default: the sweep's rank metric)")
    p.add_argument("--mode", choices=("max", "min"), help="max or min is better (default: the sweep's)")
    p.add_argument("--plots", help="folder for the PNG plots (default: <sweep folder>/plots)")
    p.add_argument("--average-over", action="append", default=[], metavar="KEY",
                   help="also rank settings by the metric averaged over this swept key's values (e.g. "
                        "prompt.text, seed); repeatable")
    p.add_argument("--per", metavar="KEY", help="with --average-over: the best settings for each value of this "
                                                "swept key (e.g. guidance.kind)")
    p.add_argument("--validate", action="store_true",
                   help="toy-world sweeps: how well each ranking signal (CLIP, denoiser fit) agrees with the ground "
                        "truth (within-prompt Spearman, selection regret); writes validation.md/.json/.png")
    p.set_defaults(handler=results_command)


def sweep_command(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .spec import load_sweep
    from .summary import headline
    from .sweep import SweepOptions, load_for_resume, run_sweep

    if isinstance(args.resume, str) or (args.resume and args.spec and Path(args.spec).is_dir()):
        folder = args.resume if isinstance(args.resume, str) else args.spec
        spec, saved = load_for_resume(folder)
        opts = SweepOptions(**{**saved, "out": str(folder), **_given(args)})
    else:
        if not args.spec:
            raise ConfigError("spec", None, "a sweep YAML file (tune_configs/NAME.yaml) or --resume SWEEP_DIR")
        spec = load_sweep(args.spec, args.sets, args.sweep_sets)
        opts = SweepOptions(out=args.out or f"runs/sweeps/{spec.settings.name}", **_given(args))
    if args.dry_run:
        return _dry_run(spec)
    outcome = run_sweep(spec, opts, resume=bool(args.resume))
    print("\n" + headline(outcome))
    if outcome.interrupted:
        print(f"sweep interrupted: continue it with  sjc sweep --resume {outcome.sweep_dir}", file=sys.stderr)
    print(json.dumps({"sweep_dir": str(outcome.sweep_dir), "results": str(outcome.table),
                      "best_dir": outcome.summary.get("best_dir", ""), "mlflow_uri": outcome.mlflow_uri,
                      "parent_run_id": outcome.parent_run_id, "runs_url": outcome.runs_url}))
    return 0


def _given(args: argparse.Namespace) -> dict:
    keys = {"address": args.address, "storage": args.storage, "mlflow_uri": args.mlflow_uri,
            "num_cpus": args.num_cpus, "pool": args.pool, "keep_workers": args.keep_workers or None}
    return {k: v for k, v in keys.items() if v is not None}


def _dry_run(spec) -> int:
    points = spec.points()
    s = spec.settings
    print(f"sweep '{s.name}': search {s.search.kind}, scheduler {s.scheduler.kind} on {s.scheduler.metric} "
          f"({s.scheduler.mode}), {spec.n_trials()} trial(s), every trial config validated")
    for i, p in enumerate(points):
        print(f"  trial {i}: {json.dumps(p)}")
    return 0


def results_command(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .results import plot_metric, rank, read_table, top_table

    if args.per and not args.average_over:
        raise ConfigError("--per", args.per, "used together with --average-over")
    frame, meta = read_table(args.path)
    metric = args.metric or meta.get("metric", "score")
    mode = args.mode or meta.get("mode", "max")
    swept = meta.get("swept", [])
    ranked = rank(frame, metric, mode, "best_metric", meta.get("scheduler_mode", "max"))
    print(f"{len(frame)} trials ranked by {metric} ({mode}); status: "
          f"{ranked['status'].value_counts().to_dict()}")
    print(top_table(ranked, swept, metric, args.top))
    folder = Path(args.path) if Path(args.path).is_dir() else Path(args.path).parent
    plots = plot_metric(ranked, swept, metric, Path(args.plots) if args.plots else folder / "plots",
                        log_keys=meta.get("log_keys", ()))
    for p in plots:
        print(f"plot: {p}")
    if not plots:
        print("no plots: the table has no swept parameters", file=sys.stderr)
    if args.average_over:
        from .results import bench_set_for, best_settings, rank_settings

        table = rank_settings(ranked, swept, metric, mode, args.average_over, args.per)
        print(f"\nsettings ranked by the mean of {metric} over {', '.join(args.average_over)}"
              + (f", per {args.per}" if args.per else "") + ":")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        for name, sets in best_settings(table, args.per).items():
            print(f"best ({name}): {sets}")
        if args.per == "guidance.kind":
            print(f"sjc bench flags, each kind at its best: {bench_set_for(table)}")
    if args.validate:
        _validate(frame, Path(args.plots) if args.plots else folder, args.path)
    return 0


def _validate(frame, out: Path, path: str) -> None:
    from .validate import validate_sweep, validation_text

    results, files = validate_sweep(frame, out, f"sjc results {path} --validate")
    if not results:
        print("no validation: no finished trial has ground truth (toy-world captions only)", file=sys.stderr)
        return
    print("\nranking signals against the truth:")
    print(validation_text(results))
    print(f"validation: {files['markdown']}" + (f", {files['png']}" if "png" in files else ""))
