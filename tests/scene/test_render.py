"""Volume rendering against closed forms: a uniform box of density tau along an axis-aligned ray has opacity
1 - exp(-tau L) (L the path length inside the box) and colour op * c + (1 - op) * background; ray-box entry and
exit distances; and float64 gradcheck of the whole renderer w.r.t. the grid, d_scale and background texture.
"""
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sjc_dist.scene.background import Background, BackgroundConfig
from sjc_dist.scene.cameras import Cameras, orbit
from sjc_dist.scene.field import FieldConfig, VoxelField
from sjc_dist.scene.render import n_samples, ray_box, render, render_many


def uniform_field(tau: float, colour: float, half: float, n: int = 4) -> VoxelField:
    """Density tau and feature value `colour` everywhere in [-half, half]^3 (raw = softplus^-1(tau))."""
    field = VoxelField(FieldConfig(grid_size=n, bbox_len=half, density_shift=0.0, init_feature_std=0.0), channels=3)
    with torch.no_grad():
        field.grid[0, 0] = math.log(math.expm1(tau))
        field.grid[0, 1:] = colour
    return field


def camera_at_origin() -> Cameras:
    """One pixel, at the origin (inside the box), looking down -z."""
    return Cameras(torch.eye(4)[None], torch.tensor([1.0]), torch.zeros(1), torch.zeros(1), 1, 1)


BG = 0.25


