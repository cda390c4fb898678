"""`sjc bench` and `sjc evaluate` at scale: generation and evaluation fanned out over Ray (or run in-process),
the results written as a Parquet table, the report built, and everything logged to MLflow.

Generation: one Ray task per group of jobs that share a model (evaluation.benchmark.batch_groups); inside a
task the group steps together in a SceneBatch. Evaluation: the finished run folders cut into one chunk per CPU,
one task per chunk, each loading its judges once. Tasks take 1 CPU (and `gpus_per_task` GPUs). The driver only
plans, collects and writes. MLflow (mlflow_uri.py): `mlflow_uri`, else $MLFLOW_TRACKING_URI, else a SQLite store
in the out folder (artifacts beside it); one run per benchmark with its settings as params, the report's
headline numbers as metrics, and the report folder and Parquet table as artifacts. `mlflow_uri="none"`, or a
machine without mlflow, logs nothing and changes nothing else. This is the only module of the benchmark that
imports Ray, MLflow or pandas.
"""
import dataclasses
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SJCError
from ..evaluation.batch_runs import PROGRESS_EVERY_S, RunOutcome, run_group
from ..evaluation.benchmark import BenchJob, batch_groups, plan_jobs
from ..evaluation.evaluate import EvalConfig, evaluate_runs
from ..evaluation.judges import JudgeNotFoundError, check_available, load_judge, parse_judges
from ..evaluation.report import Report, ReportMeta, build_report
from ..evaluation.truth import is_toy_caption
from .mlflow_uri import resolve_uri

EXPERIMENT = "sjc-bench"


class BenchFailed(SJCError):
    """No run of the benchmark could be evaluated."""


@dataclass(frozen=True)
class BenchSpec:
    """Everything one benchmark needs; `prompts` already loaded from `prompts_source`."""

    prompts_source: str
    prompts: tuple[str, ...]
    methods: tuple[str, ...] = ("sjc", "sds")
    seeds: tuple[int, ...] = (0,)
    preset: str = "toy"
    sets: tuple[str, ...] = ()
    method_sets: tuple[str, ...] = ()  # 'METHOD:KEY=VALUE' (--set-for)
    out: str = "bench"
    judges: str = "toy"
    eval_cfg: EvalConfig = EvalConfig()
    executor: str = "ray"
    num_cpus: int | None = None
    gpus_per_task: float = 0.0
    max_batch: int = 8
    command: str = ""
    mlflow_uri: str | None = None  # None: $MLFLOW_TRACKING_URI or out/mlflow.db; "none": no tracking


@dataclass
class BenchResult:
    """Where everything went, and how long each phase took (seconds)."""

    out: Path
    parquet: Path
    report: Report
    mlflow_run_id: str
    tracking_uri: str
    outcomes: list[RunOutcome]
    timings: dict[str, float] = field(default_factory=dict)
    note: str = ""


# --- task bodies (plain functions: run in-process or as Ray tasks) ----------------------------------------
def generate_group(jobs: list[BenchJob]) -> list[RunOutcome]:
    """Run one group; an error (a model that fails to load, out of memory, ...) fails this group only."""
    try:
        return run_group(jobs)
    except Exception as err:  # noqa: BLE001 - reported per run in the report, the benchmark goes on
        return [RunOutcome(j.run_dir, "failed", 0.0, f"{type(err).__name__}: {err}") for j in jobs]


