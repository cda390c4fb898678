"""CFGDenoiser: D = D_u + w (D_c - D_u), one batched inner call of 2B samples, scalar or per-sample weight."""
import pytest
import torch
from diffusers import DDPMScheduler

from sjc_dist.diffusion.cfg import CFGDenoiser
from sjc_dist.diffusion.denoiser import Cond
from sjc_dist.diffusion.vp_adapter import VPDenoiser


@pytest.fixture
def inner(tiny_unet, counting):
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return counting(VPDenoiser(tiny_unet, sched.alphas_cumprod))


@pytest.fixture
def batch(generator):
    x = torch.randn(3, 4, 8, 8, generator=generator)
    sigma = torch.tensor([0.1, 1.0, 8.0])
    ctx, unc = torch.randn(2, 3, 5, 16, generator=generator)
    return x, sigma, ctx, unc


def test_guided_combination_in_one_call_of_2b(inner, batch):
    x, sigma, ctx, unc = batch
    d = CFGDenoiser(inner, weight=7.5)(x, sigma, Cond(ctx, unc))
    assert inner.batches == [6]
    d_c, d_u = inner(x, sigma, Cond(ctx)), inner(x, sigma, Cond(unc))
    torch.testing.assert_close(d, d_u + 7.5 * (d_c - d_u), rtol=1e-4, atol=1e-4)
    assert d.dtype == torch.float32 and d.shape == x.shape


def test_weight_one_is_conditional_and_zero_unconditional(inner, batch):
    x, sigma, ctx, unc = batch
    torch.testing.assert_close(CFGDenoiser(inner, 1.0)(x, sigma, Cond(ctx, unc)), inner(x, sigma, Cond(ctx)),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(CFGDenoiser(inner, 0.0)(x, sigma, Cond(ctx, unc)), inner(x, sigma, Cond(unc)),
                               rtol=1e-5, atol=1e-5)


def test_per_sample_weight(inner, batch):
    x, sigma, ctx, unc = batch
    w = torch.tensor([1.0, 7.5, 100.0])
    d = CFGDenoiser(inner, weight=3.0)(x, sigma, Cond(ctx, unc, w))  # Cond.weight overrides the scalar
    assert inner.batches == [6]
    for i, wi in enumerate(w.tolist()):
        one = CFGDenoiser(inner, weight=wi)(x, sigma, Cond(ctx, unc))
        torch.testing.assert_close(d[i], one[i], rtol=1e-4, atol=1e-3 * max(wi, 1.0))


def test_without_uncond_bypasses_guidance(inner, batch):
    x, sigma, ctx, _ = batch
    cfg = CFGDenoiser(inner, weight=50.0)
    torch.testing.assert_close(cfg(x, sigma, Cond(ctx)), inner(x, sigma, Cond(ctx)))
    assert inner.batches == [3, 3]
    assert (cfg.sigma_min, cfg.sigma_max, cfg.channels, cfg.size) == (
        inner.sigma_min, inner.sigma_max, inner.channels, inner.size)
