"""The GPU iteration benchmark of issue 6: end-to-end SJC iterations with an SD-1.5-sized UNet (random weights).

Times the engine's real path (SJCRun / SceneBatch: cameras, 100^3 voxel render, PAAS with CFG, emptiness loss,
Adamax) for several denoiser variants in one process: the plain eager fp32 baseline, eager half precision (the
engine's GPU default), the FastDenoiser path (half, channels-last, CUDA graphs), the same with preview patches
of the engine's host syncs, and torch.compile. For K scenes per GPU it reports ms per step, scene-iterations/s,
the UNet's share, peak memory per scene, MFU against a bf16 matmul peak measured in the same run, and which of
the issue's targets are met. Every stage prints progress; a failing variant is recorded and skipped; the JSON
and the markdown table are rewritten after every measurement, so a run killed early still leaves its results.

  mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site && export PYTHONPATH=.:/tmp/site && \
    python eval/bench/gpu_bench.py --out $OUT/bench
  python eval/bench/gpu_bench.py --tiny --device cpu --out /tmp/bench   # the CPU check (seconds)
"""
import argparse
import contextlib
import copy
import gc
import math
import os
import statistics
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import Report, check_targets  # noqa: E402
from sd_standin import SIZES, make_denoiser, make_model, run_config  # noqa: E402

from sjc_dist.diffusion.fast import FastConfig  # noqa: E402
from sjc_dist.optim.multiscene import SceneBatch  # noqa: E402
from sjc_dist.optim.run import SJCRun  # noqa: E402

GIB = 2**30


@dataclass(frozen=True)
class Variant:
    """One way of running the denoiser: plain VPDenoiser at `dtype` (fast None) or a FastDenoiser."""

    name: str
    dtype: str
    fast: FastConfig | None
    ks: tuple[int, ...]
    note: str
    patches: bool = False  # preview the proposed engine patches (no host syncs) while it runs
    baseline: bool = False


def variants(args, device: torch.device) -> list[Variant]:
    """The variants of this run, in order of importance (the budget may cut the tail); torch.compile last."""
    half = "float16" if device.type == "cuda" else "bfloat16"
    ks, ends = tuple(args.ks), tuple(sorted({1, max(args.ks)}))
    fast = FastConfig(dtype=half, channels_last=True, cuda_graph=True, attention=args.attention)
    out = [Variant("eager-fp32", "float32", None, (1,), "baseline: VPDenoiser fp32, plain eager", baseline=True),
           Variant(f"eager-{half}", half, None, tuple(sorted({1, min(8, max(ks))})),
                   "VPDenoiser with autocast (load_model's GPU default)"),
           Variant("fast", half, fast, ks, "FastDenoiser: half, channels-last, SDPA, CUDA graphs"),
           Variant("fast+nosync", half, fast, ends,
                   "fast + preview of the proposed engine patches P1-P3 (no host syncs)", patches=True),
           Variant("fast-nchw", half, replace(fast, channels_last=False), ends, "fast without channels-last"),
           Variant("fast-nograph", half, replace(fast, cuda_graph=False), ends, "fast without CUDA graphs")]
    if args.compile != "none":
        cfg = replace(fast, compile=args.compile, cuda_graph=args.compile != "reduce-overhead")
        out.append(Variant(f"compile-{args.compile}", half, cfg, ends,
                           "fast + torch.compile of the UNet (its warm-up is in first_step_s)"))
    wanted = [w for w in args.variants.split(",") if w]
    return [v for v in out if not wanted or any(v.name == w or v.name.startswith(w + "-") for w in wanted)]


