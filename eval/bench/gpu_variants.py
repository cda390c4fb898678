"""The full-step variants of the GPU bench: K scenes stepped together through the engine's SceneBatch (cameras,
100^3 render, PAAS with CFG 100, emptiness loss, Adamax), one denoiser configuration per variant.

A variant names its denoiser (eager VPDenoiser at a dtype, or a FastConfig), the render's sample rule, whether
the scenes' Adamax steps are grouped, and its K. Variants with `model` set reuse an earlier variant's denoiser
(compiled code and all), so engine options are measured beside the UNet without compiling again.
"""
import copy
import math
import time
import traceback
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from bench_timing import GIB, guarded, median_ms_per_call, memory, peak_memory, release, sync, timed_ms
from sd_standin import make_denoiser, make_model, run_config, sphere_field

from sjc_dist.diffusion.fast import FastConfig
from sjc_dist.optim.multiscene import SceneBatch
from sjc_dist.optim.run import SJCRun


@dataclass(frozen=True)
class Variant:
    """One way of stepping: the denoiser (fast None: plain VPDenoiser at `dtype`) and the engine options."""

    name: str
    dtype: str
    fast: FastConfig | None
    ks: tuple[int, ...]
    note: str
    samples: str = "all"
    fuse: str = "none"
    grouped: bool = False
    model: str = ""  # reuse this earlier variant's denoiser
    baseline: bool = False

    @property
    def compiles(self) -> bool:
        return self.fast is not None and self.fast.compile != "none"


def variants(args, device: torch.device) -> list[Variant]:
    """Every variant, in the order of the plan (gpu_bench.plan puts the parts between them). Compiled variants
    other than the main one run at the largest K only: each costs a cold compile (~45 s), and diffusers'
    upsamplers branch at batch 64, so a dynamic graph still compiles twice when both K = 1 and K = 32 run."""
    half = "float16" if device.type == "cuda" else "bfloat16"
    ks, ends, top = tuple(args.ks), tuple(sorted({1, max(args.ks)})), (max(args.ks),)
    fast = FastConfig(dtype=half, attention=args.attention)
    comp = replace(fast, compile=args.compile, compile_dynamic=True)
    nchw = {"channels_last": False}
    out = [Variant("eager-fp32", "float32", None, (1,), "baseline: VPDenoiser fp32, plain eager", baseline=True),
           Variant("fast", half, fast, ks, "FastDenoiser (NHWC, CUDA graphs); render all samples, Adamax each"),
           Variant("compile", half, comp, ks, "fast + torch.compile, one dynamic-batch graph (NHWC)"),
           Variant("compile+triton", half, comp, ks, "compile; the render in one Triton kernel each way",
                   fuse="triton", model="compile"),
           Variant("compile+inside", half, comp, ends, "compile; packed in-box samples; grouped Adamax",
                   samples="inside", grouped=True, model="compile"),
           Variant("compile+visible", half, comp, ends, "compile; colour where w > 1e-4; grouped Adamax",
                   samples="visible", grouped=True, model="compile"),
           Variant("fast-nchw", half, replace(fast, **nchw), ks, "fast in NCHW"),
           Variant("fast+visible", half, fast, ends, "fast; colour where w > 1e-4; grouped Adamax",
                   samples="visible", grouped=True, model="fast"),
           Variant("fast-fp8", half, replace(fast, fp8=True), ends, "fast with float8 transformer linears"),
           Variant("compile-nchw", half, replace(comp, **nchw), ks, "compile+triton in NCHW", fuse="triton"),
           Variant("compile-diffusers-up", half, replace(comp, keep_layout=False), ends,
                   "compile+triton with diffusers' upsamplers as they are (NCHW from 64 images)", fuse="triton"),
           Variant("compile-fp8", half, replace(comp, fp8=True), top, "compile+triton with float8 transformer linears",
                   fuse="triton"),
           Variant("compile-static", half, replace(comp, compile_dynamic=False), top,
                   "compile, one static graph per padded size")]
    wanted = [w for w in args.variants.split(",") if w]
    return [v for v in out if not wanted or v.name in wanted]


def graph_key(v: Variant, k: int):
    """Which compiled graph a K runs: one per padded size when static; when dynamic, one, or two where diffusers'
    upsamplers branch at batch >= 64 (a guard, so a second graph) because `keep_layout` is off."""
    return k if not v.fast.compile_dynamic else (not v.fast.keep_layout and 2 * k >= 64)


