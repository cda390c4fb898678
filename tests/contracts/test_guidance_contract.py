"""The Guidance contract over every estimator (PAAS var_red and plain, SDS, CSD, NFSD, ISM; standard CFG and
Perp-Neg), on the exact empirical denoiser and on the tiny CFG-wrapped diffusers model: the update has the
target's shape, is finite at both sigma extremes, equals its paper's closed form in eps (computed here from
separate denoiser calls, not from the guidance's D-space algebra), no gradient reaches the denoiser, `chain` has
gradient -update w.r.t. the target, and the rows the guidance asks for are `evals_per_view`.
"""
import copy
from itertools import pairwise

import pytest
import torch
from diffusers import DDPMScheduler

from sjc_dist.diffusion.denoiser import Cond, append_dims
from sjc_dist.diffusion.empirical import EmpiricalDenoiser
from sjc_dist.diffusion.sigmas import tick_index, tick_table
from sjc_dist.diffusion.vp_adapter import VPDenoiser
from sjc_dist.guidance.base import GuidanceConfig, chain, make_guidance
from sjc_dist.guidance.guided import perpendicular

KINDS = [("paas", "var_red"), ("paas", "plain"), ("sds", "var_red"), ("csd", "var_red"), ("nfsd", "var_red"),
         ("ism", "var_red")]
TEXT_ONLY = {"csd", "nfsd"}
SETTINGS = {"csd": {"csd_negative": 0.5}, "ism": {"ism_steps": 3, "ism_interval": 40}}


def config(kind: str, estimator: str = "var_red", **extra) -> GuidanceConfig:
    return GuidanceConfig(kind=kind, estimator=estimator, **{**SETTINGS.get(kind, {}), **extra})


def eps(den, x, sigma, context):
    """The paper's eps(x; sigma, prompt) = (x - D(x; sigma, prompt)) / sigma, one plain denoiser call."""
    return (x - den(x, sigma, Cond(context=context))) / append_dims(sigma, x.ndim)


def sds_w(sigma, ndim):
    s = append_dims(sigma, ndim)
    return s**2 / (1 + s**2)


def ism_closed_form(den, cfg, y, noise, sigma, cond):
    """LucidDreamer's ISM with K equal inversion strides from tick 0, by explicit DDIM (eta = 0) steps."""
    table = tick_table(den.sigmas, den.sigma_min, den.sigma_max)
    s_idx = (tick_index(table, sigma) - cfg.ism_interval).clamp_min(0)
    levels = [table[torch.round(s_idx.float() * i / cfg.ism_steps).long()] for i in range(cfg.ism_steps + 1)]
    x = y + append_dims(levels[0], 4) * noise
    for a, b in pairwise(levels):
        x = x + append_dims(b - a, 4) * eps(den, x, a, cond.uncond)
    eps_s = eps(den, x, levels[-1], cond.uncond)
    x_t = x + append_dims(sigma - levels[-1], 4) * eps_s
    e_u, e_c = eps(den, x_t, sigma, cond.uncond), eps(den, x_t, sigma, cond.context)
    w = append_dims(cond.weight, 4) if cond.weight is not None else 1.0
    eps_cfg = e_u if cond.context is None else e_u + w * (e_c - e_u)
    return sds_w(sigma, 4) * (eps_s - eps_cfg)


def closed_form(den, cfg, y, noise, sigma, cond):
    """Each estimator's update (the negative of its paper's gradient) from separate denoiser calls."""
    if cfg.kind == "ism":
        return ism_closed_form(den, cfg, y, noise, sigma, cond)
    z = y + append_dims(sigma, 4) * noise
    e_u = eps(den, z, sigma, cond.uncond)
    if cond.context is None:  # no text: no guidance
        e_cfg = e_u
    else:
        e_c, w = eps(den, z, sigma, cond.context), append_dims(cond.weight, 4)
        e_cfg = e_u + w * (e_c - e_u)
    if cfg.kind == "paas":
        return noise - e_cfg if cfg.estimator == "var_red" else -e_cfg
    if cfg.kind == "sds":
        return sds_w(sigma, 4) * (noise - e_cfg)
    e_n = eps(den, z, sigma, cond.negative)
    if cfg.kind == "csd":  # gradient w(t) w [(e_c - e_u) - c (e_n - e_u)]
        return -sds_w(sigma, 4) * w * ((e_c - e_u) - cfg.csd_negative * (e_n - e_u))
    t = tick_index(tick_table(den.sigmas, den.sigma_min, den.sigma_max), sigma)  # nfsd: w(t) (delta_D + s delta_C)
    delta_d = torch.where(append_dims(t < cfg.nfsd_t, 4), e_u, e_u - e_n)
    return -sds_w(sigma, 4) * (delta_d + w * (e_c - e_u))


@pytest.fixture(params=["empirical", "cfg"])
def setup(request):
    """(the plain denoiser, the guidance's denoiser, cond for B=2 with a negative prompt, image [2, C, H, W])."""
    gen = torch.Generator().manual_seed(7)
    if request.param == "empirical":
        den = EmpiricalDenoiser(request.getfixturevalue("empirical_data"))
        return den, den, Cond(), torch.rand(2, 3, 8, 8, generator=gen) * 2 - 1
    model = request.getfixturevalue("tiny_model")
    cond = model.text.cond(["a red cube", "a green torus"], "", 7.5, extra_negative="blurry")
    return model.denoiser.inner, model.denoiser, cond, torch.randn(2, 4, 8, 8, generator=gen)


