"""VoxelField queries (grid values at voxel centres, zero density outside the box) and Background kinds."""
import torch
import torch.nn.functional as F

from sjc_dist.scene.background import Background, BackgroundConfig
from sjc_dist.scene.field import FieldConfig, VoxelField
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
