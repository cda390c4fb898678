"""The worker pool: how trials reach SceneWorkers.

Placement is keyed by model: for each model name a sweep needs, the driver starts `workers` named, detached
actors `<prefix>-<model slug>-<i>` in the Ray namespace 'sjc'. A trial holds no worker of its own: it looks
its model's workers up by name (`acquire`), asks PROBE of them at a time (all, in order, for PROBE or fewer
workers; a random group of PROBE otherwise: the power of two choices) for their load, in parallel, and opens a
slot on the least loaded one (same node first), falling through to the next when one says WorkerFull, then to
the next group; that refusal happens inside the actor, so two trials can never overbook a worker. So a trial's
placement costs a fixed number of calls at any pool size (asking every one of 1,000 workers per trial would be
20,000 calls a second at 20 trials a second). Handles found by name are kept per process (a Trainable process
serves trial after trial) with each worker's node, and dropped when a call finds the actor dead. A worker
found dead (killed, node lost) is recreated under the same name by whichever trial notices first
(`get_if_exists`), so a killed worker's trials resume from their checkpoints on its replacement or on a sibling. The driver kills every worker when the sweep ends.
"""
import contextlib
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from .slot_errors import WorkerFull
from .worker_options import WorkerOptions

NAMESPACE = "sjc"


def slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()[-40:] or "model"


@dataclass(frozen=True)
class PoolSpec:
    """The pool of one sweep: actor-name prefix, how many workers per model, and their resources."""

    prefix: str
    workers: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    options: WorkerOptions | None = None

    def names(self, model: str) -> list[str]:
        return [f"{self.prefix}-{slug(model)}-{i}" for i in range(self.workers)]

    def worker_options(self, model: str) -> WorkerOptions:
        from dataclasses import replace

        return replace(self.options or WorkerOptions(model), model=model)


def ensure_worker(spec: PoolSpec, model: str, name: str):
    """The live actor of that name, created (detached, threaded) if it does not exist or died."""
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        pass
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from .worker import SceneWorker  # torch is imported only where a worker is created

    opts = spec.worker_options(model)
    # placement_group=None: a trial recreating a worker must not squeeze it into the trial's own placement
    # group (Tune captures child actors there), or it would wait forever for resources the trial holds.
    actor = ray.remote(SceneWorker).options(
        name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=spec.cpus,
        num_gpus=spec.gpus, max_concurrency=opts.max_slots + 8, max_restarts=0,
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None))
    return actor.remote(opts)


def start(spec: PoolSpec, models: list[str], preload: dict | None = None) -> list:
    """Create every worker of every model and wait until they answer. `preload`: a run config of the one model in
    `models`, sent to every worker: its libraries' imports (`SlotStepper.prepare`) are waited for, so they do not
    compete with Tune's trial launches; the load itself (`SlotStepper.preload`) is not, so the model loads while
    Tune starts the trials. None: each worker loads on its first `open`."""
    handles = [ensure_worker(spec, m, n) for m in models for n in spec.names(m)]
    waits = [h.ping.remote() for h in handles]
    for h in handles if preload is not None else ():
        with contextlib.suppress(AttributeError):  # a kept --pool of older code has no preload: it loads on open
            h.preload.remote(preload)  # fire and forget: it never raises, and the worker's stats say what it did
        with contextlib.suppress(AttributeError):  # nor, older still, prepare
            waits.append(h.prepare.remote(preload))  # never raises either
    ray.get(waits)
    return handles


PROBE = 4  # workers asked for their load at a time
_handles: dict[str, object] = {}  # this process's handles, by actor name
_nodes: dict[str, str] = {}  # actor id -> node id, learnt from placements


def lookup(spec: PoolSpec, model: str, name: str):
    """The handle of a worker by name, kept for this process (created if missing: ensure_worker)."""
    if name not in _handles:
        _handles[name] = ensure_worker(spec, model, name)
    return _handles[name]


