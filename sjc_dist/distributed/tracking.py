"""MLflow tracking of a sweep: one parent run per sweep, one child run per trial, logged from the driver only.

`SweepTracker` is a Tune Callback, so every MLflow call happens in the driver process: many trial processes
never write one SQLite file. Child runs get the trial's flattened config as params (the `--set` keys), its
metric history (step = optimisation step), its artifacts (views.png, turntable.gif, field.safetensors,
config.json, ...) and tags `sjc.status` / `sjc.failure`. The parent gets the sweep spec, the results table
and the best trial's metrics.
Store: `--mlflow-uri` or MLFLOW_TRACKING_URI (a real server) or, by default, `sqlite:///<sweep dir>/mlflow.db`
with artifacts under `<sweep dir>/mlartifacts` (MLflow 3 refuses the old ./mlruns file store by default).
`--mlflow-uri none` switches tracking off, and so does a machine without mlflow (mlflow_uri.py); the sweep then
has no tracker and writes everything else as usual.
Trial runs are written by a RunWriter (mlflow_writer.py) on a background thread of the driver: the callbacks post
and return, so Tune's loop never waits on the store (the first bottleneck of a 2,000-trial sweep on SQLite,
BENCHMARKS.md section 10), and each run's pending params, metrics and tags go in one log_batch. `on_experiment_end`
(Tune's cleanup, also after Ctrl+C) and `finish` wait until everything posted is written.
Runs are found again by tag (`sjc.sweep_dir`, `sjc.trial_id`; all trial runs in one search when the writer
starts), so `sjc sweep --resume` continues the same ones, and a restored trial's repeated reports (steps up to the
last `sjc_step` the store holds) are not logged twice. `finish` reconciles the store with the results table: a
trial that ended but whose run is missing or still RUNNING (the driver died between the two) gets its run, final
metrics, status and end, so the runs always match the rows.
The UI (MLflow 3.17, read from its bundled JS): the page an experiment opens on follows the UI's own workflow
toggle (GenAI / Model training, kept per browser, GenAI by default: the GenAI overview), not anything in the
store; a URL's `workflowType=machine_learning` overrides it. So `runs_url` carries that, and opens a shared view
(`mlflow.sharedViewState.<key>`, an experiment tag) that lists the trials flat (the runs table nests children
collapsed under their parent, and MLflow keeps no default expansion a store could set), ranked, with the swept
keys as columns. The experiment is also tagged `mlflow.experimentKind = custom_model_development`, which UIs
without the toggle read for the same choice.
"""
import json
import math
from pathlib import Path

from ray import tune

from ..configtools import flatten
from .space import resolved_params

ROLE, SWEEP_TAG, TRIAL_TAG = "sjc.role", "sjc.sweep_dir", "sjc.trial_id"
SKIP_METRICS = ("done", "training_iteration", "timestamp", "time_this_iter_s", "time_since_restore",
                "iterations_since_restore", "pid", "steps_total")
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
VIEW_KEY = "sjc-trials"
DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")  # MLflow's SQLAlchemy stores


def trials_view(swept: list[str], metric: str, mode: str) -> dict:
    """The shared view of the trials: children only (flat), best first by `metric`, swept keys as columns."""
    cols = [f"params.`{k}`" for k in swept] + [f"metrics.`{m}`" for m in dict.fromkeys((metric, "score"))]
    return {"searchFilter": f"tags.`{ROLE}` = 'trial'", "orderByKey": f"metrics.`{metric}`",
            "orderByAsc": mode == "min", "selectedColumns": [*cols, "tags.`sjc.status`"]}


def numeric_metrics(result: dict) -> dict[str, float]:
    """The finite numbers of a Tune result worth a metric history."""
    out = {}
    for key, value in result.items():
        if key in SKIP_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


