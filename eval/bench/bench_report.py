"""The one report writer of the benchmark scripts (gpu_bench.py, multi_gpu_sweep.py): a JSON document and its
markdown rewritten after every measurement (so a run killed early keeps what it measured), figures at the end,
and a markdown table helper. Each script supplies its own `markdown(data) -> str` and figure functions; no
timing code lives here.
"""
import datetime
import json
import math
import os
import platform
import threading
from collections.abc import Callable
from pathlib import Path


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


class Report:
    """`data` (plain JSON-able values) written to out/report.json and out/report.md by `write()`; figures
    (name -> fn(data, path)) by `figures()`. Thread-safe: a watchdog thread may write while the run goes on."""

    def __init__(self, out: Path, data: dict, markdown: Callable[[dict], str],
                 figures: dict[str, Callable] | None = None, clock=None):
        self.out, self.data, self.markdown_fn, self.clock = Path(out), data, markdown, clock
        self.figure_fns = figures or {}
        self.lock = threading.RLock()
        self.data.setdefault("notes", [])
        self.data.setdefault("files", {})

    def markdown(self) -> str:
        with self.lock:
            return self.markdown_fn(self.data)

    def write(self) -> None:
        with self.lock:
            if self.clock is not None:
                self.data["elapsed_s"] = self.clock.elapsed()
            try:
                text = json.dumps(self.data, indent=2, default=str) + "\n"
            except (TypeError, ValueError, RuntimeError) as err:
                text = json.dumps({"status": f"report not serialisable: {err}"})
            (self.out / "report.json").write_text(text)
            (self.out / "report.md").write_text(self.markdown())

    def note(self, text: str) -> None:
        with self.lock:
            self.data["notes"].append(text)
        self.write()

    def stage(self, name: str, fn) -> dict:
        """Run fn and store its dict under data['stages'][name], or the error; never raises."""
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - a failed stage is a result too
            result = {"error": f"{type(err).__name__}: {err}"[:500]}
        with self.lock:
            self.data.setdefault("stages", {})[name] = result
        self.write()
        return result

    def figures(self) -> None:
        """Each figure, guarded: one failing plot never loses the others or the report."""
        for name, fn in self.figure_fns.items():
            try:
                if fn(self.data, self.out / name) is not False:
                    self.data["files"][name] = str(self.out / name)
            except Exception as err:  # noqa: BLE001
                self.data["notes"].append(f"{name}: {type(err).__name__}: {err}"[:300])
        self.write()

    def abort(self, reason: str, before_exit: Callable | None = None) -> None:
        """The watchdog's end: record why, write what there is (figures too), run `before_exit`, leave now."""
        with self.lock:
            self.data["status"] = reason
        try:
            self.figures()
            if before_exit is not None:
                before_exit()
        finally:
            print(f"\n{reason}; partial results in {self.out}", flush=True)
            os._exit(3)


class Periodic:
    """A daemon thread calling `tick()` every `every` s between `start()` and `stop()` (samplers, progress lines)."""

    def __init__(self, every: float, name: str):
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def tick(self) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.tick()


def table(header: list[str], rows: list[list], align: str = "") -> list[str]:
    """Markdown table lines; align: one character per column, 'l' or 'r' (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"
    return ["| " + " | ".join(header) + " |", rule] + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def fmt(x, spec: str = ".2f", missing: str = "n/a") -> str:
    """x formatted, or `missing` for None / NaN / non-numbers."""
    if not isinstance(x, (int, float)) or math.isnan(x):
        return missing
    return format(x, spec)


def python_env() -> dict:
    """Versions that every report states."""
    import torch

    env = {"torch": torch.__version__, "python": platform.python_version(), "cuda": torch.version.cuda,
           "cpus": os.cpu_count()}
    for mod in ("diffusers", "triton", "ray", "transformers"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            env[mod] = "missing"
    return env