# --- one measurement: K scenes of one variant -------------------------------------------------------------
def build_batch(model, size, k: int, v: Variant, field_state: str) -> SceneBatch:
    runs = [SJCRun(run_config(size, seed, samples=v.samples, fuse=v.fuse), model) for seed in range(k)]
    if field_state == "sphere":
        for r in runs:
            sphere_field(r.scene.field)
    return SceneBatch(runs, grouped_steps=v.grouped)


def denoise_ms(batch: SceneBatch, device, calls: int, repeats: int) -> float:
    """The shared denoiser call of one batched step (CFG, 2K images) alone, on the rows the step perturbs."""
    from sjc_dist.optim import joint

    pending = [r.begin() for r in batch.runs]
    rows = joint.perturb(1, [p.target for p in pending], [p.sigma for p in pending], [p.noise for p in pending],
                         [p.cond for p in pending])
    guidance = batch.runs[0].guidance
    return median_ms_per_call(lambda: guidance.denoise(rows.z, rows.sigma, rows.cond), device, calls, repeats)


def measure_k(model, size, k: int, v: Variant, args, device, log) -> dict:
    """Steps K scenes together: first step (capture/compile), warm-up, then the median of timed repeats."""
    release(device)
    mem0 = memory(device)
    batch = build_batch(model, size, k, v, args.field_state)
    first_s = timed_ms(batch.step_all, device) / 1e3
    log(f"    K={k}: first step {first_s:.2f}s (includes graph capture / compilation)")
    est = timed_ms(lambda: [batch.step_all() for _ in range(args.warmup)], device) / max(args.warmup, 1)
    calls = max(args.min_steps, min(100, math.ceil(args.repeat_seconds * 1e3 / max(est, 1e-3))))
    step_ms = median_ms_per_call(batch.step_all, device, calls, args.repeats)
    host_ms = host_step_ms(batch, device, args.repeats)
    finite = bool(torch.stack(batch.step_all()).isfinite().all())
    unet_ms = denoise_ms(batch, device, calls, args.repeats)
    peak = peak_memory(device) - mem0
    row = {"k": k, "step_ms": step_ms, "ms_per_scene_it": step_ms / k, "scene_its_per_s": 1e3 * k / step_ms,
           "unet_ms": unet_ms, "unet_share": unet_ms / step_ms, "first_step_s": first_s, "host_ms": host_ms,
           "steps_timed": calls * args.repeats, "peak_bytes": peak, "peak_gib_per_scene": peak / k / GIB,
           "finite_loss": finite, "syncs_per_step": guarded(lambda: sync_sites(batch, device, 3))}
    if args.profile and k in (args.profile_ks or [max(args.ks)]) and v.name == args.profile_variant:
        row["profile"] = guarded(lambda: profile_steps(batch, device, args, f"{v.name}_k{k}"))
    return row


