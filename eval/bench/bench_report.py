"""The GPU bench's results: one JSON document (rewritten after every measurement, so a killed run keeps what it
measured), its markdown table, and the issue-6 target checks. No timing code lives here.
"""
import datetime
import json
import math
import os
import platform
import statistics
from pathlib import Path

import torch

GIB = 2**30
TARGETS = {"one_scene_ms": 12.0, "one_scene_speedup": 3.5, "scene_its_per_s": 200.0, "mfu": 0.40,
           "gib_per_extra_scene": 1.0}


class Report:
    """Everything the bench learns, as plain JSON data in `self.data`."""

    def __init__(self, out: Path, clock, argv: list[str]):
        self.out, self.clock = out, clock
        self.data: dict = {"command": " ".join(argv), "date_utc": _now(), "stages": {}, "rows": [],
                           "skipped": [], "failed": [], "status": "running"}

    # --- recording ------------------------------------------------------------------------------------
    def env(self, device: torch.device, size) -> None:
        import diffusers

        cuda = device.type == "cuda"
        self.data["env"] = {
            "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "device": str(device), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda, "size": size.name,
            "cudnn": torch.backends.cudnn.version() if cuda else None, "cpu_threads": torch.get_num_threads(),
            "sdpa_enabled": {"flash": torch.backends.cuda.flash_sdp_enabled(),
                             "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                             "cudnn": getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: None)(),
                             "math": torch.backends.cuda.math_sdp_enabled()}}
        self.write()

    def stage(self, name: str, fn) -> None:
        """Run fn and store its dict under stages[name], or the error; never raises."""
        try:
            self.data["stages"][name] = fn()
        except Exception as err:  # noqa: BLE001 - a failed stage is a result too
            self.data["stages"][name] = {"error": f"{type(err).__name__}: {err}"[:500]}
        self.write()

    def add(self, variant, row: dict) -> None:
        row = {"variant": variant.name, "note": variant.note, "baseline": variant.baseline,
               "preview": variant.patches, **row}
        row["mfu"] = self.mfu(row)
        self.data["rows"].append(row)
        self.write()

    def skip(self, variant, reason: str, k: int | None = None) -> None:
        self.data["skipped"].append({"variant": variant.name, "k": k, "reason": reason})
        print(f"    skipped {variant.name}" + (f" K={k}" if k else "") + f": {reason}", flush=True)
        self.write()

    def note(self, text: str) -> None:
        self.data.setdefault("notes", []).append(text)
        self.write()

    def fail(self, variant, k: int | None, error: str, trace: str) -> None:
        self.data["failed"].append({"variant": variant.name, "k": k, "error": error, "traceback": trace})
        self.write()

    def abort(self, reason: str) -> None:
        """Called by the watchdog thread: write what there is and end the process now."""
        self.data["status"] = reason
        self.data["targets"] = check_targets(self)
        self.write()
        print(f"\n{reason}; partial results in {self.out}", flush=True)
        os._exit(0)

    # --- derived numbers ------------------------------------------------------------------------------
    def flops_per_image(self) -> float:
        return float(self.data["stages"].get("flops", {}).get("per_image", float("nan")))

    def mfu(self, row: dict) -> float:
        """Model FLOP utilisation: 2 UNet images (CFG) per scene-iteration against the measured matmul peak."""
        peak = self.data["stages"].get("matmul_peak", {}).get("tflops", float("nan")) * 1e12
        return row["scene_its_per_s"] * 2 * self.flops_per_image() / peak

    def rows(self, variant: str | None = None, k: int | None = None) -> list[dict]:
        return [r for r in self.data["rows"] if (variant is None or r["variant"] == variant)
                and (k is None or r["k"] == k)]

    def predict_seconds(self, variant: str, k: int, args) -> float:
        """Rough seconds to measure (variant, K), from what this run has measured so far."""
        prev = self.rows(variant) or self.rows(k=1)
        if not prev:
            return 5.0
        last = prev[-1]
        step_s = last["step_ms"] / 1e3 * k / last["k"]
        timed = args.repeats * 2 * max(args.min_steps * step_s, args.repeat_seconds)
        return last["first_step_s"] + (args.warmup + 1) * step_s + timed + 0.05 * k

    # --- output ---------------------------------------------------------------------------------------
    def write(self) -> None:
        self.data["elapsed_s"] = self.clock.elapsed()
        try:
            text = json.dumps(self.data, indent=2, default=str)
        except (TypeError, ValueError, RuntimeError) as err:  # e.g. mutated by the other thread mid-dump
            text = json.dumps({"status": f"report not serialisable: {err}"})
        (self.out / "report.json").write_text(text)
        (self.out / "report.md").write_text(self.markdown())

    def markdown(self) -> str:
        return "\n".join(header_lines(self.data) + table_lines(self.data) + target_lines(self.data)
                         + notes_lines(self.data)) + "\n"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def header_lines(d: dict) -> list[str]:
    env, st = d.get("env", {}), d.get("stages", {})
    peak, flops = st.get("matmul_peak", {}), st.get("flops", {})
    return [f"# SJC iteration benchmark ({env.get('size', '?')})", "",
            f"- device: {env.get('device_name', '?')}; torch {env.get('torch', '?')}, diffusers "
            f"{env.get('diffusers', '?')}, Python {env.get('python', '?')}, CUDA {env.get('cuda')}, "
            f"cuDNN {env.get('cudnn')}",
            f"- date: {d.get('date_utc')}; status: {d.get('status')}; elapsed {d.get('elapsed_s', 0):.0f} s",
            f"- command: `{d.get('command')}`",
            f"- matmul peak: {peak.get('tflops', float('nan')):.4g} TFLOP/s ({peak.get('dtype', '?')}, "
            f"n={peak.get('n', '?')}); UNet forward: {flops.get('per_image', float('nan')) / 1e9:.4g} GFLOP/image "
            f"(2 images per scene-iteration with CFG)", ""]


