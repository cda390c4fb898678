"""SlotStepper: the engine inside a SceneWorker, without Ray: one model, up to `max_slots` scenes, batched steps.

Slots: open(run_config_dict) -> slot, advance(slot, n) -> metrics, save(slot, path), restore(path) -> slot,
close(slot); preload(run_config_dict) loads a model before any slot asks for it (the sweep sends it as soon as
the worker exists, so the load overlaps the trials' start-up instead of holding the first `open`). Callers (one
thread per trial: Ray runs the actor's methods on a thread pool) only post work; one stepper thread runs
*rounds*: every slot with steps still to take advances by one step, and all scenes on the same loaded model
share one denoiser forward (`SceneBatch.step_all`). So K trials stepping at once on one worker cost one batched
forward per step, not K. Each scene keeps its own generators, so a scene's trajectory does not depend on who it
was batched with.
Memory is bounded by `max_slots`: each slot holds one field, its optimiser state and one step's activations;
the forward batch is at most max_slots x views_per_step x n_noise (x2 with CFG). `open` on a full worker
raises WorkerFull instead of allocating. Models load once per worker and model key (every ModelConfig field;
plus the prompt for 'empirical', whose data *is* the prompt's object); `loads` counts them.
Errors crossing to Ray are plain-message exceptions (SlotError, WorkerFull), and a diverged scene is reported
in its metrics (`sjc_status: failed`), never raised: Tune would otherwise retry it. A round that raises fails
only the scenes that raise when stepped alone (`step_round`); the others go on.
Each slot keeps its trial's run folder (run_folder.py: config.json, metrics.jsonl, and at the end the outputs and
checkpoint.pt); `stats_path` keeps a copy of the worker's counters on disk, so a dead worker is still counted.
Device work is serialised: rounds, opening and restoring scenes, scoring, saving and the finish's device part
(renders, decodes, copies: `RunFolder.gather`; its files are encoded and written outside) all hold one
lock (`device_lock`, a DeviceLock), because the model is not safe to call from two threads at once on a GPU
(FastDenoiser's CUDA graphs share one static memory pool, and capturing a graph forbids other threads'
allocations). Callers go before the next round, so back-to-back rounds never starve an `open`. A preload
loads holding the device lock and `load_lock`, as an open does, and only on a worker without slots, so nothing
else is on the device meanwhile and no scene is built until it ends.
Timing: `WorkerStats` keeps the wall-clock time (time.time(), s) of the first and last round and a timeline of
[time, rounds, scene_steps, batch] samples (every round, thinned to at most TIMELINE_MAX rows), from which a
benchmark reads steady-state scene-iterations per second (eval/bench/multi_gpu_sweep.py).
"""
import contextlib
import dataclasses
import io
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import RunConfig, load_config
from ..configtools import to_dict
from ..diffusion.load import Model, import_backend, load_model
from ..errors import DivergenceError, SJCError
from ..optim.checkpoint import load_checkpoint, save_checkpoint
from ..optim.multiscene import SceneBatch
from ..optim.run import SJCRun
from .run_folder import RunFolder
from .scoring import make_scorer
from .slot_errors import SlotError, WorkerFull

TIMELINE_MAX = 4096  # timeline rows kept per worker; past it, every other row is dropped and the interval doubles
STATS_EVERY_S = 1.0  # the stats file is rewritten at most this often between reports


@dataclass
class Slot:
    """One scene on the worker: its run, steps still to take, and its share of device time."""

    run: SJCRun
    score: Callable
    scorer: str
    folder: RunFolder
    todo: int = 0
    error: str = ""
    device_seconds: float = 0.0


