"""`run_sweep`: a validated SweepSpec -> Ray Tune experiment -> results table, MLflow runs and a ranking.

The driver: connects to Ray (a local instance, or `--address` for a cluster), starts the SceneWorker pool,
builds the Tuner (search: grid/random points drawn here, or OptunaSearch with a define-by-run space;
scheduler: FIFO or ASHA on `sjc_step`; checkpoints every `checkpoint_every` reports; `max_failures` retries for
trials whose worker died; trials reuse their Trainable processes), runs it, then writes `results.parquet`
(one ResultRow per trial), `summary.json` and the ranking, and closes the MLflow parent run.
Sweep folder: sweep.yaml (the resolved spec), tune/ (Tune's experiment state and checkpoints, unless
`--storage` puts it elsewhere), trials/<trial_id>/ (each run folder), mlflow.db + mlartifacts/ (the default
store), results.parquet, summary.json. `resume=True` continues an interrupted sweep with Tuner.restore.
"""
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..configtools import to_dict
from ..errors import SJCError
from .spec import SweepSpec, load_sweep

TUNE_NAME = "tune"
SPEC_FILE = "sweep.yaml"


@dataclass(frozen=True)
class SweepOptions:
    """Where and how a sweep runs (the CLI flags of `sjc sweep`)."""

    out: str
    address: str | None = None
    storage: str | None = None
    mlflow_uri: str | None = None
    num_cpus: int | None = None
    pool: str | None = None
    keep_workers: bool = False


@dataclass
class SweepOutcome:
    """What a finished sweep left behind."""

    sweep_dir: Path
    table: Path
    rows: list
    ranking: str
    metric: str
    workers: list = field(default_factory=list)
    seconds: float = 0.0
    mlflow_uri: str = ""
    parent_run_id: str = ""

    @property
    def interrupted(self) -> bool:
        return any(r.status == "interrupted" for r in self.rows)

    @property
    def model_loads(self) -> int:
        return sum(w.get("loads", 0) for w in self.workers)


class ClusterError(SJCError, ConnectionError):
    """The Ray cluster named by --address could not be joined."""


def prepare_auth(address: str | None) -> None:
    """Ray 2.60 turns token authentication on: a local instance makes its own token (~/.ray/auth_token), but a
    driver joining a cluster must send the cluster's token and only does so in token mode. So, for `--address`
    with RAY_AUTH_MODE unset and a token at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token),
    switch token mode on. Must run before Ray is imported: Ray reads the mode once, at import."""
    if address and "RAY_AUTH_MODE" not in os.environ and _token_at_hand():
        os.environ["RAY_AUTH_MODE"] = "token"