@pytest.mark.parametrize("kind,estimator", KINDS)
def test_update_is_its_closed_form(setup, kind, estimator):
    plain, den, cond, image = setup
    if kind in TEXT_ONLY and cond.context is None:
        pytest.skip(f"{kind} needs a text model")
    cfg = config(kind, estimator)
    g = make_guidance(den, cfg)
    sigma = torch.tensor([0.3, 4.0])
    out = g(image.clone().requires_grad_(True), cond, sigma, torch.Generator().manual_seed(3))
    noise = torch.randn(image.shape, generator=torch.Generator().manual_seed(3))  # the same draw
    torch.testing.assert_close(out.update, closed_form(plain, cfg, image, noise, sigma, cond), rtol=1e-4, atol=1e-4)
    assert out.update.shape == out.target.shape == image.shape
    assert not out.update.requires_grad


@pytest.mark.parametrize("kind,estimator", KINDS)
def test_finite_at_sigma_extremes_and_chain_gradient(setup, kind, estimator):
    _, den, cond, image = setup
    if kind in TEXT_ONLY and cond.context is None:
        pytest.skip(f"{kind} needs a text model")
    g = make_guidance(den, config(kind, estimator))
    y = image.clone().requires_grad_(True)
    out = g(y, cond, torch.tensor([den.sigma_min, den.sigma_max]), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.update).all()
    (grad,) = torch.autograd.grad(chain(out), y)
    torch.testing.assert_close(grad, -out.update)


@pytest.mark.parametrize("kind,extra,evals", [
    ("paas", {}, 2), ("sds", {}, 2), ("csd", {"csd_negative": 0.0}, 2), ("csd", {"csd_negative": 1.0}, 3),
    ("nfsd", {}, 3), ("ism", {"ism_steps": 4}, 4 + 3), ("sds", {"cfg": "perp_neg"}, 4),
    ("ism", {"ism_steps": 2, "cfg": "perp_neg"}, 2 + 1 + 4), ("paas", {"n_noise": 3}, 6)])
def test_rows_requested_are_evals_per_view(tiny_model, kind, extra, evals, counting):
    den = counting(tiny_model.denoiser)
    g = make_guidance(den, GuidanceConfig(kind=kind, **extra))
    text = tiny_model.text
    cond = text.perp_neg("a red cube", [10.0, 130.0, -60.0], "{view} view of {prompt}", "", 7.5, "blurry") \
        if g.cfg.cfg == "perp_neg" else text.cond(["a red cube"] * 3, "", 7.5, "blurry")
    g(torch.randn(3, 4, 8, 8), cond, torch.tensor([0.5, 2.0, 8.0]), torch.Generator().manual_seed(0))
    assert g.evals_per_view() == evals
    assert sum(den.batches) == 3 * evals  # 3 views
    assert len(den.batches) == (g.cfg.ism_steps + 2 if kind == "ism" else 1)  # passes, each one call for the batch


def test_textless_model_evaluates_one_row_per_pass(empirical_data, counting):
    den = counting(EmpiricalDenoiser(empirical_data))
    for kind, evals in (("sds", 1), ("ism", 5 + 2)):
        den.batches.clear()
        g = make_guidance(den, GuidanceConfig(kind=kind))
        g(empirical_data[:2], Cond(), torch.tensor([0.5, 2.0]), torch.Generator().manual_seed(0))
        assert g.evals_per_view(text=False) == evals and sum(den.batches) == 2 * evals


def test_perp_neg_is_its_closed_form(tiny_model):
    """Perp-Neg in the paper's eps form: eps_u + w [(e_p - e_u) + sum_k w_k perp(e_k - e_u, e_p - e_u)]."""
    plain, text = tiny_model.denoiser.inner, tiny_model.text
    cond = text.perp_neg("a red cube", [30.0, 150.0], "{view} view of {prompt}", "", 7.5)
    y, sigma = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([1.0, 3.0])
    out = make_guidance(tiny_model.denoiser, GuidanceConfig(kind="sds", cfg="perp_neg"))(
        y, cond, sigma, torch.Generator().manual_seed(2))
    noise = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    z = y + append_dims(sigma, 4) * noise
    e_u, e_p = eps(plain, z, sigma, cond.uncond), eps(plain, z, sigma, cond.context)
    delta = e_p - e_u
    for k in range(2):
        e_k = eps(plain, z, sigma, cond.views[:, k])
        delta = delta + append_dims(cond.view_weight[:, k], 4) * perpendicular(e_k - e_u, e_p - e_u)
    want = sds_w(sigma, 4) * (noise - (e_u + 7.5 * delta))
    torch.testing.assert_close(out.update, want, rtol=1e-4, atol=1e-4)


def test_perpendicular_is_orthogonal():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 4, 5, 5, generator=gen), torch.randn(3, 4, 5, 5, generator=gen)
    p = perpendicular(a, b)
    torch.testing.assert_close((p * b).sum((1, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(perpendicular(b, b), torch.zeros_like(b), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["paas", "sds", "csd", "nfsd", "ism"])
def test_no_gradient_reaches_denoiser_even_if_trainable(tiny_unet, kind, generator):
    unet = copy.deepcopy(tiny_unet).requires_grad_(True)  # the guidance, not the loader, must keep it out
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    g = make_guidance(VPDenoiser(unet, sched.alphas_cumprod), config(kind, ism_steps=1))
    y = torch.randn(2, 4, 8, 8, generator=generator).requires_grad_(True)
    c = torch.randn(3, 2, 5, 16, generator=generator)
    out = g(y, Cond(context=c[0], uncond=c[1], negative=c[2]), torch.tensor([0.5, 5.0]), generator)
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
