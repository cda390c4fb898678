"""`sjc evaluate` and `sjc bench`: parse, validate, dispatch (the work is in evaluation/ and distributed/bench.py).

  sjc evaluate RUN_DIR... [--judges toy,ViT-B-32:/path.pt] [--prompts FILE|toy|coco153] [--out DIR]
  sjc bench PROMPTS --methods sjc,sds --seeds 0,1,2 [--config PRESET] [--set KEY=VALUE] [--out DIR]
Both fan out over Ray with `--executor ray` (the default of bench) and import Ray/MLflow/pandas only when run.
"""
import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from ..configtools import from_dict, help_lines, set_dotted
from ..errors import ConfigError
from .evaluate import EvalConfig
from .prompts import SHIPPED


def eval_config(items: list[str]) -> EvalConfig:
    """`--eval key=value` items -> a validated EvalConfig."""
    data: dict = {}
    for item in items:
        data = set_dotted(data, item)
    return from_dict(EvalConfig, data, "eval.")


def _common(p: argparse.ArgumentParser, executor: str) -> None:
    p.add_argument("--judges", default="toy",
                   help="comma-separated CLIP judges: toy (default), ARCH:/path/ckpt.pt, ARCH:TAG (HF cache), "
                        "local-dir:/folder, hf-hub:org/repo (cached); nothing is downloaded")
    p.add_argument("--eval", dest="evals", action="append", default=[], metavar="KEY=VALUE",
                   help="evaluation setting (repeatable), e.g. --eval views=8 --eval elevation=15")
    p.add_argument("--executor", default=executor, choices=("ray", "local"),
                   help=f"fan out over Ray tasks or run in this process (default {executor})")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a locally started Ray (default: all)")
    p.add_argument("--gpus-per-task", type=float, default=None,
                   help="GPUs per Ray task (default: 1 if CUDA is available, else 0)")


def _eval_epilog() -> str:
    return "evaluation settings (--eval KEY=VALUE):\n" + "\n".join(help_lines(EvalConfig))


