"""WorkerOptions: what a SceneWorker is built with. Plain and picklable (no torch, no Ray), because it travels
inside every trial's context: a trial that finds its worker dead recreates it from these options."""
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerOptions:
    """The model a worker serves, its slot bound, torch threads and GPU share, and the folder where each worker
    keeps its counters (`<actor name>.<actor id>.json`, read into summary.json; "" = none, e.g. a shared
    `--pool`). Per-trial choices (scorer, evaluation) travel with each call instead, so one pool can serve
    several sweeps."""

    model: str
    max_slots: int = 4
    threads: int = 0
    gpus: float = 0.0
    stats_dir: str = ""
