"""Noise-level samplers: stateless in the step, drawing only from the generator, inside their window; the
default windows are the official tick ranges (SJC t = 10..969, SDS and the later estimators t = 20..980); the
annealing schedules are HiFA's square root and DreamTime's prior, checked against those formulas in float64."""
from itertools import pairwise

import numpy as np
import pytest
import torch

from sjc_dist.diffusion.sigmas import SigmaConfig, SigmaSampler, resolve_range
from sjc_dist.diffusion.vp_adapter import vp_sigmas

SD_TICKS = vp_sigmas(torch.tensor(np.cumprod(1 - np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2))).float()


def test_default_windows_are_the_official_ticks():
    lo, hi = resolve_range(SigmaConfig(), "paas", SD_TICKS, float(SD_TICKS[0]), float(SD_TICKS[-1]))
    assert (lo, hi) == (pytest.approx(0.0983, abs=5e-5), pytest.approx(12.229, abs=5e-3))
    lo, hi = resolve_range(SigmaConfig(), "sds", SD_TICKS, float(SD_TICKS[0]), float(SD_TICKS[-1]))
    assert (lo, hi) == (float(SD_TICKS[20]), float(SD_TICKS[980]))
    assert resolve_range(SigmaConfig(min=0.5), "paas", SD_TICKS, 0.03, 14.6) == (0.5, float(SD_TICKS[969]))
    assert resolve_range(SigmaConfig(), "paas", None, 0.002, 80.0) == (0.002, 80.0)  # continuous model


def test_ticks_sampler_draws_ticks_inside_the_window():
    sampler = SigmaSampler("ticks", float(SD_TICKS[10]), float(SD_TICKS[969]), SD_TICKS)
    s = sampler.sample(0, 100, 4000, torch.Generator().manual_seed(0))
    assert torch.isin(s, SD_TICKS[10:970]).all()
    assert len(torch.unique(s)) > 900  # uniform over the 960 ticks
    torch.testing.assert_close(s, sampler.sample(57, 100, 4000, torch.Generator().manual_seed(0)))  # stateless


def test_uniform_and_log_uniform_ranges():
    gen = torch.Generator().manual_seed(0)
    s = SigmaSampler("uniform", 0.5, 4.0).sample(0, 10, 5000, gen)
    assert s.min() >= 0.5 and s.max() <= 4.0 and abs(float(s.mean()) - 2.25) < 0.1
    s = SigmaSampler("ticks", 0.01, 100.0, None).sample(0, 10, 5000, gen)  # no ticks: log-uniform
    assert s.min() >= 0.01 and s.max() <= 100.0 and abs(float(s.log10().mean())) < 0.1


def test_annealed_goes_from_max_to_min_log_linearly():
    sampler = SigmaSampler("annealed", 0.01, 10.0)
    values = [float(sampler.sample(i, 4, 2, torch.Generator())[0]) for i in range(4)]
    np.testing.assert_allclose(values, [10.0, 1.0, 0.1, 0.01], rtol=1e-5)


def test_new_kinds_default_to_the_sds_window():
    for kind in ("csd", "nfsd", "ism"):
        lo, hi = resolve_range(SigmaConfig(), kind, SD_TICKS, float(SD_TICKS[0]), float(SD_TICKS[-1]))
        assert (lo, hi) == (float(SD_TICKS[20]), float(SD_TICKS[980]))


def test_sqrt_anneal_is_hifas_schedule():
    """t(i) = t_max - (t_max - t_min) sqrt(i / N) on the window's ticks (t 20..980), deterministic."""
    sampler = SigmaSampler("sqrt_anneal", float(SD_TICKS[20]), float(SD_TICKS[980]), SD_TICKS)
    n = 100
    for i in (0, 1, 25, 64, 99, 100):
        t = 980 - (980 - 20) * np.sqrt(i / n)
        s = sampler.sample(i, n, 3, torch.Generator().manual_seed(i))
        torch.testing.assert_close(s, torch.full((3,), float(SD_TICKS[round(t)])))


def dreamtime_reference(n_steps: int) -> list[int]:
    """DreamTime's t(i) = argmin_t |sum_{t' >= t} p(t') - i / N|, i = 1..N, p ~ W on ticks 20..980 (float64)."""
    t = np.arange(20, 981, dtype=np.float64)
    w = np.where(t > 800, np.exp(-(t - 800) ** 2 / (2 * 300**2)),
                 np.where(t < 500, np.exp(-(t - 500) ** 2 / (2 * 100**2)), 1.0))
    tail = np.cumsum((w / w.sum())[::-1])[::-1]
    return [int(t[np.abs(tail - i / n_steps).argmin()]) for i in range(1, n_steps + 1)]


def test_dreamtime_is_its_monotone_schedule():
    sampler = SigmaSampler("dreamtime", float(SD_TICKS[20]), float(SD_TICKS[980]), SD_TICKS)
    n = 50
    got = [float(sampler.sample(i, n, 1, torch.Generator())[0]) for i in range(n)]
    want = [float(SD_TICKS[t]) for t in dreamtime_reference(n)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert all(a >= b for a, b in pairwise(got)) and got[-1] == float(SD_TICKS[20])


def test_schedules_on_a_continuous_model_use_log_spaced_levels():
    sampler = SigmaSampler("sqrt_anneal", 0.01, 100.0, None)
    first, last = (float(sampler.sample(i, 10, 1, torch.Generator())[0]) for i in (0, 10))
    assert first == pytest.approx(100.0, rel=1e-5) and last == pytest.approx(0.01, rel=1e-5)
