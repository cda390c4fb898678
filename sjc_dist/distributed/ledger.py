"""TrialLedger: the driver's record of how each trial ended, and the run folder of each trial ASHA stopped.

A Tune Callback (driver only, listed before the MLflow tracker so the tracker sees what it adds):
- `on_trial_complete` / `on_trial_error` append `{"trial_id", "status"}` to `<sweep dir>/ended.jsonl`. Tune's own
  statuses cannot tell a trial that ended from one an interrupted sweep left open (it marks both TERMINATED), so
  this file is what makes a row `stopped` rather than `interrupted`, with or without MLflow.
- A trial stopped by the scheduler still has its slot open on its worker when Tune calls `on_trial_complete`
  (the trial's actor is stopped or reused only afterwards), so the ledger asks that worker to write the trial's
  folder as it stood at the stop (views, field, checkpoint, metrics.jsonl; not evaluated) and adds the files
  to the trial's last result (`artifact/<name>`), where the tracker, the Parquet row and `sjc results` find them.
"""
import json
from pathlib import Path

from ray import tune

ENDED_FILE = "ended.jsonl"


def ended_trials(sweep_dir: str | Path) -> dict[str, str]:
    """trial id -> how it ended (ok, failed, stopped), from the sweep folder's ledger."""
    path = Path(sweep_dir) / ENDED_FILE
    if not path.is_file():
        return {}
    rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return {r["trial_id"]: r["status"] for r in rows}


class TrialLedger(tune.Callback):
    """Records ended trials and writes stopped trials' folders (see the module docstring)."""

    def __init__(self, sweep_dir: str):
        self.sweep_dir = str(sweep_dir)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        status = last.get("sjc_status", "stopped")
        if status == "running":
            status = "stopped"
            last.update(write_stopped(last))
        self._record(trial.trial_id, status)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._record(trial.trial_id, "failed")

    def _record(self, trial_id: str, status: str) -> None:
        with (Path(self.sweep_dir) / ENDED_FILE).open("a") as f:
            f.write(json.dumps({"trial_id": trial_id, "status": status}) + "\n")


def write_stopped(last: dict) -> dict:
    """Ask the stopped trial's worker to write its folder; the `artifact/...` paths and a note, for its result."""
    import ray

    from .pool import NAMESPACE
    from .trainable import SLOT_KEY

    step, total = last.get("sjc_step", 0), last.get("steps_total", 0)
    note = f"stopped by the scheduler at step {step} of {total}: not evaluated"
    name, _, slot = str(last.get(SLOT_KEY, "")).rpartition("#")
    if not name or not last.get("run_dir"):
        return {"eval_note": note}
    try:
        worker = ray.get_actor(name, namespace=NAMESPACE)
        out = ray.get(worker.finish.remote(int(slot), last["run_dir"], None, note), timeout=600)
    except Exception as err:  # noqa: BLE001 - the worker died or the slot is gone: the row still says stopped
        return {"eval_note": f"{note}; its folder could not be written ({type(err).__name__}: {err})"}
    return {**{f"artifact/{k}": v for k, v in out["files"].items()}, "eval_note": note}