# --- timing primitives ---------------------------------------------------------------------------------
class Clock:
    """Seconds since start, and what is left of the budget."""

    def __init__(self, budget: float):
        self.t0, self.budget = time.perf_counter(), budget

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget - self.elapsed()


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
    """Dense matmul rate: bf16 n^3 on the GPU, float32 on the CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator(device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    for _ in range(3):
        a @ b
    ms = median_ms_per_call(lambda: a @ b, device, reps, 3)
    return {"n": n, "dtype": str(dtype), "ms": ms, "tflops": 2 * n**3 / (ms * 1e-3) / 1e12}


# --- engine-patch preview (proposed patches P1-P3, see README) -------------------------------------------
@contextlib.contextmanager
def engine_patches(device: torch.device):
    """Applies the proposed no-sync patches while the block runs: cameras, sigma and the CFG weight reach the
    device with non-blocking copies instead of blocking ones (each blocking H2D copy is a stream sync)."""
    from sjc_dist.diffusion.denoiser import Cond
    from sjc_dist.diffusion.sigmas import SigmaSampler
    from sjc_dist.diffusion.text import TextConditioner
    from sjc_dist.scene.cameras import Cameras

    sample = SigmaSampler.sample

    def cameras_to(self, dev):  # P1
        return Cameras(self.c2w.to(dev, non_blocking=True), self.fov.to(dev, non_blocking=True), self.azimuth,
                       self.elevation, self.height, self.width)

    def sigma_sample(self, *args, **kwargs):  # P2 (begin's own .to(device) then is a no-op)
        return sample(self, *args, **kwargs).to(device, non_blocking=True)

    def cond(self, prompts, negative="", weight=None):  # P3
        context, uncond = self.embed(prompts), self.embed([negative] * len(prompts))
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32).expand(len(prompts))
        return Cond(context, uncond, None if w is None else w.to(context.device, non_blocking=True).clone())

    with mock.patch.object(Cameras, "to", cameras_to), mock.patch.object(SigmaSampler, "sample", sigma_sample), \
            mock.patch.object(TextConditioner, "cond", cond):
        yield


# --- one measurement: K scenes of one variant -------------------------------------------------------------
def build_batch(model, size, k: int) -> SceneBatch:
    return SceneBatch([SJCRun(run_config(size, seed), model) for seed in range(k)])


def denoise_ms(batch: SceneBatch, device, calls: int, repeats: int) -> float:
    """The shared denoiser call of one batched step (CFG, 2K images) alone."""
    from sjc_dist.diffusion.denoiser import Cond

    pending = [r.begin() for r in batch.runs]
    z, sigma = torch.cat([p.z for p in pending]), torch.cat([p.sigma_k for p in pending])
    cond = Cond.cat([p.cond for p in pending])
    guidance = batch.runs[0].guidance
    return median_ms_per_call(lambda: guidance.denoise(z, sigma, cond), device, calls, repeats)


def measure_k(model, size, k: int, args, device, log) -> dict:
    """Steps K scenes together: first step (capture/compile), warm-up, then the median of timed repeats."""
    release(device)
    mem0 = memory(device)
    batch = build_batch(model, size, k)
    first_s = timed_ms(batch.step_all, device) / 1e3
    log(f"    K={k}: first step {first_s:.2f}s (includes graph capture / compilation)")
    est = timed_ms(lambda: [batch.step_all() for _ in range(args.warmup)], device) / max(args.warmup, 1)
    calls = max(args.min_steps, min(100, math.ceil(args.repeat_seconds * 1e3 / max(est, 1e-3))))
    step_ms = median_ms_per_call(batch.step_all, device, calls, args.repeats)
    losses = batch.step_all()
    finite = bool(torch.stack(losses).isfinite().all())
    unet_ms = denoise_ms(batch, device, calls, args.repeats)
    peak = peak_memory(device) - mem0
    syncs = guarded(lambda: sync_sites(batch, device, 3))
    row = {"k": k, "step_ms": step_ms, "ms_per_scene_it": step_ms / k, "scene_its_per_s": 1e3 * k / step_ms,
           "unet_ms": unet_ms, "unet_share": unet_ms / step_ms, "first_step_s": first_s,
           "steps_timed": calls * args.repeats, "peak_bytes": peak, "peak_gib_per_scene": peak / k / GIB,
           "finite_loss": finite, "syncs_per_step": syncs}
    if args.profile and k in (1, max(args.ks)) and args.profile_variant == log.variant:
        row["profile"] = guarded(lambda: profile_steps(batch, device, args, f"{log.variant}_k{k}"))
    del batch
    return row


def guarded(fn) -> dict:
    """fn() or {'error': ...}: optional diagnostics never fail a measurement."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {err}"[:300]}


