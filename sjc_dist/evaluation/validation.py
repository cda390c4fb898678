"""Validation of ranking signals against the truth: does a signal a user can compute (CLIP, denoiser fit) rank
the results of one prompt as the ground truth does, and what does choosing by it cost?

Records are flat dicts (one per result: a sweep trial or a benchmark object) holding group keys, signals and
truth metrics. For a signal S and a truth metric T (oriented so that higher is better: depth and colour errors
are negated):
  within-group rho   Spearman rho(S, T) over the results of one group (a prompt: its settings, seeds and
                     methods), averaged over the groups that have at least 3 results with both values; the 95%
                     interval is a percentile bootstrap over groups (stats.bootstrap_ci). Groups differ in
                     baseline (a cube's CLIP score is not a torus's), so only the within-group ranking is judged.
  selection regret   per selection group (a prompt and a method: the choice a sweep makes), T of the result the
                     truth would pick minus T of the result S picks (ties: the first), averaged over groups with
                     its bootstrap interval; beside it the regret of a random pick (T's best minus its mean).
No pandas here: distributed/validate.py turns a sweep's Parquet table into records.
"""
import math
from dataclasses import dataclass

import numpy as np

from .stats import bootstrap_ci, spearman

NEGATED = {"depth_error", "color_error"}  # truth metrics where lower is better
VIEW_TRUTHS = ("silhouette_iou", "ssim", "psnr")  # what the true renders show (higher is better)


@dataclass(frozen=True)
class Agreement:
    """How one signal agrees with one truth metric over a set of records."""

    signal: str
    truth: str
    rho: float
    rho_low: float
    rho_high: float
    groups: int
    regret: float
    regret_low: float
    regret_high: float
    random_regret: float
    selections: int


def oriented(record: dict, truth: str) -> float:
    """The truth value of a record, negated where lower is better (so higher is always better)."""
    v = float(record.get(truth, math.nan))
    return -v if truth in NEGATED else v


def groups_of(records: list[dict], keys: tuple[str, ...]) -> list[list[dict]]:
    """Records split by the values of `keys`, in first-seen order."""
    out: dict[tuple, list[dict]] = {}
    for r in records:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return list(out.values())


def within_rhos(records: list[dict], signal: str, truth: str, keys: tuple[str, ...]) -> list[float]:
    """Spearman rho of each group with at least 3 finite pairs (NaN-free list)."""
    rhos = []
    for g in groups_of(records, keys):
        rho, _ = spearman([r.get(signal, math.nan) for r in g], [oriented(r, truth) for r in g])
        if math.isfinite(rho):
            rhos.append(rho)
    return rhos


def regrets(records: list[dict], signal: str, truth: str, keys: tuple[str, ...]) -> tuple[list[float], list[float]]:
    """(regret of picking by the signal, regret of a random pick) of each selection group with a choice."""
    by_signal, by_chance = [], []
    for g in groups_of(records, keys):
        pairs = [(float(r.get(signal, math.nan)), oriented(r, truth)) for r in g]
        pairs = [(s, t) for s, t in pairs if math.isfinite(s) and math.isfinite(t)]
        if len(pairs) < 2:
            continue
        best = max(t for _, t in pairs)
        picked = max(pairs, key=lambda p: p[0])[1]
        by_signal.append(best - picked)
        by_chance.append(best - float(np.mean([t for _, t in pairs])))
    return by_signal, by_chance


def agreement(records: list[dict], signal: str, truth: str, group_by: tuple[str, ...],
              select_by: tuple[str, ...], rng: np.random.Generator) -> Agreement:
    """The within-group rho and the selection regret of one signal against one truth metric."""
    rho = bootstrap_ci(within_rhos(records, signal, truth, group_by), rng)
    mine, chance = regrets(records, signal, truth, select_by)
    reg = bootstrap_ci(mine, rng)
    rand = float(np.mean(chance)) if chance else math.nan
    return Agreement(signal, truth, rho.mean, rho.low, rho.high, rho.n, reg.mean, reg.low, reg.high, rand, reg.n)


def validate(records: list[dict], signals: list[str], truths: list[str], group_by: tuple[str, ...] = ("prompt",),
             select_by: tuple[str, ...] = ("prompt", "method"), seed: int = 0) -> list[Agreement]:
    """Every signal against every truth metric that the records carry (signal-major order)."""
    rng = np.random.default_rng(seed)
    present = [s for s in signals if has_values(records, s)]
    known = [t for t in truths if has_values(records, t)]
    return [agreement(records, s, t, group_by, select_by, rng) for s in present for t in known]


def view_ceiling(records: list[dict], primary: str = "iou", seed: int = 0) -> list[Agreement]:
    """Each image truth metric (VIEW_TRUTHS) taken as a signal against `primary`: how far a judge that saw exactly
    how well the views match the true renders would agree with the 3D truth, the reference for any view judge."""
    return validate(records, list(VIEW_TRUTHS), [primary], seed=seed)


def has_values(records: list[dict], key: str) -> bool:
    return any(isinstance(r.get(key), (int, float)) and math.isfinite(r[key]) for r in records)


def best_signal(results: list[Agreement], truth: str, signals: list[str]) -> Agreement | None:
    """The signal (among `signals`) with the highest within-group rho against `truth`."""
    mine = [a for a in results if a.truth == truth and a.signal in signals and math.isfinite(a.rho)]
    return max(mine, key=lambda a: a.rho) if mine else None
