"""SceneWorker: the Ray actor that holds one model on one GPU (or GPU share, or CPU share) and serves many trials.

It is a SlotStepper (stepper.py: slots, batched rounds, bounded memory, model-load counter) plus what only a
Ray process knows: its node, its GPUs, and the final evaluator (the judge loads once per worker). Created by
`pool.start` / `pool.ensure_worker` as a named, detached, threaded actor (`max_concurrency` above its slot
count, so that every trial's blocking `advance` call can wait on the same round). Importing this module touches
neither Ray's cluster nor CUDA; the model loads inside the actor process: from the `preload` the sweep sends as
soon as the actor exists (pool.start), or else on the first `open`.
"""
from .evaluator import RunEvaluator
from .stepper import SlotStepper
from .worker_options import WorkerOptions


class SceneWorker(SlotStepper):
    """A SlotStepper living in a Ray actor; see the module docstring and sjc_dist/distributed/README.md."""

    def __init__(self, options: WorkerOptions):
        super().__init__(options.model, options.max_slots, options.threads, stats_path=stats_file(options))
        self.options = options
        self.evaluators: dict[tuple, RunEvaluator] = {}

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def placement(self) -> dict:
        """What the pool sorts workers by: slots in use, capacity, and the node."""
        return {"load": self.load(), "max": self.max_slots, "node": self.node_id()}

    def advance(self, slot: int, n: int) -> dict:
        out = super().advance(slot, n)
        out["gpu_seconds"] = out["device_seconds"] * self.options.gpus
        return out

    def finish(self, slot: int, run_dir: str, evaluation: dict | None = None,  # type: ignore[override]
               note: str = "") -> dict:
        """Write the run folder and evaluate it with `evaluation` = {judge, views, prompts} (None: skip, `note`
        says why). Evaluators (and their judge models) are cached per setting: loaded once per worker."""
        if evaluation is None:
            return super().finish(slot, run_dir, None, note)
        key = (evaluation.get("judge", "toy"), int(evaluation.get("views", 8)), tuple(evaluation.get("prompts", ())))
        if key not in self.evaluators:
            self.evaluators[key] = RunEvaluator(*key)
        return super().finish(slot, run_dir, self.evaluators[key])

    def ping(self) -> bool:
        return True


def stats_file(options: WorkerOptions) -> str:
    """`<stats_dir>/<actor name>.<actor id>.json`: one file per incarnation (a recreated worker gets its own)."""
    if not options.stats_dir:
        return ""
    import os

    import ray

    ctx = ray.get_runtime_context()
    os.makedirs(options.stats_dir, exist_ok=True)
    return os.path.join(options.stats_dir, f"{ctx.get_actor_name()}.{ctx.get_actor_id()}.json")
