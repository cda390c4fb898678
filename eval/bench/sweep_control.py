"""The sweep benchmark's control of one sweep: the phases (plan_phases), what Ray's workers inherit
(worker_environment), progress lines, the budget alarm (SIGINT, as Ctrl+C), polling the workers' counters through
Ray, running `run_sweep` and keeping its record (with steady_state, overhead and headline from sweep_steady.py).
"""
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from bench_report import Periodic
from sweep_steady import headline, overhead, since, steady_state

KEPT_POOL = "multi-gpu-bench"  # the --pool of the one-GPU sweep and of its --again, on the same kept worker


@dataclass(frozen=True)
class Phase:
    """One of the two sweeps: `workers` SceneWorkers (one per GPU; CPU workers when `gpus` is 0), `trials`."""

    name: str
    label: str
    workers: int
    gpus: int
    trials: int


def plan_phases(args, n_gpus: int) -> list[Phase]:
    """The one-GPU sweep, with --again the same sweep once more on its kept worker (model loaded and compiled),
    then the all-GPU one (skipped when 'all' is one worker); trials = workers x --trials-per-worker. Without
    GPUs, --cpu-workers CPU workers stand in for 'all GPUs'."""
    n_all = n_gpus or args.cpu_workers
    unit = "GPU" if n_gpus else "CPU worker"
    phases = [Phase("one", f"1 {unit}", 1, min(n_gpus, 1), args.trials_per_worker)]
    if args.again:
        phases.append(Phase("again", f"1 {unit}, again (kept worker)", 1, min(n_gpus, 1), args.trials_per_worker))
    if n_all > 1:
        phases.append(Phase("all", f"{n_all} {unit}s", n_all, n_gpus, n_all * args.trials_per_worker))
    return phases


def worker_environment(inductor_cache: str = "") -> None:
    """What Ray's worker processes inherit (set before Ray starts): PYTHONPATH with absolute entries and the
    repository root first (sjc_dist need not be installed; a worker's cwd is not this one), no tokenizer
    threads, Inductor's cache folder if given (a warm one: the workers load compiled graphs instead of
    compiling); a local Ray's settings (sweep.prepare_env: before the version probe imports Ray)."""
    from sjc_dist.distributed.sweep import prepare_env

    prepare_env(None)
    if inductor_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(inductor_cache).resolve())
    root = str(Path(__file__).resolve().parents[2])
    paths = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([root, *paths]))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class Log:
    """Timestamped progress lines on stdout (flushed)."""

    def __init__(self, t0: float):
        self.t0 = t0

    def __call__(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:7.1f}s] {msg}", flush=True)


class Alarm:
    """SIGINTs this process after `seconds` unless cancelled, as Ctrl+C would: Tune stops, and run_sweep returns
    with the unfinished trials marked interrupted (and kills the workers). While `ready()` is false (no worker
    alive: the pool is not up yet, or already shut down and run_sweep is writing its tables) it waits, checking
    every `retry` s; the watchdog bounds that wait."""

    def __init__(self, seconds: float, ready=lambda: True, retry: float = 2.0):
        self.fired, self._armed, self._lock, self.ready, self.retry = False, True, threading.Lock(), ready, retry
        self._arm(max(0.0, seconds))

    def _arm(self, seconds: float) -> None:
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        ready = self.ready()
        with self._lock:
            if not self._armed:
                return
            if not ready:
                self._arm(self.retry)
                return
            self.fired = True
        os.kill(os.getpid(), signal.SIGINT)

    def cancel(self) -> None:
        with self._lock:
            self._armed = False
            self._timer.cancel()


class Progress(Periodic):
    """Prints the phase's workers' counters (rounds, current batch, scene-steps, loads) every `every` s, and keeps
    the last complete poll (`last`: every worker's stats), the fallback when run_sweep returns nothing."""

    def __init__(self, names: list[str], phase: Phase, log: Log, every: float):
        super().__init__(every, "progress")
        self.names, self.phase, self.log = names, phase, log
        self.last: list[dict] = []

    def tick(self) -> None:
        stats = poll_workers(self.names)
        if len(stats) == len(self.names):
            self.last = [{"name": n, **s} for n, s in zip(self.names, stats)]
        if stats:
            batch = [s["timeline"][-1][3] if s.get("timeline") else 0 for s in stats]
            self.log(f"  {self.phase.name}: workers up {len(stats)}/{len(self.names)}, "
                     f"rounds {[s['rounds'] for s in stats]}, batch now {batch}, "
                     f"scene-steps {sum(s['scene_steps'] for s in stats)}, "
                     f"slots {[s['open_slots'] for s in stats]}, loads {[s['loads'] for s in stats]}")


def poll_workers(names: list[str]) -> list[dict]:
    """worker_stats of the live workers among `names`, each with its "name" (none before Ray is up)."""
    import ray

    if not ray.is_initialized():
        return []
    out = []
    for name in names:
        try:
            handle = ray.get_actor(name, namespace="sjc")
            out.append({"name": name, **ray.get(handle.worker_stats.remote(), timeout=5)})
        except Exception as err:  # noqa: BLE001 - not created yet, or already killed
            out.append({"name": name, "missing": f"{type(err).__name__}"})
    return [s for s in out if "missing" not in s]


