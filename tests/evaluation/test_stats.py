"""Bootstrap intervals cover a known mean at about their level; the paired test and Spearman behave."""
import math

import numpy as np
import pytest

from sjc_dist.evaluation.stats import bootstrap_ci, paired_test, spearman


def test_bootstrap_covers_known_mean_about_95_percent():
    """200 samples of n = 30 from N(1, 2^2): the 95% percentile-bootstrap CI should hold 1 about 95% of the
    time (percentile intervals run slightly narrow at small n; 200 repetitions give +-0.03 at 2 sd)."""
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        sample = rng.normal(1.0, 2.0, size=30)
        ci = bootstrap_ci(sample, rng, n_boot=1000)
        hits += ci.low <= 1.0 <= ci.high
    assert 0.89 <= hits / 200 <= 0.99


def test_bootstrap_interval_shape_and_degenerate_inputs():
    rng = np.random.default_rng(1)
    ci = bootstrap_ci([1.0, 2.0, 3.0, 4.0, math.nan], rng)
    assert ci.mean == 2.5 and ci.n == 4 and 1.0 <= ci.low < 2.5 < ci.high <= 4.0
    one = bootstrap_ci([3.0], rng)
    assert one.mean == 3.0 and math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(bootstrap_ci([], rng).mean)


def test_bootstrap_is_reproducible_from_the_generator():
    x = np.arange(10.0)
    a = bootstrap_ci(x, np.random.default_rng(5))
    b = bootstrap_ci(x, np.random.default_rng(5))
    assert (a.low, a.high) == (b.low, b.high)


def test_paired_test_detects_a_consistent_difference():
    rng = np.random.default_rng(2)
    b = rng.normal(0.3, 0.05, size=10)
    a = b + 0.1
    res = paired_test(a, b, rng)
    assert res.mean_diff == pytest.approx(0.1)
    assert res.low > 0 and res.wins == 10 and res.losses == 0
    # all 10 differences positive: the exact two-sided Wilcoxon p-value is 2 / 2^10
    assert res.p_wilcoxon == pytest.approx(2 / 2**10)
    assert res.p_bootstrap < 0.01


def test_paired_test_of_identical_methods_is_not_significant():
    rng = np.random.default_rng(3)
    a = rng.normal(size=8)
    res = paired_test(a, a.copy(), rng)
    assert res.mean_diff == 0 and res.ties == 8 and res.p_wilcoxon == 1.0


def test_paired_test_of_noise_is_mostly_not_significant():
    rng = np.random.default_rng(4)
    significant = sum(paired_test(rng.normal(size=12), rng.normal(size=12), rng, n_boot=500).p_wilcoxon < 0.05
                      for _ in range(60))
    assert significant <= 9  # about 3 expected at the 5% level


def test_paired_test_drops_incomplete_pairs():
    res = paired_test([1.0, 2.0, math.nan], [0.0, 1.0, 5.0], np.random.default_rng(0))
    assert res.n == 2 and res.mean_diff == 1.0


def test_spearman():
    x = np.arange(10.0)
    assert spearman(x, x**3)[0] == pytest.approx(1.0)
    assert spearman(x, -x)[0] == pytest.approx(-1.0)
    assert math.isnan(spearman(x, np.ones(10))[0])
    assert math.isnan(spearman([1.0, 2.0], [1.0, 2.0])[0])
