"""Image-space ground truth of a toy-world result: its renders against the true object's renders from the same
cameras, over views that cover what the training cameras see.

3D IoU (truth.py) also counts density hidden inside and under an object, which no view shows; these metrics
judge only what a picture shows. Views: every azimuth in `azimuths` even steps (front first) at each of
`elevations` degrees (the training cameras span -6.4..90), at the mean training radius and the test field of
view. Both renders use the same solid white background (the toy world's), so only the object is compared.
Yaw: a result may be any rotation of the object about z; with `yaw` the rotation that best aligns the field with
the truth (`truth.best_yaw_iou`: rotating the result's content by +yaw matches the truth), the result seen from
azimuth a is compared with the truth seen from a + yaw. Metrics (image_metrics.py), averaged over the views:
PSNR and SSIM of RGB, silhouette IoU of opacity >= 0.5, depth error on the union of the silhouettes.
Only RGB fields have colour truth; a latent field (Stable Diffusion) has none here.
"""
import math
from dataclasses import dataclass

import torch

from ..scene.background import Background
from ..scene.cameras import CameraConfig, Cameras, orbit
from ..scene.field import VoxelField
from ..scene.render import RenderOutput, render
from ..toyworld.data import BACKGROUND, truth_field
from .image_metrics import depth_error, finite_mean, mask_iou, psnr, ssim

TRUTH_STEP = 0.02  # ray step of the true renders (the training renders' 0.01 differs by < 0.013 per pixel)
SILHOUETTE_LEVEL = 0.5


@dataclass(frozen=True)
class ImageTruth:
    """Mean over the views of the image-space agreement with the true renders (NaN where undefined)."""

    psnr: float
    ssim: float
    silhouette_iou: float
    depth_error: float
    views: int

    @staticmethod
    def undefined() -> "ImageTruth":
        return ImageTruth(math.nan, math.nan, math.nan, math.nan, 0)


def truth_cameras(camera: CameraConfig, resolution: int, elevations: tuple[float, ...], azimuths: int,
                  yaw: float = 0.0) -> Cameras:
    """len(elevations) x azimuths cameras (elevation-major), azimuths offset by `yaw` degrees."""
    az = torch.arange(azimuths, dtype=torch.float64) * 360 / azimuths + yaw
    el = torch.tensor(elevations, dtype=torch.float64)
    az, el = az.repeat(len(el)), el.repeat_interleave(azimuths)
    radius = torch.full_like(az, (camera.radius_min + camera.radius_max) / 2)
    return orbit(az, el, radius, torch.full_like(az, camera.fov_test), resolution, resolution)


@torch.no_grad()
def render_views(field: VoxelField, cams: Cameras, step: float, chunk: int = 16) -> RenderOutput:
    """RGB in [-1, 1], depth and opacity of the field over the white background, chunked over views."""
    device = field.grid.device
    bg = Background(BACKGROUND, field.channels).to(device)
    parts = []
    for i in range(0, len(cams), chunk):
        sub = Cameras(cams.c2w[i:i + chunk], cams.fov[i:i + chunk], cams.azimuth[i:i + chunk],
                      cams.elevation[i:i + chunk], cams.height, cams.width)
        parts.append(render(field, bg, sub.to(device), step))
    return RenderOutput(image=torch.cat([p.image.float().clamp(-1, 1).cpu() for p in parts]),
                        depth=torch.cat([p.depth.float().cpu() for p in parts]),
                        opacity=torch.cat([p.opacity.float().cpu() for p in parts]))


def compare(pred: RenderOutput, true: RenderOutput, far: float) -> ImageTruth:
    """The four metrics of two renders of the same views, averaged over the views."""
    return ImageTruth(
        psnr=finite_mean(psnr(pred.image, true.image)), ssim=finite_mean(ssim(pred.image, true.image)),
        silhouette_iou=finite_mean(mask_iou(pred.opacity, true.opacity, SILHOUETTE_LEVEL)),
        depth_error=finite_mean(depth_error(pred.depth, pred.opacity, true.depth, true.opacity, far,
                                            SILHOUETTE_LEVEL)),
        views=len(pred.image))


def image_truth(field: VoxelField, caption: str, camera: CameraConfig, resolution: int, step: float, yaw: float,
                elevations: tuple[float, ...] = (0.0, 15.0, 30.0, 45.0, 60.0), azimuths: int = 8) -> ImageTruth:
    """The result's renders (ray step `step`) against the true object's (step TRUTH_STEP) from the same views,
    the truth's cameras turned by `yaw`; NaN metrics for a field without RGB."""
    if field.channels != 3:
        return ImageTruth.undefined()
    pred = render_views(field, truth_cameras(camera, resolution, elevations, azimuths), step)
    truth = truth_field(caption).to(field.grid.device)
    true = render_views(truth, truth_cameras(camera, resolution, elevations, azimuths, yaw), TRUTH_STEP)
    far = (camera.radius_min + camera.radius_max) / 2 + math.sqrt(3) * field.bbox_len
    return compare(pred, true, far)
