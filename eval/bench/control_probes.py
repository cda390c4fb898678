"""The control-plane load test's probes, all in the driver process: timers wrapped around the driver's functions
(Tune's loop step and experiment-state snapshots, the MLflow tracker and ledger callbacks, the results table), a
sampler of the driver's CPU and memory over time, the MLflow store's row counts, and a py-spy profile of the
driver summarised by function. Measurement only: nothing here changes what a sweep does.
"""
import functools
import importlib.util
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from bench_report import Periodic

RESERVOIR = 20_000  # durations kept per timer for percentiles (uniform sample past that)


class Stat:
    """Count, total, max and a uniform sample of one timer's durations (s)."""

    def __init__(self):
        self.count, self.total, self.max, self.sample = 0, 0.0, 0.0, []

    def add(self, dt: float) -> None:
        self.count += 1
        self.total += dt
        self.max = max(self.max, dt)
        if len(self.sample) < RESERVOIR:
            self.sample.append(dt)
        elif random.random() < RESERVOIR / self.count:
            self.sample[random.randrange(RESERVOIR)] = dt

    def summary(self) -> dict:
        s = sorted(self.sample)
        pick = (lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1e3) if s else (lambda q: None)
        return {"count": self.count, "total_s": self.total, "mean_ms": self.total / self.count * 1e3 if self.count
                else None, "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": self.max * 1e3}


class Timers:
    """Named timers around methods of driver classes (`wrap`); `totals()` is what the sampler records."""

    def __init__(self):
        self.stats: dict[str, Stat] = {}
        self.lock = threading.Lock()
        self.events: dict[str, list[float]] = {}  # name -> wall clock of each call's end (counted events)

    def add(self, name: str, dt: float, event: bool = False) -> None:
        with self.lock:
            self.stats.setdefault(name, Stat()).add(dt)
            if event:
                self.events.setdefault(name, []).append(time.time())

    def wrap(self, owner, attr: str, name: str, event: bool = False) -> None:
        """Time every call of owner.attr under `name` (and keep its end times when `event`)."""
        original = getattr(owner, attr)

        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - start, event)

        setattr(owner, attr, timed)

    def totals(self) -> dict[str, float]:
        with self.lock:
            return {k: v.total for k, v in self.stats.items()}

    def count(self, name: str) -> int:
        with self.lock:
            return len(self.events.get(name, ()))

    def summary(self) -> dict:
        with self.lock:
            return {k: v.summary() for k, v in sorted(self.stats.items())}


def install(timers: Timers) -> None:
    """Wrap the driver's functions a sweep spends its time in (before run_sweep builds its Tuner)."""
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from sjc_dist.distributed import ledger, results, sweep, tracking

    timers.wrap(TuneController, "step", "tune.step (one loop iteration)")
    timers.wrap(TuneController, "save_to_dir", "tune.experiment_state snapshot", event=True)
    for cls, label in ((CSVLoggerCallback, "csv"), (JsonLoggerCallback, "json")):
        timers.wrap(cls, "log_trial_result", f"tune.logger {label}")
    for hook in ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error"):
        timers.wrap(tracking.SweepTracker, hook, f"mlflow.{hook}")
    if importlib.util.find_spec("sjc_dist.distributed.mlflow_writer") is not None:  # absent before issue 18
        from sjc_dist.distributed import mlflow_writer

        timers.wrap(mlflow_writer.RunWriter, "_write", "mlflow writer thread: one drain")
        timers.wrap(tracking.SweepTracker, "on_experiment_end", "mlflow.on_experiment_end (final flush)")
    timers.wrap(ledger.TrialLedger, "on_trial_complete", "ledger.on_trial_complete", event=True)
    timers.wrap(ledger.TrialLedger, "on_trial_error", "ledger.on_trial_error", event=True)
    timers.wrap(sweep, "finish_sweep", "finish_sweep (rows, Parquet, ranking, summary)")
    timers.wrap(results, "write_table", "results.write_table (Parquet)")
    timers.wrap(results, "make_row", "results.make_row")