class SweepTracker(tune.Callback):
    """Parent + child runs in MLflow, written from the Tune driver (see the module docstring)."""

    def __init__(self, uri: str, experiment: str, sweep_dir: str, base: dict):
        self.uri, self.experiment, self.sweep_dir, self.base = uri, experiment, str(sweep_dir), base
        self.parent_id: str | None = None
        self.last_step: dict[str, int] = {}
        self._client = self._writer = self._exp_id = None

    def __getstate__(self) -> dict:  # Tune pickles callbacks with the experiment; clients and threads do not pickle
        return {**self.__dict__, "_client": None, "_writer": None, "_exp_id": None}

    @property
    def client(self):
        """The MLflow client (a SQLite store is switched to write-ahead logging first: sqlite_wal)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            sqlite_wal(self.uri)
            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    @property
    def writer(self):
        """The trial runs' writer, started on first use with the runs this sweep already has (a resume)."""
        if self._writer is None:
            from .mlflow_writer import RunWriter

            found = self.trial_runs()
            self._writer = RunWriter(self.client, self.experiment_id(), {k: r.info.run_id for k, r in found.items()})
            for tid, run in found.items():
                self.last_step[tid] = int(run.data.metrics.get("sjc_step", -1))
        return self._writer

    @property
    def errors(self) -> list[str]:
        return list(self._writer.errors) if self._writer is not None else []

    # --- parent -----------------------------------------------------------------------------------------------
    def experiment_id(self) -> str:
        if self._exp_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            self._exp_id = exp.experiment_id if exp is not None else self._create_experiment()
        return self._exp_id

    def _create_experiment(self) -> str:
        """The experiment; a database store written directly (SQLite, PostgreSQL, ...: no server to hold the
        artifacts) keeps them in the first sweep folder's mlartifacts, not in ./mlruns of wherever the driver runs."""
        location = None
        if self.uri.split(":")[0].split("+")[0] in DB_SCHEMES:
            location = (Path(self.sweep_dir) / "mlartifacts").resolve().as_uri()
        return self.client.create_experiment(self.experiment, artifact_location=location, tags={KIND_TAG: KIND})

    def set_view(self, view: dict) -> None:
        """The experiment opens on its runs, and `runs_url` opens the shared view of the trials."""
        exp = self.experiment_id()
        self.client.set_experiment_tag(exp, KIND_TAG, KIND)
        self.client.set_experiment_tag(exp, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(view))

    def runs_url(self, ui: str = "http://127.0.0.1:5000") -> str:
        """Where a browser opens the trials (the UI of `mlflow ui`, or the tracking server itself)."""
        base = self.uri if self.uri.startswith("http") else ui
        return (f"{base.rstrip('/')}/#/experiments/{self.experiment_id()}/runs?workflowType=machine_learning"
                f"&viewStateShareKey={VIEW_KEY}")

    def start_parent(self, name: str, spec: dict, spec_file: str | None = None) -> str:
        """The sweep's parent run: found again by its sweep folder on --resume, else created."""
        exp = self.experiment_id()
        found = self.client.search_runs([exp], f"tags.`{SWEEP_TAG}` = '{self.sweep_dir}' and "
                                              f"tags.`{ROLE}` = 'sweep'", max_results=1)
        if found:  # a resumed sweep: the same parent, running again
            self.parent_id = found[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
            return self.parent_id
        run = self.client.create_run(exp, run_name=name, tags={ROLE: "sweep", SWEEP_TAG: self.sweep_dir})
        self.parent_id = run.info.run_id
        settings = {k: v for k, v in flatten(spec).items() if not k.startswith("base.")}
        _log_now(self.client, self.parent_id, params=_params(settings))
        if spec_file:
            self.client.log_artifact(self.parent_id, spec_file)
        return self.parent_id

    def finish(self, files: list[str], best: dict[str, float], status: str = "FINISHED", rows=()) -> None:
        """Every trial write done, the runs reconciled with the rows, then the parent's artifacts, the best
        trial's metrics (only those that changed: a resumed sweep adds no duplicates) and its final status."""
        self.close()
        self.reconcile(rows)
        for f in files:
            if Path(f).is_file():
                self.client.log_artifact(self.parent_id, f)
        logged = self.client.get_run(self.parent_id).data.metrics
        changed = {k: v for k, v in best.items() if k not in logged or not math.isclose(logged[k], v, rel_tol=1e-6)}
        _log_now(self.client, self.parent_id, metrics=_metrics(changed, 0))
        self.client.set_terminated(self.parent_id, status)

    def close(self) -> None:
        """Wait until every trial write posted so far is in the store, and stop the writer."""
        if self._writer is not None:
            self._writer.close()

    # --- children ---------------------------------------------------------------------------------------------
    def trial_runs(self) -> dict:
        """trial id -> Run of every trial run this sweep has in the store (one paged search)."""
        found, token = {}, None
        query = f"tags.`{ROLE}` = 'trial' and tags.`{SWEEP_TAG}` = '{self.sweep_dir}'"
        while True:
            page = self.client.search_runs([self.experiment_id()], query, max_results=5000, page_token=token)
            found.update({r.data.tags[TRIAL_TAG]: r for r in page if TRIAL_TAG in r.data.tags})
            token = page.token
            if not token:
                return found

    def child(self, trial) -> str:
        """The trial's key in the writer; its run is posted for creation the first time (name, tags, params)."""
        tid, writer = trial.trial_id, self.writer
        if tid in writer.runs or tid in self.last_step:
            return tid
        params = trial.config.get("params", trial.config)
        swept = " ".join(f"{k}={_short(v)}" for k, v in params.items())
        writer.create(tid, f"{tid} {swept}"[:200], {
            "mlflow.parentRunId": self.parent_id, ROLE: "trial", TRIAL_TAG: tid, SWEEP_TAG: self.sweep_dir,
            "sjc.swept": ", ".join(f"{k}={v}" for k, v in params.items())})
        writer.log(tid, params=_params(resolved_params(self.base, params)))
        self.last_step[tid] = -1
        return tid

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.child(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """Each report at step = sjc_step; a report a restored trial repeats (same state, same numbers) is skipped."""
        key, step = self.child(trial), int(result.get("sjc_step", iteration))
        if step <= self.last_step.get(key, -1):
            return
        self.last_step[key] = step
        self.writer.log(key, metrics=_metrics(numeric_metrics(result), step))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        key, last = self.child(trial), trial.last_result or {}
        self.writer.artifacts(key, [p for k, p in last.items() if k.startswith("artifact/") and isinstance(p, str)])
        status = last.get("sjc_status", "stopped")
        status = "stopped" if status == "running" else status
        self._end(key, status, last.get("failure"), last.get("eval_note"))

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._end(self.child(trial), "failed", _error_text(trial), None)

    def on_experiment_end(self, trials, **info) -> None:
        self.close()

    def _end(self, key: str, status: str, failure, note) -> None:
        tags = {"sjc.status": status, "sjc.failure": failure, "sjc.eval_note": note}
        self.writer.log(key, tags=_tags({k: str(v)[:5000] for k, v in tags.items() if v}))
        self.writer.end(key, "FAILED" if status == "failed" else "FINISHED")

    def reconcile(self, rows) -> None:
        """Runs for the rows of trials that ended but whose run is missing or still RUNNING (the driver died
        between a trial's end and its writes): created where missing (params, the final metrics at the last
        step), then tagged with the row's status and ended."""
        ended = [r for r in rows if r.status in ("ok", "stopped", "failed")]
        if not ended:
            return
        runs = self.trial_runs()
        for row in ended:
            run = runs.get(row.trial_id)
            if run is not None and run.info.status != "RUNNING":
                continue
            run_id = run.info.run_id if run is not None else self._recreate(row)
            tags = _tags({"sjc.status": row.status, **({"sjc.failure": row.failure[:5000]} if row.failure else {})})
            _log_now(self.client, run_id, tags=tags)
            self.client.set_terminated(run_id, "FAILED" if row.status == "failed" else "FINISHED")

    def _recreate(self, row) -> str:
        run = self.client.create_run(self.experiment_id(), run_name=row.trial_id, tags={
            "mlflow.parentRunId": self.parent_id, ROLE: "trial", TRIAL_TAG: row.trial_id, SWEEP_TAG: self.sweep_dir})
        _log_now(self.client, run.info.run_id, params=_params(row.params),
                 metrics=_metrics(numeric_metrics(row.final), row.steps))
        return run.info.run_id


def sqlite_wal(uri: str) -> None:
    """Put a SQLite store in write-ahead-log mode (kept in the file) with synchronous=NORMAL on every connection
    to a WAL file (sqlite_normal), SQLite's recommended pair: a commit then costs no fsync (the log is synced at
    checkpoints; a power cut may lose the last commits, never the file), where MLflow's default rollback journal
    with synchronous=FULL costs several per store call, the first bound of MLflow logging into SQLite
    (BENCHMARKS.md section 10). Readers (`mlflow ui`) read while the sweep writes. Not for a file on NFS
    (WAL needs shared memory): a cluster uses a server (PostgreSQL) instead."""
    if not uri.startswith("sqlite:///"):
        return
    import sqlite3

    import sqlalchemy

    if not sqlalchemy.event.contains(sqlalchemy.engine.Engine, "connect", sqlite_normal):
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", sqlite_normal)
    path = Path(uri[len("sqlite:///"):])
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    try:
        conn.execute("pragma journal_mode=wal")
    finally:
        conn.close()


def sqlite_normal(dbapi_conn, record) -> None:
    """SQLAlchemy 'connect' hook: synchronous=NORMAL on SQLite connections to a file in WAL mode (no other)."""
    import sqlite3

    if isinstance(dbapi_conn, sqlite3.Connection) and dbapi_conn.execute("pragma journal_mode").fetchone()[0] == "wal":
        dbapi_conn.execute("pragma synchronous=normal")


def _params(values: dict) -> list:
    from mlflow.entities import Param

    return [Param(k, str(v)[:6000]) for k, v in values.items()]


def _metrics(values: dict[str, float], step: int) -> list:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, v, now, step) for k, v in values.items()]


def _tags(values: dict) -> list:
    from mlflow.entities import RunTag

    return [RunTag(k, str(v)) for k, v in values.items()]


def _log_now(client, run_id: str, params=(), metrics=(), tags=()) -> None:
    """Synchronous log_batch calls within MLflow's limits (the parent run, and reconciling)."""
    from .mlflow_writer import batches

    for p, m, t in batches(params, metrics, tags):
        client.log_batch(run_id, metrics=m, params=p, tags=t)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _error_text(trial) -> str:
    """The first line of a Tune trial's error, if Tune recorded one."""
    path = getattr(trial, "error_file", None) or ""
    text = Path(path).read_text() if path and Path(path).is_file() else str(getattr(trial, "error_msg", "") or "")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "error (no message)"