def table_lines(d: dict) -> list[str]:
    lines = ["| variant | K | ms/step | ms/scene-it | scene-it/s | UNet ms (share) | peak GiB/scene | MFU | "
             "first step s | finite |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|"]
    for r in d.get("rows", []):
        lines.append(f"| {r['variant']} | {r['k']} | {r['step_ms']:.2f} | {r['ms_per_scene_it']:.2f} | "
                     f"{r['scene_its_per_s']:.1f} | {r['unet_ms']:.2f} ({100 * r['unet_share']:.0f}%) | "
                     f"{r['peak_gib_per_scene']:.3f} | {100 * r['mfu']:.1f}% | {r['first_step_s']:.2f} | "
                     f"{'yes' if r['finite_loss'] else 'NO'} |")
    return lines + [""]


def target_lines(d: dict) -> list[str]:
    lines = ["## Targets (issue 6, for sd15 on an H100; verdicts exclude the engine-patch preview rows)", ""]
    for name, t in d.get("targets", {}).items():
        lines.append(f"- **{name}**: {t['verdict']} — {t['detail']}")
    return lines + [""]


def notes_lines(d: dict) -> list[str]:
    lines = [f"- {n}" for n in d.get("notes", [])]
    for s in d.get("skipped", []):
        lines.append(f"- skipped {s['variant']}" + (f" K={s['k']}" if s["k"] else "") + f": {s['reason']}")
    for f in d.get("failed", []):
        lines.append(f"- FAILED {f['variant']}" + (f" K={f['k']}" if f["k"] else "") + f": {f['error']}")
    for name, a in d.get("agreement", {}).items():
        err = a.get("rel_err")
        flag = "" if err is None or err < 0.05 else " (LARGE: check this variant)"
        lines.append(f"- {name} vs eager fp32, max |eps - eps_ref| / max |eps_ref|: "
                     + (f"{err:.2e} (batch {a['n']}){flag}" if err is not None else a.get("error", "?"))
                     + (f"; took {a['seconds']:.1f} s (compile warm-up)" if name.startswith("compile") else ""))
    for r in d.get("rows", []):
        syncs = r.get("syncs_per_step")
        if syncs:
            sites = syncs["error"] if "error" in syncs else ", ".join(
                f"{k} x{v:.1f}" for k, v in sorted(syncs.items()))
            lines.append(f"- host syncs per step, {r['variant']} K={r['k']}: {sites}")
        prof = r.get("profile") or {}
        if prof.get("table"):
            busy = prof.get("gpu_busy_fraction")
            lines.append(f"- profile {r['variant']} K={r['k']}: {prof['table']}"
                         + (f", GPU busy {100 * busy:.0f}% of wall" if busy else ""))
    return (["## Notes", ""] + lines + [""]) if lines else []


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "MET" if ok else "MISSED"


