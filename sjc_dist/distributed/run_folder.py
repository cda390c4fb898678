"""RunFolder: a sweep trial's run folder, kept by its worker, with the same files as a `sjc run` folder.

  config.json        the resolved config, written when the slot opens (so even a failed trial's folder says what
                     it ran)
  metrics.jsonl      one line per report: the step metrics of `optimize`'s log (`step` counts steps taken) plus
                     the intermediate scores; a restored slot cuts the lines past its checkpoint, so a trial
                     retried after a worker died keeps one line per step
  checkpoint.pt      the run's state at the end (finished or stopped), loadable by `sjc run --resume`
  field.safetensors, views.png, depth.png, turntable.gif, mesh.ply, summary.json   at the end (artifacts.py)
A folder of "" (a slot opened without `output.dir`) writes nothing. No Ray, no MLflow.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..configtools import to_json
from ..optim.checkpoint import save_checkpoint, to_host
from ..optim.run import SJCRun

if TYPE_CHECKING:
    from ..artifacts import Outputs


@dataclass
class Finished:
    """What `RunFolder.gather` takes off the device for `write`: the outputs, the checkpoint's state on the host, the
    steps taken and asked for, and the config as JSON."""

    outputs: "Outputs"
    state: dict
    steps: int
    steps_total: int
    config: str


class RunFolder:
    """The files of one trial's run folder (see the module docstring)."""

    def __init__(self, path: str):
        self.path = Path(path) if path else None

    def start(self, run: SJCRun) -> None:
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / "config.json").write_text(to_json(run.cfg))

    def log(self, step: int, metrics: dict) -> None:
        """Append one report (numbers only) to metrics.jsonl."""
        if self.path is None:
            return
        line = {"step": step, **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        with (self.path / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(line) + "\n")

    def cut(self, step: int) -> None:
        """Keep the metrics.jsonl lines of steps <= `step` (a slot restored from its checkpoint at `step`)."""
        log = self.path / "metrics.jsonl" if self.path is not None else None
        if log is None or not log.is_file():
            return
        lines = [ln for ln in log.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        log.write_text("".join(ln + "\n" for ln in lines))

    def gather(self, run: SJCRun) -> "Finished":
        """The device part of `finish`, for a worker to run under its device lock: the outputs and the
        checkpoint's state on the host, and the step counts. On a CPU worker they are the run's own tensors, not
        copies: the run must not step again before `write` (a finishing slot is not stepped)."""
        from ..artifacts import gather_outputs

        assert self.path is not None, "finish needs a run folder (output.dir)"
        return Finished(gather_outputs(run), to_host(run.state_dict()), run.step_index, run.cfg.steps,
                        to_json(run.cfg))

    def write(self, done: "Finished", device_seconds: float, note: str = "") -> dict[str, str]:
        """The host part of `finish` (no device): the outputs, checkpoint.pt and summary.json; returns name ->
        path of every file."""
        from ..artifacts import save_outputs

        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.json").write_text(done.config)
        files = {k: str(v) for k, v in save_outputs(done.outputs, self.path).items()}
        files["checkpoint"] = str(save_checkpoint(done.state, self.path / "checkpoint.pt"))
        files["config"] = str(self.path / "config.json")
        if (self.path / "metrics.jsonl").is_file():
            files["metrics"] = str(self.path / "metrics.jsonl")
        summary = {"steps": done.steps, "steps_total": done.steps_total,
                   "device_seconds": device_seconds, "files": files, **({"note": note} if note else {})}
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2))
        return files

    def finish(self, run: SJCRun, device_seconds: float, note: str = "") -> dict[str, str]:
        """Write the outputs, checkpoint.pt and summary.json (`gather` then `write`)."""
        return self.write(self.gather(run), device_seconds, note)
