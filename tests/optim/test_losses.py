"""The regularisers are finite (value and gradient) on every input, the empty and saturated fields and a
non-positive centre-depth gap included; the -log continuation below eps is C^1. The emptiness term of the `sd`
preset is the official code's: mean over the samples of the view's longest ray, checked against that formula
computed here in float64 numpy after voxnerf's ray_box_intersect."""
import math

import numpy as np
import pytest
import torch

from sjc_dist.optim.losses import (
    EmptinessConfig,
    center_depth,
    emptiness,
    emptiness_weight,
    longest_ray_samples,
    safe_neg_log,
)


def value_and_grad(fn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    value = fn(x)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


@pytest.mark.parametrize("fill", [0.0, 1.0, 0.5])
def test_emptiness_finite_on_empty_saturated_and_between(fill):
    w = torch.full((2, 16, 9), fill)
    value, grad = value_and_grad(lambda t: emptiness(t, 10.0), w)
    assert value == pytest.approx(math.log1p(10.0 * fill), rel=1e-6)
    assert torch.isfinite(grad).all()
    torch.testing.assert_close(grad, torch.full_like(w, 10.0 / (1 + 10.0 * fill) / w.numel()))


def test_emptiness_schedule_switches_at_k():
    cfg = EmptinessConfig(lambda1=1e4, lambda2=2e5, k=0.5)
    assert [emptiness_weight(cfg, s, 10) for s in (0, 4, 5, 9)] == [1e4, 1e4, 2e5, 2e5]


def depth_map(centre: float, border: float, size: int = 8) -> torch.Tensor:
    d = torch.full((2, 1, size, size), border)
    d[..., 2:6, 2:6] = centre
    return d


@pytest.mark.parametrize("centre,border", [(1.0, 10.0), (10.0, 10.0), (10.0, 1.0), (5.0, 5.0 + 1e-5)])
def test_center_depth_finite_for_any_gap(centre, border):
    value, grad = value_and_grad(lambda d: center_depth(d, 0.5, 1e-3), depth_map(centre, border))
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    # descending the loss moves the centre nearer (and the border farther) whatever the gap
    assert grad[..., 3, 3].sum() > 0 and grad[..., 0, 0].sum() < 0


def test_center_depth_value_is_neg_log_of_the_gap():
    value = center_depth(depth_map(2.0, 10.0), 0.5, 1e-3)
    # 16 centre pixels at 2, 48 border pixels at 10
    assert float(value) == pytest.approx(-math.log(10.0 - 2.0), rel=1e-6)


def test_center_depth_of_an_empty_render_is_finite():
    """An empty field renders the background depth everywhere: gap 0."""
    depth = torch.full((1, 1, 8, 8), 10.0)
    value, grad = value_and_grad(lambda d: center_depth(d, 0.78, 1e-3), depth)
    assert float(value) == pytest.approx(-math.log(1e-3) + 1.0)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_safe_neg_log_is_c1_at_eps():
    eps = 1e-3
    x = torch.tensor([eps * (1 - 1e-9), eps, eps * (1 + 1e-9)], dtype=torch.float64)
    value, grad = value_and_grad(lambda t: safe_neg_log(t, eps).sum(), x)
    values = safe_neg_log(x, eps)
    torch.testing.assert_close(values, torch.full((3,), -math.log(eps), dtype=torch.float64), rtol=1e-8, atol=0)
    torch.testing.assert_close(grad, torch.full((3,), -1 / eps, dtype=torch.float64), rtol=1e-6, atol=0)
    # far from eps: -log above, the tangent line (finite, slope -1/eps) below, also for x <= 0
    x = torch.tensor([2.0, 0.0, -3.0], dtype=torch.float64)
    value, grad = value_and_grad(lambda t: safe_neg_log(t, eps).sum(), x)
    torch.testing.assert_close(safe_neg_log(x, eps), torch.tensor([-math.log(2.0), -math.log(eps) + 1,
                                                                    -math.log(eps) + 1 + 3 / eps],
                                                                   dtype=torch.float64))
    torch.testing.assert_close(grad, torch.tensor([-0.5, -1 / eps, -1 / eps], dtype=torch.float64))


@pytest.mark.parametrize("shift", [-1e4, 0.0, 60.0])  # empty (weights exactly 0), partial, saturated
def test_losses_through_a_render_have_finite_gradients(shift):
    from sjc_dist.scene.background import Background, BackgroundConfig
    from sjc_dist.scene.cameras import orbit
    from sjc_dist.scene.field import FieldConfig, VoxelField
    from sjc_dist.scene.render import render

    field = VoxelField(FieldConfig(grid_size=4, density_shift=shift), 3)
    cams = orbit(torch.tensor([0.0, 100.0]), torch.tensor([10.0, 30.0]), torch.full((2,), 1.5), torch.full((2,), 60.0),
                 6, 6)
    out = render(field, Background(BackgroundConfig(), 3), cams, 0.2)
    if shift < -100:
        assert out.weights.abs().max() == 0
    loss = 1e4 * emptiness(out.weights, 10.0) + 10 * center_depth(out.depth, 0.78, 1e-3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(field.grid.grad).all() and torch.isfinite(field.d_scale.grad)


def official_samples(origins: np.ndarray, dirs: np.ndarray, half: float, step: float) -> int:
    """voxnerf: ray_box_intersect (slabs), t clipped at 0, k = int(max(t_max - t_min) / step) + 1."""
    aabb = np.array([[-half, half]] * 3)
    d = dirs.copy()
    d[d == 0] = 1e-6
    ts = (aabb[None] - origins[:, :, None]) / d[:, :, None]  # [n, 3, 2]
    t_min, t_max = np.maximum(ts.min(-1).max(-1), 0), np.maximum(ts.max(-1).min(-1), 0)
    return int((t_max - t_min).max() / step) + 1


def test_emptiness_per_view_normalisation():
    w = torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(0)) * 0.1
    samples = torch.tensor([4.0, 6.0])
    terms = torch.log1p(10 * w)
    want = (terms[0].sum() / (5 * 4) + terms[1].sum() / (5 * 6)) / 2
    torch.testing.assert_close(emptiness(w, 10.0, samples), want)
    torch.testing.assert_close(emptiness(w, 10.0), terms.mean())  # 'box': over the renderer's 7 samples


def test_sd_preset_emptiness_is_the_official_formula(tiny_pipeline, tiny_model):
    from sjc_dist.config import load_config
    from sjc_dist.optim.joint import view_samples
    from sjc_dist.optim.run import SJCRun

    cfg = load_config("sd", [f"model.name={tiny_pipeline}", "model.device=cpu", "prompt.text=a red cube",
                             "field.grid_size=12", "output.progress=false"])
    assert cfg.emptiness.normalize == "ray" and cfg.render.step == 0.01
    run = SJCRun(cfg, tiny_model)
    cams = run.scene.cameras.sample(cfg.render.views_per_step, run.cpu_gen)
    p = run.begin((run.scene.render(cams), cams))
    o, d = (t.double().numpy()[0] for t in cams.rays())
    k = official_samples(o, d, cfg.field.bbox_len, cfg.render.step)
    assert k <= p.render.weights.shape[-1]  # the renderer's samples cover the longest ray
    ws = p.render.weights[0].detach().double().numpy()  # [R, S]; samples past the exit carry w = 0
    official = np.log1p(cfg.emptiness.beta * ws).sum() / (k * ws.shape[0])  # ws [k, n].mean() of run_sjc.py
    got = float(run.loss_terms(p, torch.zeros_like(p.target))["emptiness"].detach()) / cfg.emptiness.lambda1
    assert got == pytest.approx(official, rel=1e-6)
    samples = view_samples([run], p.render, 1)  # from the render's chord
    assert int(longest_ray_samples(*cams.rays(), 1.0, 0.01)) == k == int(samples)
    box = load_config("sd", [f"model.name={tiny_pipeline}", "prompt.text=a red cube", "emptiness.normalize=box"])
    assert view_samples([SJCRun(box, tiny_model)], p.render, 1) is None  # 'box' keeps the renderer's fixed count