def register(sub) -> None:
    """Add `evaluate` and `bench` to the `sjc` parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    ev = sub.add_parser("evaluate", help="score saved runs with CLIP judges (and toy-world ground truth)",
                        formatter_class=fmt, epilog=_eval_epilog())
    ev.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders, or folders holding run folders")
    ev.add_argument("--prompts", default=None, help=f"prompts R-Precision ranks among: a file or {SHIPPED} "
                                                    "(default: the runs' own prompts)")
    ev.add_argument("--out", default=None, help="where eval.parquet and eval.md go (default evaluations/<time>)")
    _common(ev, "local")
    ev.set_defaults(handler=evaluate_command)
    b = sub.add_parser("bench", help="SJC vs SDS: prompts x methods x seeds, evaluated, with a report",
                       formatter_class=fmt, epilog=_eval_epilog())
    b.add_argument("prompts", metavar="PROMPTS", help=f"a prompt file (one a line) or a shipped set: {SHIPPED}")
    b.add_argument("--methods", default="sjc,sds", help="comma-separated: sjc (guidance.kind paas), sds "
                                                        "(default sjc,sds)")
    b.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2 (default 0)")
    b.add_argument("--config", default="toy", help="preset name or YAML file shared by every run (default toy)")
    b.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a run config field for every run (repeatable)")
    b.add_argument("--set-for", dest="method_sets", action="append", default=[], metavar="METHOD:KEY=VALUE",
                   help="override a field for one method's runs, after --set (repeatable), e.g. each method at its "
                        "best sweep setting: --set-for sds:guidance.weight=1.5")
    b.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    b.add_argument("--max-batch", type=int, default=8, help="at most this many scenes step together on one model (default 8; fewer when "
                        "that keeps every Ray CPU busy)")
    b.add_argument("--out", default=None, help="output folder (default bench/<time>)")
    b.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else "
                                                      "OUT/mlflow.db); 'none': no tracking")
    _common(b, "ray")
    b.set_defaults(handler=bench_command)


def _gpus(args) -> float:
    if args.gpus_per_task is not None:
        return args.gpus_per_task
    import torch

    return 1.0 if torch.cuda.is_available() else 0.0


def find_runs(paths: list[str]) -> list[str]:
    """Run folders (config.json + field.safetensors) named directly or found below the given folders."""
    found: list[str] = []
    for p in map(Path, paths):
        if (p / "field.safetensors").is_file() and (p / "config.json").is_file():
            found.append(str(p.resolve()))
        elif p.is_dir():
            found += sorted(str(f.parent.resolve()) for f in p.rglob("field.safetensors")
                            if (f.parent / "config.json").is_file())
        else:
            raise ConfigError("RUN_DIR", str(p), "an existing run folder or a folder holding run folders")
    if not found:
        raise ConfigError("RUN_DIR", " ".join(paths), "folders holding at least one finished 3D run")
    return list(dict.fromkeys(found))


def evaluate_command(args) -> int:
    from ..distributed.bench import evaluate_dirs, make_executor, write_parquet
    from .prompts import load_prompts
    from .report import rows_table, table_markdown

    runs = find_runs(args.run_dirs)
    prompts = load_prompts(args.prompts) if args.prompts else None
    cfg = eval_config(args.evals)
    out = Path(args.out or f"evaluations/{time.strftime('%Y%m%d-%H%M%S')}")
    executor = make_executor(args.executor, args.num_cpus, _gpus(args))
    try:
        rows, notes = evaluate_dirs(executor, runs, args.judges, prompts, cfg)
    finally:
        executor.close()
    for note in notes:
        print(f"sjc evaluate: warning: {note}", file=sys.stderr)
    parquet = write_parquet(rows, out / "eval.parquet")
    md = out / "eval.md"
    md.write_text("\n".join(f"> warning: {n}" for n in notes) + "\n" + table_markdown(rows_table(rows)))
    validation = write_rows_validation(rows, out, "sjc evaluate " + " ".join(args.run_dirs))
    print(json.dumps({"runs": len(runs), "rows": len(rows), "parquet": str(parquet), "markdown": str(md),
                      **({"validation": str(validation)} if validation else {})}))
    return 0


def write_rows_validation(rows: list[dict], out: Path, command: str) -> Path | None:
    """Where the evaluated runs have truth: every signal (per judge) against every truth metric, within prompts
    (validation.py), into out/validation.md (+ .json, .png); None without truth."""
    from .summary import object_records
    from .validation import validate, view_ceiling
    from .validation_report import TRUTHS, write_validation

    records, signals = object_records(rows)
    results = validate(records, signals, list(TRUTHS))
    if not results:
        return None
    title = f"Signal validation: {len(records)} runs over {len({r['prompt'] for r in records})} prompts"
    return write_validation(results, out, title, command, ceiling=view_ceiling(records))["markdown"]


def bench_command(args) -> int:
    from ..distributed.bench import BenchSpec, run_benchmark
    from .benchmark import parse_methods, parse_seeds
    from .prompts import load_prompts

    prompts = load_prompts(args.prompts)[:args.limit] if args.limit else load_prompts(args.prompts)
    spec = BenchSpec(prompts_source=args.prompts, prompts=tuple(prompts),
                     methods=tuple(parse_methods(args.methods)), seeds=tuple(parse_seeds(args.seeds)),
                     preset=args.config, sets=tuple(args.sets), method_sets=tuple(args.method_sets),
                     out=args.out or f"bench/{time.strftime('%Y%m%d-%H%M%S')}", judges=args.judges,
                     eval_cfg=eval_config(args.evals), executor=args.executor, num_cpus=args.num_cpus,
                     gpus_per_task=_gpus(args), max_batch=args.max_batch, command=bench_command_line(args),
                     mlflow_uri=args.mlflow_uri)
    res = run_benchmark(spec)
    print(json.dumps({"out": str(res.out), "parquet": str(res.parquet), "report": str(res.report.html),
                      "mlflow_run_id": res.mlflow_run_id, "tracking_uri": res.tracking_uri,
                      "objects": len(res.outcomes), "failed": sum(o.status not in ("ok", "skipped") for o in res.outcomes),
                      "timings_s": {k: round(v, 1) for k, v in res.timings.items()}}))
    if res.note:
        print(f"sjc bench: note: {res.note}", file=sys.stderr)
    return 0


def bench_command_line(args) -> str:
    """The canonical command that reproduces this benchmark (for the report)."""
    parts = ["sjc", "bench", args.prompts, "--methods", args.methods, "--seeds", args.seeds,
             "--config", args.config]
    parts += [x for s in args.sets for x in ("--set", s)]
    parts += [x for s in args.method_sets for x in ("--set-for", s)]
    parts += [x for e in args.evals for x in ("--eval", e)]
    parts += ["--judges", args.judges] + (["--limit", str(args.limit)] if args.limit else [])
    return shlex.join(parts)
