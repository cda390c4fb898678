"""`optimize`: the only optimisation loop. Steps a run to `steps`, with callbacks every `log_every` steps,
metrics as JSON lines, checkpoints every `checkpoint_every` steps (only after a finiteness check, so the last
checkpoint on disk is always a good one, saved with the config that produced it), and a progress bar that
shows the expected remaining time from the first steps.
"""
import dataclasses
import json
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..configtools import to_json
from .checkpoint import save_checkpoint
from .run import SJCRun, StepMetrics

Callback = Callable[[StepMetrics], None]


def optimize(run: SJCRun, steps: int, run_dir: Path | None = None, callbacks: tuple[Callback, ...] = (),
             log_every: int = 100, checkpoint_every: int = 0, progress: bool = True,
             stop_after: int | None = None) -> StepMetrics | None:
    """Advance `run` until it has taken `steps` steps (or `stop_after` more steps). Returns the last metrics."""
    ckpt = run_dir / "checkpoint.pt" if run_dir is not None else None
    log = (run_dir / "metrics.jsonl").open("a") if run_dir is not None else None
    last_good = str(ckpt) if ckpt is not None and ckpt.exists() else None
    end = steps if stop_after is None else min(steps, run.step_index + stop_after)
    bar = tqdm(total=steps, initial=run.step_index, disable=not progress, desc="sjc", unit="step",
               dynamic_ncols=True)
    metrics = None
    try:
        while run.step_index < end:
            run.step()
            bar.update(1)
            i = run.step_index
            if i % log_every == 0 or i == end:
                run.check_finite(last_good)
                metrics = run.metrics()
                bar.set_postfix(loss=f"{metrics.loss:.3g}", sigma=f"{metrics.sigma:.3g}",
                                opacity=f"{metrics.opacity:.2f}")
                if log is not None:
                    log.write(json.dumps(dataclasses.asdict(metrics)) + "\n")
                    log.flush()
                for cb in callbacks:
                    cb(metrics)
            if ckpt is not None and ((checkpoint_every and i % checkpoint_every == 0) or i == end):
                run.check_finite(last_good)
                last_good = str(save_checkpoint(run.state_dict(), ckpt, to_json(run.cfg)))
    finally:
        bar.close()
        if log is not None:
            log.close()
    return metrics