def connect(address: str | None, num_cpus: int | None) -> None:
    """Join `address` (a cluster: 'auto', 'HOST:PORT', 'ray://HOST:10001') or start a new local Ray (reused if
    one is already up in this process; a cluster started with `ray start` on this machine is joined only with
    --address auto)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    if not address:
        ray.init(address="local", namespace="sjc", log_to_driver=True, num_cpus=num_cpus, include_dashboard=False)
        return
    try:
        ray.init(namespace="sjc", log_to_driver=True, address=address)
    except ConnectionError as err:
        raise ClusterError(f"could not join the Ray cluster at {address} ({err}); if it uses token "
                           "authentication, put its token (`ray get-auth-token` on the head node) in "
                           "RAY_AUTH_TOKEN or ~/.ray/auth_token") from None


def _token_at_hand() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path).is_file()


def sweep_paths(spec: SweepSpec, opts: SweepOptions) -> tuple[Path, str, str]:
    """(sweep folder, Tune storage path, Tune experiment name), all absolute."""
    sweep_dir = Path(opts.out).expanduser().resolve()
    storage = opts.storage or str(sweep_dir)
    return sweep_dir, storage, TUNE_NAME if not opts.storage else f"{spec.settings.name}-{_uid(sweep_dir)}"


def _uid(sweep_dir: Path) -> str:
    return hashlib.sha1(str(sweep_dir).encode()).hexdigest()[:8]


def build_pool(spec: SweepSpec, sweep_dir: Path, name: str | None = None):
    """The sweep's worker pool: actors named after the sweep folder, or after `name` (`--pool`: shared by
    sweeps, found alive if an earlier sweep kept its workers)."""
    from .pool import PoolSpec
    from .worker_options import WorkerOptions

    r = spec.settings.resources
    opts = WorkerOptions(model="", max_slots=r.slots_per_worker,
                         threads=r.torch_threads or max(1, int(r.cpus_per_worker)), gpus=r.gpus_per_worker)
    prefix = f"sjc-pool-{name}" if name else f"sjc-{_uid(sweep_dir)}"
    return PoolSpec(prefix, r.workers, r.cpus_per_worker, r.gpus_per_worker, opts)


def evaluation_settings(spec: SweepSpec) -> dict | None:
    """What the workers' final evaluation needs: judge, views, and the sweep's prompts (for R-Precision)."""
    s = spec.settings
    if not s.evaluate:
        return None
    prompts = {spec.base.get("prompt", {}).get("text", ""), *_choices(spec, "prompt.text")}
    return {"judge": s.judge, "views": s.eval_views, "prompts": tuple(sorted(p for p in prompts if p))}


def _choices(spec: SweepSpec, key: str) -> tuple:
    d = spec.space.get(key)
    return d.values if d is not None and not d.numeric else ()


def build_tuner(spec: SweepSpec, trainable, storage: str, name: str, tracker):
    """The Tuner: search algorithm, scheduler, concurrency, checkpoints, retries, and the MLflow callback."""
    from ray import tune

    s = spec.settings
    search_alg, param_space, samples = None, {}, 1
    if s.search.kind == "optuna":
        search_alg, samples = _optuna(spec), s.num_samples
    else:
        param_space = {"params": tune.grid_search(spec.points())}
    tune_config = tune.TuneConfig(metric=s.scheduler.metric, mode=s.scheduler.mode, search_alg=search_alg,
                                  scheduler=_scheduler(spec), num_samples=samples,
                                  max_concurrent_trials=s.max_concurrent, reuse_actors=True)
    run_config = tune.RunConfig(
        name=name, storage_path=storage, callbacks=[tracker], verbose=0,
        checkpoint_config=tune.CheckpointConfig(checkpoint_frequency=s.checkpoint_every, num_to_keep=2),
        failure_config=tune.FailureConfig(max_failures=s.max_failures))
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)


def _optuna(spec: SweepSpec):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from .space import OptunaSpace

    s = spec.settings
    space = OptunaSpace(spec.space, list(spec.constraints), spec.constants)
    return OptunaSearch(space=space, metric=s.scheduler.metric, mode=s.scheduler.mode,
                        sampler=optuna.samplers.TPESampler(seed=s.search.seed))


def _scheduler(spec: SweepSpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from .spec import max_steps

    sc = spec.settings.scheduler
    if sc.kind == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="sjc_step", max_t=max_steps(spec), grace_period=sc.grace_period,
                         reduction_factor=sc.reduction_factor, brackets=sc.brackets)


def make_trainable(spec: SweepSpec, pool_spec, sweep_dir: Path):
    from ray import tune

    from .trainable import SJCTrainable, TrialContext

    s = spec.settings
    ctx = TrialContext(spec.base, pool_spec, s.report_every, s.scheduler.metric, s.scheduler.mode,
                       str(sweep_dir / "trials"), s.scorer, evaluation_settings(spec))
    return tune.with_resources(tune.with_parameters(SJCTrainable, context=ctx), {"cpu": s.resources.cpus_per_trial})


# --- the whole sweep --------------------------------------------------------------------------------------------
def run_sweep(spec: SweepSpec, opts: SweepOptions, resume: bool = False) -> SweepOutcome:
    """Run (or resume) a sweep end to end; see the module docstring for what it leaves in the folder."""
    prepare_auth(opts.address)
    from ray import tune

    from . import pool
    from .tracking import SweepTracker, default_uri

    start = time.perf_counter()
    sweep_dir, storage, name = sweep_paths(spec, opts)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SPEC_FILE).write_text(yaml.safe_dump({**spec.to_dict(), "options": to_dict(opts)},
                                                      sort_keys=False))
    connect(opts.address, opts.num_cpus)
    pool_spec, models = build_pool(spec, sweep_dir, opts.pool), spec.model_names()
    trainable = make_trainable(spec, pool_spec, sweep_dir)
    exp_path = f"{storage.rstrip('/')}/{name}"
    try:
        pool.start(pool_spec, models)
        tracker = SweepTracker(opts.mlflow_uri or default_uri(sweep_dir), f"sjc/{spec.settings.name}",
                               str(sweep_dir), spec.base)
        tracker.start_parent(spec.settings.name, spec.to_dict(), str(sweep_dir / SPEC_FILE))  # found again on resume
        if resume and tune.Tuner.can_restore(exp_path):  # the restored Tuner keeps its own pickled tracker
            tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = build_tuner(spec, trainable, storage, name, tracker)
        grid = tuner.fit()
        workers = pool.collect_stats(pool_spec, models)
    finally:
        if not opts.keep_workers:
            pool.shutdown(pool_spec, models)
    return finish_sweep(spec, grid, sweep_dir, tracker, workers, time.perf_counter() - start)


def finish_sweep(spec: SweepSpec, grid, sweep_dir: Path, tracker, workers: list, seconds: float) -> SweepOutcome:
    """Rows -> results.parquet, ranking, summary.json; the parent MLflow run gets them and is closed."""
    from .results import make_row, rank, rank_metric, read_table, top_table, write_table

    s = spec.settings
    finished = tracker.finished_trials()  # Tune ended them; an interrupted sweep leaves the others open
    ids = [(r.metrics or {}).get("trial_id") or Path(r.path).name for r in grid]
    rows = [make_row(tid, _params(r.config), spec.base, r.metrics or {}, r.metrics_dataframe, _first_line(r.error),
                     s.scheduler.metric, s.scheduler.mode, tid in finished) for tid, r in zip(ids, grid)]
    swept = list(spec.space)
    frame_metric = s.rank.metric or s.scheduler.metric
    mode = s.rank.mode or s.scheduler.mode
    log_keys = [k for k, d in spec.space.items() if d.kind == "loguniform"]
    table = write_table(rows, sweep_dir / "results.parquet", swept, frame_metric, mode, log_keys,
                        s.scheduler.mode)
    frame, _ = read_table(table)
    metric = rank_metric(frame, frame_metric, s.scheduler.metric)
    ranked = rank(frame, metric, mode if metric == frame_metric else s.scheduler.mode, "best_metric",
                  s.scheduler.mode)
    text = top_table(ranked, swept, metric)
    summary = _summary(ranked, metric, workers, seconds, rows)
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (sweep_dir / "ranking.txt").write_text(text + "\n")
    best = {f"best/{k}": v for k, v in summary["best"].items() if isinstance(v, float) and math.isfinite(v)}
    interrupted = any(r.status == "interrupted" for r in rows)
    tracker.finish([str(table), str(sweep_dir / "summary.json"), str(sweep_dir / "ranking.txt")], best,
                   "KILLED" if interrupted else "FINISHED")
    return SweepOutcome(sweep_dir, table, rows, text, metric, workers, seconds, tracker.uri, tracker.parent_id)


def _params(config: dict) -> dict:
    return dict(config["params"]) if "params" in config else dict(config)


def _first_line(error) -> str:
    if error is None:
        return ""
    lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
    return lines[-1][:2000] if lines else type(error).__name__


def _summary(ranked, metric: str, workers: list, seconds: float, rows: list) -> dict:
    best = ranked.iloc[0].to_dict() if len(ranked) else {}
    counts = ranked["status"].value_counts().to_dict() if len(ranked) else {}
    return {"metric": metric, "trials": len(rows), "status": counts, "seconds": seconds,
            "model_loads": sum(w.get("loads", 0) for w in workers), "actors": len(workers), "workers": workers,
            "best_trial": best.get("trial_id"),
            "best": {k.removeprefix("final."): v for k, v in best.items() if k.startswith("final.")}}


def load_for_resume(sweep_dir: str | Path) -> tuple[SweepSpec, dict]:
    """The spec and options saved in a sweep folder (for `sjc sweep --resume DIR`)."""
    data = yaml.safe_load((Path(sweep_dir) / SPEC_FILE).read_text())
    options = data.pop("options", {})
    return load_sweep(data), options
