"""VoxelField queries (grid values at voxel centres, zero density outside the box), coarse-to-fine sizes and
resampling, and Background kinds with the official N(0, 1) texture start."""
import pytest
import torch
import torch.nn.functional as F

from sjc_dist.errors import ConfigError
from sjc_dist.scene.background import Background, BackgroundConfig
from sjc_dist.scene.field import FieldConfig, VoxelField, resample_grid
from sjc_dist.toyworld.shapes import grid_points


def test_query_at_voxel_centres_returns_activated_grid(generator):
    field = VoxelField(FieldConfig(grid_size=5, bbox_len=0.8, density_shift=-1.0), channels=3, generator=generator)
    with torch.no_grad():
        field.grid[0, 0] = torch.randn(5, 5, 5, generator=generator)
    tau, feat = field.query(grid_points(5, 0.8))  # [z, y, x] order, like the grid
    torch.testing.assert_close(tau, F.softplus(field.grid[0, 0] - 1.0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(feat, field.grid[0, 1:].permute(1, 2, 3, 0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(field.density_grid(), F.softplus(field.grid[0, 0] - 1.0))


def test_no_density_outside_the_box():
    field = VoxelField(FieldConfig(grid_size=4, density_shift=5.0), channels=4)
    tau, _ = field.query(torch.tensor([[1.01, 0, 0], [0, 0, -1.2], [0.99, 0.99, 0.99]]))
    assert tau[0] == 0 and tau[1] == 0 and tau[2] > 4


def test_tanh_features_are_bounded(generator):
    field = VoxelField(FieldConfig(grid_size=4, feature_activation="tanh", init_feature_std=10.0), 3, generator)
    assert field.feature_grid().abs().max() <= 1.0


def test_background_kinds():
    dirs = F.normalize(torch.randn(5, 7, 3, generator=torch.Generator().manual_seed(0)), dim=-1)
    solid = Background(BackgroundConfig(kind="solid", value=0.3), 4)
    assert not solid.texture.requires_grad
    torch.testing.assert_close(solid(dirs), torch.full((5, 7, 4), 0.3))
    texture = Background(BackgroundConfig(kind="texture", texture_hw=4), 3)
    assert texture.texture.requires_grad and texture.texture.shape == (1, 3, 4, 4)
    assert texture(dirs).shape == (5, 7, 3)


def test_texture_background_starts_at_the_official_normal():
    """voxnerf: bg = torch.randn(1, c, hw, hw); here N(value, init_std^2) from the scene's generator."""
    cfg = BackgroundConfig(kind="texture", texture_hw=64, value=0.0, init_std=1.0)
    tex = Background(cfg, 4, torch.Generator().manual_seed(0)).texture.detach()
    assert abs(float(tex.mean())) < 0.05 and abs(float(tex.std()) - 1.0) < 0.05
    again = Background(cfg, 4, torch.Generator().manual_seed(0)).texture.detach()
    torch.testing.assert_close(tex, again)
    flat = Background(BackgroundConfig(kind="texture", value=0.2, init_std=0.0), 3).texture
    torch.testing.assert_close(flat.detach(), torch.full((1, 3, 4, 4), 0.2))
    assert not Background(BackgroundConfig(kind="solid", init_std=1.0), 3).texture.detach().std() > 0


def test_coarse_to_fine_sizes_grow_log_linearly():
    """TensoRF's rule: sides exp(linspace(log N0, log N, m + 1)); stage j + 1 from step floor(a_j * steps)."""
    import math

    cfg = FieldConfig(grid_size=100, coarse_size=25, upsample_at=(0.2, 0.4))
    assert cfg.sizes() == [25, round(math.exp((math.log(25) + math.log(100)) / 2)), 100] == [25, 50, 100]
    assert [cfg.size_at(s, 10) for s in (0, 1, 2, 3, 4, 9)] == [25, 25, 50, 50, 100, 100]
    assert FieldConfig(grid_size=64).sizes() == [64] and FieldConfig(grid_size=64).size_at(0, 10) == 64
    assert FieldConfig(grid_size=9, coarse_size=5, upsample_at=(0.99,)).size_at(9, 10) == 9  # always reached


@pytest.mark.parametrize("bad", [{"coarse_size": 100}, {"coarse_size": 1}, {"upsample_at": ()},
                                 {"upsample_at": (0.5, 0.3)}, {"upsample_at": (1.0,)}])
def test_coarse_to_fine_config_is_checked(bad):
    with pytest.raises(ConfigError, match="field.coarse_size|field.upsample_at"):
        FieldConfig(**{"grid_size": 100, "coarse_size": 25, **bad})


def test_resampled_grid_keeps_the_field_at_world_points(generator):
    field = VoxelField(FieldConfig(grid_size=9, coarse_size=5, upsample_at=(0.5,)), 3, generator, size=5)
    assert field.size == 5 and field.cfg.grid_size == 5
    with torch.no_grad():
        field.grid.normal_(generator=generator)
    pts = torch.rand(50, 3, generator=generator) * 1.8 - 0.9
    tau, feat = field.query(pts)
    field.set_grid(resample_grid(field.grid, 9))
    assert field.size == 9 and field.cfg.grid_size == 9
    tau9, feat9 = field.query(pts)  # trilinear of a trilinear refinement: the same piecewise-linear field
    torch.testing.assert_close(tau9, tau, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(feat9, feat, rtol=1e-4, atol=1e-5)
