"""The control-plane load test's arithmetic and markdown: the steady window (the 10th to the 90th percentile of
trial completion times), completion rate, the driver's CPU share and memory slope in it, each timer's share of
the window and cost per trial, MLflow rows per second, the snapshots, and the cluster size the measured rate
would feed. Pure functions over report.json's data (control_plane.py); written through bench_report.Report.
"""
import math

from bench_report import fmt, table

GPU_TRIALS_PER_S = 72 / 3600  # a GPU finishing 72 ten-thousand-step trials an hour (issue 18's arithmetic)
TARGET_PER_S = 20.0  # 1,000 such GPUs


def window(ended_at: list[float], lo: float = 0.1, hi: float = 0.9) -> tuple[float, float, int] | None:
    """(t_lo, t_hi, trials ended between) of the completion times' lo and hi quantiles; None for < 10 trials."""
    if len(ended_at) < 10:
        return None
    i, j = int(lo * (len(ended_at) - 1)), int(hi * (len(ended_at) - 1))
    return ended_at[i], ended_at[j], j - i


def at(samples: list[dict], t: float, key: str) -> float:
    """A sampled quantity at time t (s since the sampler's start), linearly interpolated."""
    rows = [(r["t"], r[key] if key in r else r["timers"].get(key, 0.0)) for r in samples]
    if not rows:
        return math.nan
    if t <= rows[0][0]:
        return rows[0][1]
    for (t0, v0), (t1, v1) in zip(rows, rows[1:]):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / max(t1 - t0, 1e-9)
    return rows[-1][1]


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (NaN with fewer than 3 points)."""
    if len(xs) < 3:
        return math.nan
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else math.nan


def analyse(data: dict) -> dict:
    """The numbers of the report's table (see the module docstring)."""
    ended, samples, t0 = data.get("ended_at", []), data.get("samples", []), data.get("t0", 0.0)
    win = window(ended)
    if win is None or not samples:
        return {"note": f"too few trials ended ({len(ended)}) for a steady window"}
    lo, hi, n = win[0] - t0, win[1] - t0, win[2]
    dt = hi - lo
    inside = [r for r in samples if lo <= r["t"] <= hi]
    out = {"window_s": [lo, hi], "trials_in_window": n, "completions_per_s": n / dt,
           "overall_per_s": len(ended) / max(ended[-1] - t0, 1e-9), "ended": len(ended),
           "first_end_s": ended[0] - t0, "last_end_s": ended[-1] - t0,
           "driver_cpu_cores": (at(samples, hi, "cpu_s") - at(samples, lo, "cpu_s")) / dt,
           "rss_mb": [at(samples, lo, "rss_mb"), at(samples, hi, "rss_mb"), max(r["rss_mb"] for r in samples)],
           "uss_mb": [at(samples, lo, "uss_mb"), at(samples, hi, "uss_mb")],
           "rss_mb_per_1000_trials": 1000 * slope([r["ended"] for r in inside], [r["rss_mb"] for r in inside]),
           "load1_mean": sum(r["load1"] for r in inside) / len(inside) if inside else math.nan}
    out["timers"] = {name: {"share_of_window": (at(samples, hi, name) - at(samples, lo, name)) / dt,
                            "ms_per_trial": 1e3 * (at(samples, hi, name) - at(samples, lo, name)) / max(n, 1)}
                     for name in data.get("timers", {})}
    out.update({**_snapshots(data, win), **_mlflow(data, len(ended)), **_capacity(out)})
    return out


def _snapshots(data: dict, win: tuple) -> dict:
    times = [t for t in data.get("snapshots_at", []) if win[0] <= t <= win[1]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"snapshots_in_window": len(times), "snapshot_interval_s": sum(gaps) / len(gaps) if gaps else None,
            "state_file_bytes": data.get("state_file_bytes")}


def _mlflow(data: dict, ended: int) -> dict:
    rows = sum(v for k, v in data.get("mlflow_rows", {}).items() if k != "latest_metrics")
    span = data.get("wall_s") or math.nan
    return {"mlflow_rows_total": rows, "mlflow_rows_per_s": rows / span if rows else None,
            "mlflow_rows_per_trial": rows / ended if rows and ended else None}


