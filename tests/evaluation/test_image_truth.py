"""Image-space truth: the metrics on hand-made images (identical, empty, shifted), SSIM against scikit-image's
reference implementation, and whole fields (the truth itself scores perfectly, an empty field worst, a field
shifted off centre in between, a rotated truth perfectly at the yaw that aligns it)."""
import math

import pytest
import torch

from sjc_dist.evaluation.image_metrics import PSNR_CAP, depth_error, mask_iou, psnr, ssim
from sjc_dist.evaluation.image_truth import image_truth
from sjc_dist.evaluation.truth import transform_volume
from sjc_dist.scene.cameras import CameraConfig
from sjc_dist.scene.field import FieldConfig, VoxelField
from sjc_dist.toyworld.data import truth_field

CAPTION = "a red cube"
RES, STEP = 16, 0.04
VIEWS = dict(elevations=(0.0, 30.0), azimuths=4)


def images(seed: int = 0, n: int = 3, size: int = 24) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_psnr_of_identical_is_capped_and_of_a_known_error_exact():
    a = images()
    assert psnr(a, a).tolist() == [PSNR_CAP] * 3
    b = (a + 0.1).clamp(-1, 1)
    mse = (a - b).pow(2).flatten(1).mean(1).double()
    assert torch.allclose(psnr(a, b), 10 * torch.log10(4 / mse))


def test_ssim_matches_scikit_image_and_orders_degradations():
    from skimage.metrics import structural_similarity

    a, b = images(0, 1), images(1, 1)
    noisy = (a + 0.2 * (images(2, 1))).clamp(-1, 1)
    for other in (b, noisy):
        ref = structural_similarity(((a[0] + 1) / 2).permute(1, 2, 0).double().numpy(),
                                    ((other[0] + 1) / 2).permute(1, 2, 0).double().numpy(), data_range=1.0,
                                    channel_axis=2, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        assert float(ssim(a, other)[0]) == pytest.approx(ref, abs=1e-6)
    assert float(ssim(a, a)[0]) == pytest.approx(1.0)
    assert float(ssim(a, a)[0]) > float(ssim(a, noisy)[0]) > float(ssim(a, b)[0])


def test_mask_iou_and_depth_error_on_hand_made_silhouettes():
    full, empty = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    half = full.clone()
    half[..., :2] = 0
    assert mask_iou(full, full).item() == 1.0 and mask_iou(empty, empty).item() == 1.0
    assert mask_iou(full, empty).item() == 0.0 and mask_iou(half, full).item() == pytest.approx(0.5)
    near, far = torch.full((1, 1, 4, 4), 1.0), torch.full((1, 1, 4, 4), 10.0)
    assert depth_error(near, full, near, full, far=3.0).item() == 0.0
    assert depth_error(near, full, far, empty, far=3.0).item() == pytest.approx(2.0)  # missing: at the far bound
    assert depth_error(far, empty, far, empty, far=3.0).item() == 0.0


def field_of(volume: VoxelField | None = None, n: int = 32) -> VoxelField:
    """A tanh-RGB field of grid n holding the truth's density and colour (resampled), or empty if None."""
    field = VoxelField(FieldConfig(grid_size=n, density_shift=0.0, feature_activation="tanh"), channels=3)
    with torch.no_grad():
        field.grid[0, 0] = -30.0  # softplus(-30) ~ 0: empty
        if volume is not None:
            src = volume.grid[0]
            grid = torch.nn.functional.interpolate(src[None], size=(n, n, n), mode="trilinear", align_corners=True)[0]
            field.grid[0, 0] = grid[0]
            field.grid[0, 1:] = torch.atanh(grid[1:].clamp(-0.999, 0.999))
    return field.requires_grad_(False)


def score(field: VoxelField, yaw: float = 0.0):
    return image_truth(field, CAPTION, CameraConfig(), RES, STEP, yaw, **VIEWS)


def test_truth_scores_best_empty_worst_shifted_between():
    truth = truth_field(CAPTION)
    perfect, empty = score(field_of(truth)), score(field_of(None))
    shifted_field = field_of(truth)
    with torch.no_grad():
        shifted_field.grid.copy_(torch.roll(shifted_field.grid, shifts=5, dims=-1))  # 0.3 units along +x
    shifted = score(shifted_field)
    assert perfect.views == 8
    assert perfect.silhouette_iou > 0.9 and perfect.ssim > 0.9 and perfect.psnr > 25 and perfect.depth_error < 0.05
    assert empty.silhouette_iou == 0.0 and empty.depth_error > 0.5
    for name in ("psnr", "ssim", "silhouette_iou"):
        assert getattr(perfect, name) > getattr(shifted, name) > getattr(empty, name), name
    assert perfect.depth_error < shifted.depth_error < empty.depth_error


def test_a_rotated_truth_scores_perfectly_at_its_yaw():
    """Rotating the field's content by -30 degrees: transform_volume by +30 aligns it, so yaw = 30."""
    truth = truth_field(CAPTION)
    turned = field_of(truth)
    with torch.no_grad():
        turned.grid[0] = transform_volume(turned.grid[0], -30.0)
        turned.grid[0, 0] = torch.where(turned.grid[0, 0] == 0, torch.tensor(-30.0), turned.grid[0, 0])
    aligned, unaligned = score(turned, 30.0), score(turned, 0.0)
    assert aligned.silhouette_iou > 0.85 and aligned.silhouette_iou > unaligned.silhouette_iou + 0.05


def test_latent_fields_have_no_image_truth():
    field = VoxelField(FieldConfig(grid_size=8), channels=4)
    assert math.isnan(image_truth(field, CAPTION, CameraConfig(), 8, 0.25, 0.0, **VIEWS).psnr)
