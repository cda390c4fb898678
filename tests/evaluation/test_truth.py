"""Ground truth of the toy world: IoU against hand-made volumes (identical, disjoint, rotated), the yaw search,
centring, colour error, and a field built from the truth itself scoring IoU ~ 1."""
import math

import pytest
import torch

from sjc_dist.evaluation.truth import (best_yaw_iou, color_error, color_floor, iou, surface, transform_volume,
                                       truth_scores)
from sjc_dist.scene.field import FieldConfig, VoxelField
from sjc_dist.toyworld.shapes import COLORS, occupancy

N = 24


def l_shape(n: int = N) -> torch.Tensor:
    """An asymmetric block volume [z, y, x]: a bar along +x and a shorter bar along +y (no yaw symmetry)."""
    v = torch.zeros(n, n, n, dtype=torch.bool)
    v[8:16, 10:14, 10:21] = True
    v[8:16, 14:19, 10:14] = True
    return v


def test_iou_identical_and_disjoint():
    a = l_shape()
    b = torch.zeros_like(a)
    b[0:4, 0:4, 0:4] = True
    assert iou(a, a) == 1.0
    assert iou(a, b) == 0.0
    assert iou(torch.zeros_like(a), torch.zeros_like(a)) == 1.0


def test_iou_half_overlap():
    a = torch.zeros(4, 4, 4, dtype=torch.bool)
    b = torch.zeros_like(a)
    a[:, :, :2] = True
    b[:, :, 1:3] = True
    assert iou(a, b) == pytest.approx(1 / 3)


def test_identical_volume_best_yaw_is_one_at_zero():
    truth = l_shape()
    match = best_yaw_iou(truth.float(), truth, yaw_step=5.0)
    assert match.iou == 1.0 and match.yaw == 0.0


def test_disjoint_volume_stays_zero_at_every_yaw():
    truth = torch.zeros(N, N, N, dtype=torch.bool)
    truth[:4] = True  # a slab at the bottom
    pred = torch.zeros(N, N, N)
    pred[-4:] = 1.0  # a slab at the top: no rotation about z brings them together
    assert best_yaw_iou(pred, truth).iou == 0.0


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_rotated_about_z_is_one_at_the_best_yaw(quarter_turns):
    truth = l_shape()
    pred = torch.rot90(truth, quarter_turns, dims=(1, 2)).float()  # rotate in the (y, x) plane
    assert iou(pred > 0.5, truth) < 0.5  # as it stands it is a poor match
    match = best_yaw_iou(pred, truth, yaw_step=5.0)
    assert match.iou == pytest.approx(1.0, abs=1e-6)
    assert match.yaw % 90 == 0 and match.yaw != 0


def test_transform_volume_zero_is_identity_and_rotation_is_a_rot90():
    vol = torch.rand(2, N, N, N, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(transform_volume(vol, 0.0), vol, atol=1e-5)
    assert torch.allclose(transform_volume(vol, 90.0), torch.rot90(vol, -1, dims=(2, 3)), atol=1e-5)


def test_positive_yaw_turns_x_towards_y():
    """Counter-clockwise seen from +z, like the cameras' azimuth: content on +x moves to +y."""
    n = 9
    vol = torch.zeros(1, n, n, n)
    vol[0, 4, 4, 6] = 1.0  # z = 0, y = 0, x = +0.5
    turned = transform_volume(vol, 90.0)[0]
    assert turned[4, 6, 4] == pytest.approx(1.0, abs=1e-5)  # z = 0, y = +0.5, x = 0


def test_centring_recovers_a_shifted_object():
    truth = l_shape()
    pred = torch.roll(truth, shifts=3, dims=2).float()  # drifted 3 voxels along x
    assert best_yaw_iou(pred, truth).iou < 0.8
    assert best_yaw_iou(pred, truth, centre=True).iou == pytest.approx(1.0, abs=1e-6)


def test_surface_is_the_outer_shell():
    occ = torch.zeros(7, 7, 7, dtype=torch.bool)
    occ[1:6, 1:6, 1:6] = True
    shell = surface(occ)
    assert shell.sum() == 5**3 - 3**3 and not shell[3, 3, 3]


def test_color_error_on_the_surface_only():
    occ = torch.zeros(7, 7, 7, dtype=torch.bool)
    occ[1:6, 1:6, 1:6] = True
    rgb = torch.zeros(3, 7, 7, 7)
    rgb[0] = 1.0  # red everywhere...
    rgb[:, 2:5, 2:5, 2:5] = 0.5  # ...except the unseen interior
    assert color_error(rgb, occ, torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(0.0)
    assert color_error(rgb, occ, torch.tensor([0.0, 0.0, 0.0])) == pytest.approx(1 / 3)
    assert math.isnan(color_error(rgb, torch.zeros_like(occ), torch.zeros(3)))


def truth_like_field(caption_shape: str, n: int = 32) -> VoxelField:
    """A field whose density is high inside the true shape and whose colour is red."""
    field = VoxelField(FieldConfig(grid_size=n, density_shift=0.0, feature_activation="tanh"), channels=3)
    occ = occupancy(caption_shape, n).float()
    red = torch.tensor(COLORS["red"])
    with torch.no_grad():
        field.grid[0, 0] = occ * 200 - 100  # softplus: ~200 inside, ~0 outside
        field.grid[0, 1:] = torch.atanh(red * 2 - 1)[:, None, None, None]  # tanh features -> rgb = red
    return field


def test_truth_scores_of_the_truth():
    scores = truth_scores(truth_like_field("cube"), "a red cube", yaw_step=15.0)
    assert scores.iou == pytest.approx(1.0) and scores.iou_centred == pytest.approx(1.0)
    assert scores.color_error == pytest.approx(0.0, abs=1e-5)
    assert 0 < scores.occupied_fraction < 1
    wrong = truth_scores(truth_like_field("torus"), "a red sphere", yaw_step=15.0)
    assert wrong.iou < 0.5


def test_color_floor_is_the_shading_of_the_truth():
    """The renders' colour is 0.55..1 x base colour, so the truth is off its base colour by 0..0.45 x base."""
    floor = color_floor("a red cube", 32)
    red_mean = sum(COLORS["red"]) / 3
    assert 0.0 < floor < 0.45 * red_mean