def _capacity(out: dict) -> dict:
    """Trials per second the driver could take at one full core (if its CPU is what bounds it), and the
    cluster that rate feeds; the target's verdict."""
    rate, cores = out["completions_per_s"], out["driver_cpu_cores"]
    cap = rate / cores if cores > 0 else math.nan
    return {"driver_bound_per_s": cap, "gpus_fed_at_rate": rate / GPU_TRIALS_PER_S,
            "gpus_fed_at_driver_bound": cap / GPU_TRIALS_PER_S,
            "target": f">= {TARGET_PER_S:g} completions/s", "verdict": "met" if rate >= TARGET_PER_S else "missed"}


# --- markdown ---------------------------------------------------------------------------------------------------
def markdown(data: dict) -> str:
    a = data.get("analysis") or {}
    lines = [f"# {data.get('title', 'control-plane load test')}", "", f"{data.get('date', '')}; "
             f"`{data.get('command', '')}`", "", f"environment: {data.get('env', {})}", ""]
    if "completions_per_s" not in a:
        return "\n".join(lines + [a.get("note", "running"), *_notes(data)])
    setup = data.get("setup", {})
    lines += [f"trials: {setup.get('trials')} planned, {a['ended']} ended ({data.get('statuses')}); wall "
              f"{fmt(data.get('wall_s'), '.0f')} s; MLflow: {data.get('mlflow_uri') or 'off'}", ""]
    lines += table(["measure", "value"], _headline_rows(a, data), "lr") + [""]
    lines += ["## Driver time by function (the steady window)", ""]
    lines += table(["timer", "calls", "mean ms", "p99 ms", "max ms", "share of window", "ms per trial"],
                   _timer_rows(data, a)) + [""]
    lines += _profile_lines(data.get("profile") or {}) + _notes(data)
    return "\n".join(lines) + "\n"


def _headline_rows(a: dict, data: dict) -> list[list]:
    rss = a["rss_mb"]
    return [["completions / s (steady window)", f"**{fmt(a['completions_per_s'])}** (target >= 20: {a['verdict']})"],
            ["completions / s (whole run, from the sweep's start)", fmt(a["overall_per_s"])],
            ["steady window", f"{fmt(a['window_s'][0], '.0f')}-{fmt(a['window_s'][1], '.0f')} s, "
                              f"{a['trials_in_window']} trials"],
            ["driver CPU (cores, all threads)", fmt(a["driver_cpu_cores"])],
            ["driver RSS at window start / end / max, MB", " / ".join(fmt(x, ".0f") for x in rss)],
            ["driver RSS slope, MB per 1,000 trials", fmt(a["rss_mb_per_1000_trials"], ".1f")],
            ["experiment-state snapshots in window, mean interval s", f"{a['snapshots_in_window']}, "
                                                                       f"{fmt(a['snapshot_interval_s'], '.1f')}"],
            ["experiment-state file at the end, kB", fmt((a.get("state_file_bytes") or math.nan) / 1e3, ".0f")],
            ["MLflow rows (runs+params+metrics+tags), per s, per trial",
             f"{a['mlflow_rows_total']}, {fmt(a['mlflow_rows_per_s'], '.0f')}, {fmt(a['mlflow_rows_per_trial'], '.0f')}"],
            ["machine load average (1 min) in window", fmt(a["load1_mean"], ".1f")],
            ["driver-bound rate (at one full core), completions / s", fmt(a["driver_bound_per_s"])],
            ["GPUs fed (72 trials / GPU-hour) at the rate / the driver bound",
             f"{fmt(a['gpus_fed_at_rate'], '.0f')} / {fmt(a['gpus_fed_at_driver_bound'], '.0f')}"]]


def _timer_rows(data: dict, a: dict) -> list[list]:
    rows = []
    for name, s in data.get("timers", {}).items():
        w = a.get("timers", {}).get(name, {})
        rows.append([name, s["count"], fmt(s["mean_ms"]), fmt(s["p99_ms"]), fmt(s["max_ms"]),
                     fmt(100 * w.get("share_of_window", math.nan), ".1f") + "%", fmt(w.get("ms_per_trial"))])
    return rows


def _profile_lines(p: dict) -> list[str]:
    if "inclusive_pct" not in p:
        return [p.get("note", "no profile"), ""]
    lines = ["## py-spy: where the driver's time goes", "",
             f"{p['samples']} samples of {p['expected_samples']} expected (100% = one core for the whole "
             f"recording); by thread: {p['threads']}", ""]
    lines += table(["function (inclusive)", "% of a core"], p["inclusive_pct"][:20]) + [""]
    lines += table(["function (self)", "% of a core"], p["self_pct"][:15]) + [""]
    return lines


def _notes(data: dict) -> list[str]:
    return [f"- {n}" for n in data.get("notes", [])]
