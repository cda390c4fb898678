"""The regularisers are finite (value and gradient) on every input, the empty and saturated fields and a
non-positive centre-depth gap included; the -log continuation below eps is C^1."""
import math

import pytest
import torch

from sjc_dist.optim.losses import EmptinessConfig, center_depth, emptiness, emptiness_weight, safe_neg_log


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
