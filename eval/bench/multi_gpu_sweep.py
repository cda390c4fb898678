"""Issue 7: one command runs a sweep of SD-1.5-sized trials over every GPU of a machine and measures the scaling.

It builds a Stable-Diffusion-1.5-sized stand-in model folder (random weights, no download: sd_standin.py's
`save_standin_folder`: UNet, DDPM scheduler, tokenizer, text encoder, VAE), then runs the same Ray Tune sweep
twice through the project's own `run_sweep`: once on ONE worker (one GPU) and once on one worker per GPU, each
worker a SceneWorker actor that loads the model once and steps its K slots (`--slots`) in batched rounds, with
workers x K trials (FIFO, official SD settings: 100^3 grid, step 0.01, 64x64 latents; the guidance weight and
seed drawn at random so trials differ; no evaluation, no turntable, no checkpoints). Throughput is read in
STEADY STATE from the workers' round timelines (stepper.py's WorkerStats): the window in which every worker
steps full batches (after `--skip-rounds` full rounds, so Ray start-up, the model load and CUDA-graph captures
are excluded), in scene-iterations per second. A thread samples every GPU's utilisation and memory (NVML,
else nvidia-smi; on a machine without GPUs the CPU cores) every 0.2 s over the whole run.

OUT gets report.json, report.md (the table, device, versions, date, command), gpu_util.png (one line per
device, the two sweeps shaded, their steady windows darker), gpu_samples.csv and views_example.png (one
trial's 8 views, decoded by the VAE). Sweep folders go to a temporary work folder, deleted at the end
(`--keep-work` keeps it). `--budget-seconds` bounds the run: each sweep is interrupted (SIGINT, as Ctrl+C)
at its share of the budget and the report says so; a watchdog writes what there is and exits 30 s after it.

GPU (2 or more GPUs; the project's environment: torch, diffusers, transformers, ray, mlflow, nvidia-ml-py;
about 4.5 minutes on 2 H100s):
  python eval/bench/multi_gpu_sweep.py --out OUT
(On the lent GPU machine, which lacks ray, diffusers and mlflow, these came from a packed site folder on
PYTHONPATH, as ../shared/gpu/README.md describes; the script makes PYTHONPATH absolute for Ray's workers.)
CPU check (tiny UNet, 2 CPU workers stand in for 'all GPUs', about a minute on 2 cores):
  .venv/bin/python eval/bench/multi_gpu_sweep.py --tiny --gpus 0 --cpu-workers 2 --slots 2 --steps 120 --out /tmp/mg
"""
import argparse
import copy
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd_standin import PROMPT, SIZES, save_standin_folder

REPORT_RESERVE_S = 20.0  # seconds of the budget kept for the report and the plot
WATCHDOG_GRACE_S = 30.0


@dataclass(frozen=True)
class Phase:
    """One of the two sweeps: `workers` SceneWorkers (one per GPU; CPU workers when `gpus` is 0), `trials`."""

    name: str
    label: str
    workers: int
    gpus: int
    trials: int


class Log:
    """Timestamped progress lines on stdout (flushed)."""

    def __init__(self, t0: float):
        self.t0 = t0

    def __call__(self, msg: str) -> None:
        print(f"[{time.time() - self.t0:7.1f}s] {msg}", flush=True)


