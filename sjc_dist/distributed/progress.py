"""SweepProgress: what a running sweep has done so far, on the driver's stderr, beside the progress bars (Tune's own reporter is off; stdout ends with the JSON summary).

A Tune Callback (driver only). At most one line every `every` seconds as results come, and one as each trial
ends: trials started and ended of the total, the furthest step of any trial, and the best value so far of the
scheduler's metric, e.g.

    sjc sweep: 4/4 trials reported, 1 ended; furthest step 150/200; best score/iou so far 0.7523
"""
import math
import sys
import time

from ray import tune


class SweepProgress(tune.Callback):
    """Progress lines of a sweep of `total` trials ranked during the run by `metric` (`mode` max or min)."""

    def __init__(self, total: int, metric: str, mode: str, every: float = 15.0):
        self.total, self.metric, self.mode, self.every = total, metric, mode, every
        self.steps: dict[str, tuple[int, int]] = {}  # trial id -> (step reached, steps in all)
        self.ended: set[str] = set()
        self.best: float | None = None
        self.last = time.monotonic()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.steps[trial.trial_id] = (int(result.get("sjc_step", 0)), int(result.get("steps_total", 0)))
        self.consider(result.get(self.metric))
        if time.monotonic() - self.last >= self.every:
            self.show()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended.add(trial.trial_id)
        self.show()

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.on_trial_complete(iteration, trials, trial)

    def consider(self, value) -> None:
        """Keep `value` as the best so far if it is a finite number better than the best."""
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
            self.best = float(value)

    def line(self) -> str:
        step, total = max(self.steps.values(), default=(0, 0))
        best = f"{self.best:.4g}" if self.best is not None else "n/a"
        return (f"sjc sweep: {len(self.steps)}/{self.total} trials reported, {len(self.ended)} ended; "
                f"furthest step {step}/{total}; best {self.metric} so far {best}")

    def show(self) -> None:
        self.last = time.monotonic()
        print(self.line(), file=sys.stderr, flush=True)