@dataclass
class WorkerStats:
    """Counters of one worker: model loads, rounds (denoiser forwards) and scene-steps, and when rounds ran:
    `first_round_at` / `last_round_at` (wall clock, s since the epoch, at the end of the round) and `timeline`,
    rows [end time s, rounds so far, scene_steps so far, scenes in this round] every `timeline_every` rounds.
    `phase_s` / `phase_n`: seconds and counts of the trial-side work by phase: 'open_wait' / 'open' (a slot's
    scene built on the device; 'load' the model loads within), 'report_wait' / 'report' (waiting
    for, then holding, the device lock to check and score a report), 'gather_wait' / 'gather' (the finish's device
    part), 'write' (its files, off the lock), 'evaluate_wait' / 'evaluate' (the judge). Summed over trials' threads,
    so they can exceed wall time; the *_wait phases are time a trial was blocked behind rounds or other trials.
    `started_at` / `first_open_at`: wall clock when the worker was built and when a trial first asked it for a
    slot (with `first_round_at`, they split a sweep's time to its first round); `load_started_at` /
    `load_done_at`: when its first model load began and ended (before `first_open_at` when a preload did it).
    `preload`: what `SlotStepper.preload` did ('' none asked, 'loaded', 'already loaded', 'skipped: ...',
    'failed: ...'), its call counted as phase 'preload' ('load' within it). `load_phases`: the first load's
    seconds by phase (`Model.load_s`: imports, unet, unet_to_device, vae, text, wrap)."""

    model: str
    loads: int = 0
    rounds: int = 0
    scene_steps: int = 0
    open_slots: int = 0
    max_slots: int = 0
    opened: int = 0
    model_keys: list = field(default_factory=list)
    first_round_at: float | None = None
    last_round_at: float | None = None
    timeline: list = field(default_factory=list)
    timeline_every: int = 1
    phase_s: dict = field(default_factory=dict)
    phase_n: dict = field(default_factory=dict)
    started_at: float | None = None
    first_open_at: float | None = None
    load_started_at: float | None = None
    load_done_at: float | None = None
    preload: str = ""
    load_phases: dict = field(default_factory=dict)

    def add_phase(self, name: str, seconds: float) -> None:
        self.phase_s[name] = self.phase_s.get(name, 0.0) + seconds
        self.phase_n[name] = self.phase_n.get(name, 0) + 1

    @property
    def mean_batch(self) -> float:
        return self.scene_steps / max(self.rounds, 1)

    def record_round(self, batch: int, now: float) -> None:
        """Count one round of `batch` scenes that ended at `now` (time.time(), s). The timeline stays bounded:
        at TIMELINE_MAX rows every other row is dropped and rows are taken half as often (it keeps the rounds
        that are multiples of the new interval), so it always spans the whole history."""
        self.rounds += 1
        self.scene_steps += batch
        if self.first_round_at is None:
            self.first_round_at = now
        self.last_round_at = now
        if self.rounds % self.timeline_every == 0:
            self.timeline.append([now, self.rounds, self.scene_steps, batch])
            if len(self.timeline) >= TIMELINE_MAX:
                self.timeline = self.timeline[1::2]
                self.timeline_every *= 2


class DeviceLock:
    """One thread at a time on the worker's device. `with lock:` (re-entrant) is for callers (open, score, save,
    finish); `with lock.round():` is the stepper's, and waits until no caller is waiting, so callers go before
    the next round (rounds follow one another without a gap: a plain lock could starve them)."""

    def __init__(self):
        self._lock, self._cv, self._waiting = threading.RLock(), threading.Condition(), 0

    def __enter__(self) -> None:
        with self._cv:
            self._waiting += 1
        try:
            self._lock.acquire()
        finally:
            with self._cv:
                self._waiting -= 1
                self._cv.notify_all()

    def __exit__(self, *exc) -> None:
        self._lock.release()

    @contextlib.contextmanager
    def round(self) -> Iterator[None]:
        with self._cv:
            self._cv.wait_for(lambda: self._waiting == 0)
        with self._lock:
            yield


def model_key(cfg: RunConfig) -> tuple:
    """What identifies a loaded model: every ModelConfig field; the empirical model's data is the prompt's too."""
    key = dataclasses.astuple(cfg.model)
    return key + (cfg.prompt.text,) if cfg.model.name == "empirical" else key


def step_round(runs: list[SJCRun]) -> dict[int, str]:
    """One step of every run in one SceneBatch; returns {index: error} of the runs that failed.

    If the batched step raises before any run took its optimiser step (render, denoiser, losses, backward), each
    run steps again alone, its generators rewound to before the round (a run's trajectory is the same alone or
    batched), so an error fails only the runs that raise it alone; the others go on as if batched. An error in
    the batched optimiser step itself (grouped across scenes, optim/adamax.py) cannot be undone for the runs
    that took part: they fail, and the message says so. Steps in messages count from 1."""
    rewind = [(r.step_index, r.cpu_gen.get_state(), r.noise_gen.get_state()) for r in runs]
    try:
        SceneBatch(runs).step_all()
        return {}
    except Exception as err:  # noqa: BLE001 - whose error it is is found below
        kind, message = type(err).__name__, str(err)
    errors = {}
    for i, (run, (step, cpu, noise)) in enumerate(zip(runs, rewind)):
        where = f"at step {step + 1} of {run.cfg.steps}"
        if run.step_index != step:
            errors[i] = f"{kind} {where}, in the optimiser step it shared with {len(runs) - 1} other(s): {message}"
            continue
        run.cpu_gen.set_state(cpu)
        run.noise_gen.set_state(noise)
        try:
            SceneBatch([run]).step_all()
        except Exception as err:  # noqa: BLE001 - reported in the slot's metrics, the worker goes on
            errors[i] = f"{type(err).__name__} {where}: {err}"
    return errors