class Sampler(Periodic):
    """Every `every` s: the driver's CPU seconds (all its threads), RSS and USS (MB), trials ended, load average,
    and the timers' totals; `rows` is the time series."""

    def __init__(self, timers: Timers, every: float = 2.0):
        import psutil

        super().__init__(every, "sampler")
        self.proc, self.timers, self.rows = psutil.Process(), timers, []
        self.t0 = time.time()

    def stop(self) -> None:
        super().stop()
        self.sample()

    def ended(self) -> int:
        return self.timers.count("ledger.on_trial_complete") + self.timers.count("ledger.on_trial_error")

    def sample(self) -> None:
        cpu, mem = self.proc.cpu_times(), self.proc.memory_full_info()
        self.rows.append({"t": time.time() - self.t0, "cpu_s": cpu.user + cpu.system, "rss_mb": mem.rss / 2**20,
                          "uss_mb": mem.uss / 2**20, "ended": self.ended(), "load1": os.getloadavg()[0],
                          "timers": self.timers.totals()})

    def tick(self) -> None:
        self.sample()


def db_rows(uri: str) -> dict[str, int]:
    """Rows per table of an MLflow SQL store (runs, params, metrics, latest_metrics, tags); {} for none."""
    if not uri or not uri.split(":")[0].startswith(("sqlite", "postgresql", "mysql")):
        return {}
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as conn:
            return {t: int(conn.execute(sqlalchemy.text(f"select count(*) from {t}")).scalar())
                    for t in ("runs", "params", "metrics", "latest_metrics", "tags")}
    finally:
        engine.dispose()


class Profile:
    """py-spy on this process, recording raw stacks (`start_when`), summarised by `finish`."""

    def __init__(self, out: Path, rate: int = 25):
        self.out, self.rate, self.proc, self.seconds = Path(out), rate, None, 0
        self.exe = Path(sys.executable).with_name("py-spy")

    def start_when(self, ready, seconds: int, poll: float = 1.0) -> None:
        """Record `seconds` of this process once `ready()` is true (e.g. the steady part of a sweep began)."""
        if not self.exe.is_file():
            return
        self.seconds = seconds
        cmd = [str(self.exe), "record", "-p", str(os.getpid()), "-r", str(self.rate), "-d", str(seconds), "-f",
               "raw", "--threads", "--nonblocking", "-o", str(self.out)]

        def wait_then_record():
            while not ready():
                time.sleep(poll)
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        threading.Thread(target=wait_then_record, name="py-spy", daemon=True).start()

    def finish(self) -> dict:
        if self.proc is not None:
            self.proc.wait(timeout=self.seconds + 60)
        if not self.out.is_file():
            return {"note": "no profile (py-spy missing, or the run ended before it started)"}
        return summarise(self.out.read_text(), self.rate * self.seconds)


def summarise(raw: str, expected: int, top: int = 25) -> dict:
    """py-spy raw stacks ('thread;frame;...;leaf count', root first) -> samples per thread, the busiest
    functions inclusive (a frame counted once per stack) and by self time, as shares of `expected` samples
    (rate x seconds: 100% = one core busy the whole time)."""
    threads, inclusive, own = Counter(), Counter(), Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        threads[frames[0]] += int(n)
        for f in set(frames[1:]):
            inclusive[_short(f)] += int(n)
        own[_short(frames[-1])] += int(n)
    share = (lambda c: [[k, round(100 * v / max(expected, 1), 1)] for k, v in c.most_common(top)])
    return {"expected_samples": expected, "samples": sum(threads.values()), "threads": share(threads),
            "inclusive_pct": share(inclusive), "self_pct": share(own)}


def _short(frame: str) -> str:
    """'func (path/to/module.py:12)' -> 'func (module.py)'."""
    name, _, where = frame.partition(" (")
    return f"{name} ({Path(where.split(':')[0]).name})" if where else name