def run_phase(phase: Phase, spec, args, work: Path, deadline: float, log: Log) -> dict:
    """Run one sweep with run_sweep (interrupted at `deadline`, unix s); returns its record (see phase_record)."""
    from sjc_dist.distributed.sweep import SweepOptions, build_pool, run_sweep

    kept = args.again and phase.name in ("one", "again")
    opts = SweepOptions(out=str(work / phase.name), num_cpus=args.num_cpus, pool=KEPT_POOL if kept else None,
                        keep_workers=kept and phase.name == "one")
    names = build_pool(spec, Path(opts.out).resolve(), opts.pool).names(spec.model_names()[0])
    before = {w["name"]: w for w in poll_workers(names)} if phase.name == "again" else {}
    unread = "" if phase.name != "again" or len(before) == len(names) else \
        "the kept worker's stats could not be read as the sweep began: its counters include the sweep before"
    log(f"sweep '{phase.name}' ({phase.label}): {phase.workers} worker(s) x {args.slots} slots, "
        f"{phase.trials} trials x {args.steps} steps; interrupted at {deadline - time.time():.0f} s if not done")
    progress = Progress(names, phase, log, args.progress_every).start()
    alarm = Alarm(deadline - time.time(), ready=lambda: bool(poll_workers(names)))
    t_start, outcome, error = time.time(), None, ""
    try:
        outcome = run_sweep(spec, opts)
    except KeyboardInterrupt:
        error = "interrupted (budget) before Tune returned"
    except Exception as err:  # noqa: BLE001 - the other phase and the report still run
        error = f"{type(err).__name__}: {err}"
        log(traceback.format_exc())
    finally:
        alarm.cancel()
        progress.stop()
    t_end = time.time()
    if outcome is None and progress.last:
        error += "; worker stats from the last progress poll"
    error = error or ("budget: interrupted" if alarm.fired else "")
    record = phase_record(phase, args, outcome, progress.last, t_start, t_end,
                          "; ".join(e for e in (error, unread) if e), before)
    log(f"sweep '{phase.name}' done in {t_end - t_start:.1f} s: {record['status']}, "
        f"steady {record['steady'].get('scene_its_per_s', float('nan')):.1f} scene-it/s "
        f"({record['steady'].get('method', 'n/a')}), loads per worker {record['loads_per_worker']}")
    return record


def release_kept(spec, work: Path) -> str:
    """Kill the kept worker of the one-GPU sweep and its --again (it holds a GPU the next sweep needs), if Ray is
    up and it is alive; never raises (the sweep's own error stays the one reported): '' or what went wrong."""
    import ray

    from sjc_dist.distributed import pool
    from sjc_dist.distributed.sweep import build_pool

    if not ray.is_initialized():  # a lookup would start a Ray of its own
        return ""
    try:
        pool.shutdown(build_pool(spec, work, KEPT_POOL), spec.model_names())
    except Exception as err:  # noqa: BLE001 - see the docstring
        return f"the kept worker could not be killed: {type(err).__name__}: {err}"
    return ""


def phase_record(phase: Phase, args, outcome, polled: list[dict], t_start: float, t_end: float, error: str,
                 before: dict | None = None) -> dict:
    """What the report keeps of one sweep: its shape, trial statuses, worker counters and steady state (from
    the sweep's outcome, else from the last progress poll `polled`); a kept worker's counters less `before`
    (name -> its stats as the sweep began: sweep_steady.since)."""
    workers = [since(w, (before or {}).get(w.get("name")), t_start)
               for w in (outcome.workers if outcome else polled) if not w.get("dead")]
    statuses: dict[str, int] = {}
    for r in outcome.rows if outcome else []:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    steps, rounds = sum(w["scene_steps"] for w in workers), sum(w["rounds"] for w in workers)
    record = {"name": phase.name, "label": phase.label, "gpus": phase.gpus, "workers": phase.workers,
            "trials": phase.trials, "k": args.slots, "steps": args.steps, "t_start": t_start, "t_end": t_end,
            "wall_s": t_end - t_start, "sweep_s": outcome.seconds if outcome else None, "error": error,
            "status": statuses, "workers_alive": len(workers), "scene_steps": steps, "rounds": rounds,
            "mean_batch": steps / rounds if rounds else 0.0, "loads_per_worker": [w["loads"] for w in workers],
            "one_load_each": bool(workers) and len(workers) == phase.workers and all(w["loads"] == 1 for w in workers),
            "steady": steady_state(workers, args.slots, args.skip_rounds),
            "worker_stats": [{k: w.get(k) for k in ("name", "loads", "rounds", "scene_steps", "mean_batch",
                                                    "first_round_at", "last_round_at", "timeline_every",
                                                    "timeline", "phase_s", "phase_n", "started_at",
                                                    "first_open_at", "load_started_at", "load_done_at",
                                                    "preload", "load_phases", "kept")} for w in workers],
            "run_dirs": sorted(r.run_dir for r in (outcome.rows if outcome else []) if r.run_dir)}
    record.update(overhead=overhead(record), headline=headline(record))
    return record
