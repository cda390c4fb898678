"""The sweep benchmark's outputs: the samples CSV, the utilisation plot, the environment and the markdown
(written through bench_report.Report, the benchmarks' one writer).
"""
import csv
import os
from collections import Counter
from pathlib import Path

from bench_report import fmt, table
from sweep_steady import _finite


def write_samples_csv(sampler, t0: float, path: Path) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "unix_time", "device", "name", "util_pct", "mem_mib"])
        for t, dev, util, mem in sampler.rows:
            name = sampler.names[dev] if dev < len(sampler.names) else ""
            w.writerow([f"{t - t0:.3f}", f"{t:.3f}", dev, name, f"{util:.1f}", f"{mem:.1f}"])


def plot_utilisation(sampler, phases: list[dict], t0: float, path: Path, title: str) -> None:
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


def environment(sampler) -> dict:
    import platform

    import torch

    env = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
           "sampler": sampler.backend, "sampler_note": sampler.fallback_reason, "device_names": sampler.names,
           "cuda_devices": torch.cuda.device_count(), "NCCL_NVLS_ENABLE": os.environ.get("NCCL_NVLS_ENABLE"),
           "inductor_cache": os.environ.get("TORCHINDUCTOR_CACHE_DIR")}
    for mod in ("diffusers", "ray", "transformers"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            env[mod] = "missing"
    return env


def phase_rows(report: dict) -> list[list]:
    rows = []
    for p in report["phases"].values():
        st, head = p["steady"], p.get("headline", {})
        status = ", ".join(f"{v} {k}" for k, v in sorted(p["status"].items())) or p["error"] or "none"
        rows.append([p["label"], p["gpus"], p["workers"], p["trials"], p["k"], p["steps"], p["scene_steps"],
                     f"**{fmt(st.get('scene_its_per_s'), '.1f')}**", fmt(head.get("per_gpu"), ".1f"),
                     fmt(head.get("trials_10k_per_gpu_hour"), ".1f"), fmt(st.get("window_s"), ".1f"),
                     fmt(st.get("mean_batch", 0)), p["loads_per_worker"], fmt(p["wall_s"], ".1f"), status])
    return rows


def overhead_rows(report: dict) -> list[list]:
    rows = []
    for p in report["phases"].values():
        o = p.get("overhead", {})
        slow = o.get("long_rounds", [])
        gone = "kept" if any(w.get("kept") for w in p.get("worker_stats", [])) else "n/a"  # before this sweep
        rows.append([p["label"], fmt(o.get("wall_s"), ".1f"), fmt(o.get("steady_s"), ".1f"),
                     f"**{fmt(o.get('outside_steady_s'), '.1f')}**", fmt(o.get("to_worker_s"), ".1f", gone),
                     fmt(o.get("to_load_start_s"), ".1f", gone), fmt(o.get("to_loaded_s"), ".1f", gone),
                     fmt(o.get("to_first_open_s"), ".1f"), fmt(o.get("to_first_round_s"), ".1f"),
                     fmt(o.get("ramp_up_s"), ".1f"), fmt(o.get("ramp_down_s"), ".1f"),
                     fmt(o.get("after_last_round_s"), ".1f"),
                     ", ".join(f"{w['rounds']} ({w['excess_s']:.1f} s)" for w in slow) or "n/a"])
    return rows


PHASES = ("prepare", "preload", "load", "open", "report", "gather", "write", "evaluate")


def phase_lines(report: dict) -> list[str]:
    """Per sweep, the trials' side (stepper.py WorkerStats.phase_s, summed over workers and trial threads, so
    it can exceed wall time): seconds holding the device lock per phase, the wait for it, the off-lock write and
    the workers' own preloads (off the lock; what they did is in the brackets). 'load' is part of 'preload' or,
    without one, of the first slot's 'open': do not add them."""
    lines = []
    for p in report["phases"].values():
        total, count = Counter(), Counter()
        for w in p.get("worker_stats", []):
            total.update(w.get("phase_s") or {})
            count.update(w.get("phase_n") or {})
        parts = [f"{k} {total[k]:.1f} s over {count.get(k, 0)}"
                 + (f" (waited {total[k + '_wait']:.1f} s for the lock)" if k + "_wait" in total else "")
                 for k in PHASES if k in total]
        preloads = sorted({w["preload"] for w in p.get("worker_stats", []) if w.get("preload")})
        loads = [", ".join(f"{k} {v:.1f}" for k, v in w["load_phases"].items())
                 for w in p.get("worker_stats", []) if w.get("load_phases") and not w.get("kept")]
        lines.append(f"- {p['label']} (preload: {', '.join(preloads) or 'none'}): {'; '.join(parts) or 'n/a'}"
                     + (f"; the load's phases, s: {' | '.join(loads)}" if loads else ""))
    return lines


def markdown(report: dict) -> str:
    """report.md: the per-sweep table, where the time went, the scaling line and targets, utilisation per
    device, environment and command."""
    env = report["env"]
    devices = (f"Devices: {', '.join(env['device_names']) or 'none'} (sampled by {env['sampler']}); torch "
               f"{env['torch']}, diffusers {env['diffusers']}, ray {env['ray']}, transformers "
               f"{env['transformers']}, Python {env['python']}, {env['cpus']} CPUs; model.compile "
               f"{report['settings'].get('compile')}, Inductor cache {env.get('inductor_cache')}.")
    model = (f"Model: {report['model']['size']} stand-in ({report['model']['unet_params_m']:.1f} M UNet params, "
             "random weights); official SD settings (grid 100^3, step 0.01, CFG, PAAS) unless --tiny.")
    head = ["sweep", "GPUs", "workers", "trials", "K", "steps", "scene-steps", "steady scene-it/s", "per GPU",
            "10k-step trials / GPU-h", "window s", "steady batch", "loads / worker", "wall s", "trials"]
    time_head = ["sweep", "wall s", "steady s", "outside steady s", "worker built", "load start", "loaded",
                 "1st slot asked", "to 1st round", "ramp up", "ramp down",
                 "after last round", "long rounds per worker (excess s: compiles or waits)"]
    lines = [f"# Multi-GPU sweep throughput ({report['date']})", "", devices, "", model, ""]
    lines += table(head, phase_rows(report), "lrrrrrrrrrrrlrl") + ["", "Where the wall time went:", ""]
    lines += table(time_head, overhead_rows(report), "lrrrrrrrrrrrl") + [""] + verdict_lines(report)
    lines += ["", "(worker built, load start (the first), loaded (the last worker's), 1st slot asked, to 1st round: "
              "s from the sweep's start; the model loads from the worker's preload, sent as it is built, else "
              "within the first slot's open: loaded before 1st slot asked means the load was off the trials' path; "
              "'kept': the worker was built, and its model loaded and compiled, by the sweep before, whose 1st slot "
              "asked a kept worker's counters cannot tell apart from this sweep's)"]
    lines += ["", "Trial-side work by phase (s summed over trial threads; 'waited' is time blocked on the device "
              "lock; 'load' is part of 'preload', or without one of 'open'):", ""] + phase_lines(report)
    lines += ["", "Mean utilisation % per device in each steady window:", ""]
    for p in report["phases"].values():
        util = ", ".join(f"{d}: {u:.0f}" for d, u in p.get("util_steady", {}).items())
        lines.append(f"- {p['label']}: {util or 'n/a'}")
    steady = ("Steady state: the window in which every worker steps full batches (K scenes), after "
              f"{report['settings']['skip_rounds']} full rounds (start-up, model load, compiles and CUDA-graph "
              "captures excluded); throughput = the sum of the workers' scene-steps / seconds in it.")
    lines += ["", steady] + [f"No steady state in '{p['label']}': {p['steady'].get('method')}."
                             for p in report["phases"].values() if not _finite(p["steady"].get("scene_its_per_s"))]
    lines += ["", f"Command: `{report['command']}`", ""]
    return "\n".join(lines + [f"Note: {note}" for note in report["notes"]]) + "\n"


def verdict_lines(report: dict) -> list[str]:
    sc, lines = report["scaling"], []
    if sc["ratio"] is not None:
        lines.append(f"Scaling all / one: **{sc['ratio']:.2f}x** on {sc['devices']} devices, per-device "
                     f"efficiency {sc['per_device_efficiency']:.2f}; target {sc['target']}: **{sc['verdict']}**.")
    else:
        lines.append("Scaling: n/a (one of the sweeps has no steady-state throughput, or there is one device).")
    lines += [f"Target (issue 14, the one-GPU sweep): {name}: **{v}**." for name, v in report.get("targets", {}).items()]
    return lines