def sync_sites(batch: SceneBatch, device, steps: int) -> dict:
    """Host-device syncs per step, by source line (torch.cuda sync debug mode); CUDA only."""
    if device.type != "cuda":
        return {}
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(steps):
                batch.step_all()
            sync(device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    sites: dict[str, float] = {}
    for w in caught:
        if "synchroniz" in str(w.message).lower():
            key = f"{Path(w.filename).name}:{w.lineno}"
            sites[key] = sites.get(key, 0) + 1 / steps
    return sites


def profile_steps(batch: SceneBatch, device, args, tag: str, steps: int = 5) -> dict:
    """torch.profiler over a few steps: top kernels/ops table written to OUT, GPU busy fraction, sync sites."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(steps):
            batch.step_all()
        sync(device)
    wall_us = (time.perf_counter() - t) * 1e6
    avg = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = avg.table(sort_by=key, row_limit=30)
    Path(args.out, f"profile_{tag}.txt").write_text(table)
    from torch.autograd import DeviceType

    busy = sum(e.self_device_time_total for e in avg if e.device_type == DeviceType.CUDA)
    return {"table": f"profile_{tag}.txt", "gpu_busy_fraction": busy / wall_us if busy else None}


def agreement(denoiser, master, size, device, n: int) -> dict:
    """The variant's denoiser against the float32 eager reference on the same random inputs, twice (new inputs
    must reach a captured graph's static buffers): max |eps - eps_ref| / max |eps_ref|."""
    from sjc_dist.diffusion.denoiser import Cond, eps_from_x0

    ref = make_denoiser(master, "float32", None)
    cfg, gen, errs = master.config, torch.Generator(device).manual_seed(1), []
    with torch.no_grad():
        for _ in range(2):
            x = torch.randn(n, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen, device=device)
            sigma = ref.sigmas[torch.randint(10, 970, (n,), generator=gen, device=device)]
            cond = Cond(context=torch.randn(n, size.context_len, size.context_dim, generator=gen, device=device))
            e_ref = eps_from_x0(x, ref(x, sigma, cond), sigma)
            e = eps_from_x0(x, denoiser(x, sigma, cond), sigma)
            errs.append(float((e - e_ref).abs().max() / e_ref.abs().max()))
    return {"n": n, "rel_err": max(errs)}


# --- stages --------------------------------------------------------------------------------------------
class Log:
    """Timestamped progress lines on stdout; knows the variant being measured."""

    def __init__(self, clock: Clock):
        self.clock, self.variant = clock, ""

    def __call__(self, msg: str) -> None:
        print(f"[{self.clock.elapsed():6.1f}s] {msg}", flush=True)


def run_variant(v: Variant, master, size, args, device, report: Report, log: Log) -> None:
    """All K of one variant on a fresh copy of the UNet; each K's failure is recorded, larger K skipped."""
    log.variant = v.name
    if compiles(v) and device.type != "cuda":
        report.skip(v, "torch.compile is measured on the GPU only")
        return
    if compiles(v) and report.clock.left() < args.compile_reserve:
        report.skip(v, f"budget: {report.clock.left():.0f}s left < --compile-reserve {args.compile_reserve:.0f}s")
        return
    log(f"variant {v.name}: {v.note}")
    release(device)
    unet = copy.deepcopy(master)
    denoiser = make_denoiser(unet, v.dtype, v.fast, cpu_fallback=not args.force_fast_path)
    model = make_model(denoiser, size, device)
    if v.fast is not None and denoiser.call is None:
        report.note(f"{v.name} ran FastDenoiser's CPU fallback (the plain VPDenoiser); --force-fast-path runs "
                    "its fast path on a CPU")
    if not v.baseline:
        n = 2 if compiles(v) else 3  # 3: padded to a bucket of 4; 2: the CFG batch of K = 1 (compiled once)
        t = time.perf_counter()
        check = guarded(lambda: agreement(denoiser, master, size, device, n))
        check["seconds"] = time.perf_counter() - t  # for compile variants: the compile warm-up of batch n
        report.data.setdefault("agreement", {})[v.name] = check
        log(f"    agreement with eager fp32: {check}")
        if hasattr(denoiser, "reset"):
            denoiser.reset()
    patches = engine_patches(device) if v.patches else contextlib.nullcontext()
    with patches:
        for k in v.ks:
            if not measure_one(v, k, model, size, args, device, report, log):
                break
            if hasattr(denoiser, "reset"):
                denoiser.reset()
    del model, denoiser, unet
    release(device)


def compiles(v: Variant) -> bool:
    return v.fast is not None and v.fast.compile != "none"


def measure_one(v: Variant, k: int, model, size, args, device, report: Report, log: Log) -> bool:
    """One (variant, K) cell; False stops the variant (failure or budget)."""
    need = report.predict_seconds(v.name, k, args)
    if compiles(v) and k > 1:  # a new batch shape compiles again, about as long as the first
        need += report.data.get("agreement", {}).get(v.name, {}).get("seconds", 0.0)
    if report.clock.left() < need:
        report.skip(v, f"budget: K={k} needs ~{need:.0f}s, {report.clock.left():.0f}s left", k)
        return False
    try:
        row = measure_k(model, size, k, args, device, log)
    except Exception as err:  # noqa: BLE001 - one failure must not kill the table
        oom = isinstance(err, torch.cuda.OutOfMemoryError)
        report.fail(v, k, f"{type(err).__name__}: {err}"[:500], traceback.format_exc(limit=6))
        log(f"    K={k}: FAILED ({'out of memory' if oom else type(err).__name__}): {str(err)[:200]}")
        release(device)
        return False
    report.add(v, row)
    log(f"    K={k}: {row['step_ms']:.2f} ms/step, {row['scene_its_per_s']:.1f} scene-it/s, "
        f"UNet {row['unet_ms']:.2f} ms ({100 * row['unet_share']:.0f}%), "
        f"peak {row['peak_gib_per_scene']:.3f} GiB/scene, MFU {report.mfu(row):.1%}")
    return True


def prepare(args, device, report: Report, log: Log):
    """Environment, matmul peak, the master UNet (float32) and its FLOP count."""
    from sd_standin import build_unet, unet_flops

    size = SIZES["tiny" if args.tiny else "sd15"]
    report.env(device, size)
    log(f"device {report.data['env']['device_name']}; torch {torch.__version__}; size {size.name}")
    report.stage("matmul_peak", lambda: matmul_peak(device, args.matmul_size or (8192 if device.type == "cuda"
                                                                                   else 512)))
    log(f"matmul peak: {report.data['stages'].get('matmul_peak', {}).get('tflops', float('nan')):.4g} TFLOP/s")
    t = time.perf_counter()
    master = build_unet(size, device, seed=0)
    report.data["unet"] = {"build_s": time.perf_counter() - t, "config": dict(master.config),
                           "params_m": sum(p.numel() for p in master.parameters()) / 1e6,
                           "attention_processors": sorted({type(p).__name__
                                                           for p in master.attn_processors.values()})}
    report.stage("flops", lambda: {"per_image": unet_flops(master)})
    log(f"UNet {report.data['unet']['params_m']:.1f}M params, "
        f"{report.flops_per_image() / 1e9:.1f} GFLOP/image, attention {report.data['unet']['attention_processors']}")
    return size, master


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for report.json, report.md and profile_*.txt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny UNet and grid (CPU checks of the script)")
    ap.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="scenes per GPU to time (default 1,4,8,16,32; tiny: 1,2)")
    ap.add_argument("--variants", default="",
                    help="comma list of variant names or prefixes before '-' (default: all): eager-fp32, "
                         "eager-float16, fast, fast+nosync, fast-nchw, fast-nograph, compile")
    ap.add_argument("--compile", default="default", help="torch.compile mode of the compile variant, or 'none'",
                    choices=("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune"))
    ap.add_argument("--attention", default="auto", choices=("auto", "flash", "efficient", "cudnn", "math"))
    ap.add_argument("--budget-seconds", type=float, default=270.0,
                    help="stop starting measurements that would end after this (a watchdog ends the run 30 s later)")
    ap.add_argument("--compile-reserve", type=float, default=120.0, help="seconds left needed to try compile")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps after the first (default 3; tiny 1)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats, median taken (default 5; tiny 2)")
    ap.add_argument("--min-steps", type=int, default=None, help="fewest steps per timed repeat (default 3; tiny 2)")
    ap.add_argument("--repeat-seconds", type=float, default=None,
                    help="target length of one timed repeat (default 0.3; tiny 0.02)")
    ap.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--matmul-size", type=int, default=0, help="0: 8192 on the GPU, 512 on the CPU")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the torch.profiler tables")
    ap.add_argument("--profile-variant", default="fast", help="which variant to profile at K=1 and K=max")
    ap.add_argument("--force-fast-path", action="store_true",
                    help="on a CPU, run FastDenoiser's fast path (padding, dtype) instead of its plain fallback")
    args = ap.parse_args(argv)
    args.ks = args.ks or ([1, 2] if args.tiny else [1, 4, 8, 16, 32])
    defaults = {"warmup": (3, 1), "repeats": (5, 2), "min_steps": (3, 2), "repeat_seconds": (0.3, 0.02)}
    for name, (full, tiny) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    clock = Clock(args.budget_seconds)
    report, log = Report(Path(args.out), clock, sys.argv), Log(clock)
    watchdog = threading.Timer(args.budget_seconds + 30, report.abort, ("watchdog: budget + 30 s exceeded",))
    watchdog.daemon = True
    watchdog.start()
    try:
        size, master = prepare(args, device, report, log)
        for v in variants(args, device):
            try:
                run_variant(v, master, size, args, device, report, log)
            except Exception as err:  # noqa: BLE001 - e.g. a conversion failure before any K ran
                report.fail(v, None, f"{type(err).__name__}: {err}"[:500], traceback.format_exc(limit=6))
                log(f"variant {v.name} FAILED: {type(err).__name__}: {str(err)[:200]}")
                release(device)
    except Exception as err:  # noqa: BLE001 - the setup itself failed: still write what there is
        report.data["error"] = traceback.format_exc()
        log(f"setup FAILED: {type(err).__name__}: {err}")
    finally:
        watchdog.cancel()
        report.data["targets"] = check_targets(report)
        report.data["status"] = "done" if "error" not in report.data else "setup failed"
        report.write()
    print(report.markdown(), flush=True)
    log(f"done; wrote {args.out}/report.json and report.md")
    return 0 if "error" not in report.data else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # its 'cast with to()' notice for every copy
    sys.exit(main())
