"""The Denoiser contract, one parametrised suite over every Denoiser (diffusers' SchedulerCommonTest idea):

D(x [B, C, H, W], sigma [B], cond) -> x0_hat [B, C, H, W] float32; each sample sees its own sigma; a sample's
result does not depend on the rest of the batch; D(x, sigma -> small) ~= x for data-like x; the denoiser is
frozen (no parameter requires or receives grad). The embedded toy model joins in the slow suite.
"""
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from diffusers import DDPMScheduler

from sjc_dist.diffusion.cfg import CFGDenoiser
from sjc_dist.diffusion.denoiser import Cond, Denoiser
from sjc_dist.diffusion.empirical import EmpiricalDenoiser
from sjc_dist.diffusion.load import TOY_WEIGHTS
from sjc_dist.diffusion.vp_adapter import VPDenoiser


@dataclass
class Case:
    """A denoiser under test, how to condition B samples, data-like inputs, and its trainable modules."""

    denoiser: Denoiser
    cond: Callable[[int], Cond | None]
    data: Callable[[int, torch.Generator], torch.Tensor]
    modules: list
    small_sigma_tol: float  # relative |D(x, sigma_min) - x| / |x| allowed for data-like x


def uniform_data(channels: int, size: int):
    return lambda b, gen: torch.rand(b, channels, size, size, generator=gen) * 2 - 1


def text_cond(model, guided: bool):
    def cond(b: int) -> Cond:
        c = model.text.cond(["a red cube", "a blue sphere"] * (b // 2) + ["a red cube"] * (b % 2), "", 7.5)
        return c if guided else c.without_guidance()
    return cond


def case_vp_pixel(request) -> Case:
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    den = VPDenoiser(request.getfixturevalue("tiny_pixel_unet"), sched.alphas_cumprod)
    return Case(den, lambda b: None, uniform_data(3, 8), [den.unet], 0.1)


def case_vp_latent(request) -> Case:
    model = request.getfixturevalue("tiny_model")  # through the real loader
    return Case(model.denoiser.inner, text_cond(model, False), uniform_data(4, 8), [model.denoiser.inner.unet], 0.1)


def case_cfg(request) -> Case:
    model = request.getfixturevalue("tiny_model")
    assert isinstance(model.denoiser, CFGDenoiser)
    return Case(model.denoiser, text_cond(model, True), uniform_data(4, 8), [model.denoiser.inner.unet], 0.1)


def case_empirical(request) -> Case:
    data = request.getfixturevalue("empirical_data")
    den = EmpiricalDenoiser(data)
    pick = lambda b, gen: data[torch.randint(len(data), (b,), generator=gen)]  # noqa: E731 - the data points
    return Case(den, lambda b: None, pick, [], 1e-5)


def case_toy(request) -> Case:
    model = request.getfixturevalue("toy_model")
    den = model.denoiser
    return Case(den, text_cond(model, True), uniform_data(den.channels, den.size), [den.inner.unet], 0.1)


CASES = [
    pytest.param(case_vp_pixel, id="vp_pixel"),
    pytest.param(case_vp_latent, id="vp_latent"),
    pytest.param(case_cfg, id="cfg"),
    pytest.param(case_empirical, id="empirical"),
    # a 6.6M-parameter UNet at 32x32: seconds per CPU forward, so in the slow suite (pytest -m slow)
    pytest.param(case_toy, id="toy", marks=[pytest.mark.slow, pytest.mark.skipif(
        not (TOY_WEIGHTS / "unet").is_dir(), reason="toy weights not trained yet")]),
]


@pytest.fixture(params=CASES)
def case(request) -> Case:
    return request.param(request)


def spread_sigmas(den: Denoiser, b: int) -> torch.Tensor:
    """b sigmas log-spaced over the denoiser's whole range."""
    return torch.logspace(torch.log10(torch.tensor(den.sigma_min)), torch.log10(torch.tensor(den.sigma_max)), b)


def assert_same_sample(a: torch.Tensor, b: torch.Tensor, sigma: float) -> None:
    """Equal up to float32 noise in the network output, which D carries multiplied by c_out ~ sigma."""
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * max(1.0, sigma))


def test_shape_and_float32(case, generator):
    x = case.data(4, generator)
    out = case.denoiser(x, spread_sigmas(case.denoiser, 4), case.cond(4))
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert (case.denoiser.channels, case.denoiser.size) == tuple(x.shape[1:3])
    assert 0 < case.denoiser.sigma_min < case.denoiser.sigma_max


def test_each_sample_sees_its_own_sigma(case, generator):
    x, cond = case.data(4, generator), case.cond(4)
    sigma = spread_sigmas(case.denoiser, 4)
    base = case.denoiser(x, sigma, cond)
    other = sigma.clone()
    other[1:] = sigma[1:].flip(0)  # sample 0 keeps its sigma, the others change
    moved = case.denoiser(x, other, cond)
    assert_same_sample(moved[0], base[0], float(sigma[0]))
    assert not torch.allclose(moved[1], base[1], atol=1e-4)  # and sigma does matter


def test_batch_invariance(case, generator):
    x, cond = case.data(4, generator), case.cond(4)
    sigma = spread_sigmas(case.denoiser, 4)
    full = case.denoiser(x, sigma, cond)
    for i in range(4):
        one_cond = cond.select(slice(i, i + 1)) if cond is not None else None
        one = case.denoiser(x[i:i + 1], sigma[i:i + 1], one_cond)
        assert_same_sample(one[0], full[i], float(sigma[i]))


def test_small_sigma_is_nearly_identity(case, generator):
    x = case.data(4, generator)
    out = case.denoiser(x, torch.full((4,), case.denoiser.sigma_min), case.cond(4))
    assert float((out - x).norm() / x.norm()) < case.small_sigma_tol


def test_frozen_no_grad_reaches_parameters(case, generator):
    params = [p for m in case.modules for p in m.parameters()]
    assert not any(p.requires_grad for p in params)
    x = case.data(2, generator).requires_grad_(True)
    out = case.denoiser(x, spread_sigmas(case.denoiser, 2), case.cond(2))
    if out.requires_grad:  # gradients may flow to x (score-through-UNet users), never into the model
        out.sum().backward()
    assert all(p.grad is None for p in params)
    with torch.inference_mode():  # and it needs no autograd at all
        out = case.denoiser(x.detach(), spread_sigmas(case.denoiser, 2), case.cond(2))
    assert torch.isfinite(out).all()
