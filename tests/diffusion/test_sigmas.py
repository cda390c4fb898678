"""Noise-level samplers: stateless in the step, drawing only from the generator, inside their window; the
default windows are the official tick ranges (SJC t = 10..969, SDS t = 20..980)."""
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
