"""Issues 7 and 14: one command runs a sweep of SD-1.5-sized trials over every GPU of a machine and measures the
steady throughput, the scaling, and where the rest of the wall time goes.

It builds a Stable-Diffusion-1.5-sized stand-in model folder (random weights, no download: sd_standin.py's
`save_standin_folder`: UNet, DDPM scheduler, tokenizer, text encoder, VAE), then runs the same Ray Tune sweep
twice through the project's own `run_sweep`: once on ONE worker (one GPU) and once on one worker per GPU (skipped
on a one-GPU machine), each worker a SceneWorker actor that loads the model once and steps its K slots
(`--slots`) in batched rounds, with workers x K trials (FIFO, official SD settings: 100^3 grid, step 0.01, 64x64
latents; the guidance weight and seed drawn at random so trials differ; no evaluation, no turntable, no
checkpoints; the engine's model.compile, render.samples and render.fuse unless --compile / --samples / --fuse
say otherwise). `--again` runs the one-GPU sweep a second time on its worker, kept alive with its model loaded
and compiled (as `sjc sweep --pool P --keep-workers`, then `--pool P`): what each later sweep of a series costs.
Throughput is read in STEADY STATE from the workers' round timelines (stepper.py's WorkerStats; sweep_steady.py):
the window in which every worker steps full batches (after `--skip-rounds` full rounds, so Ray start-up, the
model load, compiles and CUDA-graph captures are excluded; by default 5 past the call at which
model.compile=auto compiles a batch size), in scene-iterations per second; per GPU and as
10,000-step trials per GPU-hour. The rest of each sweep's wall time is split into: up to the first round, ramp
up, ramp down, after the last round (trials writing outputs), and long rounds (compiles, or waits for work).
A thread samples every GPU's utilisation and memory (sweep_sampler.py) every 0.2 s over the whole run.

OUT gets report.json, report.md (the tables, device, versions, date, command; bench_report.Report), gpu_util.png
(one line per device, the sweeps shaded, their steady windows darker), gpu_samples.csv and views_example.png
(one trial's 8 views, decoded by the VAE). Sweep folders go to a temporary work folder, deleted at the end
(`--keep-work` keeps it). `--budget-seconds` bounds the run: each sweep is interrupted (SIGINT, as Ctrl+C) at
its share of the budget and the report says so; a watchdog writes what there is and exits 30 s after it.

GPU (the project's environment: torch, diffusers, transformers, ray, mlflow, nvidia-ml-py):
  python eval/bench/multi_gpu_sweep.py --out OUT [--slots 32] [--inductor-cache /tmp/sjc-inductor]
(On the lent GPU machine, which lacks ray, diffusers and mlflow, these came from a packed site folder on
PYTHONPATH, as ../shared/gpu/README.md describes; the script makes PYTHONPATH absolute for Ray's workers.)
CPU check (tiny UNet, 2 CPU workers stand in for 'all GPUs', about a minute on 2 cores):
  .venv/bin/python eval/bench/multi_gpu_sweep.py --tiny --gpus 0 --cpu-workers 2 --slots 2 --steps 120 --out /tmp/mg
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from sjc_dist.diffusion.fast import AUTO_COMPILE_AFTER

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_report import Report
from sd_standin import PROMPT, SIZES, save_standin_folder
from sweep_control import Log, Phase, plan_phases, release_kept, run_phase, worker_environment
from sweep_output import environment, markdown, plot_utilisation, write_samples_csv
from sweep_sampler import Sampler
from sweep_steady import _finite, full_stretch, rate_in, scaling, steady_state, targets  # noqa: F401

REPORT_RESERVE_S = 20.0  # seconds of the budget kept for the report and the plot
WATCHDOG_GRACE_S = 30.0


def sweep_dict(args, phase: Phase, size, model_dir: Path, cpu: bool) -> dict:
    """The sweep of one phase in the tune_configs/*.yaml shape (see sjc_dist/distributed/README.md)."""
    from sjc_dist.configtools import merge

    base = merge(copy.deepcopy(size.run), {
        "model": {"name": str(model_dir), "device": "cpu" if cpu else "auto"},
        "prompt": {"text": PROMPT}, "steps": args.steps,
        "output": {"turntable_frames": 0, "eval_views": args.eval_views, "progress": False}})
    for key, value in (("model", {"compile": args.compile}), ("render", {"samples": args.samples}),
                       ("render", {"fuse": args.fuse})):
        if next(iter(value.values())):
            base = merge(base, {key: value})
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
    ap.add_argument("--skip-rounds", type=int, default=AUTO_COMPILE_AFTER + 5,
                    help="full-batch rounds left out of the steady window (default: past model.compile=auto's "
                         "compile at call AUTO_COMPILE_AFTER + 1 and its CUDA-graph capture)")
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
    ap.add_argument("--again", action="store_true", help="run the one-GPU sweep a second time on its worker, kept "
                    "alive (`sjc sweep --pool P --keep-workers`, then `--pool P`): a series of sweeps' cost each")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random search and of the stand-in weights")
    ap.add_argument("--compile", default="", help="model.compile of the trials (default: the engine's, 'auto')")
    ap.add_argument("--samples", default="", help="render.samples of the trials (default: the engine's)")
    ap.add_argument("--fuse", default="", help="render.fuse of the trials (default: the engine's, 'auto')")
    ap.add_argument("--inductor-cache", default="", help="TORCHINDUCTOR_CACHE_DIR of the workers (default: "
                                                         "torch's, /tmp/torchinductor_$USER)")
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


def main(argv: list[str] | None = None, exit_on_watchdog: bool = True) -> int:
    """Run the bench; `exit_on_watchdog=False` (tests, in-process) makes the watchdog write the report only."""
    t0 = time.time()
    args, log = parse(argv), Log(t0)
    worker_environment(args.inductor_cache)
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
                          "model": {"size": size.name, "unet_params_m": float("nan")}}, markdown)
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
    """Each sweep in turn, its deadline its share of what is left of the budget; the report after each. With
    --again the kept worker is killed before the all-GPU sweep and at the end, whatever happened."""
    from sjc_dist.distributed.spec import load_sweep

    n_all, t0 = phases[-1].workers, report.data["t0"]
    specs = [load_sweep(sweep_dict(args, phase, size, folder, cpu)) for phase in phases]
    try:
        for i, (phase, spec) in enumerate(zip(phases, specs)):
            if args.again and phase.name == "all" and (note := release_kept(spec, work)):
                report.data["notes"].append(note)
            left = t0 + args.budget_seconds - REPORT_RESERVE_S - time.time()
            if left < 10:
                report.data["notes"].append(f"sweep '{phase.name}' skipped: the budget was spent")
                log(f"sweep '{phase.name}' skipped: {left:.0f} s of budget left")
                continue
            record = run_phase(phase, spec, args, work, time.time() + left / (len(phases) - i), log)
            span = record["steady"].get("window") or (record["t_start"], record["t_end"])
            record["util_steady"] = {str(d): u for d, u in sampler.mean_util(*span).items()}
            if record["error"]:
                report.data["notes"].append(f"sweep '{phase.name}': {record['error']}")
            report.data["phases"][phase.name] = record
            report.data["scaling"] = scaling(report.data["phases"], n_all, cpu)
            report.data["targets"] = targets(report.data["phases"])
            report.write()
    finally:
        if args.again and (note := release_kept(specs[0], work)):
            report.data["notes"].append(note)


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
