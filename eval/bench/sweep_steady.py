"""The sweep benchmark's arithmetic on workers' round timelines (stepper.py's WorkerStats rows: [round end s,
rounds so far, scene_steps so far, scenes in the round]): the steady-state window and throughput, the scaling
verdict, where the rest of the wall time went, and the headline users pay for. Pure functions, no Ray.
"""
import itertools
import math
import statistics


def full_stretch(timeline: list, k: int, skip: int) -> tuple[tuple[float, float] | None, int]:
    """((start, end) unix s, full batch) of one worker's full-batch stretch: from the end of its `skip`-th round
    at full batch (K scenes, or the largest batch it ran if never K) to the end of its last such round.
    timeline rows: [round end s, rounds so far, scene_steps so far, scenes in the round]."""
    full = k if any(r[3] >= k for r in timeline) else max((r[3] for r in timeline), default=0)
    rows = [r for r in timeline if full and r[3] >= full]
    if len(rows) < skip + 2:
        return None, full
    return (rows[skip][0], rows[-1][0]), full


def rate_in(timeline: list, t0: float, t1: float) -> dict | None:
    """Scene-steps, rounds and seconds between the first and last timeline rows inside [t0, t1] (the rounds
    after the first row up to the last), and their ratio in scene-it/s; None with fewer than 2 rows."""
    rows = [r for r in timeline if t0 <= r[0] <= t1]
    if len(rows) < 2 or rows[-1][0] <= rows[0][0]:
        return None
    dt, steps, rounds = rows[-1][0] - rows[0][0], rows[-1][2] - rows[0][2], rows[-1][1] - rows[0][1]
    return {"seconds": dt, "scene_steps": steps, "rounds": rounds, "scene_its_per_s": steps / dt}


def steady_state(workers: list[dict], k: int, skip: int) -> dict:
    """Steady-state throughput of one sweep, scene-it/s: the sum over workers of their rates inside the common
    window, the overlap of all workers' full-batch stretches (every device stepping K scenes at once). With
    no overlap, each worker's own stretch ('per-worker stretches'). A worker with fewer than `skip` + 2 rounds
    at its full batch has no steady state (a run cut before its warm-up ended): NaN, `method` says which."""
    lines = [w.get("timeline") or [] for w in workers]
    if not workers or not all(len(t) >= 2 for t in lines):
        return {"method": "none: a worker ran fewer than 2 rounds", "scene_its_per_s": float("nan")}
    stretches = [full_stretch(t, k, skip) for t in lines]
    short = [(w.get("name") or str(i), full, sum(r[3] >= full > 0 for r in t))
             for i, (w, t, (span, full)) in enumerate(zip(workers, lines, stretches)) if span is None]
    if short:
        name, full, n = short[0]
        return {"method": f"none: worker {name} has {n} timeline rows at its full batch ({full}), fewer than the "
                          f"{skip} skipped + 2 (cut before its warm-up ended, or it stepped {full} scenes only "
                          f"briefly: a larger --budget-seconds, more trials or a smaller --skip-rounds)",
                "scene_its_per_s": float("nan")}
    spans = [s for s, _ in stretches]
    t0, t1 = max(s[0] for s in spans), min(s[1] for s in spans)
    per = [rate_in(t, t0, t1) for t in lines] if t1 > t0 else [None]
    if all(per):
        return _total(per, workers, stretches, "common window", (t0, t1))
    per = [rate_in(t, *span) for t, span in zip(lines, spans)]
    if not all(per):
        return {"method": "none: too few rounds", "scene_its_per_s": float("nan")}
    return _total(per, workers, stretches, "per-worker stretches (no common window)", None)


def _total(per: list[dict], workers: list[dict], stretches: list, method: str, window) -> dict:
    steps, rounds = sum(p["scene_steps"] for p in per), sum(p["rounds"] for p in per)
    return {"method": method, "scene_its_per_s": sum(p["scene_its_per_s"] for p in per),
            "window": list(window) if window else None, "window_s": (window[1] - window[0]) if window else
            max(p["seconds"] for p in per), "scene_steps": steps, "rounds": rounds,
            "mean_batch": steps / rounds if rounds else 0.0,
            "per_worker": [{"name": w.get("name"), "full_batch": full, **p}
                           for w, p, (_, full) in zip(workers, per, stretches)]}


def scaling(phases: dict, n_all: int, cpu: bool) -> dict:
    """all / one steady throughput, per-device efficiency, and the issue's target (>= 1.8x on 2 GPUs, >= 0.9
    per GPU on more)."""
    one, all_ = phases.get("one", {}), phases.get("all", {})
    a, b = one.get("steady", {}).get("scene_its_per_s"), all_.get("steady", {}).get("scene_its_per_s")
    if not all_ or not _finite(a) or not _finite(b) or a <= 0:
        return {"ratio": None, "per_device_efficiency": None, "verdict": "n/a", "target": "",
                "devices": n_all}
    ratio = b / a
    target, ok = (">= 1.8x on 2 GPUs", ratio >= 1.8) if n_all == 2 else (">= 0.9 per GPU", ratio / n_all >= 0.9)
    verdict = ("met" if ok else "missed") + (" (CPU workers: not the target's hardware)" if cpu else "")
    return {"ratio": ratio, "per_device_efficiency": ratio / n_all, "verdict": verdict, "target": target,
            "devices": n_all}


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)



def round_seconds(timeline: list) -> list[tuple[float, int, float]]:
    """(end time, batch, seconds per round) between consecutive timeline rows."""
    out = []
    for prev, row in itertools.pairwise(timeline):
        if row[1] > prev[1]:
            out.append((row[0], row[3], (row[0] - prev[0]) / (row[1] - prev[1])))
    return out