@pytest.mark.parametrize("half,step,tau", [(1.0, 0.1, 0.7), (0.5, 0.05, 3.0), (1.0, 0.02, 0.05)])
@pytest.mark.parametrize("where", ["outside", "inside"])
@torch.no_grad()
def test_uniform_box_opacity_and_colour(half, step, tau, where):
    field = uniform_field(tau, colour=0.8, half=half)
    bg = Background(BackgroundConfig(kind="solid", value=BG), 3)
    if where == "outside":  # on the x axis at distance 3 looking at the origin: the ray crosses the whole box
        cams = orbit(torch.zeros(1), torch.zeros(1), torch.full((1,), 3.0), torch.full((1,), 60.0), 1, 1)
        length = 2 * half
    else:  # from the centre: only the half from the origin to the face
        cams, length = camera_at_origin(), half
    out = render(field, bg, cams, step)
    opacity = 1 - math.exp(-tau * length)
    assert float(out.opacity) == pytest.approx(opacity, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(out.image.flatten(), torch.full((3,), opacity * 0.8 + (1 - opacity) * BG),
                               rtol=1e-5, atol=1e-6)
    assert out.image.shape == (1, 3, 1, 1) and out.depth.shape == out.opacity.shape == (1, 1, 1, 1)
    assert out.weights.shape == (1, 1, n_samples(half, step))


@torch.no_grad()
def test_opaque_box_depth_is_distance_to_its_face():
    field = uniform_field(500.0, colour=0.0, half=1.0)
    bg = Background(BackgroundConfig(kind="solid", depth=10.0), 3)
    cams = orbit(torch.zeros(1), torch.zeros(1), torch.full((1,), 3.0), torch.full((1,), 60.0), 1, 1)
    out = render(field, bg, cams, 0.01)
    assert float(out.opacity) == pytest.approx(1.0, abs=1e-6)
    assert 2.0 <= float(out.depth) <= 2.01  # the face x = 1 is 2 away; first sample half a step behind it


@torch.no_grad()
def test_empty_field_shows_background():
    field = uniform_field(1e-30, colour=0.5, half=1.0)
    bg = Background(BackgroundConfig(kind="solid", value=-0.5, depth=7.0), 3)
    cams = orbit(torch.tensor([0.0, 90.0]), torch.tensor([10.0, 80.0]), torch.full((2,), 1.5), torch.full((2,), 50.0),
                 3, 3)
    out = render(field, bg, cams, 0.1)
    torch.testing.assert_close(out.image, torch.full((2, 3, 3, 3), -0.5))
    torch.testing.assert_close(out.depth, torch.full((2, 1, 3, 3), 7.0))


def test_ray_box_hits_and_misses():
    o = torch.tensor([[3.0, 0.0, 0.0], [0.2, 0.1, 0.0], [3.0, 3.0, 0.0], [-2.0, -2.0, -2.0], [0.0, 0.0, 5.0]])
    d = torch.nn.functional.normalize(torch.tensor([[-1.0, 0, 0], [0, 0, 1.0], [-1.0, 0, 0], [1.0, 1, 1], [0, 0, 1.0]]),
                                      dim=-1)
    t_in, t_out = ray_box(o, d, 1.0)
    torch.testing.assert_close(t_in[:2], torch.tensor([2.0, 0.0]))  # enters at the face; starts inside
    torch.testing.assert_close(t_out[:2], torch.tensor([4.0, 1.0]))
    assert t_in[2] == t_out[2]  # passes beside the box
    torch.testing.assert_close(t_in[3], torch.tensor(math.sqrt(3.0)), rtol=1e-5, atol=1e-6)  # through the corner
    torch.testing.assert_close(t_out[3], torch.tensor(3 * math.sqrt(3.0)), rtol=1e-5, atol=1e-6)
    assert t_in[4] == t_out[4] == 0  # box behind the ray


class RenderedScene(nn.Module):
    def __init__(self, field: VoxelField, background: Background, samples: str = "all"):
        super().__init__()
        self.field, self.background, self.samples = field, background, samples

    def forward(self, cams: Cameras, step: float):
        out = render(self.field, self.background, cams, step, self.samples)
        return out.image, out.depth, out.opacity, out.weights


@pytest.mark.parametrize("samples", ["all", "inside"])
def test_render_gradcheck_float64(samples):
    """Every sample rule with exact gradients (`inside`: packed prefix sums and their hand-written backward)."""
    gen = torch.Generator().manual_seed(0)
    field = VoxelField(FieldConfig(grid_size=4, density_shift=0.0, feature_activation="tanh"), 2, gen).double()
    scene = RenderedScene(field, Background(BackgroundConfig(texture_hw=2), 2).double(), samples)
    base = orbit(torch.tensor([20.0]), torch.tensor([25.0]), torch.tensor([2.0]), torch.tensor([50.0]), 2, 2)
    cams = Cameras(base.c2w.double(), base.fov.double(), base.azimuth, base.elevation, 2, 2)
    grid = (torch.randn(1, 3, 4, 4, 4, generator=gen, dtype=torch.float64) * 1.5).requires_grad_(True)
    d_scale = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    texture = torch.randn(1, 2, 2, 2, generator=gen, dtype=torch.float64).requires_grad_(True)

    def f(g, s, t):
        params = {"field.grid": g, "field.d_scale": s, "background.texture": t}
        return torch.func.functional_call(scene, params, (cams, 0.4))

    assert f(grid, d_scale, texture)[2].min() > 0.05  # the rays do cross density
    assert torch.autograd.gradcheck(f, (grid, d_scale, texture), eps=1e-6, atol=1e-6)


def test_render_many_equals_one_render_per_field():
    """K fields with their own cameras, backgrounds (texture and solid, different depths) and d_scale, rendered
    in one pass, give each field's own render and each field's own gradient."""
    gen = torch.Generator().manual_seed(0)
    fields = [VoxelField(FieldConfig(grid_size=6), 3, gen) for _ in range(3)]
    with torch.no_grad():
        for i, f in enumerate(fields):
            f.grid[:, 0].normal_(generator=gen)
            f.d_scale.fill_(0.3 * i)
    bgs = [Background(BackgroundConfig(), 3), Background(BackgroundConfig(kind="solid", value=0.5, depth=4.0), 3),
           Background(BackgroundConfig(value=-0.2), 3)]
    cams = [orbit(torch.rand(2, generator=gen) * 360, torch.rand(2, generator=gen) * 40,
                  torch.full((2,), 2.5), torch.full((2,), 50.0), 5, 5) for _ in fields]
    many = render_many(fields, bgs, cams, 0.1)
    sum(o.image.square().sum() + o.depth.sum() + o.weights.sum() for o in many).backward()
    grads = [f.grid.grad.clone() for f in fields]
    for f in fields:
        f.grid.grad = None
    for f, bg, c, m, g in zip(fields, bgs, cams, many, grads):
        one = render(f, bg, c, 0.1)
        for name in ("image", "depth", "opacity", "weights"):
            torch.testing.assert_close(getattr(m, name), getattr(one, name), msg=name)
        (one.image.square().sum() + one.depth.sum() + one.weights.sum()).backward()
        torch.testing.assert_close(g, f.grid.grad)
    assert not torch.allclose(many[0].image, many[1].image)


def test_render_many_refuses_unequal_view_counts():
    fields = [VoxelField(FieldConfig(grid_size=4), 3) for _ in range(2)]
    bgs = [Background(BackgroundConfig(), 3) for _ in fields]
    cams = [orbit(torch.zeros(n), torch.zeros(n), torch.full((n,), 2.5), torch.full((n,), 50.0), 3, 3)
            for n in (1, 2)]
    with pytest.raises(ValueError, match="same number and size of views"):
        render_many(fields, bgs, cams, 0.1)


def test_render_many_refuses_fields_of_different_shapes():
    fields = [VoxelField(FieldConfig(grid_size=4), 3), VoxelField(FieldConfig(grid_size=5), 3)]
    bgs = [Background(BackgroundConfig(), 3) for _ in fields]
    cams = [orbit(torch.zeros(1), torch.zeros(1), torch.full((1,), 2.5), torch.full((1,), 50.0), 3, 3)] * 2
    with pytest.raises(ValueError, match="one stack_key"):
        render_many(fields, bgs, cams, 0.1)


# --- packed samples: 'inside' is the same function, 'visible' drops colour where w <= 1e-4 -----------------------
def random_batch(activation: str, seed: int = 0, k: int = 3, n: int = 10):
    """K random fields (dense and empty regions, own d_scale), mixed backgrounds, 2 cameras each, some of them
    close enough that parts of the box lie behind them."""
    gen = torch.Generator().manual_seed(seed)
    fields = [VoxelField(FieldConfig(grid_size=n, feature_activation=activation), 3, gen) for _ in range(k)]
    with torch.no_grad():
        for i, f in enumerate(fields):
            f.grid[:, 0].normal_(generator=gen).mul_(4)
            f.d_scale.fill_(0.3 * i - 0.2)
    kinds = [BackgroundConfig(), BackgroundConfig(kind="solid", value=0.5, depth=4.0), BackgroundConfig(value=-0.2)]
    bgs = [Background(kinds[i % 3], 3) for i in range(k)]
    cams = [orbit(torch.rand(2, generator=gen) * 360, torch.rand(2, generator=gen) * 80 - 10,
                  1.2 + torch.rand(2, generator=gen), torch.full((2,), 55.0), 6, 5) for _ in fields]
    return fields, bgs, cams


def rendered_with_grads(fields, bgs, cams, samples: str, colour: bool = True):
    """render_many's outputs and the gradients of a loss on all of them (or on depth, opacity, weights only)."""
    for p in [q for f in fields for q in f.parameters()] + [b.texture for b in bgs]:
        p.grad = None
    outs = render_many(fields, bgs, cams, 0.07, samples)
    probe = torch.linspace(-1, 1, outs[0].image.numel()).reshape(outs[0].image.shape)
    loss = sum(o.depth.sum() + o.opacity.square().sum() + 100 * torch.log1p(10 * o.weights).mean()
               + (o.image * probe).sum() * colour for o in outs)
    loss.backward()
    grads = [p.grad.clone() for f in fields for p in f.parameters()] + [b.texture.grad.clone() for b in bgs
                                                                       if b.texture.requires_grad]
    return outs, grads


def assert_grads_close(got: list, want: list):
    for g, w in zip(got, want):  # float64 prefix sums against float32 ones: relative to the gradient's size
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5 * float(w.abs().max()))


