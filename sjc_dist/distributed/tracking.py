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
Runs are found again by tag (`sjc.sweep_dir`, `sjc.trial_id`), so `sjc sweep --resume` continues the same ones.
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
        self.children: dict[str, str] = {}
        self.last_step: dict[str, int] = {}
        self._client = None

    def __getstate__(self) -> dict:  # Tune pickles callbacks with the experiment; clients do not pickle
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    # --- parent -----------------------------------------------------------------------------------------------
    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.uri.startswith("sqlite:"):
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
        self._log_params(self.parent_id, settings)
        if spec_file:
            self.client.log_artifact(self.parent_id, spec_file)
        return self.parent_id

    def finish(self, files: list[str], best: dict[str, float], status: str = "FINISHED") -> None:
        """Artifacts, the best trial's metrics (only those that changed: a resumed sweep adds no duplicates), and
        the parent's final status."""
        for f in files:
            if Path(f).is_file():
                self.client.log_artifact(self.parent_id, f)
        logged = self.client.get_run(self.parent_id).data.metrics
        changed = {k: v for k, v in best.items() if k not in logged or not math.isclose(logged[k], v, rel_tol=1e-6)}
        self._log_metrics(self.parent_id, changed, 0)
        self.client.set_terminated(self.parent_id, status)

    # --- children ---------------------------------------------------------------------------------------------
    def child(self, trial) -> str:
        tid = trial.trial_id
        if tid in self.children:
            return self.children[tid]
        exp = self.experiment_id()
        found = self.client.search_runs([exp], f"tags.`{TRIAL_TAG}` = '{tid}' and tags.`{SWEEP_TAG}` = "
                                              f"'{self.sweep_dir}'", max_results=1)
        if found:
            self.children[tid] = found[0].info.run_id
            return self.children[tid]
        params = trial.config.get("params", trial.config)
        swept = " ".join(f"{k}={_short(v)}" for k, v in params.items())
        run = self.client.create_run(exp, run_name=f"{tid} {swept}"[:200], tags={
            "mlflow.parentRunId": self.parent_id, ROLE: "trial", TRIAL_TAG: tid, SWEEP_TAG: self.sweep_dir})
        self.children[tid] = run.info.run_id
        self._log_params(run.info.run_id, resolved_params(self.base, params))
        self.client.set_tag(run.info.run_id, "sjc.swept", ", ".join(f"{k}={v}" for k, v in params.items()))
        return self.children[tid]

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.child(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """Each report at step = sjc_step; a report a restored trial repeats (same state, same numbers) is skipped."""
        step = int(result.get("sjc_step", iteration))
        if step <= self.last_step.get(trial.trial_id, -1):
            return
        self.last_step[trial.trial_id] = step
        self._log_metrics(self.child(trial), numeric_metrics(result), step)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        run_id, last = self.child(trial), trial.last_result or {}
        for key, path in last.items():
            if key.startswith("artifact/") and isinstance(path, str) and Path(path).is_file():
                self.client.log_artifact(run_id, path)
        status = last.get("sjc_status", "stopped")
        status = "stopped" if status == "running" else status
        self.client.set_tag(run_id, "sjc.status", status)
        if last.get("failure"):
            self.client.set_tag(run_id, "sjc.failure", str(last["failure"])[:5000])
        if last.get("eval_note"):
            self.client.set_tag(run_id, "sjc.eval_note", str(last["eval_note"])[:5000])
        self.client.set_terminated(run_id, "FAILED" if status == "failed" else "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        run_id = self.child(trial)
        self.client.set_tag(run_id, "sjc.status", "failed")
        self.client.set_tag(run_id, "sjc.failure", _error_text(trial)[:5000])
        self.client.set_terminated(run_id, "FAILED")

    # --- helpers ----------------------------------------------------------------------------------------------
    def _log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def _log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _error_text(trial) -> str:
    """The first line of a Tune trial's error, if Tune recorded one."""
    path = getattr(trial, "error_file", None) or ""
    text = Path(path).read_text() if path and Path(path).is_file() else str(getattr(trial, "error_msg", "") or "")
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "error (no message)"
