"""What the GPU bench keeps and prints: its rows, skips and failures (`Results`, over bench_report.Report),
the markdown (the decision matrix first: scene-it/s per UNet call, layout and K), the figure, issue 14's
targets and the defaults the measurements point to. No timing code lives here.
"""
import math

from bench_report import fmt, table

TARGETS = {"k32_scene_its_per_s": 250.0, "floor_fraction": 0.53, "k1_ms": 7.0, "rel_err": 0.05}


class Results:
    """The bench's data over a Report: rows of full-step cells, skipped and failed cells, derived numbers."""

    def __init__(self, report, clock):
        self.report, self.clock, self.data = report, clock, report.data
        for key in ("rows", "skipped", "failed"):
            self.data.setdefault(key, [])

    def add(self, v, row: dict) -> None:
        row = {"variant": v.name, "note": v.note, "baseline": v.baseline, "samples": v.samples,
               "grouped": v.grouped, **row}
        row["mfu"] = self.mfu(row)
        self.data["rows"].append(row)
        self.report.write()

    def skip(self, v, reason: str, k: int | None = None) -> None:
        self.data["skipped"].append({"variant": v.name, "k": k, "reason": reason})
        print(f"    skipped {v.name}" + (f" K={k}" if k else "") + f": {reason}", flush=True)
        self.report.write()

    def fail(self, v, k, error: str, trace: str) -> None:
        self.data["failed"].append({"variant": v.name, "k": k, "error": error, "traceback": trace})
        self.report.write()

    def note(self, text: str) -> None:
        self.report.note(text)

    def flops_per_image(self) -> float:
        return float(self.data.get("stages", {}).get("flops", {}).get("per_image", float("nan")))

    def mfu(self, row: dict) -> float:
        """2 UNet images (CFG) per scene-iteration against the measured matmul peak: the fraction of the
        2-image-per-scene floor."""
        peak = self.data.get("stages", {}).get("matmul_peak", {}).get("tflops", float("nan")) * 1e12
        return row["scene_its_per_s"] * 2 * self.flops_per_image() / peak

    def rows(self, variant: str | None = None, k: int | None = None) -> list[dict]:
        return [r for r in self.data["rows"] if (variant is None or r["variant"] == variant)
                and (k is None or r["k"] == k)]

    def predict_seconds(self, v, k: int, args) -> float:
        """Rough seconds to measure (variant, K) from this run's rows; a static compile adds a compile."""
        prev = self.rows(v.name) or self.rows(k=1)
        if not prev:
            return 5.0
        last = prev[-1]
        step_s = last["step_ms"] / 1e3 * k / last["k"]
        timed = args.repeats * 2 * max(args.min_steps * step_s, args.repeat_seconds)
        need = min(last["first_step_s"], 10.0) + (args.warmup + 1) * step_s + timed + 0.05 * k
        return need + (self.compile_estimate(v) if self.new_graph(v, k) else 0.0)

    def new_graph(self, v, k: int) -> bool:
        """Whether (v, K) compiles a graph that this run has not compiled yet (batch 4 at the agreement check)."""
        from gpu_variants import graph_key

        if not v.compiles:
            return False
        checked = self.data.get("agreement", {}).get(v.model or v.name, {}).get("n", 3)
        done = {graph_key(v, r["k"]) for r in self.rows(v.model or v.name)} | {graph_key(v, (checked + 1) // 2)}
        return graph_key(v, k) not in done

    def compile_estimate(self, v) -> float:
        """Seconds of one cold compile: this variant's first, else any variant's, else 60."""
        seconds = [a["seconds"] for n, a in self.data.get("agreement", {}).items() if n.startswith("compile")]
        own = self.data.get("agreement", {}).get(v.model or v.name, {}).get("seconds")
        return own or (max(seconds) if seconds else 60.0)


# --- verdicts and decisions ----------------------------------------------------------------------------------
def best(rows: list[dict], k: int, key=lambda r: r["scene_its_per_s"]) -> dict | None:
    cand = [r for r in rows if r["k"] == k and not r["baseline"] and r["finite_loss"]]
    return max(cand, key=key) if cand else None


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "MET" if ok else "MISSED"


def targets(d: dict) -> dict:
    rows, kmax = d.get("rows", []), max((r["k"] for r in d.get("rows", [])), default=0)
    top, one = best(rows, kmax), best(rows, 1, key=lambda r: -r["ms_per_scene_it"])
    out = {}
    if top:
        ok = top["scene_its_per_s"] >= TARGETS["k32_scene_its_per_s"] and top["mfu"] >= TARGETS["floor_fraction"]
        out[f"K={kmax}"] = {"verdict": verdict(ok if kmax == 32 else None),
                            "detail": f"{top['scene_its_per_s']:.1f} scene-it/s ({top['variant']}; target >= 250), "
                                      f"{100 * top['mfu']:.1f}% of the 2-image floor (target >= 53%)"}
    if one:
        out["K=1"] = {"verdict": verdict(one["ms_per_scene_it"] <= TARGETS["k1_ms"]),
                      "detail": f"{one['ms_per_scene_it']:.2f} ms ({one['variant']}; target <= 7 ms)"}
    errs = {n: a.get("rel_err") for n, a in d.get("agreement", {}).items() if a.get("rel_err") is not None}
    if errs:
        out["accuracy"] = {"verdict": verdict(all(e < TARGETS["rel_err"] for e in errs.values())),
                           "detail": ", ".join(f"{n} {e:.1e}" for n, e in errs.items())
                           + " (max |eps - eps_fp32| / max |eps_fp32|; FastDenoiser's tolerance 5e-2)"}
    return out


def rate(d: dict, variant: str, k: int) -> float:
    rows = [r for r in d.get("rows", []) if r["variant"] == variant and r["k"] == k]
    return rows[0]["scene_its_per_s"] if rows else float("nan")


RATIOS = (  # (label, numerator, denominator) variants
          ("compile / fast", "compile", "fast"), ("NCHW / NHWC eager", "fast-nchw", "fast"),
          ("NCHW / NHWC compiled", "compile-nchw", "compile+triton"),
          ("fp8 / fp16 compiled", "compile-fp8", "compile+triton"), ("dynamic / static", "compile", "compile-static"),
          ("Triton / plain render", "compile+triton", "compile"),
          ("kept / diffusers' upsampler layout", "compile+triton", "compile-diffusers-up"))


def decisions(d: dict) -> list[str]:
    """The defaults these numbers point to (each a FastConfig / RenderConfig / SceneBatch field): per K, the
    fastest variant and each ratio of RATIOS both of whose variants ran at that K."""
    out = []
    for k in sorted({r["k"] for r in d.get("rows", [])}):
        rates = {r["variant"]: r["scene_its_per_s"] for r in d["rows"] if r["k"] == k}
        win = max(rates, key=rates.get)
        pairs = [f"{label} {fmt(rates[a] / rates[b])}x" for label, a, b in RATIOS if a in rates and b in rates]
        out.append(f"K={k}: fastest {win} ({fmt(rates[win], '.1f')} scene-it/s)" + ("; " if pairs else "")
                   + ", ".join(pairs))
        opts = {v: rates.get(v, float("nan")) for v in ("compile", "compile+inside", "compile+visible")}
        if sum(not math.isnan(x) for x in opts.values()) > 1:
            out.append(f"K={k}: samples all / inside / visible (+ grouped Adamax), compiled: "
                       + " / ".join(fmt(x, ".1f") for x in opts.values()) + " scene-it/s")
    return out


# --- markdown -------------------------------------------------------------------------------------------------
def markdown(d: dict) -> str:
    lines = header_lines(d) + matrix_lines(d) + ["", "## Decisions the numbers point to", ""]
    lines += [f"- {x}" for x in decisions(d)] + [""] + rows_lines(d) + parts_lines(d) + compile_lines(d)
    lines += ["## Targets (issue 14, one H200)", ""] + [f"- **{n}**: {t['verdict']}: {t['detail']}"
                                                        for n, t in targets(d).items()]
    return "\n".join(lines + [""] + notes_lines(d)) + "\n"


def header_lines(d: dict) -> list[str]:
    env, st = d.get("env", {}), d.get("stages", {})
    peak, flops = st.get("matmul_peak", {}), st.get("flops", {})
    floor = peak.get("tflops", float("nan")) * 1e12 / (2 * flops.get("per_image", float("nan")))
    return [f"# SJC iteration benchmark ({env.get('size', '?')})", "",
            f"- device: {env.get('device_name', '?')}; torch {env.get('torch')}, triton {env.get('triton')}, "
            f"diffusers {env.get('diffusers')}, Python {env.get('python')}, CUDA {env.get('cuda')}",
            f"- date: {d.get('date_utc')}; status: {d.get('status')}; elapsed {d.get('elapsed_s', 0):.0f} s; "
            f"fields: {d.get('field_state')}",
            f"- command: `{d.get('command')}`",
            f"- matmul peak {fmt(peak.get('tflops'), '.4g')} TFLOP/s ({peak.get('dtype')}); UNet "
            f"{fmt(flops.get('per_image', float('nan')) / 1e9, '.4g')} GFLOP/image; 2-image floor "
            f"{fmt(floor, '.1f')} scene-it/s", ""]


def matrix_lines(d: dict) -> list[str]:
    """scene-it/s: variants down, K across."""
    names = list(dict.fromkeys(r["variant"] for r in d.get("rows", [])))
    ks = sorted({r["k"] for r in d.get("rows", [])})
    body = [[n] + [fmt(rate(d, n, k), ".1f", "") for k in ks] for n in names]
    return ["## scene-it/s by variant and K", ""] + table(["variant"] + [f"K={k}" for k in ks], body)


def rows_lines(d: dict) -> list[str]:
    body = [[r["variant"], r["k"], fmt(r["step_ms"]), fmt(r["ms_per_scene_it"]), fmt(r["scene_its_per_s"], ".1f"),
             f"{fmt(r['unet_ms'])} ({100 * r['unet_share']:.0f}%)", fmt(r["peak_gib_per_scene"], ".3f"),
             f"{100 * r['mfu']:.1f}%", fmt(r["first_step_s"]), fmt(r.get("host_ms")),
             "yes" if r["finite_loss"] else "NO"] for r in d.get("rows", [])]
    head = ["variant", "K", "ms/step", "ms/scene-it", "scene-it/s", "UNet ms (share)", "peak GiB/scene",
            "of floor", "first step s", "host ms", "finite"]
    return ["## Full steps", ""] + table(head, body, "lrrrrrrrrrl") + [""] + profile_lines(d)


def profile_lines(d: dict) -> list[str]:
    """Per profiled row: GPU busy fraction, kernels per step and each phase's host and device ms per step
    ('host ms' above: a step's return without waiting for the GPU; near ms/step, the host bounds the step)."""
    lines = []
    for r in d.get("rows", []):
        p = r.get("profile") or {}
        if "phases" not in p:
            continue
        phases = ", ".join(f"{k[4:]} " + " / ".join(fmt(v.get(m)) for m in ("cpu_ms", "device_ms", "gpu_span_ms"))
                           for k, v in p["phases"].items())
        lines.append(f"- {r['variant']} K={r['k']} (profiled, `{p['table']}`): GPU busy "
                     f"{fmt(p['gpu_busy_fraction'], '.2f')} of {fmt(p['wall_ms_per_step'])} ms a step, "
                     f"{fmt(p['kernels_per_step'], '.0f')} kernels a step; host / kernel / GPU-span ms a step by "
                     f"phase: {phases}")
    return (["## Profiles", ""] + lines + [""]) if lines else []


def agreement(a: dict | None) -> str:
    """max relative differences of a fused render against the dense one, or blank."""
    return " / ".join(f"{v:.1e}" for v in a.values()) if a else ""


def parts_lines(d: dict) -> list[str]:
    parts, lines = d.get("stages", {}), []
    render = [r for name in ("render", "render_fused") for r in parts.get(name, {}).get("rows", []) if "ms" in r]
    if render:
        body = [[r["k"], r["state"], r["samples"], r["fuse"], fmt(r["ms"]), f"{fmt(r['min_ms'])}-{fmt(r['max_ms'])}",
                 fmt(r.get("inside_first_view"), ".2f", ""), fmt(r.get("visible"), ".3f", ""),
                 agreement(r.get("agreement"))] for r in render]
        lines += ["## Render alone (forward + backward)", ""] + table(
            ["K", "fields", "samples", "fuse", "ms", "range", "inside", "visible", "vs dense (image, w, grads)"],
            body, "rllrrrrrl") + [""]
    for name in ("adamax", "stack", "scan"):
        p = parts.get(name, {})
        if "error" in p or not p:
            lines.append(f"- {name}: {p.get('error', 'not measured')}")
        elif name == "scan":
            lines.append(f"- per-ray sums of [{p['samples']:,}, {p['columns']}] samples, forward + backward: one scan "
                         f"along dim 0 {fmt(p['outer_dim']['ms'])} ms, a 1-D scan per column (the engine's) "
                         f"{fmt(p['per_column']['ms'])} ms")
        elif name == "adamax":
            lines.append(f"- Adamax, K={p['k']} scenes: one by one {fmt(p['each']['ms'])} ms, grouped "
                         f"{fmt(p['grouped']['ms'])} ms")
        else:
            lines.append(f"- concatenating K={p['k']} grids ({p['bytes'] / 2**20:.0f} MiB): {fmt(p['ms'])} ms per step")
    calls = {name: p for stage in ("fp8", "upsample") if "error" not in parts.get(stage, {})
             for name, p in parts.get(stage, {}).items() if name != "nearest_equal"}
    for name, p in calls.items():
        times = ", ".join(f"{k[3:]} images {fmt(v.get('ms'))} ms" for k, v in p.items() if k.startswith("ms_"))
        lines.append(f"- UNet call {name}: rel err {fmt(p['agreement'].get('rel_err'), '.2e')}; {times}")
    equal = parts.get("upsample", {}).get("nearest_equal", {})
    if equal:
        lines.append("- nearest x2 upsampling, channels-last equal to NCHW: "
                     + ", ".join(f"{shape} {'yes' if ok else 'NO'}" for shape, ok in equal.items()))
    return lines + [""]


def compile_lines(d: dict) -> list[str]:
    lines = []
    for name, a in d.get("agreement", {}).items():
        if name.startswith("compile"):
            lines.append(f"- {name}: first compile (agreement batch {a.get('n')}) {fmt(a.get('seconds'), '.1f')} s; "
                         f"per padded shape: " + ", ".join(f"{k} {s:.1f} s" for k, s in
                                                           d.get("compile_s", {}).get(name, {}).items()))
    for name, probe in d.get("stages", {}).get("compile_probe", {}).items():
        lines.append(f"- new process, {name} Inductor cache: first call {fmt(probe.get('first_call_s'), '.1f')} s, "
                     f"whole process {fmt(probe.get('process_s'), '.1f')} s" if "error" not in probe
                     else f"- new process, {name} cache: {probe['error']}")
    return (["## Compile cost", ""] + lines + [""]) if lines else []


def notes_lines(d: dict) -> list[str]:
    lines = [f"- {n}" for n in d.get("notes", [])]
    lines += [f"- skipped {s['variant']}" + (f" K={s['k']}" if s["k"] else "") + f": {s['reason']}"
              for s in d.get("skipped", [])]
    lines += [f"- FAILED {f['variant']}" + (f" K={f['k']}" if f["k"] else "") + f": {f['error']}"
              for f in d.get("failed", [])]
    for r in d.get("rows", []):
        syncs = r.get("syncs_per_step")
        if syncs:
            sites = syncs.get("error") or ", ".join(f"{k} x{v:.1f}" for k, v in sorted(syncs.items()))
            lines.append(f"- host syncs per step, {r['variant']} K={r['k']}: {sites}")
    return (["## Notes", ""] + lines + [""]) if lines else []


def short_table(d: dict) -> str:
    """What the run prints last: the matrix, the decisions and the targets."""
    lines = matrix_lines(d) + [""] + [f"- {x}" for x in decisions(d)]
    lines += [f"- {n}: {t['verdict']}: {t['detail']}" for n, t in targets(d).items()]
    return "\n".join(lines) + "\n"


def plot_rates(d: dict, path) -> bool:
    """scene-it/s against K, one line per variant (log K)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["variant"] for r in d.get("rows", [])))
    if not names:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for n in names:
        pts = sorted((r["k"], r["scene_its_per_s"]) for r in d["rows"] if r["variant"] == n)
        ax.plot(*zip(*pts), marker="o", label=n)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("K scenes per step")
    ax.set_ylabel("scene-it/s")
    ax.set_title(d.get("env", {}).get("device_name", ""), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
