"""The GPU iteration benchmark (issues 6, 14): end-to-end SJC iterations with an SD-1.5-sized UNet (random
weights) and the parts of a step, side by side in one process, to choose the engine's defaults by measurement.

Full steps (gpu_variants.py) through SJCRun / SceneBatch for: eager fp32 (baseline), FastDenoiser eager vs
torch.compile'd (one dynamic-batch graph) at K = 1, 8, 16, 32 in NHWC and NCHW, the compiled UNet with the
render's packed samples ('inside', 'visible') and grouped Adamax, float8 linears, and one static graph per size.
Parts (gpu_parts.py): the render alone per sample rule and fuse, Adamax one-by-one vs grouped, the grid
concatenation, FP8 vs fp16 at the UNet call. Compile cost: the first compile in this process (a fresh Inductor
cache) and a second process on the cache it filled (compile_probe.py). Fields are spheres of density by
default (`--field-state`), as a converged run's. The JSON, markdown and figure are rewritten as results come;
the run prints a short table last. `--budget-seconds` stops starting cells that would end past it; a watchdog
writes the report and exits 30 s after it.

  mkdir -p /tmp/site && tar -xJf .gpu/site.tar.xz -C /tmp/site && export PYTHONPATH=.:/tmp/site && \
    python eval/bench/gpu_bench.py --out $OUT/bench --budget-seconds 330
  python eval/bench/gpu_bench.py --tiny --device cpu --cpu-threads 1 --force-fast-path --out /tmp/bench
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_timing
import gpu_parts
from bench_report import Report, now_utc, python_env
from bench_timing import Clock, Log, guarded, matmul_peak, release
from gpu_tables import Results, markdown, plot_rates, short_table, targets
from gpu_variants import Models, run_variant, variants
from sd_standin import SIZES

PROBE = Path(__file__).resolve().parent / "compile_probe.py"


def env(device: torch.device, size) -> dict:
    cuda = device.type == "cuda"
    return {**python_env(), "device": str(device), "size": size.name, "cpu_threads": torch.get_num_threads(),
            "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}


def prepare(args, device, report: Report, log: Log):
    """Environment, matmul peak, the master UNet (float32) and its FLOP count."""
    from sd_standin import build_unet, unet_flops

    size = SIZES["tiny" if args.tiny else "sd15"]
    report.data["env"] = env(device, size)
    log(f"device {report.data['env']['device_name']}; torch {torch.__version__}; size {size.name}; "
        f"inductor cache {os.environ.get('TORCHINDUCTOR_CACHE_DIR')}")
    peak = report.stage("matmul_peak", lambda: matmul_peak(device, args.matmul_size or (8192 if device.type == "cuda"
                                                                                         else 512)))
    t = time.perf_counter()
    master = build_unet(size, device, seed=0)
    report.data["unet"] = {"build_s": time.perf_counter() - t,
                           "params_m": sum(p.numel() for p in master.parameters()) / 1e6}
    flops = report.stage("flops", lambda: {"per_image": unet_flops(master)})
    log(f"matmul peak {peak.get('tflops', float('nan')):.4g} TFLOP/s; UNet {report.data['unet']['params_m']:.1f}M "
        f"params, {flops.get('per_image', float('nan')) / 1e9:.1f} GFLOP/image")
    return size, master


def compile_probe(args, device, log) -> dict:
    """The first compiled call in new processes: on this run's (now warm) Inductor cache, and with --cold-probe
    on an empty one."""
    out = {}
    caches = [("warm", os.environ["TORCHINDUCTOR_CACHE_DIR"])]
    if args.cold_probe:
        caches.append(("cold", tempfile.mkdtemp(prefix="sjc-inductor-cold-")))
    for name, cache in caches:
        path = Path(tempfile.mkdtemp()) / "probe.json"
        cmd = [sys.executable, str(PROBE), "--out", str(path), "--images", str(2 * max(args.ks)),
               "--device", str(device)] + (["--tiny"] if args.tiny else [])
        t = time.perf_counter()
        proc = subprocess.run(cmd, env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}, capture_output=True,
                              text=True, timeout=args.probe_timeout, check=False)
        out[name] = json.loads(path.read_text()) if proc.returncode == 0 else {"error": proc.stderr[-500:]}
        out[name]["wall_s"] = time.perf_counter() - t
        log(f"    compile probe ({name} cache): {out[name]}")
    return out


def plan(args, device) -> list:
    """(kind, item) in order of importance, the budget cutting the tail: the UNet matrix, the engine options on
    the compiled UNet, the parts, the warm-cache probe, the cheap ablations, then the extra compiles."""
    vs = {v.name: v for v in variants(args, device)}
    order = ["eager-fp32", "fast", "compile", "compile+triton", "stage:scan", "compile+inside", "compile+visible",
             "stage:render", "stage:adamax", "stage:stack", "fast-nchw", "stage:compile_probe", "fast+visible",
             "fast-fp8", "stage:fp8", "stage:upsample", "compile-nchw", "compile-diffusers-up", "compile-fp8",
             "compile-static", "stage:render_fused"]
    stages = {name for name in order if name.startswith("stage:")}
    skip = stages if args.no_parts else {s for s in stages if args.stages and s[6:] not in args.stages.split(",")}
    if device.type != "cuda" or not any(v.compiles for v in vs.values()):
        skip |= {"stage:compile_probe"}
    if device.type != "cuda":
        skip |= {"stage:render_fused"}
    return [("stage", name[6:]) if name.startswith("stage:") else ("variant", vs[name])
            for name in order if name not in skip and (name.startswith("stage:") or name in vs)]


def run_stage(name: str, args, size, master, device, report: Report, clock: Clock, log: Log) -> None:
    kmax = max(args.ks)
    if clock.left() < args.stage_reserve * (2 if name in ("compile_probe", "render_fused") else 1):
        report.note(f"stage {name} skipped: {clock.left():.0f}s of budget left")
        return
    log(f"stage {name}")
    fns = {"render": lambda: {"rows": gpu_parts.render_parts(size, sorted({1, kmax}), ["fresh", "sphere"],
                                                             gpu_parts.CELLS, device, clock, log)},
           "render_fused": lambda: {"rows": gpu_parts.render_parts(size, [kmax], ["sphere"], gpu_parts.FUSED_CELLS,
                                                                   device, clock, log)},
           "adamax": lambda: gpu_parts.adamax_part(size, kmax, device),
           "stack": lambda: gpu_parts.stack_part(size, kmax, device),
           "scan": lambda: gpu_parts.scan_part(device, *(() if device.type == "cuda" else (20_000, 256))),
           "fp8": lambda: gpu_parts.unet_call_part("fp8", master, size, device, (2, 2 * kmax),
                                                   cpu_fallback=not args.force_fast_path),
           "upsample": lambda: gpu_parts.upsample_part(master, size, device, kmax, not args.force_fast_path),
           "compile_probe": lambda: compile_probe(args, device, log)}
    report.stage(name, fns[name])
    release(device)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="folder for report.json, report.md, rates.png, profile_*.txt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny UNet and grid (CPU checks of the script)")
    ap.add_argument("--ks", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="scenes per step (default 1,8,16,32; tiny: 1,2)")
    ap.add_argument("--variants", default="", help="comma list of variant names (default: all)")
    ap.add_argument("--compile", default="default", choices=("default", "max-autotune-no-cudagraphs"),
                    help="torch.compile mode of the compile variants")
    ap.add_argument("--attention", default="auto", choices=("auto", "flash", "efficient", "cudnn", "math"))
    ap.add_argument("--field-state", default="sphere", choices=("sphere", "fresh"),
                    help="fields of the full steps: a sphere of density (a converged run) or freshly initialised")
    ap.add_argument("--inductor-cache", default="", help="TORCHINDUCTOR_CACHE_DIR (default: a new empty folder, "
                                                          "so the first compile is cold)")
    ap.add_argument("--cold-probe", action="store_true", help="also time a new process on an empty cache")
    ap.add_argument("--probe-timeout", type=float, default=240.0)
    ap.add_argument("--no-parts", action="store_true", help="full steps only")
    ap.add_argument("--stages", default="", help="comma list of the parts to run (default: all; e.g. render,adamax)")
    ap.add_argument("--budget-seconds", type=float, default=330.0,
                    help="stop starting cells that would end after this (a watchdog ends the run 30 s later)")
    ap.add_argument("--compile-reserve", type=float, default=75.0, help="seconds left needed to start a compile")
    ap.add_argument("--stage-reserve", type=float, default=25.0, help="seconds left needed to start a part")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps after the first (default 3; tiny 1)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats, median taken (default 5; tiny 2)")
    ap.add_argument("--min-steps", type=int, default=None, help="fewest steps per timed repeat (default 3; tiny 2)")
    ap.add_argument("--repeat-seconds", type=float, default=None,
                    help="target length of one timed repeat (default 0.25; tiny 0.02)")
    ap.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--matmul-size", type=int, default=0, help="0: 8192 on the GPU, 512 on the CPU")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the torch.profiler table")
    ap.add_argument("--profile-variant", default="compile+visible", help="the variant profiled (at --profile-ks)")
    ap.add_argument("--profile-ks", type=lambda s: [int(x) for x in s.split(",")], default=None,
                    help="the K profiled (default: the largest)")
    ap.add_argument("--force-fast-path", action="store_true",
                    help="on a CPU, run FastDenoiser's fast path (padding, dtype) instead of its plain fallback")
    args = ap.parse_args(argv)
    args.ks = args.ks or ([1, 2] if args.tiny else [1, 8, 16, 32])
    defaults = {"warmup": (3, 1), "repeats": (5, 2), "min_steps": (3, 2), "repeat_seconds": (0.25, 0.02)}
    for name, (full, tiny) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    return args


def start(args) -> tuple[Report, Results, Clock, Log, threading.Timer]:
    """The output folder, Inductor's cache folder, the report and the watchdog."""
    Path(args.out).mkdir(parents=True, exist_ok=True)
    cache = args.inductor_cache or tempfile.mkdtemp(prefix="sjc-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(cache).resolve())
    clock = Clock(args.budget_seconds)
    data = {"command": " ".join(sys.argv), "date_utc": now_utc(), "status": "running", "field_state": args.field_state,
            "inductor_cache_empty_at_start": not any(Path(cache).iterdir()) if Path(cache).is_dir() else True}
    report = Report(Path(args.out), data, markdown, {"rates.png": plot_rates}, clock)
    watchdog = threading.Timer(args.budget_seconds + 30, report.abort, ("watchdog: budget + 30 s exceeded",))
    watchdog.daemon = True
    watchdog.start()
    return report, Results(report, clock), clock, Log(clock), watchdog


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    if args.tiny:
        bench_timing.BENCH.update(warmup=1, repeats=2, target_ms=10.0)
    report, results, clock, log, watchdog = start(args)
    try:
        size, master = prepare(args, device, report, log)
        steps = plan(args, device)
        models = Models([item for kind, item in steps if kind == "variant"])
        for kind, item in steps:
            if kind == "stage":
                run_stage(item, args, size, master, device, report, clock, log)
                continue
            try:
                run_variant(item, models, master, size, args, device, results, log)
            except Exception as err:  # noqa: BLE001 - e.g. a conversion failure before any K ran
                results.fail(item, None, f"{type(err).__name__}: {err}"[:500], traceback.format_exc(limit=6))
                log(f"variant {item.name} FAILED: {type(err).__name__}: {str(err)[:200]}")
                release(device)
    except Exception as err:  # noqa: BLE001 - the setup itself failed: still write what there is
        report.data["error"] = traceback.format_exc()
        log(f"setup FAILED: {type(err).__name__}: {err}")
    watchdog.cancel()
    report.data["targets"] = guarded(lambda: targets(report.data))
    report.data["status"] = "done" if "error" not in report.data else "setup failed"
    report.figures()
    print("\n" + short_table(report.data), flush=True)
    log(f"done; wrote {args.out}/report.json, report.md, rates.png")
    return 0 if "error" not in report.data else 1


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # its 'cast with to()' notice for every copy
    sys.exit(main())
