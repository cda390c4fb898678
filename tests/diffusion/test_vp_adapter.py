"""VPDenoiser (VP-trained diffusers UNet -> VE denoiser) against hand-computed values.

Golden values are computed by hand from the beta schedules (sigma_t = sqrt((1 - abar_t) / abar_t)), never
snapshotted from the code under test. A spy around a tiny random UNet records what the UNet really receives.
"""
import copy
import math

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from sjc_dist.diffusion.denoiser import Cond
from sjc_dist.diffusion.vp_adapter import VPDenoiser, coefficients, vp_sigmas


class SpyUNet(torch.nn.Module):
    """Forwards to a real UNet and records (sample, timestep, output) of every call."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet, self.config, self.calls = unet, unet.config, []

    def forward(self, sample, timestep, **kwargs):
        out = self.unet(sample, timestep, **kwargs)
        self.calls.append((sample.detach().clone(), torch.as_tensor(timestep).clone(), out[0].detach().clone()))
        return out


def hand_sigmas(betas: np.ndarray) -> np.ndarray:
    abar = np.cumprod(1.0 - betas)
    return np.sqrt((1.0 - abar) / abar)


def sd_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type=prediction_type, clip_sample=False)


def context(batch: int, gen: torch.Generator) -> Cond:
    return Cond(context=torch.randn(batch, 5, 16, generator=gen))


def test_sd_scaled_linear_sigma_range(tiny_unet):
    den = VPDenoiser(tiny_unet, sd_scheduler().alphas_cumprod)
    assert den.sigma_min == pytest.approx(0.0292, abs=5e-5)
    assert den.sigma_max == pytest.approx(14.61, abs=5e-3)
    hand = hand_sigmas(np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2)
    np.testing.assert_allclose(den.sigmas.numpy(), hand, rtol=5e-5)  # diffusers keeps abar in float32
    # sigma_0 in closed form: abar_0 = 1 - beta_0
    assert den.sigma_min == pytest.approx(math.sqrt(0.00085 / (1 - 0.00085)), rel=5e-5)
    # the official SJC tick window t = 10..969
    assert float(den.sigmas[10]) == pytest.approx(0.0983, abs=5e-5)
    assert float(den.sigmas[969]) == pytest.approx(12.229, abs=5e-3)
    assert torch.all(den.sigmas[1:] > den.sigmas[:-1])


def test_ddpm_linear_sigma_range():
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    sigmas = vp_sigmas(sched.alphas_cumprod)
    assert float(sigmas[0]) == pytest.approx(0.0100, abs=5e-5)
    assert float(sigmas[-1]) == pytest.approx(157.4, abs=0.05)
    # diffusers' float32 abar_0 = 0.9999 carries ~1e-4 relative error into 1 - abar_0
    assert float(sigmas[0]) == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=2e-4)
    np.testing.assert_allclose(sigmas.numpy(), hand_sigmas(np.linspace(1e-4, 0.02, 1000)), rtol=2e-4)


def test_unet_input_scaled_and_timesteps_per_sample(tiny_unet, generator):
    spy = SpyUNet(tiny_unet)
    den = VPDenoiser(spy, sd_scheduler().alphas_cumprod)
    ticks = torch.tensor([10, 500, 969])
    sigma = den.sigmas[ticks]
    x = torch.randn(3, 4, 8, 8, generator=generator) * 3
    den(x, sigma, context(3, generator))
    sample, t, _ = spy.calls[-1]
    expected = x / torch.sqrt(1 + sigma**2)[:, None, None, None]
    torch.testing.assert_close(sample, expected, rtol=1e-6, atol=1e-6)
    assert t.tolist() == ticks.tolist()


def test_nearest_and_interp_timesteps(tiny_unet, generator):
    ac = sd_scheduler().alphas_cumprod
    nearest, interp = VPDenoiser(tiny_unet, ac, sigma_to_t="nearest"), VPDenoiser(tiny_unet, ac, sigma_to_t="interp")
    log_s = nearest.sigmas.double().log()
    on_tick = nearest.sigmas[[0, 500, 999]]
    quarter = torch.exp(0.75 * log_s[500] + 0.25 * log_s[501]).float()[None]  # between ticks, nearer 500
    three_quarter = torch.exp(0.25 * log_s[500] + 0.75 * log_s[501]).float()[None]
    assert nearest.sigma_to_t(on_tick).tolist() == [0, 500, 999]
    torch.testing.assert_close(interp.sigma_to_t(on_tick), torch.tensor([0.0, 500.0, 999.0]), atol=1e-3, rtol=0)
    assert nearest.sigma_to_t(quarter).tolist() == [500]
    assert nearest.sigma_to_t(three_quarter).tolist() == [501]
    assert float(interp.sigma_to_t(quarter)) == pytest.approx(500.25, abs=1e-3)
    assert float(interp.sigma_to_t(three_quarter)) == pytest.approx(500.75, abs=1e-3)
    spy = SpyUNet(tiny_unet)  # the fractional timestep is what the UNet receives
    VPDenoiser(spy, ac, sigma_to_t="interp")(torch.zeros(1, 4, 8, 8), quarter, context(1, generator))
    assert float(spy.calls[-1][1]) == pytest.approx(500.25, abs=1e-3)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoised_from_unet_output(tiny_unet, generator, prediction_type):
    spy = SpyUNet(tiny_unet)
    sched = sd_scheduler(prediction_type)
    den = VPDenoiser(spy, sched.alphas_cumprod, prediction_type)
    ticks = torch.tensor([20, 400, 900])
    sigma = den.sigmas[ticks]
    x = torch.randn(3, 4, 8, 8, generator=generator) * (1 + sigma[:, None, None, None])
    d = den(x, sigma, context(3, generator))
    f = spy.calls[-1][2]
    s = sigma[:, None, None, None].double()
    if prediction_type == "epsilon":  # x = x0 + sigma eps
        expected = x.double() - s * f.double()
    else:  # z = a x0 + b eps, v = a eps - b x0, a = 1/sqrt(1+s^2), b = s/sqrt(1+s^2): x0 = a z - b v
        expected = x.double() / (1 + s**2) - s / torch.sqrt(1 + s**2) * f.double()
    torch.testing.assert_close(d.double(), expected, rtol=1e-5, atol=1e-5)
    # independent check: diffusers' own x0 prediction from z = x / sqrt(1 + sigma^2) at the same tick
    z = spy.calls[-1][0]
    for i, t in enumerate(ticks.tolist()):
        x0 = sched.step(f[i:i + 1], t, z[i:i + 1], generator=torch.Generator().manual_seed(0)).pred_original_sample
        torch.testing.assert_close(d[i:i + 1], x0, rtol=1e-4, atol=1e-4)


def test_coefficients_by_name():
    sigma = torch.tensor([0.5, 2.0])
    c_skip, c_out, c_in = coefficients(sigma, "epsilon")
    torch.testing.assert_close(c_skip, torch.ones(2))
    torch.testing.assert_close(c_out, -sigma)
    torch.testing.assert_close(c_in, torch.tensor([1 / math.sqrt(1.25), 1 / math.sqrt(5.0)]))
    c_skip, c_out, _ = coefficients(sigma, "v_prediction")
    torch.testing.assert_close(c_skip, torch.tensor([1 / 1.25, 1 / 5.0]))
    torch.testing.assert_close(c_out, torch.tensor([-0.5 / math.sqrt(1.25), -2.0 / math.sqrt(5.0)]))
    with pytest.raises(ValueError, match="prediction_type"):
        coefficients(sigma, "sample")


def test_float32_output_for_any_input_and_unet_precision(tiny_unet, generator):
    ac = sd_scheduler().alphas_cumprod
    sigma = torch.tensor([1.0, 5.0])
    x, cond = torch.randn(2, 4, 8, 8, generator=generator), context(2, generator)
    ref = VPDenoiser(tiny_unet, ac)(x, sigma, cond)
    assert ref.dtype == torch.float32
    assert VPDenoiser(tiny_unet, ac)(x.double(), sigma.double(), cond).dtype == torch.float32
    bf16 = VPDenoiser(copy.deepcopy(tiny_unet).to(torch.bfloat16), ac, dtype=torch.bfloat16)
    low = bf16(x, sigma, cond)
    assert low.dtype == torch.float32
    assert torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.2 * ref.abs().max()  # same function, lower precision


def test_conditional_unet_requires_context(tiny_unet):
    den = VPDenoiser(tiny_unet, sd_scheduler().alphas_cumprod)
    with pytest.raises(ValueError, match="context"):
        den(torch.zeros(1, 4, 8, 8), torch.ones(1), None)
    with pytest.raises(ValueError, match="sigma_to_t"):
        VPDenoiser(tiny_unet, sd_scheduler().alphas_cumprod, sigma_to_t="linear")


def test_snap_is_the_official_linear_rule_with_the_snapped_sigma(tiny_unet, generator):
    """adapt_sd.py: j = argmin |sigma - us| (linear), then D = x - us[j] eps(x / sqrt(1 + us[j]^2); t_j). Between
    ticks a < b, sigmas in (sqrt(ab), (a + b) / 2) are nearer b in log but nearer a in linear sigma."""
    spy = SpyUNet(tiny_unet)
    den = VPDenoiser(spy, sd_scheduler().alphas_cumprod, sigma_to_t="snap")
    a, b = float(den.sigmas[700]), float(den.sigmas[701])
    sigma = torch.tensor([(math.sqrt(a * b) + (a + b) / 2) / 2])
    assert VPDenoiser(tiny_unet, sd_scheduler().alphas_cumprod).sigma_to_t(sigma).tolist() == [701]
    x = torch.randn(1, 4, 8, 8, generator=generator) * 3
    d = den(x, sigma, context(1, generator))
    sample, t, f = spy.calls[-1]
    assert t.tolist() == [700]
    torch.testing.assert_close(sample, x / math.sqrt(1 + a**2), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(d, x - a * f, rtol=1e-5, atol=1e-5)
    on_tick = den.sigmas[[10, 500]]  # identical to 'nearest' on the ticks themselves
    assert den.sigma_to_t(on_tick).tolist() == [10, 500]