def divergence_text(err: DivergenceError, steps: int) -> str:
    """The engine's message with its step counted from 1 (as sjc_step is) and without its checkpoint note (a
    trial's checkpoints are Tune's)."""
    text = str(err).split("; ")[0]
    engine = f"run diverged at step {err.step}:"
    if text.startswith(engine):
        text = f"run diverged at step {err.step + 1} of {steps}:" + text[len(engine):]
    return f"DivergenceError: {text}"


class SlotStepper:
    """Holds the scenes of one model and steps them in batched rounds on a background thread."""

    def __init__(self, model_name: str, max_slots: int = 4, threads: int = 0,
                 loader: Callable[..., Model] = load_model, stats_path: str = ""):
        if threads > 0:
            torch.set_num_threads(threads)
        self.model_name, self.max_slots, self.loader = model_name, max_slots, loader
        self.stats_path, self._stats_written = stats_path, 0.0  # the counters survive the worker (summary.json)
        self.models: dict[tuple, Model] = {}
        self.slots: dict[int, Slot | None] = {}
        self.stats = WorkerStats(model_name, max_slots=max_slots, started_at=time.time())
        self.cv, self.load_lock = threading.Condition(), threading.RLock()  # re-entrant: preload holds it over _model
        self.device_lock = DeviceLock()  # one thread at a time on the model and the scenes' tensors
        self._next, self._stop = 0, False
        self.thread = threading.Thread(target=self._loop, name="sjc-stepper", daemon=True)
        self.thread.start()

    # --- slots ----------------------------------------------------------------------------------------------
    def open(self, run_config: dict, scorer: str = "auto") -> int:
        """Validate a run config (the same `load_config` as `sjc run`) and open a scene for it, scored by
        `scorer` (scoring.py) at every report. A fresh start: its folder's metrics.jsonl starts over too."""
        slot = self._open(run_config, scorer)
        self.slots[slot].folder.cut(0)
        return slot

    def _open(self, run_config: dict, scorer: str) -> int:
        with self.cv:
            self.stats.first_open_at = self.stats.first_open_at or time.time()
        cfg = self._validate(run_config)
        slot, built = self._reserve(), False
        try:
            with self._locked("open"):  # the first slot's model load included (unless preloaded), a phase too
                run = SJCRun(cfg, self._model(cfg))
                score, scorer = make_scorer(scorer, run)
            built = True
        except (SJCError, ValueError) as err:
            raise SlotError(str(err)) from None
        finally:
            if not built:  # any failure (also a load error or out of memory) frees the reserved slot
                self._release(slot)
        folder = RunFolder(cfg.output.dir)
        folder.start(run)
        with self.cv:
            self.slots[slot] = Slot(run, score, scorer, folder)
            self.stats.opened += 1
        return slot

    def preload(self, run_config: dict) -> bool:
        """Load the model of `run_config` (validated as `open` does) now, so the first `open` finds it loaded; True
        when it is loaded. Never raises: what it did goes to `stats.preload`, and after a failure (a bad config,
        missing weights, out of memory) the first `open` loads, and reports its error, as without a preload."""
        start, loaded = time.perf_counter(), False
        try:
            cfg = self._validate(run_config)
            with self.device_lock, self.load_lock:  # the open's lock order; an open meanwhile waits for both
                if model_key(cfg) in self.models:
                    note, loaded = "already loaded", True
                elif self.load():  # a busy worker: its rounds would wait out a load its opens may not need
                    note = "skipped: the worker already had slots (their opens load their models)"
                else:
                    self._model(cfg)
                    note, loaded = "loaded", True
        except Exception as err:  # noqa: BLE001 - the first open meets the same error and reports it
            note = f"failed: {type(err).__name__}: {err}"
        with self.cv:
            self.stats.preload = note
        self._count("preload", time.perf_counter() - start)
        with contextlib.suppress(OSError):  # the stats file is a copy of the counters: its write must not raise here
            self.write_stats(force=True)
        return loaded

    def prepare(self, run_config: dict) -> float:
        """Import the libraries the model of `run_config` loads with; the seconds it took (0.0 after a failure,
        which the preload or the first open then reports). pool.start waits for it before Tune starts the trials:
        beside Tune's 32 trial launches the imports took 26.6 s of a 31.4 s load (one H200, 2026-12-04)."""
        start = time.perf_counter()
        try:
            import_backend(self._validate(run_config).model.name)
        except Exception:  # noqa: BLE001 - the preload or the first open meets the same error and reports it
            return 0.0
        seconds = time.perf_counter() - start
        self._count("prepare", seconds)
        return seconds

    def _validate(self, run_config: dict) -> RunConfig:
        try:
            cfg = load_config(run_config)
        except SJCError as err:
            raise SlotError(str(err)) from None
        if cfg.model.name != self.model_name:
            raise SlotError(f"this worker serves model '{self.model_name}', not '{cfg.model.name}'")
        return cfg

    def _reserve(self) -> int:
        with self.cv:
            if len(self.slots) >= self.max_slots:
                raise WorkerFull(f"all {self.max_slots} slots of the '{self.model_name}' worker are taken")
            slot, self._next = self._next, self._next + 1
            self.slots[slot] = None  # reserved: counted against max_slots while the scene is built
            return slot

    def _release(self, slot: int) -> None:
        with self.cv:
            self.slots.pop(slot, None)

    def _model(self, cfg: RunConfig) -> Model:
        key = model_key(cfg)
        with self.load_lock:
            if key not in self.models:
                start, began = time.perf_counter(), time.time()
                self.models[key] = self.loader(cfg.model, cfg.prompt.text, cfg.guidance.weight)
                self._count("load", time.perf_counter() - start)
                with self.cv:
                    self.stats.loads += 1
                    self.stats.model_keys.append(list(key))
                    self.stats.load_started_at = self.stats.load_started_at or began
                    self.stats.load_done_at = self.stats.load_done_at or time.time()
                    self.stats.load_phases = self.stats.load_phases or dict(getattr(self.models[key], "load_s", {}))
                with contextlib.suppress(OSError):  # a copy of the counters: a full disk must not undo a load
                    self.write_stats(force=True)
            return self.models[key]

    def _get(self, slot: int) -> Slot:
        s = self.slots.get(slot)
        if s is None:
            raise SlotError(f"no open slot {slot} on this worker")
        return s

    def close(self, slot: int) -> None:
        with self.cv:
            self.slots.pop(slot, None)

    # --- stepping -------------------------------------------------------------------------------------------
    def advance(self, slot: int, n: int) -> dict:
        """Take n more steps (at most up to the run's `steps`), batched with every other busy slot; then
        check finiteness and score. Returns the last step's metrics, the score and `sjc_status`."""
        s = self._get(slot)
        with self.cv:
            s.todo = max(0, min(n, s.run.cfg.steps - s.run.step_index))
            self.cv.notify_all()
            self.cv.wait_for(lambda: s.todo == 0 or self._stop)
        return self._report(s)

    @contextlib.contextmanager
    def _locked(self, phase: str) -> Iterator[None]:
        """`with self.device_lock:` that counts the wait for it as '<phase>_wait' and the hold as `phase`, after
        the release. Lock order: device_lock, then load_lock, then cv (an open and a preload load their model
        holding the device lock); nothing holding cv or load_lock waits for the device."""
        asked = got = time.perf_counter()
        try:
            with self.device_lock:
                got = time.perf_counter()
                yield
        finally:
            done = time.perf_counter()
            self._count(f"{phase}_wait", got - asked)
            self._count(phase, done - got)

    def _count(self, phase: str, seconds: float) -> None:
        with self.cv:  # worker_stats copies the counters under the same lock
            self.stats.add_phase(phase, seconds)

    def _report(self, s: Slot) -> dict:
        base = {"sjc_step": s.run.step_index, "steps_total": s.run.cfg.steps, "scorer": s.scorer,
                "device_seconds": s.device_seconds}
        self.write_stats(force=True)
        if s.error:
            return {**base, "sjc_status": "failed", "failure": s.error}
        try:
            with self._locked("report"):
                s.run.check_finite()
                metrics = dataclasses.asdict(s.run.metrics()) if hasattr(s.run, "_last") else {}
                metrics.update(s.score(s.run))
        except DivergenceError as err:
            return {**base, "sjc_status": "failed", "failure": divergence_text(err, s.run.cfg.steps)}
        metrics.pop("step", None)
        s.folder.log(s.run.step_index, metrics)
        return {**metrics, **base, "sjc_status": "running"}

    def _loop(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self._stop or any(s is not None and s.todo > 0 for s in self.slots.values()))
                if self._stop:
                    return
                busy = [s for s in self.slots.values() if s is not None and s.todo > 0]
            self._round(busy)
            with self.cv:
                for s in busy:
                    s.todo = 0 if s.error else s.todo - 1
                self.cv.notify_all()

    def _round(self, busy: list[Slot]) -> None:
        """One step of every busy slot: one SceneBatch (one denoiser forward) per loaded model."""
        groups: dict[int, list[Slot]] = {}
        for s in busy:
            groups.setdefault(id(s.run.model), []).append(s)
        for group in groups.values():
            with self.device_lock.round():
                start = time.perf_counter()
                for i, error in step_round([s.run for s in group]).items():
                    group[i].error = error
                share = (time.perf_counter() - start) / len(group)
            for s in group:
                s.device_seconds += share
            with self.cv:  # worker_stats reads the counters and the timeline under the same lock
                self.stats.record_round(len(group), time.time())
            self.write_stats()

    # --- state ----------------------------------------------------------------------------------------------
    def _state(self, slot: int) -> dict:
        s = self._get(slot)
        return {"config": to_dict(s.run.cfg), "run": s.run.state_dict(), "device_seconds": s.device_seconds}

    def save(self, slot: int, path: str) -> str:
        """Write the slot's whole state (config, field, optimiser, step, RNGs) atomically to `path`."""
        with self.device_lock:
            return str(save_checkpoint(self._state(slot), Path(path)))

    def restore(self, path: str, scorer: str = "auto") -> int:
        """Open a slot from a file written by `save` (on this or any other worker)."""
        return self._load_state(load_checkpoint(Path(path)), scorer)

    def export_state(self, slot: int) -> bytes:
        """The `save` file's bytes, for a trial on another node than this worker."""
        buf = io.BytesIO()
        with self.device_lock:
            torch.save(self._state(slot), buf)
        return buf.getvalue()

    def import_state(self, data: bytes, scorer: str = "auto") -> int:
        return self._load_state(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True), scorer)

    def _load_state(self, state: dict, scorer: str) -> int:
        slot = self._open(state["config"], scorer)
        s = self._get(slot)
        with self.device_lock:
            s.run.load_state_dict(state["run"])
        s.device_seconds = float(state.get("device_seconds", 0.0))
        s.folder.cut(s.run.step_index)  # the reports past the checkpoint will come again
        return slot

    def finish(self, slot: int, run_dir: str, evaluate: Callable | None = None, note: str = "") -> dict:
        """Write the run's folder (run_folder.py: config, metrics, checkpoint, field, views, turntable, mesh,
        summary) and evaluate it (`evaluate` None: not evaluated, `note` says why)."""
        s = self._get(slot)
        s.folder = RunFolder(run_dir)
        with self._locked("gather"):  # renders, decodes, to the host (RunFolder.gather); files are written beside the rounds
            gathered = s.folder.gather(s.run)
        start = time.perf_counter()
        files = s.folder.write(gathered, s.device_seconds, note)
        self._count("write", time.perf_counter() - start)
        with self._locked("evaluate"):  # the judge runs on the worker's device too
            metrics, note = evaluate(Path(run_dir)) if evaluate is not None else ({}, note or "evaluation off")
        return {"files": files, "eval": metrics, "eval_note": note}

    def worker_stats(self) -> dict:
        with self.cv:
            self.stats.open_slots = sum(1 for s in self.slots.values() if s is not None)
            return {**dataclasses.asdict(self.stats), "mean_batch": self.stats.mean_batch,
                    "stats_path": self.stats_path}

    def write_stats(self, force: bool = False) -> None:
        """Rewrite the stats file (`stats_path`; at most every STATS_EVERY_S unless `force`), so that the counters
        of a worker that dies are still counted in the sweep's summary."""
        now = time.monotonic()
        if not self.stats_path or (not force and now - self._stats_written < STATS_EVERY_S):
            return
        self._stats_written = now
        tmp = f"{self.stats_path}.tmp{threading.get_ident()}"
        Path(tmp).write_text(json.dumps(self.worker_stats()))
        os.replace(tmp, self.stats_path)

    def load(self) -> int:
        """Open (or reserved) slots: the placement key of the pool."""
        with self.cv:
            return len(self.slots)

    def shutdown(self) -> None:
        with self.cv:
            self._stop = True
            self.cv.notify_all()
