"""`run_job`: a whole run from a config to a folder of results (the engine's one entry point for the CLI
and the distributed workers alike). Resumes from the folder's checkpoint when there is one.

The folder's `config.json` is the config of its checkpoint: a fresh run writes it at the start, a resumed one
only with its first new checkpoint (optimize writes both together), so a resume that diverges with new settings
leaves the last good checkpoint and the config that made it.
"""
import json
import re
import time
from pathlib import Path

from .artifacts import write_outputs
from .config import RunConfig
from .configtools import load_yaml, to_json
from .diffusion.load import Model, load_model
from .errors import ResumeError
from .optim.checkpoint import load_checkpoint
from .optim.loop import optimize
from .optim.run import SJCRun


def default_run_dir(cfg: RunConfig) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", cfg.prompt.text.lower()).strip("-")[:40] or "run"
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{slug}"


def resumable_config(run_dir: Path) -> dict:
    """The saved config of a run folder that `--resume` can continue; ResumeError saying what is missing."""
    if not run_dir.is_dir():
        raise ResumeError(str(run_dir), "there is no such folder")
    if not (run_dir / "config.json").is_file():
        raise ResumeError(str(run_dir), "it has no config.json, so it is not a run folder (sjc run writes one)")
    if not (run_dir / "checkpoint.pt").is_file():
        raise ResumeError(str(run_dir), "it has no checkpoint.pt: the run stopped before its first checkpoint "
                                        "(output.checkpoint_every); start it again without --resume")
    return load_yaml(run_dir / "config.json")


def checkpoint_step(run_dir: Path) -> int | None:
    """The step of the folder's checkpoint, or None without one."""
    ckpt = run_dir / "checkpoint.pt"
    return int(load_checkpoint(ckpt)["step"]) if ckpt.is_file() else None


def open_run(cfg: RunConfig, model: Model, run_dir: Path, dims: int = 3) -> SJCRun:
    """A run in `run_dir`, resumed from its checkpoint if one is there."""
    run = SJCRun(cfg, model, dims)
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        run.load_state_dict(load_checkpoint(ckpt))
    return run


def run_job(cfg: RunConfig, dims: int = 3, model: Model | None = None, callbacks=()) -> Path:
    """Optimise, write every output, return the run folder."""
    run_dir = Path(cfg.output.dir) if cfg.output.dir else default_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "checkpoint.pt").exists():  # a resume's config.json changes with its first checkpoint
        (run_dir / "config.json").write_text(to_json(cfg))
    model = model or load_model(cfg.model, cfg.prompt.text, cfg.guidance.weight)
    run = open_run(cfg, model, run_dir, dims)
    start = time.perf_counter()
    first = run.step_index
    optimize(run, cfg.steps, run_dir, callbacks, cfg.output.log_every, cfg.output.checkpoint_every,
             cfg.output.progress)
    seconds = time.perf_counter() - start
    files = write_outputs(run, run_dir)
    summary = {"steps": run.step_index, "resumed_from": first, "seconds": seconds,
               "seconds_per_step": seconds / max(run.step_index - first, 1), "device": str(model.device),
               "files": {k: str(v) for k, v in files.items()}}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir
