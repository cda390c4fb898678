"""Generation for the benchmark: a group of jobs sharing one model, stepped together in a SceneBatch (one
denoiser forward per step for all K scenes), each writing the same run folder as `sjc run` (config.json,
metrics.jsonl, checkpoint.pt, field.safetensors, views.png, ..., summary.json).

A folder that already holds a summary.json is finished and skipped, and a checkpoint is resumed, so a benchmark
that was interrupted continues where it stopped. A scene that diverges (NaN/Inf) is dropped from the batch and
reported; the others go on. Each scene keeps its own generators, so its result does not depend on its batch.
"""
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import write_outputs
from ..configtools import to_json
from ..diffusion.load import Model, load_model
from ..errors import DivergenceError
from ..jobs import open_run
from ..optim.checkpoint import save_checkpoint
from ..optim.multiscene import SceneBatch
from ..optim.run import SJCRun
from .benchmark import BenchJob


@dataclass
class RunOutcome:
    """How one job ended: ok | skipped (already finished) | diverged | failed (its group raised), with its
    share of the group's wall time and the error text."""

    run_dir: str
    status: str
    seconds: float = 0.0
    error: str = ""


@dataclass
class Slot:
    """A job's open run and its log file while it is in the batch."""

    job: BenchJob
    run: SJCRun
    log: object
    error: str = ""


def is_finished(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "summary.json").is_file() and (Path(run_dir) / "field.safetensors").is_file()


def open_slot(job: BenchJob, model: Model) -> Slot:
    cfg = job.run_config()
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(to_json(cfg))
    return Slot(job, open_run(cfg, model, run_dir, dims=3), (run_dir / "metrics.jsonl").open("a"))


def log_step(slot: Slot) -> None:
    """At the logging cadence: the finiteness check, then one metrics line."""
    slot.run.check_finite()
    slot.log.write(json.dumps(dataclasses.asdict(slot.run.metrics())) + "\n")
    slot.log.flush()


PROGRESS_EVERY_S = 15.0  # seconds between a batch's progress lines


def show_progress(active: list[Slot], n: int) -> float:
    """One line: how many of the batch's n scenes still step, and where the furthest is; returns the time."""
    step = max(s.run.step_index for s in active)
    print(f"sjc bench: {len(active)}/{n} scenes stepping, at step {step}/{active[0].run.cfg.steps}", file=sys.stderr,
          flush=True)
    return time.monotonic()


def advance(slots: list[Slot]) -> None:
    """Step every unfinished, healthy slot together until all reach their step budgets."""
    batch = SceneBatch([s.run for s in slots])
    active = [s for s in slots if s.run.step_index < s.run.cfg.steps]
    shown = time.monotonic()
    while active:
        batch.step_all([s.run for s in active])
        if time.monotonic() - shown >= PROGRESS_EVERY_S:
            shown = show_progress(active, len(slots))
        for s in active:
            r, out = s.run, s.run.cfg.output
            i = r.step_index
            try:
                if i % out.log_every == 0 or i == r.cfg.steps:
                    log_step(s)
                if out.checkpoint_every and i % out.checkpoint_every == 0 and i < r.cfg.steps:
                    save_checkpoint(r.state_dict(), Path(s.job.run_dir) / "checkpoint.pt")
            except DivergenceError as err:
                s.error = str(err)
        active = [s for s in active if not s.error and s.run.step_index < s.run.cfg.steps]


def close_slot(slot: Slot, seconds: float, batch_size: int) -> RunOutcome:
    """Write the outputs and summary of a finished slot (or report its divergence)."""
    slot.log.close()
    run_dir = Path(slot.job.run_dir)
    if slot.error:
        return RunOutcome(str(run_dir), "diverged", seconds, slot.error)
    run = slot.run
    save_checkpoint(run.state_dict(), run_dir / "checkpoint.pt")
    files = write_outputs(run, run_dir)
    summary = {"steps": run.step_index, "seconds": seconds, "seconds_per_step": seconds / max(run.step_index, 1),
               "batched_with": batch_size, "device": str(run.device), "method": slot.job.method,
               "files": {k: str(v) for k, v in files.items()}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return RunOutcome(str(run_dir), "ok", seconds)


def run_group(jobs: list[BenchJob], model: Model | None = None) -> list[RunOutcome]:
    """Run a group of jobs that share a model (see benchmark.group_key); returns one outcome per job."""
    todo = [j for j in jobs if not is_finished(j.run_dir)]
    outcomes = {j.run_dir: RunOutcome(j.run_dir, "skipped") for j in jobs if j not in todo}
    if todo:
        first = todo[0].run_config()
        model = model or load_model(first.model, first.prompt.text, first.guidance.weight)
        slots = [open_slot(j, model) for j in todo]
        start = time.perf_counter()
        advance(slots)
        share = (time.perf_counter() - start) / len(slots)  # one denoiser forward served every scene
        outcomes.update({s.job.run_dir: close_slot(s, share, len(slots)) for s in slots})
    return [outcomes[j.run_dir] for j in jobs]
