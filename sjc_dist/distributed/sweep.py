"""`run_sweep`: a validated SweepSpec -> Ray Tune experiment -> results table, MLflow runs and a ranking.

The driver: takes the sweep folder's lock (sweep_lock.py) before anything else, connects to Ray (a local instance
bound to loopback with no dashboard, or `--address` for a cluster, which keeps its own addresses), starts the
SceneWorker pool (each worker starts loading the model at once when every trial shares it: `preload_config`),
builds the Tuner (search: grid/random points drawn here, or OptunaSearch with a define-by-run
space; scheduler: FIFO or ASHA on `sjc_step`; checkpoints every `checkpoint_every` reports; `max_failures`
retries for trials whose worker died; trials reuse their Trainable processes), runs it, then writes
`results.parquet` (one ResultRow per trial), `summary.json` and the ranking, and closes the MLflow parent run.
Sweep folder: sweep.lock, sweep.yaml (the resolved spec), tune/ (Tune's experiment state and checkpoints, unless
`--storage` puts it elsewhere), trials/<trial_id>/ (each run folder), workers/ (each worker's counters),
ended.jsonl (how each trial ended), mlflow.db + mlartifacts/ (the default store; `--mlflow-uri none`: no
MLflow), results.parquet, ranking.txt, summary.json. `resume=True` continues an interrupted sweep with
Tuner.restore; a folder that already holds a sweep is only ever resumed, never started again.
"""
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..configtools import to_dict
from ..errors import ConfigError, SJCError
from .spec import SweepSpec, load_sweep, read_yaml
from .summary import SweepOutcome, build_summary, sessions
from .sweep_lock import SweepLock

TUNE_NAME = "tune"
SPEC_FILE = "sweep.yaml"
# A local sweep: Ray's single-machine mode (every service on 127.0.0.1) and token authentication asked for
# explicitly: what Ray turns on by itself, minus its "Token authentication is enabled" warning to decode.
LOCAL_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
WORKER_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # no progress bars in the sweep's log


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


class ClusterError(SJCError, ConnectionError):
    """The Ray cluster named by --address could not be joined."""


def prepare_auth(address: str | None) -> None:
    """Ray 2.60 turns token authentication on: a local instance makes its own token (~/.ray/auth_token), but a
    driver joining a cluster must send the cluster's token and only does so in token mode. So, for `--address`
    with RAY_AUTH_MODE unset and a token at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token),
    switch token mode on. Must run before Ray is imported: Ray reads the mode once, at import."""
    if address and "RAY_AUTH_MODE" not in os.environ and _token_at_hand():
        os.environ["RAY_AUTH_MODE"] = "token"


def prepare_env(address: str | None) -> None:
    """Before Ray is imported (it reads these at import): token mode for a cluster (prepare_auth); for a local
    sweep, Ray's single-machine mode, in which the GCS, raylet, driver and workers listen on 127.0.0.1 only (by
    default they listen on every interface), and token mode set explicitly (LOCAL_ENV); worker logs without
    progress bars, and without colour codes when the output is not a terminal. A variable the user set is left
    as it is. Called after Ray was imported, it leaves the auth mode to Ray (token mode, with Ray's warning).
    """
    prepare_auth(address)
    local = {} if address else dict(LOCAL_ENV)
    if "ray" in sys.modules:  # Ray read its auth mode at import: RAY_AUTH_MODE now would reach its GCS, not
        local.pop("RAY_AUTH_MODE", None)  # itself (GCS 'Check failed: has_token' on a fresh machine); Ray's own default
    for key, value in {**local, **WORKER_ENV}.items():
        os.environ.setdefault(key, value)
    if not sys.stdout.isatty():
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")


def check_fits(r, n_models: int, total: dict) -> None:
    """Refuse, in one line, a local sweep whose workers plus one trial need more CPUs or GPUs than this Ray has
    (Ray would wait for them forever, silently). A cluster (--address) may grow, so it is not checked."""
    cpus, gpus = n_models * r.workers * r.cpus_per_worker + r.cpus_per_trial, n_models * r.workers * r.gpus_per_worker
    if cpus > total.get("CPU", 0.0):
        raise ConfigError("resources.cpus_per_worker", r.cpus_per_worker,
                          f"workers x cpus_per_worker + cpus_per_trial <= the {total.get('CPU', 0.0):g} CPUs of the "
                          f"local Ray ({n_models * r.workers} worker(s) would need {cpus:g})")
    if gpus > total.get("GPU", 0.0):
        raise ConfigError("resources.gpus_per_worker", r.gpus_per_worker,
                          f"workers x gpus_per_worker <= the {total.get('GPU', 0.0):g} GPUs of the local Ray "
                          f"({n_models * r.workers} worker(s) would need {gpus:g}); 0 runs on the CPU")