def long_rounds(timeline: list, factor: float = 5.0, floor_s: float = 1.0) -> dict:
    """Rounds far slower than the median round of their batch size: compiles, graph captures, or waits for
    work (the timeline cannot tell these apart). Their count and excess seconds over that median."""
    rounds = round_seconds(timeline)
    by_batch: dict[int, list[float]] = {}
    for _, batch, s in rounds:
        by_batch.setdefault(batch, []).append(s)
    median = {b: statistics.median(v) for b, v in by_batch.items()}
    slow = [(t, b, s - median[b]) for t, b, s in rounds if s > max(factor * median[b], floor_s)]
    return {"rounds": len(slow), "excess_s": sum(x for _, _, x in slow),
            "largest": sorted(([round(t, 1), b, round(x, 1)] for t, b, x in slow), key=lambda r: -r[2])[:5]}


def overhead(record: dict) -> dict:
    """Where a sweep's wall time went, s: up to the first round (Ray, model load, slot opens; split by when the
    first worker was built, `to_worker_s`, when the first model load began, `to_load_start_s`, when the last
    worker's ended, `to_loaded_s`, and when a trial first asked for a slot, `to_first_open_s`), ramp-up and
    ramp-down around the steady window, after the last round (trials writing their outputs, shutdown);
    `outside_steady_s` = wall - steady window; long rounds (compiles or waits) per worker."""
    workers = record.get("worker_stats", [])
    firsts = [w["first_round_at"] for w in workers if w.get("first_round_at")]
    lasts = [w["last_round_at"] for w in workers if w.get("last_round_at")]
    steady = record.get("steady", {})
    window = steady.get("window")
    out = {"wall_s": record["wall_s"], "steady_s": steady.get("window_s") if _finite(steady.get("window_s")) else 0.0}
    out["outside_steady_s"] = out["wall_s"] - out["steady_s"]
    for key, name, which in (("started_at", "to_worker_s", min), ("load_started_at", "to_load_start_s", min),
                             ("load_done_at", "to_loaded_s", max), ("first_open_at", "to_first_open_s", min)):
        times = [w[key] for w in workers if w.get(key)]
        if times:
            out[name] = which(times) - record["t_start"]
    if firsts and lasts:
        out["to_first_round_s"] = min(firsts) - record["t_start"]
        out["after_last_round_s"] = record["t_end"] - max(lasts)
        if window:
            out["ramp_up_s"], out["ramp_down_s"] = window[0] - min(firsts), max(lasts) - window[1]
    out["long_rounds"] = [long_rounds(w.get("timeline") or []) for w in workers]
    return out


COUNTERS = ("loads", "rounds", "scene_steps")
WHEN = ("started_at", "first_open_at", "load_started_at", "load_done_at")


def since(after: dict, before: dict | None, t_start: float) -> dict:
    """One worker's stats for one sweep of several on a kept worker (`--again`): `after` less `before`, the
    worker's stats polled as the sweep began (cumulative counters and phase sums subtracted, the timeline cut
    after `before`'s rounds, its first round the first row left (a thinned timeline's rows are every
    `timeline_every` rounds); the build, first open and load times dropped when they were before `t_start`, and
    `kept` set). A worker built since `before` (another `started_at`, or fewer rounds: it died and was recreated
    under its name) or without `before` is returned as it is."""
    if not before or after.get("started_at") != before.get("started_at") or \
            (after.get("rounds") or 0) < (before.get("rounds") or 0):
        return after
    done = before.get("rounds") or 0
    out = {**after, "kept": True, "timeline": [r for r in after.get("timeline") or [] if r[1] > done]}
    out.update({k: (after.get(k) or 0) - (before.get(k) or 0) for k in COUNTERS})
    for key in ("phase_s", "phase_n"):
        old = before.get(key) or {}
        out[key] = {k: v - old.get(k, 0) for k, v in (after.get(key) or {}).items() if v != old.get(k, 0)}
    out.update({k: None for k in WHEN if (after.get(k) or 0) < t_start})
    out["first_round_at"] = out["timeline"][0][0] if out["timeline"] else None
    out["mean_batch"] = out["scene_steps"] / out["rounds"] if out["rounds"] else 0.0
    if out["rounds"] == 0:
        out["last_round_at"] = None
    return out


def headline(record: dict) -> dict:
    """What users pay for: steady scene-it/s per GPU and 10,000-step trials per GPU-hour."""
    rate, gpus = record.get("steady", {}).get("scene_its_per_s"), max(record.get("gpus") or 1, 1)
    if not _finite(rate):
        return {"per_gpu": None, "trials_10k_per_gpu_hour": None}
    return {"per_gpu": rate / gpus, "trials_10k_per_gpu_hour": rate / gpus * 3600 / 10_000}


def targets(phases: dict) -> dict:
    """Issue 14's sweep targets on the one-GPU sweep: steady >= 200 scene-it/s (72 10k-step trials per
    GPU-hour), <= 40 s outside steady stepping (n/a both without a steady window); with --again, the outside
    target of the sweep on the kept worker too."""
    out = {}
    for name, suffix in (("one", ""), ("again", ", again on the kept worker")):
        p = phases.get(name)
        if not p:
            continue
        rate, outside = p.get("steady", {}).get("scene_its_per_s"), p.get("overhead", {}).get("outside_steady_s")
        if name == "one":
            out["steady >= 200 scene-it/s"] = _verdict(rate >= 200 if _finite(rate) else None)
        out["outside steady <= 40 s" + suffix] = _verdict(outside <= 40 if _finite(outside) and _finite(rate)
                                                          else None)
    return out


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "missed")
