"""Timing primitives of the GPU benchmarks (METHOD.md: warm-up first, CUDA events, medians of repeats).

`timed_ms` brackets a callable with CUDA events (a host clock on the CPU); `median_ms_per_call` is the median
over repeats of the mean of back-to-back calls; `Clock` tracks a run's budget; `guarded` turns an optional
diagnostic's failure into a result. No reporting here (bench_report.py).
"""
import gc
import statistics
import time

import torch

GIB = 2**30


class Clock:
    """Seconds since start, and what is left of the budget."""

    def __init__(self, budget: float):
        self.t0, self.budget = time.perf_counter(), budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()


class Log:
    """Timestamped progress lines on stdout; knows the variant being measured."""

    def __init__(self, clock: Clock):
        self.clock, self.variant = clock, ""

    def __call__(self, msg: str) -> None:
        print(f"[{self.clock.elapsed():6.1f}s] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn, device: torch.device) -> float:
    """Milliseconds of fn() from a synchronised start to a synchronised end (CUDA events on the GPU)."""
    sync(device)
    if device.type != "cuda":
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def median_ms_per_call(fn, device: torch.device, calls: int, repeats: int) -> float:
    """Median over `repeats` of the mean time of `calls` back-to-back calls."""
    return statistics.median(timed_ms(lambda: [fn() for _ in range(calls)], device) / calls
                             for _ in range(repeats))


BENCH = {"warmup": 2, "repeats": 5, "target_ms": 200.0}  # bench_ms's defaults (a CPU check shrinks them)


def bench_ms(fn, device: torch.device, warmup: int | None = None, repeats: int | None = None,
             target_ms: float | None = None) -> dict:
    """fn warmed up, then timed: calls per repeat sized to about `target_ms`; median and spread (min, max)."""
    warmup = BENCH["warmup"] if warmup is None else warmup
    repeats, target_ms = repeats or BENCH["repeats"], target_ms or BENCH["target_ms"]
    for _ in range(warmup):
        fn()
    est = max(timed_ms(fn, device), 1e-3)
    calls = max(1, min(50, round(target_ms / est)))
    times = [timed_ms(lambda: [fn() for _ in range(calls)], device) / calls for _ in range(repeats)]
    return {"ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "calls": calls * repeats}


def memory(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def peak_memory(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def matmul_peak(device: torch.device, n: int, reps: int = 20) -> dict:
    """Dense matmul rate on random data: bf16 n^3 on the GPU, float32 on the CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    ms = median_ms_per_call(lambda: a @ b, device, reps, 3)
    return {"n": n, "dtype": str(dtype), "ms": ms, "tflops": 2 * n**3 / (ms * 1e-3) / 1e12}


def guarded(fn) -> dict:
    """fn() or {'error': ...}: optional diagnostics never fail a measurement."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {err}"[:300]}