@pytest.mark.parametrize("activation", ["none", "tanh"])
def test_inside_samples_render_like_all_samples(activation):
    fields, bgs, cams = random_batch(activation)
    want, want_grads = rendered_with_grads(fields, bgs, cams, "all")
    got, got_grads = rendered_with_grads(fields, bgs, cams, "inside")
    for w, g in zip(want, got):
        for name in ("image", "depth", "opacity", "weights"):
            torch.testing.assert_close(getattr(g, name), getattr(w, name), rtol=1e-5, atol=1e-5, msg=name)
    assert_grads_close(got_grads, want_grads)
    assert any(float(o.weights.eq(0).float().mean()) > 0.1 for o in want)  # samples past the exit were skipped


def test_inside_samples_of_one_field_and_of_rays_missing_the_box():
    fields, bgs, cams = random_batch("tanh", seed=3, k=1)
    miss = orbit(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([3.0]), torch.tensor([10.0]), 2, 2)
    away = Cameras(miss.c2w.clone(), miss.fov, miss.azimuth, miss.elevation, 2, 2)
    away.c2w[:, :3, 2] *= -1  # looks away from the box: no samples at all
    for c in (cams[0], away):
        want, got = render(fields[0], bgs[0], c, 0.07), render(fields[0], bgs[0], c, 0.07, "inside")
        for name in ("image", "depth", "opacity", "weights"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-5)
    assert float(render(fields[0], bgs[0], away, 0.07, "inside").opacity.detach().abs().max()) == 0.0


