"""RunWriter: the driver's one writer of a sweep's trial runs in MLflow, on a background thread, so that Tune's loop
never waits on the tracking store.

The tracker's callbacks post what a trial's run gets (`create`, `log` params / metrics / tags, `artifacts`, `end`)
and return at once. The thread takes everything posted (waiting LINGER_S after the first item, so a burst of
results coalesces) and writes, per run and in posting order: the run (one create_run carrying its tags), then its
pending params, metrics and tags in as few `log_batch` calls as MLflow allows (100 params, 100 tags, 1,000
entries a call), its artifacts (one `log_artifacts` call of links to them, `one_call`),
then its end (status). A one-report trial costs 4 store calls (create_run, log_batch, log_artifacts,
update_run), where the tracker before it made 10 synchronous calls in Tune's loop (one per kind of write, one
a file), holding the loop 99 ms a trial on SQLite (BENCHMARKS.md section 10; the writer's posts: 9 ms).
Bounded: at most MAX_PENDING posts wait; past that a callback blocks until the thread catches up (back-pressure,
not growing memory). A write that fails is retried RETRIES times with back-off (a locked SQLite file, a restarting
server); one that still fails is kept in `errors` (the sweep's notes name it) and the writer goes on.
`flush()` returns when everything posted is written; `close()` flushes and stops the thread. No Ray here.
"""
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

LINGER_S = 0.5  # after the first post, wait this long for more before writing
MAX_PENDING = 20_000  # posts queued before callbacks wait
RETRIES = 3
LIMITS = {"params": 100, "tags": 100, "metrics": 1000, "total": 1000}  # MLflow's log_batch limits


@dataclass
class Pending:
    """What one run still needs written (accumulated over the posts of one drain)."""

    create: dict | None = None  # {"name", "tags"} for a run not yet created
    params: list = field(default_factory=list)
    metrics: list = field(default_factory=list)
    tags: list = field(default_factory=list)
    artifacts: list = field(default_factory=list)
    end: str | None = None


def batches(params: list, metrics: list, tags: list) -> list[tuple[list, list, list]]:
    """(params, metrics, tags) chunks within MLflow's log_batch limits, in order: params, then metrics, then tags."""
    out, p, m, t = [], list(params), list(metrics), list(tags)
    while p or m or t:
        cp = p[:LIMITS["params"]]
        ct = t[:min(LIMITS["tags"], LIMITS["total"] - len(cp))]
        cm = m[:min(LIMITS["metrics"], LIMITS["total"] - len(cp) - len(ct))]
        out.append((cp, cm, ct))
        p, m, t = p[len(cp):], m[len(cm):], t[len(ct):]
    return out


def one_call(paths: list[str]) -> tuple[list[Path], bool]:
    """(the files that exist, whether they go in one `log_artifacts` call): two or more with distinct names do,
    through a folder of links to exactly them (a run folder may hold other files); otherwise one call a file."""
    files = [Path(p) for p in paths if Path(p).is_file()]
    return files, len(files) > 1 and len({f.name for f in files}) == len(files)


class RunWriter:
    """Writes trial runs on a background thread (see the module docstring). `runs`: key -> run id, filled as
    runs are created (or given, for runs that already exist)."""

    def __init__(self, client, experiment_id: str, runs: dict[str, str] | None = None):
        self.client, self.experiment_id = client, experiment_id
        self.runs: dict[str, str] = dict(runs or {})
        self.errors: list[str] = []
        self.calls = 0
        self._queue: queue.Queue = queue.Queue(MAX_PENDING)
        self._thread = threading.Thread(target=self._loop, name="mlflow-writer", daemon=True)
        self._thread.start()

    # --- posting (the Tune loop's side) ---------------------------------------------------------------------
    def create(self, key: str, name: str, tags: dict) -> None:
        self._queue.put((key, "create", {"name": name, "tags": tags}))

    def log(self, key: str, params=(), metrics=(), tags=()) -> None:
        """mlflow.entities Param / Metric / RunTag lists for the run of `key`."""
        self._queue.put((key, "log", (list(params), list(metrics), list(tags))))

    def artifacts(self, key: str, paths: list[str]) -> None:
        self._queue.put((key, "artifacts", list(paths)))

    def end(self, key: str, status: str) -> None:
        self._queue.put((key, "end", status))

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything posted so far is written."""
        done = threading.Event()
        self._queue.put((None, "flush", done))
        done.wait(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self.flush()
            self._queue.put((None, "stop", None))
            self._thread.join(timeout=60)

    # --- writing (the thread) -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            posts = [self._queue.get()]
            time.sleep(LINGER_S if posts[0][1] not in ("flush", "stop") else 0.0)
            posts += self._drain()
            self._write(posts)
            for key, kind, payload in posts:
                if kind == "flush":
                    payload.set()
            if any(kind == "stop" for _, kind, _ in posts):
                return

    def _drain(self) -> list:
        out = []
        while True:
            try:
                out.append(self._queue.get_nowait())
            except queue.Empty:
                return out

    def _write(self, posts: list) -> None:
        """Coalesce the posts per run (posting order kept within a run) and write each run's share."""
        pending: dict[str, Pending] = {}
        for key, kind, payload in posts:
            if key is None:
                continue
            p = pending.setdefault(key, Pending())
            if kind == "create":
                p.create = payload
            elif kind == "log":
                p.params += payload[0]
                p.metrics += payload[1]
                p.tags += payload[2]
            elif kind == "artifacts":
                p.artifacts += payload
            else:
                p.end = payload
        for key, p in pending.items():
            self._write_run(key, p)

    def _write_run(self, key: str, p: Pending) -> None:
        if key not in self.runs and p.create is not None:
            run = self._call(self.client.create_run, self.experiment_id, run_name=p.create["name"],
                             tags=p.create["tags"])
            if run is not None:
                self.runs[key] = run.info.run_id
        run_id = self.runs.get(key)
        if run_id is None:
            self.errors.append(f"run of {key}: not created, its writes are dropped")
            return
        for params, metrics, tags in batches(p.params, p.metrics, p.tags):
            self._call(self.client.log_batch, run_id, metrics=metrics, params=params, tags=tags)
        self._log_files(run_id, p.artifacts)
        if p.end is not None:
            self._call(self.client.set_terminated, run_id, p.end)

    def _log_files(self, run_id: str, paths: list[str]) -> None:
        files, together = one_call(paths)
        if not together:
            for f in files:
                self._call(self.client.log_artifact, run_id, str(f))
            return
        with tempfile.TemporaryDirectory(prefix="sjc-artifacts-") as stage:
            for f in files:
                os.symlink(f.resolve(), Path(stage) / f.name)
            self._call(self.client.log_artifacts, run_id, stage)

    def _call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs), retried with back-off; None (and the error kept) when it keeps failing."""
        for attempt in range(RETRIES + 1):
            try:
                self.calls += 1
                return fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - tracking must not stop the sweep
                if attempt == RETRIES:
                    self.errors.append(f"{fn.__name__}: {type(err).__name__}: {err}"[:500])
                    return None
                time.sleep(0.5 * 2 ** attempt)
        return None