def host_step_ms(batch: SceneBatch, device, repeats: int) -> float:
    """Median host time of one step from a synchronised start to step_all's return, the GPU not waited for:
    close to the full step when the host (Python, kernel launches) bounds it, far under it when the GPU does."""
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        batch.step_all()
        times.append((time.perf_counter() - t) * 1e3)
    sync(device)
    return sorted(times)[len(times) // 2]


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
    """torch.profiler over a few steps: top kernels/ops table written to OUT, GPU busy fraction."""
    from torch.autograd import DeviceType
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
    tables = [avg.table(sort_by=key, row_limit=30), avg.table(sort_by="cpu_time_total", row_limit=40)]
    Path(args.out, f"profile_{tag}.txt").write_text("\n\n".join(tables))
    kernels = [e for e in avg if e.device_type == DeviceType.CUDA and not e.key.startswith("sjc.")]
    busy = sum(e.self_device_time_total for e in kernels)
    return {"table": f"profile_{tag}.txt", "gpu_busy_fraction": busy / wall_us if busy else None,
            "wall_ms_per_step": wall_us / 1e3 / steps,
            "phases": phase_ms(avg, steps), "kernels_per_step": sum(e.count for e in kernels) / steps}


def phase_ms(avg, steps: int) -> dict:
    """SceneBatch's named phases (sjc.*), ms a step: host time (the range on the calling thread), the device
    time of the kernels launched in it, and, on CUDA, the range's span on the GPU (its gpu_user_annotation)."""
    from torch.autograd import DeviceType

    out: dict[str, dict] = {}
    for e in (e for e in avg if e.key.startswith("sjc.")):
        ph = out.setdefault(e.key, {})
        if e.device_type == DeviceType.CUDA:
            ph["gpu_span_ms"] = e.device_time_total / 1e3 / steps
        else:
            ph.update(cpu_ms=e.cpu_time_total / 1e3 / steps, device_ms=e.device_time_total / 1e3 / steps)
    return out


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


# --- a variant: its model (built or reused) and its K ----------------------------------------------------------
class Models:
    """Denoisers built for variants, kept while a later variant of the plan reuses them."""

    def __init__(self, plan: list[Variant]):
        self.plan, self.built = plan, {}

    def get(self, v: Variant, master, size, device, args, results, log):
        if v.model and v.model in self.built:
            return self.built[v.model]
        denoiser = make_denoiser(copy.deepcopy(master), v.dtype, v.fast, cpu_fallback=not args.force_fast_path)
        model = (make_model(denoiser, size, device), denoiser)
        if v.fast is not None and denoiser.call is None:
            results.note(f"{v.name} ran FastDenoiser's CPU fallback (the plain VPDenoiser)")
        if not v.baseline:
            check_agreement(v, denoiser, master, size, device, results, log)
        self.built[v.name] = model
        return model

    def release(self, done: Variant, device) -> None:
        later = {v.model for v in self.plan[self.plan.index(done) + 1:]}
        for name in [n for n in self.built if n not in later]:
            del self.built[name]
        release(device)


def agreement_batch(v: Variant) -> int:
    """The agreement check's batch: odd (padding must not matter) and of the graph the variant's smallest K
    runs (3 -> 4 images: the small-batch graph; 63 -> 64: the K = 32 one), so it compiles no extra graph."""
    images = 2 * min(v.ks)
    return images + 1 if images < 64 else images - 1


def check_agreement(v: Variant, denoiser, master, size, device, results, log) -> None:
    """Agreement with eager fp32 on `agreement_batch` images; for compile variants its time is the first
    compile (cold unless Inductor's cache already held the graph)."""
    t = time.perf_counter()
    check = guarded(lambda: agreement(denoiser, master, size, device, agreement_batch(v)))
    check["seconds"] = time.perf_counter() - t
    check["compile_s"] = denoiser.compile_seconds() if hasattr(denoiser, "compile_seconds") else {}
    results.data.setdefault("agreement", {})[v.name] = check
    log(f"    agreement with eager fp32: {check}")
    if hasattr(denoiser, "reset"):
        denoiser.reset()


def run_variant(v: Variant, models: Models, master, size, args, device, results, log) -> None:
    """All K of one variant; each K's failure is recorded and stops the variant's larger K."""
    if v.compiles and device.type != "cuda":
        return results.skip(v, "torch.compile is measured on the GPU only")
    if v.compiles and v.model not in models.built and results.clock.left() < args.compile_reserve:
        return results.skip(v, f"budget: {results.clock.left():.0f}s left < --compile-reserve "
                               f"{args.compile_reserve:.0f}s")
    log(f"variant {v.name}: {v.note}")
    model, denoiser = models.get(v, master, size, device, args, results, log)
    for k in v.ks:
        if not measure_one(v, k, model, size, args, device, results, log):
            break
        if hasattr(denoiser, "reset"):
            denoiser.reset()
    if hasattr(denoiser, "compile_seconds"):
        results.data.setdefault("compile_s", {})[v.name] = denoiser.compile_seconds()
    del model, denoiser
    models.release(v, device)


def measure_one(v: Variant, k: int, model, size, args, device, results, log) -> bool:
    """One (variant, K) cell; False stops the variant (failure or budget)."""
    need = results.predict_seconds(v, k, args)
    if results.clock.left() < need:
        results.skip(v, f"budget: K={k} needs ~{need:.0f}s, {results.clock.left():.0f}s left", k)
        return False
    try:
        row = measure_k(model, size, k, v, args, device, log)
    except Exception as err:  # noqa: BLE001 - one failure must not kill the table
        results.fail(v, k, f"{type(err).__name__}: {err}"[:500], traceback.format_exc(limit=6))
        log(f"    K={k}: FAILED ({type(err).__name__}): {str(err)[:200]}")
        release(device)
        return False
    results.add(v, row)
    log(f"    K={k}: {row['step_ms']:.2f} ms/step, {row['scene_its_per_s']:.1f} scene-it/s, "
        f"UNet {row['unet_ms']:.2f} ms ({100 * row['unet_share']:.0f}%), MFU {results.mfu(row):.1%}")
    return True