# --- device sampling --------------------------------------------------------------------------------------------
class Sampler:
    """Samples (unix time s, device index, utilisation %, memory used MiB) of every device every `period` s on a
    background thread: NVML (pynvml), else `nvidia-smi -lms`, else the CPU cores (/proc/stat, with the
    machine's used memory) when there is no GPU. `names` are the devices' names, `backend` the source."""

    def __init__(self, period: float = 0.2, prefer_cpu: bool = False):
        self.period, self.rows, self.names, self.backend = period, [], [], "none"
        self.fallback_reason, self.errors = "", 0
        self._stop, self._thread, self._proc = threading.Event(), None, None
        self._open(prefer_cpu)

    def _open(self, prefer_cpu: bool) -> None:
        if not prefer_cpu:
            if self._open_nvml():
                return
            if shutil.which("nvidia-smi"):
                out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                                     check=False, capture_output=True, text=True, timeout=30)
                if out.returncode == 0 and out.stdout.strip():
                    self.names, self.backend = [ln.strip() for ln in out.stdout.splitlines() if ln.strip()], "nvidia-smi"
                    return
        if Path("/proc/stat").is_file():
            self.names = [f"cpu{i}" for i in range(len(_cpu_times()))]
            self.backend = "proc-stat (no GPU: CPU cores)"

    def _open_nvml(self) -> bool:
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            names = [_text(pynvml.nvmlDeviceGetName(h)) for h in handles]
        except Exception as err:  # noqa: BLE001 - no pynvml or no driver: try nvidia-smi
            self.fallback_reason = f"NVML: {type(err).__name__}: {err}"
            return False
        self._nvml, self._handles, self.names, self.backend = pynvml, handles, names, "nvml"
        return True

    def start(self) -> "Sampler":
        target = {"nvml": self._loop_nvml, "nvidia-smi": self._loop_smi}.get(self.backend, self._loop_cpu)
        if self.backend == "nvidia-smi":  # started here, so that stop() always finds it
            cmd = ["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                   "-lms", str(int(self.period * 1000))]
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if self.backend != "none":
            self._thread = threading.Thread(target=target, name="device-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop_nvml(self) -> None:
        nv = self._nvml
        while not self._stop.is_set():
            now = time.time()
            for i, h in enumerate(self._handles):
                try:
                    util, mem = nv.nvmlDeviceGetUtilizationRates(h).gpu, nv.nvmlDeviceGetMemoryInfo(h).used
                    self.rows.append((now, i, float(util), mem / 2**20))
                except Exception:  # noqa: BLE001 - a transient NVML error loses one sample, not the series
                    self.errors += 1
            self._stop.wait(self.period)

    def _loop_smi(self) -> None:
        for line in self._proc.stdout:
            if self._stop.is_set():
                break
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 3 and all(p.replace(".", "").isdigit() for p in parts):
                self.rows.append((time.time(), int(parts[0]), float(parts[1]), float(parts[2])))

    def _loop_cpu(self) -> None:
        prev = _cpu_times()
        while not self._stop.wait(self.period):
            now, cur, mem = time.time(), _cpu_times(), _used_memory_mib()
            for i, (a, b) in enumerate(zip(prev, cur)):
                busy, total = (b[0] - a[0]), (b[1] - a[1])
                self.rows.append((now, i, 100.0 * busy / total if total else 0.0, mem))
            prev = cur

    def mean_util(self, t0: float, t1: float) -> dict[int, float]:
        """Mean utilisation % of each device over samples in [t0, t1] (unix s)."""
        out: dict[int, list[float]] = {}
        for t, dev, util, _ in self.rows:
            if t0 <= t <= t1:
                out.setdefault(dev, []).append(util)
        return {dev: sum(v) / len(v) for dev, v in sorted(out.items())}


def _text(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def _cpu_times() -> list[tuple[int, int]]:
    """(busy jiffies, total jiffies) of each CPU core since boot, from /proc/stat."""
    out = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            vals = [int(v) for v in line.split()[1:]]
            idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
            out.append((sum(vals) - idle, sum(vals)))
    return out


def _used_memory_mib() -> float:
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
    total, available = (float(info.get(key, "0 kB").split()[0]) for key in ("MemTotal", "MemAvailable"))
    return (total - available) / 1024


# --- the sweeps -------------------------------------------------------------------------------------------------
def plan_phases(args, n_gpus: int) -> list[Phase]:
    """The one-GPU sweep, then the all-GPU one (skipped when 'all' is one worker); trials = workers x
    --trials-per-worker. Without GPUs, --cpu-workers CPU workers stand in for 'all GPUs'."""
    n_all = n_gpus or args.cpu_workers
    unit = "GPU" if n_gpus else "CPU worker"
    phases = [Phase("one", f"1 {unit}", 1, min(n_gpus, 1), args.trials_per_worker)]
    if n_all > 1:
        phases.append(Phase("all", f"{n_all} {unit}s", n_all, n_gpus, n_all * args.trials_per_worker))
    return phases


def sweep_dict(args, phase: Phase, size, model_dir: Path, cpu: bool) -> dict:
    """The sweep of one phase in the tune_configs/*.yaml shape (see sjc_dist/distributed/README.md)."""
    from sjc_dist.configtools import merge

    base = merge(copy.deepcopy(size.run), {
        "model": {"name": str(model_dir), "device": "cpu" if cpu else "auto"},
        "prompt": {"text": PROMPT}, "steps": args.steps,
        "output": {"turntable_frames": 0, "eval_views": args.eval_views, "progress": False}})
    k = args.slots
    resources = {"workers": phase.workers, "cpus_per_worker": args.cpus_per_worker,
                 "gpus_per_worker": 0 if cpu else 1, "slots_per_worker": k, "cpus_per_trial": args.cpus_per_trial,
                 "torch_threads": max(1, int(args.cpus_per_worker))}
    return {"name": f"multi_gpu_{phase.name}", "base": base,
            "space": {"guidance.weight": {"loguniform": [50.0, 200.0]}, "seed": {"randint": [0, 1_000_000]}},
            "search": {"kind": "random", "seed": args.seed}, "scheduler": {"kind": "fifo"},
            "num_samples": phase.trials, "max_concurrent": min(phase.trials, phase.workers * k),
            "report_every": args.report_every or args.steps, "checkpoint_every": 1_000_000, "max_failures": 0,
            "scorer": "fit", "evaluate": False, "resources": resources}


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


class Progress:
    """Prints the phase's workers' counters (rounds, current batch, scene-steps, loads) every `every` s, and keeps
    the last complete poll (`last`: every worker's stats), the fallback when run_sweep returns nothing."""

    def __init__(self, names: list[str], phase: Phase, log: Log, every: float):
        self.names, self.phase, self.log, self.every = names, phase, log, every
        self.last: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def start(self) -> "Progress":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
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
    """worker_stats of the live workers among `names` (none before Ray is up)."""
    import ray

    if not ray.is_initialized():
        return []
    out = []
    for name in names:
        try:
            handle = ray.get_actor(name, namespace="sjc")
            out.append(ray.get(handle.worker_stats.remote(), timeout=5))
        except Exception as err:  # noqa: BLE001 - not created yet, or already killed
            out.append({"name": name, "missing": f"{type(err).__name__}"})
    return [s for s in out if "missing" not in s]


def run_phase(phase: Phase, spec, args, work: Path, deadline: float, log: Log) -> dict:
    """Run one sweep with run_sweep (interrupted at `deadline`, unix s); returns its record (see phase_record)."""
    from sjc_dist.distributed.sweep import SweepOptions, build_pool, run_sweep

    opts = SweepOptions(out=str(work / phase.name), num_cpus=args.num_cpus)
    names = build_pool(spec, Path(opts.out).resolve()).names(spec.model_names()[0])
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
    record = phase_record(phase, args, outcome, progress.last, t_start, t_end,
                          error or ("budget: interrupted" if alarm.fired else ""))
    log(f"sweep '{phase.name}' done in {t_end - t_start:.1f} s: {record['status']}, "
        f"steady {record['steady'].get('scene_its_per_s', float('nan')):.1f} scene-it/s "
        f"({record['steady'].get('method', 'n/a')}), loads per worker {record['loads_per_worker']}")
    return record


def phase_record(phase: Phase, args, outcome, polled: list[dict], t_start: float, t_end: float, error: str) -> dict:
    """What the report keeps of one sweep: its shape, trial statuses, worker counters and steady state (from
    the sweep's outcome, else from the last progress poll `polled`)."""
    workers = [w for w in (outcome.workers if outcome else polled) if not w.get("dead")]
    statuses: dict[str, int] = {}
    for r in outcome.rows if outcome else []:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    steps, rounds = sum(w["scene_steps"] for w in workers), sum(w["rounds"] for w in workers)
    return {"name": phase.name, "label": phase.label, "gpus": phase.gpus, "workers": phase.workers,
            "trials": phase.trials, "k": args.slots, "steps": args.steps, "t_start": t_start, "t_end": t_end,
            "wall_s": t_end - t_start, "sweep_s": outcome.seconds if outcome else None, "error": error,
            "status": statuses, "workers_alive": len(workers), "scene_steps": steps, "rounds": rounds,
            "mean_batch": steps / rounds if rounds else 0.0, "loads_per_worker": [w["loads"] for w in workers],
            "one_load_each": bool(workers) and len(workers) == phase.workers and all(w["loads"] == 1 for w in workers),
            "steady": steady_state(workers, args.slots, args.skip_rounds),
            "worker_stats": [{k: w.get(k) for k in ("name", "loads", "rounds", "scene_steps", "mean_batch",
                                                    "first_round_at", "last_round_at", "timeline_every",
                                                    "timeline")} for w in workers],
            "run_dirs": sorted(r.run_dir for r in (outcome.rows if outcome else []) if r.run_dir)}


# --- steady state -----------------------------------------------------------------------------------------------
def full_stretch(timeline: list, k: int, skip: int) -> tuple[tuple[float, float] | None, int]:
    """((start, end) unix s, full batch) of one worker's full-batch stretch: from the end of its `skip`-th round
    at full batch (K scenes, or the largest batch it ran if never K) to the end of its last such round.
    timeline rows: [round end s, rounds so far, scene_steps so far, scenes in the round]."""
    full = k if any(r[3] >= k for r in timeline) else max((r[3] for r in timeline), default=0)
    rows = [r for r in timeline if full and r[3] >= full]
    if len(rows) < skip + 2:
        return None, full
    return (rows[skip][0], rows[-1][0]), full


def rate_in(timeline: list, t0: float, t1: float) -> dict | None:
    """Scene-steps, rounds and seconds between the first and last timeline rows inside [t0, t1] (the rounds
    after the first row up to the last), and their ratio in scene-it/s; None with fewer than 2 rows."""
    rows = [r for r in timeline if t0 <= r[0] <= t1]
    if len(rows) < 2 or rows[-1][0] <= rows[0][0]:
        return None
    dt, steps, rounds = rows[-1][0] - rows[0][0], rows[-1][2] - rows[0][2], rows[-1][1] - rows[0][1]
    return {"seconds": dt, "scene_steps": steps, "rounds": rounds, "scene_its_per_s": steps / dt}


def steady_state(workers: list[dict], k: int, skip: int) -> dict:
    """Steady-state throughput of one sweep, scene-it/s: the sum over workers of their rates inside the common
    window, the overlap of all workers' full-batch stretches (every device stepping K scenes at once). With
    no overlap, each worker's own stretch ('per-worker stretches'); a worker without one contributes its rate
    after its first `skip` rounds ('whole run'). `method` says which was used."""
    lines = [w.get("timeline") or [] for w in workers]
    if not workers or not all(len(t) >= 2 for t in lines):
        return {"method": "none: a worker ran fewer than 2 rounds", "scene_its_per_s": float("nan")}
    stretches = [full_stretch(t, k, skip) for t in lines]
    spans = [s for s, _ in stretches]
    method = "common window"
    if all(spans):
        t0, t1 = max(s[0] for s in spans), min(s[1] for s in spans)
        per = [rate_in(t, t0, t1) for t in lines] if t1 > t0 else [None]
        if all(per):
            return _total(per, workers, stretches, method, (t0, t1))
        method = "per-worker stretches (no common window)"
    else:
        method = "per-worker; some never ran a full batch"
    per = []
    for t, (span, _) in zip(lines, stretches):
        span = span or (t[min(skip, len(t) - 2)][0], t[-1][0])
        per.append(rate_in(t, *span))
    if not all(per):
        return {"method": "none: too few rounds", "scene_its_per_s": float("nan")}
    return _total(per, workers, stretches, method, None)


def _total(per: list[dict], workers: list[dict], stretches: list, method: str, window) -> dict:
    steps, rounds = sum(p["scene_steps"] for p in per), sum(p["rounds"] for p in per)
    return {"method": method, "scene_its_per_s": sum(p["scene_its_per_s"] for p in per),
            "window": list(window) if window else None, "window_s": (window[1] - window[0]) if window else
            max(p["seconds"] for p in per), "scene_steps": steps, "rounds": rounds,
            "mean_batch": steps / rounds if rounds else 0.0,
            "per_worker": [{"name": w.get("name"), "full_batch": full, **p}
                           for w, p, (_, full) in zip(workers, per, stretches)]}


def scaling(phases: dict, n_all: int, cpu: bool) -> dict:
    """all / one steady throughput, per-device efficiency, and the issue's target (>= 1.8x on 2 GPUs, >= 0.9
    per GPU on more)."""
    one, all_ = phases.get("one", {}), phases.get("all", {})
    a, b = one.get("steady", {}).get("scene_its_per_s"), all_.get("steady", {}).get("scene_its_per_s")
    if not all_ or not _finite(a) or not _finite(b) or a <= 0:
        return {"ratio": None, "per_device_efficiency": None, "verdict": "n/a", "target": "",
                "devices": n_all}
    ratio = b / a
    target, ok = (">= 1.8x on 2 GPUs", ratio >= 1.8) if n_all == 2 else (">= 0.9 per GPU", ratio / n_all >= 0.9)
    verdict = ("met" if ok else "missed") + (" (CPU workers: not the target's hardware)" if cpu else "")
    return {"ratio": ratio, "per_device_efficiency": ratio / n_all, "verdict": verdict, "target": target,
            "devices": n_all}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


# --- outputs ----------------------------------------------------------------------------------------------------
def write_samples_csv(sampler: Sampler, t0: float, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "unix_time", "device", "name", "util_pct", "mem_mib"])
        for t, dev, util, mem in sampler.rows:
            name = sampler.names[dev] if dev < len(sampler.names) else ""
            w.writerow([f"{t - t0:.3f}", f"{t:.3f}", dev, name, f"{util:.1f}", f"{mem:.1f}"])


def plot_utilisation(sampler: Sampler, phases: list[dict], t0: float, path: Path, title: str) -> None:
    """Utilisation % (top) and memory GiB (bottom) of each device over the run; each sweep's span shaded and
    labelled, its steady window shaded darker."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_u, ax_m) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True, height_ratios=(2, 1))
    devices = sorted({r[1] for r in sampler.rows})
    many = len(devices) > 8  # CPU cores: thin lines, no per-line legend
    for dev in devices:
        rows = [r for r in sampler.rows if r[1] == dev]
        label = f"{dev}: {sampler.names[dev]}" if dev < len(sampler.names) else str(dev)
        kw = {"lw": 0.6 if many else 1.1, "label": None if many else label}
        ax_u.plot([r[0] - t0 for r in rows], [r[2] for r in rows], **kw)
        ax_m.plot([r[0] - t0 for r in rows], [r[3] / 1024 for r in rows], **kw)
    colors = ("tab:blue", "tab:orange", "tab:green")
    for i, p in enumerate(phases):
        c = colors[i % len(colors)]
        for ax in (ax_u, ax_m):
            ax.axvspan(p["t_start"] - t0, p["t_end"] - t0, color=c, alpha=0.08)
            win = p.get("steady", {}).get("window")
            if win:
                ax.axvspan(win[0] - t0, win[1] - t0, color=c, alpha=0.22)
        rate = p.get("steady", {}).get("scene_its_per_s")
        text = f"{p['label']}\n{rate:.1f} scene-it/s" if _finite(rate) else p["label"]
        ax_u.text((p["t_start"] - t0) + 1, 103, text, fontsize=8, va="bottom", color=c)
    ax_u.set_ylim(0, 125)
    ax_u.set_ylabel("utilisation %")
    ax_m.set_ylabel("memory used GiB")
    ax_m.set_xlabel("seconds since start (light: a sweep; dark: its steady-state window)")
    if devices and not many:
        ax_u.legend(loc="upper right", fontsize=8)
    ax_u.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def environment(sampler: Sampler) -> dict:
    import platform

    import torch

    env = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
           "sampler": sampler.backend, "sampler_note": sampler.fallback_reason, "device_names": sampler.names,
           "cuda_devices": torch.cuda.device_count(), "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE")}
    for mod in ("diffusers", "ray", "transformers"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            env[mod] = "missing"
    return env


def markdown(report: dict) -> str:
    """report.md: the per-sweep table, the scaling line, utilisation per device, environment and command."""
    env, rows = report["env"], []
    for p in report["phases"].values():
        st = p["steady"]
        rate = f"{st['scene_its_per_s']:.1f}" if _finite(st.get("scene_its_per_s")) else "n/a"
        win = f"{st['window_s']:.1f}" if _finite(st.get("window_s")) else "n/a"
        status = ", ".join(f"{v} {k}" for k, v in sorted(p["status"].items())) or p["error"] or "none"
        rows.append(f"| {p['label']} | {p['gpus']} | {p['workers']} | {p['trials']} | {p['k']} | {p['steps']} | "
                    f"{p['scene_steps']} | **{rate}** | {win} | {st.get('mean_batch', 0):.2f} | "
                    f"{p['mean_batch']:.2f} | {p['loads_per_worker']} | {p['wall_s']:.1f} | {status} |")
    sc = report["scaling"]
    devices = (f"Devices: {', '.join(env['device_names']) or 'none'} (sampled by {env['sampler']}); torch "
               f"{env['torch']}, diffusers {env['diffusers']}, ray {env['ray']}, transformers "
               f"{env['transformers']}, Python {env['python']}, {env['cpus']} CPUs.")
    model = (f"Model: {report['model']['size']} stand-in ({report['model']['unet_params_m']:.1f} M UNet params, "
             "random weights); official SD settings (grid 100^3, step 0.01, CFG, PAAS) unless --tiny.")
    header = ("| sweep | GPUs | workers | trials | K | steps | scene-steps | steady scene-it/s | window s | "
              "steady batch | mean batch | loads / worker | wall s | trials |")
    lines = [f"# Multi-GPU sweep throughput ({report['date']})", "", devices, "", model, "", header,
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|", *rows, ""]
    if sc["ratio"] is not None:
        lines.append(f"Scaling all / one: **{sc['ratio']:.2f}x** on {sc['devices']} devices, per-device "
                     f"efficiency {sc['per_device_efficiency']:.2f}; target {sc['target']}: **{sc['verdict']}**.")
    else:
        lines.append("Scaling: n/a (one of the sweeps has no steady-state throughput, or there is one device).")
    lines += ["", "Mean utilisation % per device in each steady window:", ""]
    for p in report["phases"].values():
        util = ", ".join(f"{d}: {u:.0f}" for d, u in p.get("util_steady", {}).items())
        lines.append(f"- {p['label']}: {util or 'n/a'}")
    steady = ("Steady state: the window in which every worker steps full batches (K scenes), after "
              f"{report['settings']['skip_rounds']} full rounds (start-up, model load and CUDA-graph captures "
              "excluded); throughput = the sum of the workers' scene-steps / seconds in it.")
    lines += ["", steady, "", f"Command: `{report['command']}`", ""]
    for note in report["notes"]:
        lines.append(f"Note: {note}")
    return "\n".join(lines) + "\n"


class Report:
    """report.json + report.md in OUT, rewritten after every sweep (a killed run still leaves them)."""

    def __init__(self, out: Path, data: dict):
        self.out, self.data, self.lock = out, data, threading.Lock()

    def write(self) -> None:
        with self.lock:
            (self.out / "report.json").write_text(json.dumps(self.data, indent=2, default=str) + "\n")
            (self.out / "report.md").write_text(markdown(self.data))


# --- main -------------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for report.json, report.md, gpu_util.png, gpu_samples.csv")
    ap.add_argument("--gpus", type=int, default=None, help="GPUs of the 'all' sweep (default: every visible one; "
                                                             "0: CPU workers instead)")
    ap.add_argument("--cpu-workers", type=int, default=2, help="workers of the 'all' sweep when there is no GPU")
    ap.add_argument("--slots", type=int, default=None, help="K, scenes per worker (default 16; tiny 4)")
    ap.add_argument("--trials-per-worker", type=int, default=None, help="trials per worker (default K)")
    ap.add_argument("--steps", type=int, default=None, help="optimisation steps per trial (default 200; tiny 120)")
    ap.add_argument("--report-every", type=int, default=0, help="steps per Tune report (0: one report at the end)")
    ap.add_argument("--tiny", action="store_true", help="the tiny UNet and grid of sd_standin.py (CPU checks)")
    ap.add_argument("--budget-seconds", type=float, default=330.0, help="the whole run's budget: sweeps are "
                    "interrupted at their share; a watchdog exits 30 s after it")
    ap.add_argument("--skip-rounds", type=int, default=5, help="full-batch rounds left out of the steady window")
    ap.add_argument("--model-dir", default=None, help="stand-in model folder (built if missing; default "
                                                      "$TMPDIR/sjc-standin-<size>, reused across runs)")
    ap.add_argument("--work", default=None, help="folder for the sweep folders (default: a temporary one)")
    ap.add_argument("--keep-work", action="store_true", help="keep the sweep folders (trial run folders)")
    ap.add_argument("--cpus-per-worker", type=float, default=None, help="Ray CPUs per worker (default 2; CPU 0.25)")
    ap.add_argument("--cpus-per-trial", type=float, default=None, help="Ray CPUs per trial (default 0.25; CPU 0.1)")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray started here (default: "
                                                               "detected; on CPU at least what the sweeps need)")
    ap.add_argument("--eval-views", type=int, default=8, help="views of each finished trial's views.png")
    ap.add_argument("--sample-period", type=float, default=0.2, help="seconds between device samples")
    ap.add_argument("--progress-every", type=float, default=10.0, help="seconds between progress lines")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random search and of the stand-in weights")
    args = ap.parse_args(argv)
    args.slots = args.slots or (4 if args.tiny else 16)
    args.trials_per_worker = args.trials_per_worker or args.slots
    args.steps = args.steps or (120 if args.tiny else 200)
    for name, value in (("slots", args.slots), ("trials_per_worker", args.trials_per_worker),
                        ("steps", args.steps), ("cpu_workers", args.cpu_workers)):
        if value < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return args


def resolve_devices(args) -> tuple[int, bool]:
    """(GPUs of the 'all' sweep, CPU mode?); --gpus above the visible count is an error."""
    import torch

    visible = torch.cuda.device_count()
    n = visible if args.gpus is None else args.gpus
    if n > visible:
        raise SystemExit(f"--gpus {n}: only {visible} CUDA device(s) visible")
    cpu = n == 0
    args.cpus_per_worker = args.cpus_per_worker if args.cpus_per_worker is not None else (0.25 if cpu else 2.0)
    args.cpus_per_trial = args.cpus_per_trial if args.cpus_per_trial is not None else (0.1 if cpu else 0.25)
    if cpu and args.num_cpus is None:
        need = (args.cpu_workers * args.cpus_per_worker + args.cpu_workers * args.trials_per_worker
                * args.cpus_per_trial)
        args.num_cpus = max(os.cpu_count() or 1, math.ceil(need) + 1)
    return n, cpu


def build_model(args, size, log: Log) -> tuple[Path, dict]:
    """The stand-in folder (reused when complete) and what the report says of it. Built on the CPU (about 15 s
    for SD size), so that this driver process never holds a CUDA context on a GPU the workers use."""
    folder = Path(args.model_dir or Path(tempfile.gettempdir()) / f"sjc-standin-{size.name}").resolve()
    t = time.time()
    save_standin_folder(folder, size, seed=args.seed, device="cpu")
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    weights = sum(f.stat().st_size for f in (folder / "unet").glob("*.safetensors"))
    info = {"folder": str(folder), "size": size.name, "build_s": time.time() - t, "unet_params_m": weights / 2 / 1e6,
            "sample_size": cfg.get("sample_size"), "cross_attention_dim": cfg.get("cross_attention_dim")}
    log(f"stand-in model {folder} ({size.name}, {info['unet_params_m']:.1f} M UNet params) ready in "
        f"{info['build_s']:.1f} s")
    return folder, info


def worker_environment() -> None:
    """What Ray's worker processes inherit (set before Ray starts): PYTHONPATH with absolute entries and the
    repository root first (sjc_dist need not be installed; a worker's cwd is not this one), no tokenizer
    threads."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([root, *paths]))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None, exit_on_watchdog: bool = True) -> int:
    """Run the bench; `exit_on_watchdog=False` (tests, in-process) makes the watchdog write the report only."""
    worker_environment()
    t0 = time.time()
    args, log = parse(argv), Log(t0)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    n_gpus, cpu = resolve_devices(args)
    size = SIZES["tiny" if args.tiny else "sd15"]
    sampler = Sampler(args.sample_period, prefer_cpu=cpu).start()
    command = " ".join(["python", "eval/bench/multi_gpu_sweep.py", *argv] if argv is not None else sys.argv)
    report = Report(out, {"status": "running", "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                          "command": command, "env": environment(sampler),
                          "settings": {k: v for k, v in vars(args).items()}, "t0": t0, "phases": {},
                          "scaling": scaling({}, 0, cpu), "notes": [], "files": {},
                          "model": {"size": size.name, "unet_params_m": float("nan")}})
    log(f"devices: {report.data['env']['device_names']} ({sampler.backend}); 'all' = "
        f"{n_gpus or args.cpu_workers} {'CPU workers' if cpu else 'GPUs'}; budget {args.budget_seconds:.0f} s")
    watchdog = threading.Timer(args.budget_seconds + WATCHDOG_GRACE_S, _watchdog,
                               (report, sampler, log, exit_on_watchdog))
    watchdog.daemon = True
    watchdog.start()
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="sjc-multi-gpu-"))
    import ray

    started_ray = not ray.is_initialized()
    try:
        folder, report.data["model"] = build_model(args, size, log)
        phases = plan_phases(args, n_gpus)
        run_phases(args, phases, size, folder, cpu, work, report, sampler, log)
        measured = [p.name for p in phases
                    if _finite(report.data["phases"].get(p.name, {}).get("steady", {}).get("scene_its_per_s"))]
        report.data["status"] = "done" if len(measured) == len(phases) else "incomplete: a sweep has no throughput"
        report.data["seconds"] = time.time() - t0
    except Exception as err:  # noqa: BLE001 - still write what there is
        report.data["status"] = f"failed: {type(err).__name__}: {err}"
        report.data["error"] = traceback.format_exc()
        log(f"FAILED: {type(err).__name__}: {err}")
    finally:
        watchdog.cancel()
        sampler.stop()
        finish(report, sampler, log)
        if started_ray and ray.is_initialized():
            ray.shutdown()
        if not args.keep_work and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(markdown(report.data), flush=True)
    log(f"wrote {out}/report.json, report.md, gpu_util.png, gpu_samples.csv")
    return 0 if report.data["status"] == "done" else 1


def run_phases(args, phases: list[Phase], size, folder: Path, cpu: bool, work: Path, report: Report,
               sampler: Sampler, log: Log) -> None:
    """Each sweep in turn, its deadline its share of what is left of the budget; the report after each."""
    from sjc_dist.distributed.spec import load_sweep

    n_all, t0 = phases[-1].workers, report.data["t0"]
    for i, phase in enumerate(phases):
        left = t0 + args.budget_seconds - REPORT_RESERVE_S - time.time()
        if left < 10:
            report.data["notes"].append(f"sweep '{phase.name}' skipped: the budget was spent")
            log(f"sweep '{phase.name}' skipped: {left:.0f} s of budget left")
            continue
        spec = load_sweep(sweep_dict(args, phase, size, folder, cpu))
        record = run_phase(phase, spec, args, work, time.time() + left / (len(phases) - i), log)
        win = record["steady"].get("window")
        span = win or (record["t_start"], record["t_end"])
        record["util_steady"] = {str(d): u for d, u in sampler.mean_util(*span).items()}
        if record["error"]:
            report.data["notes"].append(f"sweep '{phase.name}': {record['error']}")
        report.data["phases"][phase.name] = record
        report.data["scaling"] = scaling(report.data["phases"], n_all, cpu)
        report.write()


def finish(report: Report, sampler: Sampler, log: Log) -> None:
    """The samples CSV, the plot, one trial's views.png, and the report (each step guarded)."""
    out, t0 = report.out, report.data["t0"]
    phases = list(report.data["phases"].values())
    env = report.data["env"]
    kinds = sorted({"cpu" if n.startswith("cpu") and n[3:].isdigit() else n for n in env["device_names"]})
    title = (f"{', '.join(kinds) or 'no device'} x{len(env['device_names'])}: "
             f"utilisation ({sampler.backend}, every {sampler.period:.1f} s)")
    for name, fn in (("gpu_samples.csv", lambda p: write_samples_csv(sampler, t0, p)),
                     ("gpu_util.png", lambda p: plot_utilisation(sampler, phases, t0, p, title)),
                     ("views_example.png", lambda p: _copy_views(phases, p))):
        try:
            if fn(out / name) is not False:
                report.data["files"][name] = str(out / name)
        except Exception as err:  # noqa: BLE001 - one output's failure must not lose the others
            report.data["notes"].append(f"{name}: {type(err).__name__}: {err}")
            log(f"{name} FAILED: {type(err).__name__}: {err}")
    report.data["samples"] = len(sampler.rows)
    report.write()


def _copy_views(phases: list[dict], path: Path) -> bool:
    for p in reversed(phases):
        for run_dir in p.get("run_dirs", []):
            views = Path(run_dir) / "views.png"
            if views.is_file():
                shutil.copyfile(views, path)
                return True
    return False


def _watchdog(report: Report, sampler: Sampler, log: Log, exit_now: bool) -> None:
    """The budget plus grace ran out: write what there is and (`exit_now`) stop the local Ray (its processes
    hold the GPUs; given 20 s) and leave at once."""
    log("watchdog: budget exceeded; writing the report" + (" and exiting" if exit_now else ""))
    report.data["status"] = "watchdog: budget exceeded"
    report.data["notes"].append(f"watchdog: the budget + {WATCHDOG_GRACE_S:.0f} s ran out")
    try:
        sampler.stop()
        finish(report, sampler, log)
    finally:
        if exit_now:
            import ray

            stopper = threading.Thread(target=ray.shutdown, daemon=True)
            stopper.start()
            stopper.join(20)
            os._exit(3)


if __name__ == "__main__":
    sys.exit(main())
