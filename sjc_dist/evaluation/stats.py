"""Statistics of a benchmark: percentile-bootstrap confidence intervals of a mean, a paired per-prompt comparison
of two methods, and Spearman rank correlation.

Bootstrap (Efron): resample the n values with replacement B times; the CI is the (1-level)/2 and (1+level)/2
quantiles of the resampled means. Paired comparison of per-prompt values a_i, b_i with d_i = a_i - b_i: the mean
difference, its bootstrap CI, a two-sided paired-bootstrap p-value (2 min(P*(mean d* <= 0), P*(mean d* >= 0)))
and the Wilcoxon signed-rank p-value (scipy; zero differences dropped, exact for small n). Randomness comes only
from the numpy Generator passed in. Fewer than 2 values give NaN bounds rather than a fake interval.
"""
import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A mean and its bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95


@dataclass(frozen=True)
class PairedResult:
    """method A minus method B over n paired prompts."""

    mean_diff: float
    low: float
    high: float
    p_bootstrap: float
    p_wilcoxon: float
    wins: int
    ties: int
    losses: int
    n: int


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[np.isfinite(x)]


def bootstrap_means(values: np.ndarray, rng: np.random.Generator, n_boot: int = 2000) -> np.ndarray:
    """B bootstrap means [n_boot] of values [n]."""
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return values[idx].mean(axis=1)


def bootstrap_ci(values, rng: np.random.Generator, level: float = 0.95, n_boot: int = 2000) -> Interval:
    """Mean of the finite values and its percentile-bootstrap CI."""
    x = _finite(values)
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0, level)
    if len(x) < 2:
        return Interval(float(x.mean()), math.nan, math.nan, len(x), level)
    means = bootstrap_means(x, rng, n_boot)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(x.mean()), float(lo), float(hi), len(x), level)


def wilcoxon_p(diffs: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1 when all are zero."""
    from scipy.stats import wilcoxon

    nonzero = diffs[diffs != 0]
    if len(diffs) == 0:
        return math.nan
    if len(nonzero) == 0:
        return 1.0
    return float(wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_test(a, b, rng: np.random.Generator, level: float = 0.95, n_boot: int = 2000) -> PairedResult:
    """Compare paired values a [n] and b [n] (pairs with a non-finite member are dropped)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    counts = int((d > 0).sum()), int((d == 0).sum()), int((d < 0).sum())
    if len(d) == 0:
        return PairedResult(math.nan, math.nan, math.nan, math.nan, math.nan, *counts, 0)
    ci = bootstrap_ci(d, rng, level, n_boot)
    p_boot = math.nan
    if len(d) >= 2:
        means = bootstrap_means(d, rng, n_boot)
        p_boot = min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean()))
    return PairedResult(ci.mean, ci.low, ci.high, float(p_boot), wilcoxon_p(d), *counts, len(d))


def spearman(x, y) -> tuple[float, float]:
    """Spearman's rho and its p-value over the pairs where both are finite; NaN if undefined."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    res = spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)
