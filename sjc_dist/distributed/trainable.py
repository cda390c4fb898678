"""SJCTrainable: the Tune class Trainable, a thin adapter from Tune's setup/step/save/load to SceneWorker slots.

  setup            applies the trial's sampled dotted keys to the base run config (no model, no torch here)
  step             opens a slot on the first call (pool.acquire), then advance(slot, report_every); reports the
                   step metrics and the score; at the last step writes the run folder, evaluates it, done=True
  save_checkpoint  worker.save(slot, <checkpoint_dir>/scene.pt) (bytes through Ray when on another node)
  load_checkpoint  worker.restore(path) -> a new slot, on whichever worker has room
  cleanup          closes the slot
All paths are absolute (Tune changes the working directory of trials). A diverged trial, or one whose config
fails validation, reports `sjc_status: failed` with its reason and done=True: Tune does not retry it, and its
metric is the worst value so ASHA and Optuna rank it last. A dead worker raises RayActorError, which Tune
retries (FailureConfig.max_failures) from the trial's last checkpoint (from step 0 if that checkpoint never reached
storage: the worker died while saving it). Every result names the trial's slot
(`sjc_slot`, 'worker name#slot'), so the driver can have a trial that ASHA stops write its folder (ledger.py).
"""
import logging
import math
import os
from dataclasses import dataclass

import ray
from ray import tune

from . import pool
from .slot_errors import SlotError
from .space import apply_params

SLOT_KEY = "sjc_slot"  # 'worker name#slot' in every result (a string: never a metric)


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares (sent once through the object store by tune.with_parameters)."""

    base: dict
    pool: pool.PoolSpec
    report_every: int
    metric: str
    mode: str
    trials_dir: str
    scorer: str = "auto"
    evaluation: dict | None = None  # {judge, views, prompts} of the final evaluation; None = off


class SJCTrainable(tune.Trainable):
    """One trial: a slot on a SceneWorker, stepped `report_every` steps per Tune iteration."""

    def setup(self, config: dict, context: TrialContext) -> None:
        logging.getLogger("ray.train").setLevel(logging.WARNING)  # one INFO line per checkpoint otherwise
        self.ctx = context
        self._configure(config)

    def _configure(self, config: dict) -> None:
        self.params = dict(config["params"]) if "params" in config else dict(config)
        self.run_dir = os.path.join(self.ctx.trials_dir, self.trial_id)
        self.run_config = apply_params(self.ctx.base, self.params)
        out = self.run_config.setdefault("output", {})
        out["dir"], out["progress"] = self.run_dir, False
        self.model = self.run_config.get("model", {}).get("name", "toy")
        self.worker, self.worker_name, self.slot, self.local = None, "", None, True

    def _attach(self, open_call) -> None:
        self.worker_name, self.worker, self.slot = pool.acquire(self.ctx.pool, self.model, open_call)
        self.local = pool.same_node(self.worker)

    def step(self) -> dict:
        if self.slot is None:
            try:
                self._attach(lambda h: h.open.remote(self.run_config, self.ctx.scorer))
            except SlotError as err:  # Ray wraps it; `cause` is the worker's own message
                return self._failed(f"SlotError: {getattr(err, 'cause', err)}", {"run_dir": ""})
        res = ray.get(self.worker.advance.remote(self.slot, self.ctx.report_every))
        res["run_dir"] = self.run_dir
        res[SLOT_KEY] = f"{self.worker_name}#{self.slot}"  # where the driver finds a stopped trial's scene
        if res["sjc_status"] == "failed":
            return self._failed(res["failure"], res)
        if res["sjc_step"] >= res["steps_total"]:
            out = ray.get(self.worker.finish.remote(self.slot, self.run_dir, self.ctx.evaluation))
            files = {f"artifact/{k}": v for k, v in out["files"].items()}
            return {**res, **out["eval"], **files, "eval_note": out["eval_note"], "sjc_status": "ok", "done": True}
        return res

    def _failed(self, reason: str, res: dict) -> dict:
        worst = -math.inf if self.ctx.mode == "max" else math.inf
        return {**res, self.ctx.metric: worst, "sjc_status": "failed", "failure": reason, "done": True}

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        if self.slot is None:
            return
        path = os.path.join(os.path.abspath(checkpoint_dir), "scene.pt")
        if self.local:
            ray.get(self.worker.save.remote(self.slot, path))
        else:
            with open(path, "wb") as f:
                f.write(ray.get(self.worker.export_state.remote(self.slot)))

    def restore(self, checkpoint_path) -> None:
        """Tune's restore; where the checkpoint never reached storage (its worker died while saving it, Ray says
        'does not exist on storage anymore'), the trial starts again from step 0 instead of failing."""
        try:
            super().restore(checkpoint_path)
        except ValueError as err:
            if "does not exist on storage" not in str(err):
                raise
            logging.getLogger(__name__).warning("%s: %s; the trial starts again from step 0", self.trial_id, err)
            self._close()
            self._iteration, self._time_total = 0, 0.0

    def load_checkpoint(self, checkpoint: str) -> None:
        path = os.path.join(os.path.abspath(checkpoint), "scene.pt")
        if not os.path.isfile(path):
            return
        self._close()

        def restore(handle):
            if pool.same_node(handle):
                return handle.restore.remote(path, self.ctx.scorer)
            with open(path, "rb") as f:
                return handle.import_state.remote(f.read(), self.ctx.scorer)

        self._attach(restore)

    def _close(self) -> None:
        if self.slot is not None:
            try:
                ray.get(self.worker.close.remote(self.slot))
            except ray.exceptions.RayActorError:
                pass  # the worker died: its slots died with it
        self.worker, self.slot = None, None

    def cleanup(self) -> None:
        self._close()

    def reset_config(self, new_config: dict) -> bool:
        """Reuse this Trainable process for the next trial (TuneConfig.reuse_actors)."""
        self._close()
        self._configure(new_config)
        return True
