"""The Guidance contract over PAAS (var_red and plain) and SDS, on the exact empirical denoiser and on the
tiny CFG-wrapped diffusers model: the update has the target's shape, is finite at both sigma extremes, equals
its closed form in the drawn noise (var_red: n - eps_hat, plain: -eps_hat, SDS: sigma^2/(1+sigma^2)(n - eps_hat)),
no gradient reaches the denoiser, and `chain` has gradient -update w.r.t. the target.
"""
import copy

import pytest
import torch
from diffusers import DDPMScheduler

from sjc_dist.diffusion.denoiser import Cond, append_dims
from sjc_dist.diffusion.empirical import EmpiricalDenoiser
from sjc_dist.diffusion.vp_adapter import VPDenoiser
from sjc_dist.guidance.base import GuidanceConfig, chain, make_guidance

KINDS = [("paas", "var_red"), ("paas", "plain"), ("sds", "var_red")]


def closed_form(kind: str, estimator: str, noise, eps_hat, sigma):
    s = append_dims(sigma, noise.ndim)
    if kind == "sds":
        return s**2 / (1 + s**2) * (noise - eps_hat)
    return noise - eps_hat if estimator == "var_red" else -eps_hat


@pytest.fixture(params=["empirical", "cfg"])
def setup(request):
    """(denoiser, cond for B=2, image [2, C, H, W])."""
    gen = torch.Generator().manual_seed(7)
    if request.param == "empirical":
        den = EmpiricalDenoiser(request.getfixturevalue("empirical_data"))
        return den, Cond(), torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    model = request.getfixturevalue("tiny_model")
    return model.denoiser, model.text.cond(["a red cube", "a green torus"], "", 7.5), torch.randn(2, 4, 8, 8,
                                                                                                generator=gen)


@pytest.mark.parametrize("kind,estimator", KINDS)
def test_update_is_its_closed_form(setup, kind, estimator):
    den, cond, image = setup
    g = make_guidance(den, GuidanceConfig(kind=kind, estimator=estimator))
    sigma = torch.tensor([0.3, 4.0])
    out = g(image.clone().requires_grad_(True), cond, sigma, torch.Generator().manual_seed(3))
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(3))  # the same draw
    z = image + append_dims(sigma, 4) * noise
    eps_hat = (z - den(z, sigma, cond)) / append_dims(sigma, 4)
    torch.testing.assert_close(out.update, closed_form(kind, estimator, noise, eps_hat, sigma), rtol=1e-4, atol=1e-4)
    assert out.update.shape == out.target.shape == image.shape
    assert not out.update.requires_grad


@pytest.mark.parametrize("kind,estimator", KINDS)
def test_finite_at_sigma_extremes_and_chain_gradient(setup, kind, estimator):
    den, cond, image = setup
    g = make_guidance(den, GuidanceConfig(kind=kind, estimator=estimator))
    y = image.clone().requires_grad_(True)
    out = g(y, cond, torch.tensor([den.sigma_min, den.sigma_max]), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.update).all()
    (grad,) = torch.autograd.grad(chain(out), y)
    torch.testing.assert_close(grad, -out.update)


@pytest.mark.parametrize("kind", ["paas", "sds"])
def test_no_gradient_reaches_denoiser_even_if_trainable(tiny_unet, kind, generator):
    unet = copy.deepcopy(tiny_unet).requires_grad_(True)  # the guidance, not the loader, must keep it out
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    g = make_guidance(VPDenoiser(unet, sched.alphas_cumprod), GuidanceConfig(kind=kind))
    y = torch.randn(2, 4, 8, 8, generator=generator).requires_grad_(True)
    out = g(y, Cond(context=torch.randn(2, 5, 16, generator=generator)), torch.tensor([0.5, 5.0]), generator)
    chain(out).backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
    assert all(p.grad is None for p in unet.parameters())


def test_n_noise_averages_independent_draws(empirical_data):
    den = EmpiricalDenoiser(empirical_data)
    image, sigma = empirical_data[:2] * 0.5, torch.tensor([0.5, 2.0])
    g = make_guidance(den, GuidanceConfig(kind="paas", n_noise=3))
    out = g(image, Cond(), sigma, torch.Generator().manual_seed(5))
    noise = torch.randn(6, *image.shape[1:], generator=torch.Generator().manual_seed(5))  # draw-major [3 * B]
    y, s = image.repeat(3, 1, 1, 1), sigma.repeat(3)
    z = y + append_dims(s, 4) * noise
    per_draw = (den(z, s) - y) / append_dims(s, 4)
    torch.testing.assert_close(out.update, per_draw.reshape(3, 2, *image.shape[1:]).mean(0), rtol=1e-5, atol=1e-5)


def test_through_vae_target_is_the_encoded_render(tiny_model, generator):
    g = make_guidance(tiny_model.denoiser, GuidanceConfig(kind="sds", through_vae=True), tiny_model.encode)
    rgb = (torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1).requires_grad_(True)
    cond = tiny_model.text.cond(["a red cube"], "", 7.5)
    out = g(rgb, cond, torch.tensor([2.0]), generator)
    assert out.target.shape == out.update.shape == (1, 4, 8, 8)
    (grad_target,) = torch.autograd.grad(chain(out), out.target, retain_graph=True)
    torch.testing.assert_close(grad_target, -out.update)
    chain(out).backward()  # and on through the encoder's Jacobian into the RGB render
    assert rgb.grad is not None and torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny_model.vae.parameters())