def forget(name: str) -> None:
    """Drop a kept handle whose actor died (the next lookup finds, or recreates, the live one)."""
    handle = _handles.pop(name, None)
    if handle is not None:
        _nodes.pop(handle._actor_id.hex(), None)


def groups(n: int, probe: int = PROBE, rng: random.Random | None = None) -> list[list[int]]:
    """Worker indices in the groups a trial asks in turn: one group in order for n <= probe, else a random
    order cut into groups of `probe`."""
    order = list(range(n))
    if n > probe:
        (rng or random).shuffle(order)
    return [order[i:i + probe] for i in range(0, n, probe)]


def _placements(spec: PoolSpec, model: str, indices: list[int]) -> list[tuple]:
    """(load, other node?, index, name, handle) of the live workers among `indices`, asked in parallel; dead
    ones are skipped and forgotten (recreated next time)."""
    here, names = ray.get_runtime_context().get_node_id(), spec.names(model)
    asked = [(i, names[i], lookup(spec, model, names[i])) for i in indices]
    refs = [h.placement.remote() for _, _, h in asked]
    out = []
    for (i, name, handle), ref in zip(asked, refs):
        try:
            p = ray.get(ref, timeout=600)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            forget(name)
            continue
        _nodes[handle._actor_id.hex()] = p["node"]
        out.append((p["load"] / p["max"], p["node"] != here, i, name, handle))
    return sorted(out, key=lambda t: t[:3])


def acquire(spec: PoolSpec, model: str, open_call, timeout: float = 3600.0, poll: float = 0.5):
    """(name, handle, result of open_call(handle)) on the least loaded worker that accepts, asking one group of
    workers at a time (`groups`); waits while all are full. `open_call(handle)` issues `open` or `restore` and
    returns its ObjectRef."""
    deadline = time.monotonic() + timeout
    while True:
        for group in groups(spec.workers):
            for *_, name, handle in _placements(spec, model, group):
                try:
                    return name, handle, ray.get(open_call(handle))
                except WorkerFull:
                    continue
                except ray.exceptions.RayActorError:
                    forget(name)
                    continue
        if time.monotonic() > deadline:
            raise TimeoutError(f"no '{model}' worker had a free slot for {timeout:.0f} s")
        time.sleep(poll)


def same_node(handle) -> bool:
    """Whether the worker runs on this process's node (known from its placement, else asked)."""
    node = _nodes.get(handle._actor_id.hex()) or ray.get(handle.node_id.remote())
    return node == ray.get_runtime_context().get_node_id()


def collect_stats(spec: PoolSpec, models: list[str]) -> list[dict]:
    """Every worker's counters (model loads, rounds, scene-steps, mean batch), for the sweep summary: each live
    worker's own (also written to its stats file, so they are final there), then, from the stats folder, those
    of incarnations that died (killed, or shut down by an earlier session of a resumed sweep), marked `dead`."""
    live = []
    for m in models:
        for name in spec.names(m):
            try:
                handle = ray.get_actor(name, namespace=NAMESPACE)
                live.append({"name": name, **ray.get(handle.worker_stats.remote(), timeout=60)})
            except (ValueError, ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                continue
    for w in live:
        if w.get("stats_path"):
            Path(w["stats_path"]).write_text(json.dumps(w))
    return live + dead_workers(spec, {w.get("stats_path") for w in live})


def dead_workers(spec: PoolSpec, live_paths: set) -> list[dict]:
    """The last counters of every other incarnation found in the pool's stats folder."""
    folder = Path(spec.options.stats_dir) if spec.options is not None and spec.options.stats_dir else None
    if folder is None or not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json")):
        if str(path) not in live_paths:
            try:
                out.append({"name": path.name.split(".")[0], **json.loads(path.read_text()), "dead": True})
            except (OSError, ValueError):
                continue  # a file cut short by the death
    return out


def shutdown(spec: PoolSpec, models: list[str]) -> None:
    """Kill every worker of the sweep (they are detached: nothing else would)."""
    for m in models:
        for name in spec.names(m):
            try:
                ray.kill(ray.get_actor(name, namespace=NAMESPACE))
            except ValueError:
                pass