def evaluate_chunk(run_dirs: list[str], judges: str, prompts: list[str], cfg: EvalConfig) -> tuple[list, list]:
    """Rows (dicts) of a chunk of runs, and warnings (e.g. a missing toy CLIP for the ground-truth accuracy)."""
    specs = parse_judges(judges)
    loaded = [load_judge(s, _device(cfg)) for s in specs]
    notes: list[str] = []
    toy = next((j for j in loaded if j.spec.kind == "toy"), None)
    if toy is None and any(is_toy_caption(p) for p in prompts):
        try:
            toy = load_judge("toy", _device(cfg))
        except JudgeNotFoundError as err:
            notes.append(f"toy_r1 (toy-CLIP accuracy over the 25 captions) not computed: {err}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the same-tower warning is carried in the rows and the report
        rows = evaluate_runs(run_dirs, loaded, prompts, cfg, toy, progress=ScoringProgress())
    return [dataclasses.asdict(r) for r in rows], notes


class ScoringProgress:
    """A stderr line at most every PROGRESS_EVERY_S while a chunk of runs is scored, and one at its end."""

    def __init__(self):
        self.t0 = self.shown = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.shown >= PROGRESS_EVERY_S:
            print(f"sjc bench: scored {done}/{total} runs of this chunk in {now - self.t0:.0f} s", file=sys.stderr,
                  flush=True)
            self.shown = now


def _device(cfg: EvalConfig) -> str:
    from ..diffusion.load import resolve_device

    return str(resolve_device(cfg.device))


# --- executors --------------------------------------------------------------------------------------------
class LocalExecutor:
    """Runs the tasks one after another in this process."""

    def map(self, fn, arg_lists: list[tuple]) -> list:
        return [fn(*args) for args in arg_lists]

    def close(self) -> None:
        pass

    @property
    def workers(self) -> int:
        return 1


class RayExecutor:
    """Runs each task as a Ray task (1 CPU, `gpus` GPUs); starts a local Ray if none is running."""

    def __init__(self, num_cpus: int | None, gpus: float):
        import ray

        self.started = not ray.is_initialized()
        if self.started:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        self.gpus, self.ray = gpus, ray

    def map(self, fn, arg_lists: list[tuple]) -> list:
        remote = self.ray.remote(num_cpus=1, num_gpus=self.gpus, max_retries=0)(fn)
        return self.ray.get([remote.remote(*args) for args in arg_lists])

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()

    @property
    def workers(self) -> int:
        """How many tasks can run at once: by GPUs when tasks take GPUs, else by CPUs."""
        res = self.ray.cluster_resources()
        if self.gpus > 0:
            return max(1, int(res.get("GPU", 0) / self.gpus))
        return max(1, int(res.get("CPU", 1)))


def make_executor(kind: str, num_cpus: int | None, gpus: float):
    from ..errors import ConfigError

    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(num_cpus, gpus)
    raise ConfigError("executor", kind, "'ray' or 'local'")


def chunks(items: list, n: int) -> list[list]:
    """items cut into at most n contiguous, nearly equal, non-empty chunks."""
    n = max(1, min(n, len(items)))
    size = math.ceil(len(items) / n) if items else 1
    return [items[i:i + size] for i in range(0, len(items), size)]


def check_judges(judges: str) -> None:
    """Fail on a bad or missing judge in the driver, before any compute (and not deep inside a Ray task)."""
    for spec in parse_judges(judges):
        check_available(spec)


def evaluate_dirs(executor, run_dirs: list[str], judges: str, prompts: list[str] | None,
                  cfg: EvalConfig) -> tuple[list[dict], list[str]]:
    """Evaluate run folders over the executor's workers; rows in run order, and the tasks' warnings."""
    check_judges(judges)
    if prompts is None:  # the runs' own prompts, in order
        import json

        prompts = list(dict.fromkeys(json.loads((Path(d) / "config.json").read_text())["prompt"]["text"]
                                     for d in run_dirs))
    parts = executor.map(evaluate_chunk, [(c, judges, list(prompts), cfg) for c in chunks(run_dirs,
                                                                                         executor.workers)])
    rows = [r for part_rows, _ in parts for r in part_rows]
    notes = list(dict.fromkeys([n for _, part_notes in parts for n in part_notes] +
                               [r["warning"] for r in rows if r["warning"]]))
    return rows, notes


# --- outputs ----------------------------------------------------------------------------------------------
def write_parquet(rows: list[dict], path: Path) -> Path:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def log_to_mlflow(uri: str, out: Path, params: dict, metrics: dict[str, float], report_dir: Path, parquet: Path,
                  run_name: str) -> str:
    """One MLflow run: params, the report's metrics, the report folder and the table as artifacts."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        exp_id = exp.experiment_id
    else:
        location = None if os.environ.get("MLFLOW_TRACKING_URI") else (out / "mlartifacts").resolve().as_uri()
        exp_id = client.create_experiment(EXPERIMENT, artifact_location=location)
    run = client.create_run(exp_id, run_name=run_name, tags={"sjc.kind": "bench"})
    now = int(time.time() * 1000)
    plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
    mlist = [Metric(k, float(v), now, 0) for k, v in metrics.items()]
    for i in range(0, max(len(plist), len(mlist)), 100):
        client.log_batch(run.info.run_id, metrics=mlist[i:i + 100], params=plist[i:i + 100])
    client.log_artifacts(run.info.run_id, str(report_dir), "report")
    client.log_artifact(run.info.run_id, str(parquet))
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def bench_params(spec: BenchSpec, n_jobs: int) -> dict:
    evals = {f"eval.{k}": v for k, v in dataclasses.asdict(spec.eval_cfg).items()}
    return {"prompts": spec.prompts_source, "n_prompts": len(spec.prompts), "methods": ",".join(spec.methods),
            "seeds": ",".join(map(str, spec.seeds)), "preset": spec.preset, "sets": " ".join(spec.sets) or "-",
            "sets_for": " ".join(spec.method_sets) or "-",
            "judges": spec.judges, "objects": n_jobs, **evals, "executor": spec.executor,
            "command": spec.command or "-"}


def failure_notes(outcomes: list[RunOutcome]) -> list[str]:
    return [f"run {o.run_dir} {o.status}: {o.error}" for o in outcomes if o.status not in ("ok", "skipped")]


def run_benchmark(spec: BenchSpec) -> BenchResult:
    """Plan, generate (batched, on Ray), evaluate, write Parquet + report, log to MLflow."""
    out = Path(spec.out).resolve()
    resolve_uri(spec.mlflow_uri, out)  # a URI that cannot be used fails here, before any compute
    jobs = plan_jobs(list(spec.prompts), list(spec.methods), list(spec.seeds), out, spec.preset, spec.sets,
                     spec.method_sets)
    check_judges(spec.judges)
    start = time.perf_counter()
    executor = make_executor(spec.executor, spec.num_cpus, spec.gpus_per_task)
    timings, t0 = {"start_s": time.perf_counter() - start}, time.perf_counter()
    try:
        # scenes per task: up to max_batch, fewer when that keeps every worker busy
        size = max(1, min(spec.max_batch, math.ceil(len(jobs) / executor.workers)))
        groups = batch_groups(jobs, size)
        print(f"sjc bench: generating {len(jobs)} runs in {len(groups)} batch(es) of up to {size} scenes",
              file=sys.stderr, flush=True)
        outcomes = [o for part in executor.map(generate_group, [(g,) for g in groups]) for o in part]
        timings["generate_s"], t1 = time.perf_counter() - t0, time.perf_counter()
        done = [o.run_dir for o in outcomes if o.status in ("ok", "skipped")]
        print(f"sjc bench: {len(done)} runs done in {timings['generate_s']:.0f} s; scoring them", file=sys.stderr,
              flush=True)
        rows, notes = evaluate_dirs(executor, done, spec.judges, list(spec.prompts), spec.eval_cfg)
        timings["evaluate_s"] = time.perf_counter() - t1
    finally:
        executor.close()
    if not rows:
        raise BenchFailed("no run finished, nothing to evaluate: " + "; ".join(failure_notes(outcomes)[:3]))
    t2 = time.perf_counter()
    parquet = write_parquet(rows, out / "results.parquet")
    params = bench_params(spec, len(jobs))
    warn = list(dict.fromkeys(notes + failure_notes(outcomes)))
    meta = ReportMeta(command=spec.command, settings={k: str(v) for k, v in params.items()}, warnings=warn)
    report = build_report(rows, out / "report", meta)
    timings["report_s"] = time.perf_counter() - t2
    uri, note = resolve_uri(spec.mlflow_uri, out)
    metrics = {**report.metrics, **{f"time/{k}": v for k, v in timings.items()}}
    run_id = log_to_mlflow(uri, out, params, metrics, report.html.parent, parquet,
                           f"bench-{Path(spec.prompts_source).stem}") if uri else ""
    return BenchResult(out, parquet, report, run_id, uri, outcomes, timings, note)