def connect(address: str | None, num_cpus: int | None) -> None:
    """Join `address` (a cluster: 'auto', 'HOST:PORT', 'ray://HOST:10001') or start a new local Ray (reused if
    one is already up in this process; a cluster started with `ray start` on this machine is joined only with
    --address auto)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # CSV + JSON given in build_tuner; no TBX
    if not address:
        ray.init(address="local", namespace="sjc", log_to_driver=True, num_cpus=num_cpus, include_dashboard=False)
        private_token()
        return
    try:
        ray.init(namespace="sjc", log_to_driver=True, address=address, runtime_env={"env_vars": WORKER_ENV})
    except ConnectionError as err:
        raise ClusterError(f"could not join the Ray cluster at {address} ({err}); if it uses token "
                           "authentication, put its token (`ray get-auth-token` on the head node) in "
                           "RAY_AUTH_TOKEN or ~/.ray/auth_token") from None


def _token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def _token_at_hand() -> bool:
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or _token_path().is_file()


def private_token() -> None:
    """Ray writes its token file readable by everyone (0644); whoever reads it may drive the cluster: 0600."""
    path = _token_path()
    if path.is_file() and path.stat().st_mode & 0o077:
        path.chmod(0o600)


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
                         threads=r.torch_threads or max(1, int(r.cpus_per_worker)), gpus=r.gpus_per_worker,
                         stats_dir="" if name else str(sweep_dir / "workers"))
    prefix = f"sjc-pool-{name}" if name else f"sjc-{_uid(sweep_dir)}"
    return PoolSpec(prefix, r.workers, r.cpus_per_worker, r.gpus_per_worker, opts)


def evaluation_settings(spec: SweepSpec) -> dict | None:
    """What the workers' final evaluation needs: judge, views, and the sweep's prompts (for R-Precision)."""
    s = spec.settings
    if not s.evaluate:
        return None
    prompts = {spec.base.get("prompt", {}).get("text", ""), *_choices(spec, "prompt.text")}
    return {"judge": s.judge, "views": s.eval_views, "prompts": tuple(sorted(p for p in prompts if p))}


def preload_config(spec: SweepSpec, sweep_dir: Path, resume: bool) -> dict | None:
    """The run config whose model every worker starts loading as soon as it exists (pool.start): the base, when
    every trial's model key (stepper.model_key) is the base's, i.e. no searched key under model.* (nor prompt.text
    for 'empirical', whose data is the prompt's). None where a trial's model is known only from its own params,
    or when a resumed sweep has no trial left to run: a preload must never load a model no trial uses."""
    from .ledger import ended_trials

    if any(key.startswith("model.") for key in spec.space):
        return None
    if spec.model_names() == ["empirical"] and "prompt.text" in spec.space:
        return None
    try:
        if resume and len(ended_trials(sweep_dir)) >= spec.n_trials():
            return None
    except (OSError, ValueError):  # a ledger line cut by a killed driver: no preload; the resume reports it
        return None
    return spec.base


def _choices(spec: SweepSpec, key: str) -> tuple:
    d = spec.space.get(key)
    return d.values if d is not None and not d.numeric else ()


def build_tuner(spec: SweepSpec, trainable, storage: str, name: str, callbacks: list):
    """The Tuner: search algorithm, scheduler, concurrency, checkpoints, retries; the ledger and tracker
    callbacks (driver side), and Tune's CSV and JSON loggers (its results; no TensorBoard logger)."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

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
        name=name, storage_path=storage, callbacks=[*callbacks, CSVLoggerCallback(), JsonLoggerCallback()], verbose=0,
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
    sweep_dir = sweep_paths(spec, opts)[0]
    with SweepLock(sweep_dir) as lock:  # before anything else: one owner per sweep folder
        notes = [lock.note] if lock.note else []
        if not resume and (sweep_dir / SPEC_FILE).exists():
            raise ConfigError("--out", str(sweep_dir), "a folder without a sweep in it: this one holds one; continue "
                                                       f"it with `sjc sweep --resume {sweep_dir}`, or remove it")
        for note in notes:
            print(f"sjc sweep: note: {note}", file=sys.stderr)
        return _run_locked(spec, opts, resume, notes)


def _run_locked(spec: SweepSpec, opts: SweepOptions, resume: bool, notes: list) -> SweepOutcome:
    from .mlflow_uri import resolve_uri

    started, start = time.time(), time.perf_counter()
    sweep_dir, storage, name = sweep_paths(spec, opts)
    uri, note = resolve_uri(opts.mlflow_uri, sweep_dir)
    notes += [note] if note else []
    (sweep_dir / SPEC_FILE).write_text(yaml.safe_dump({**spec.to_dict(), "options": to_dict(opts)},
                                                      sort_keys=False))
    prepare_env(opts.address)
    from ray import tune

    from . import pool
    from .ledger import TrialLedger
    from .progress import SweepProgress

    connect(opts.address, opts.num_cpus)
    if not opts.address:
        import ray

        check_fits(spec.settings.resources, len(spec.model_names()), ray.cluster_resources())
    pool_spec, models = build_pool(spec, sweep_dir, opts.pool), spec.model_names()
    trainable = make_trainable(spec, pool_spec, sweep_dir)
    exp_path = f"{storage.rstrip('/')}/{name}"
    try:
        pool.start(pool_spec, models, preload_config(spec, sweep_dir, resume))
        tracker = start_tracker(spec, uri, sweep_dir)
        if resume and tune.Tuner.can_restore(exp_path):  # the restored Tuner keeps its own pickled callbacks
            tuner = tune.Tuner.restore(exp_path, trainable, resume_unfinished=True, resume_errored=True)
        else:
            progress = SweepProgress(spec.n_trials(), spec.settings.scheduler.metric, spec.settings.scheduler.mode)
            callbacks = [TrialLedger(str(sweep_dir)), *([tracker] if tracker else []), progress]  # ledger first
            tuner = build_tuner(spec, trainable, storage, name, callbacks)
        grid = tuner.fit()
        workers = pool.collect_stats(pool_spec, models)
    finally:
        if not opts.keep_workers:
            pool.shutdown(pool_spec, models)
    history = sessions(sweep_dir, resume, started, time.perf_counter() - start)
    return finish_sweep(spec, grid, sweep_dir, tracker, workers, history, notes)


def start_tracker(spec: SweepSpec, uri: str, sweep_dir: Path):
    """The MLflow parent run (found again on resume) and the experiment's view; None when tracking is off."""
    if not uri:
        return None
    from .tracking import SweepTracker, trials_view

    s = spec.settings
    tracker = SweepTracker(uri, f"sjc/{s.name}", str(sweep_dir), spec.base)
    tracker.start_parent(s.name, spec.to_dict(), str(sweep_dir / SPEC_FILE))
    tracker.set_view(trials_view(list(spec.space), s.rank.metric or s.scheduler.metric,
                                 s.rank.mode or s.scheduler.mode))
    return tracker


def finish_sweep(spec: SweepSpec, grid, sweep_dir: Path, tracker, workers: list, history: list,
                 notes: list = ()) -> SweepOutcome:
    """Rows -> results.parquet, ranking, summary.json; the parent MLflow run gets them and is closed."""
    from .ledger import ended_trials
    from .results import make_row, rank, rank_metric, read_table, top_table, write_table

    s = spec.settings
    ended = ended_trials(sweep_dir)  # Tune ended them; an interrupted sweep leaves the others open
    ids = [(r.metrics or {}).get("trial_id") or Path(r.path).name for r in grid]
    rows = [make_row(tid, _params(r.config), spec.base, r.metrics or {}, r.metrics_dataframe, _first_line(r.error),
                     s.scheduler.metric, s.scheduler.mode, tid in ended) for tid, r in zip(ids, grid)]
    swept = list(spec.space)
    frame_metric = s.rank.metric or s.scheduler.metric
    mode = s.rank.mode or s.scheduler.mode
    table = write_table(rows, sweep_dir / "results.parquet", swept, frame_metric, mode, log_keys(spec),
                        s.scheduler.mode)
    frame, _ = read_table(table)
    metric = rank_metric(frame, frame_metric, s.scheduler.metric)
    ranked = rank(frame, metric, mode if metric == frame_metric else s.scheduler.mode, "best_metric",
                  s.scheduler.mode)
    text = top_table(ranked, swept, metric)
    summary = build_summary(s.name, ranked, metric, workers, history, rows)
    (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    (sweep_dir / "ranking.txt").write_text(text + "\n")
    outcome = SweepOutcome(sweep_dir, table, rows, text, metric, workers, summary["seconds"], summary=summary,
                           notes=list(notes))
    if tracker is not None:
        best = {f"best/{k}": v for k, v in summary["best"].items() if isinstance(v, float) and math.isfinite(v)}
        interrupted = any(r.status == "interrupted" for r in rows)
        tracker.finish([str(table), str(sweep_dir / "summary.json"), str(sweep_dir / "ranking.txt")], best,
                       "KILLED" if interrupted else "FINISHED", rows)
        outcome.notes += [f"MLflow: a write failed and was dropped: {e}" for e in tracker.errors[:3]]
        outcome.mlflow_uri, outcome.parent_run_id, outcome.runs_url = tracker.uri, tracker.parent_id, tracker.runs_url()
    return outcome


def log_keys(spec: SweepSpec) -> list[str]:
    """Swept keys drawn log-uniformly (plotted on a log axis; so are lists spanning more than 10x)."""
    return [k for k, d in spec.space.items() if d.kind == "loguniform"]


def _params(config: dict) -> dict:
    return dict(config["params"]) if "params" in config else dict(config)


def _first_line(error) -> str:
    if error is None:
        return ""
    lines = [ln for ln in str(error).strip().splitlines() if ln.strip()]
    return lines[-1][:2000] if lines else type(error).__name__


def load_for_resume(sweep_dir: str | Path) -> tuple[SweepSpec, dict]:
    """The spec and options saved in a sweep folder (for `sjc sweep --resume DIR`)."""
    path = Path(sweep_dir) / SPEC_FILE
    if not path.is_file():
        raise ConfigError("--resume", str(sweep_dir), f"a sweep folder written by `sjc sweep` (one holding "
                                                      f"{SPEC_FILE})")
    data = read_yaml(path, "--resume")
    options = data.pop("options", {})
    return load_sweep(data), options