def check_targets(report: Report) -> dict:
    """The three targets of issue 6 against this run's rows (verdict n/a where a number is missing)."""
    return {"one scene": one_scene_target(report), "batched": batched_target(report),
            "memory per extra scene": memory_target(report)}


def preview_text(rows: list[dict], key: str, fmt: str) -> str:
    """What the engine-patch preview reached, as a trailing clause ('' when it has no row)."""
    pre = [r for r in rows if r.get("preview")]
    if not pre:
        return ""
    best = min(pre, key=lambda r: r[key]) if key == "ms_per_scene_it" else max(pre, key=lambda r: r[key])
    return f"; with the proposed engine patches ({best['variant']}): {fmt.format(best[key])}"


def one_scene_target(report: Report) -> dict:
    rows = report.rows(k=1)
    base = [r for r in rows if r["baseline"]]
    fast = [r for r in rows if not r["baseline"] and not r.get("preview")]
    if not fast:
        return {"verdict": "n/a", "detail": "no K=1 row besides the baseline"}
    best = min(fast, key=lambda r: r["ms_per_scene_it"])
    speedup = base[0]["ms_per_scene_it"] / best["ms_per_scene_it"] if base else None
    ok = best["ms_per_scene_it"] <= TARGETS["one_scene_ms"] and (speedup or 0) >= TARGETS["one_scene_speedup"]
    sp = f"{speedup:.2f}x" if speedup else "n/a (no baseline)"
    return {"verdict": verdict(ok), "best_variant": best["variant"], "ms": best["ms_per_scene_it"],
            "speedup_vs_eager_fp32": speedup,
            "detail": f"{best['ms_per_scene_it']:.2f} ms/iteration ({best['variant']}; target <= 12), "
                      f"{sp} the eager fp32 baseline (target >= 3.5x), UNet share {100 * best['unet_share']:.0f}%"
                      + preview_text(rows, "ms_per_scene_it", "{:.2f} ms/iteration")}


def batched_target(report: Report) -> dict:
    rows = [r for r in report.data["rows"] if not r.get("preview")]
    if not rows:
        return {"verdict": "n/a", "detail": "no rows"}
    best = max(rows, key=lambda r: r["scene_its_per_s"])
    mfu = best["mfu"]
    ok = best["scene_its_per_s"] >= TARGETS["scene_its_per_s"] and not math.isnan(mfu) and mfu >= TARGETS["mfu"]
    return {"verdict": verdict(ok), "best_variant": best["variant"], "k": best["k"],
            "scene_its_per_s": best["scene_its_per_s"], "mfu": mfu,
            "detail": f"{best['scene_its_per_s']:.1f} scene-it/s at K={best['k']} ({best['variant']}; target >= 200),"
                      f" MFU {100 * mfu:.1f}% (target >= 40%), UNet share {100 * best['unet_share']:.0f}%"
                      + preview_text(report.data["rows"], "scene_its_per_s", "{:.1f} scene-it/s")}


def memory_target(report: Report) -> dict:
    rows = report.rows("fast")
    if report.data.get("env", {}).get("device", "").startswith("cpu"):
        return {"verdict": "n/a", "detail": "peak memory is measured on CUDA devices only"}
    if len(rows) < 2:
        return {"verdict": "n/a", "detail": "needs the fast variant at two or more K"}
    slope = least_squares_slope([r["k"] for r in rows], [r["peak_bytes"] for r in rows]) / GIB
    ok = slope <= TARGETS["gib_per_extra_scene"]
    return {"verdict": verdict(ok), "gib_per_extra_scene": slope,
            "detail": f"{slope:.3f} GiB per extra scene (slope of peak memory over K = "
                      f"{[r['k'] for r in rows]}, fast variant; target <= 1 GiB)"}


def least_squares_slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