@pytest.mark.parametrize("activation", ["none", "tanh"])
def test_visible_samples_drop_only_tiny_weight_colour(activation):
    """Weights, depth and opacity (and their gradients) as with every sample; each pixel's colour within the
    dropped weight times the largest feature magnitude of the grid (trilinear values are convex combinations)."""
    fields, bgs, cams = random_batch(activation, seed=1)
    want, want_grads = rendered_with_grads(fields, bgs, cams, "all", colour=False)
    got, got_grads = rendered_with_grads(fields, bgs, cams, "visible", colour=False)
    assert_grads_close(got_grads, want_grads)
    moved = 0.0
    for f, w, g in zip(fields, want, got):
        for name in ("depth", "opacity", "weights"):
            torch.testing.assert_close(getattr(g, name), getattr(w, name), rtol=1e-5, atol=1e-5, msg=name)
        dropped = torch.where(w.weights <= 1e-4, w.weights, torch.zeros(())).sum(-1)  # [B, R]
        feature_max = float(f.feature_grid().abs().max())
        bound = (dropped * feature_max).reshape(w.opacity.shape) + 1e-6
        assert bool(((g.image - w.image).abs() <= bound).all())
        moved = max(moved, float((g.image - w.image).abs().max()))
    assert moved > 0  # something was dropped: the test has teeth


def test_render_many_refuses_an_unknown_sample_rule():
    fields, bgs, cams = random_batch("none", k=1)
    with pytest.raises(ValueError, match="samples must be one of"):
        render_many(fields, bgs, cams, 0.1, "some")


class ScanShapes(TorchDispatchMode):
    """Records (shape, dim) of every aten cumsum run under it, the backward's included."""

    def __init__(self):
        super().__init__()
        self.scans: list[tuple[tuple[int, ...], int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket is torch.ops.aten.cumsum:
            self.scans.append((tuple(args[0].shape), args[1] % args[0].dim()))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("samples", ["inside", "visible"])
def test_packed_render_scans_are_one_dimensional(samples):
    """A cumsum along a non-last dim of a 2-D tensor runs one serial thread per column on CUDA (seconds at
    millions of samples); every packed scan, forward and backward, must be over a whole 1-D tensor."""
    fields, bgs, cams = random_batch("tanh", seed=2)
    with ScanShapes() as mode:
        rendered_with_grads(fields, bgs, cams, samples)
    assert len(mode.scans) >= 4  # forward and backward scans were seen: the check has teeth
    assert [s for s in mode.scans if math.prod(s[0]) != s[0][s[1]]] == []
