"""The Janus score of a toy-world result: how many distinct azimuths of an oriented object look like its front.

Oriented objects (`shapes.ORIENTED_SHAPES`: house, camera, owl) carry their front feature (door, lens glass,
eyes) in INK, darker than every shaded world colour, so "how much front does a view show" is measured in pixels:

  ink(pixel)   = clamp((n - max(r, g, b)) / (n - INK_FULL), 0, 1)    rgb in [0, 1], of the view box-blurred
                 over `ink_blur` pixels (voxel-sized noise averages out); n = min(INK_NONE, ink_contrast x the
                 median max(r, g, b) of the view's object pixels): a body shaded or noised darker all over is
                 no feature, a feature is darker than the body around it
  front(a)     = mean ink of the result's view from azimuth a / max over b of the truth's mean ink from b
  face         = a circular run of azimuths with front(a) >= front_level (0.5); runs separated by fewer than
                 `min_gap` non-front azimuths (2 of 24: 30 degrees) are one face
  faces        = the number of faces (0: featureless, 1: one front, >= 2: Janus); a front seen from every
                 azimuth counts as 2 (`all_around`)

Views: `azimuths` evenly spaced azimuths (front first) at one elevation (the test elevation, 15 degrees), the
mean training radius and the test field of view, over the toy world's white background; the truth is rendered
from the same cameras, so its own curve is the reference (the true object scores 1 face, its featureless twin
0, the front mirrored onto the back 2). The rule needs no yaw: it counts fronts wherever they are.
Yaw: the rotation about z that best aligns the result with the truth, searched over the whole circle in
`yaw_step` steps, maximises IoU(occupancy) + IoU(front feature) (truth.transform_volumes, the resampling of
truth.best_yaw_iou): occupancy alone cannot orient an owl (a sphere) or a house (its outline is the same
from the back). Feature voxels: occupied surface voxels (truth.surface) whose colour has ink >= 0.5; the
truth's are `shapes.feature_occupancy` on its surface.
Per-view agreement at that yaw: the result seen from azimuth a against the truth seen from a + yaw (rotating the
result by +yaw matches the truth): `view_agreement` is the fraction of azimuths where both are, or both are
not, front-looking (the truth's curve interpolated at a + yaw).
`front_azimuth`: the world azimuth of the strongest face (its f-weighted circular mean), where the SJC cameras'
"front" label is centred: with view-dependent prompts a faithful result has it near 0.
"""
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..configtools import opt
from ..scene.background import Background
from ..scene.cameras import CameraConfig, Cameras, orbit
from ..scene.field import VoxelField
from ..scene.render import render
from ..toyworld.data import BACKGROUND, truth_field, volume_field
from ..toyworld.shapes import is_oriented, occupancy, parse, volumes
from .truth import field_opacity, surface, transform_volumes

INK_FULL, INK_NONE = 0.10, 0.35  # max-channel values: INK is <= 0.08 shaded, world colours >= 0.385
TRUTH_STEP = 0.01  # the ray step of the toy world's truth renders


@dataclass(frozen=True)
class JanusConfig:
    """How the Janus score looks at a result."""

    azimuths: int = opt(24, "evenly spaced azimuths the result is seen from (front first)", ge=4, le=360)
    elevation: float = opt(15.0, "elevation of the views, degrees (the test elevation)", ge=-90.0, le=90.0)
    resolution: int = opt(64, "view side in pixels", ge=8)
    render_step: float = opt(0.02, "ray step of the result's views (the truth's is 0.01)", gt=0.0)
    front_level: float = opt(0.5, "front(a) from which a view looks like the front (fraction of the truth's "
                                  "strongest view)", gt=0.0)
    min_gap: int = opt(2, "non-front azimuths needed between two faces", ge=1)
    ink_blur: int = opt(3, "side (pixels) of the box blur of a view before the ink rule; 1 = none", ge=1)
    ink_contrast: float = opt(0.6, "ink only below this fraction of the median brightness of the view's object "
                                   "pixels", gt=0.0, le=1.0)
    iou_level: float = opt(0.1, "voxel opacity from which a voxel is occupied (the evaluator's level)",
                           gt=0.0, lt=1.0)
    yaw_step: float = opt(5.0, "yaw search step, degrees", gt=0.0, le=90.0)


@dataclass(frozen=True)
class OrientedYaw:
    """The yaw (degrees, applied to the result) maximising IoU(occupancy) + IoU(feature), and both IoUs there."""

    yaw: float
    iou: float
    feature_iou: float


@dataclass(frozen=True)
class JanusScores:
    """The Janus score of one result and what it rests on (front curves [azimuths], azimuth 0 first)."""

    faces: int
    all_around: bool
    front_azimuth: float
    yaw: float
    iou: float
    feature_iou: float
    view_agreement: float
    front: tuple[float, ...]
    truth_front: tuple[float, ...]

    @property
    def janus(self) -> bool:
        return self.faces >= 2


def applies(field: VoxelField, caption: str) -> bool:
    """Whether the Janus score is defined: an RGB field and a caption of an oriented object."""
    try:
        shape, _ = parse(caption)
    except ValueError:
        return False
    return field.channels == 3 and is_oriented(shape)


def inkness(rgb01: Tensor, dim: int = -3, none: Tensor | float = INK_NONE) -> Tensor:
    """Ink in [0, 1] of colours rgb01 in [0, 1] whose channels are on `dim` (that dimension is reduced), fully
    ink at INK_FULL and none from `none` (broadcast against the reduced shape) up; `none` is raised to at least
    INK_FULL + 0.05 so the ramp never degenerates."""
    none = torch.as_tensor(none, dtype=rgb01.dtype, device=rgb01.device).clamp_min(INK_FULL + 0.05)
    return ((none - rgb01.amax(dim)) / (none - INK_FULL)).clamp(0, 1)


def view_ink(rgb01: Tensor, opacity: Tensor, blur: int, contrast: float) -> Tensor:
    """Mean ink [V] of views rgb01 [V, 3, H, W] with opacity [V, H, W] (the module docstring's rule); a view with
    no pixel over opacity 0.5 has no body to compare with and keeps the fixed level INK_NONE."""
    brightness = rgb01.amax(1)
    body = torch.stack([b[o > 0.5].median() if bool((o > 0.5).any()) else b.new_tensor(1.0)
                        for b, o in zip(brightness, opacity)])
    if blur > 1:
        pad = (blur // 2, (blur - 1) // 2) * 2
        rgb01 = F.avg_pool2d(F.pad(rgb01, pad, mode="replicate"), blur, stride=1)
    none = torch.minimum(torch.full_like(body, INK_NONE), contrast * body)
    return inkness(rgb01, 1, none[:, None, None]).mean((-2, -1))


def ring(cfg: JanusConfig, camera: CameraConfig) -> Cameras:
    """The views: cfg.azimuths azimuths from 0, at cfg.elevation, mean radius, test FoV."""
    az = torch.arange(cfg.azimuths, dtype=torch.float64) * 360 / cfg.azimuths
    full = torch.ones_like(az)
    return orbit(az, full * cfg.elevation, full * (camera.radius_min + camera.radius_max) / 2,
                 full * camera.fov_test, cfg.resolution, cfg.resolution)


@torch.no_grad()
def ink_per_view(field: VoxelField, cams: Cameras, step: float, cfg: JanusConfig, chunk: int = 8) -> Tensor:
    """Mean ink [V] of the field's views over the white background (`view_ink`)."""
    device = field.grid.device
    bg = Background(BACKGROUND, 3).to(device)
    out = []
    for i in range(0, len(cams), chunk):
        sub = Cameras(cams.c2w[i:i + chunk], cams.fov[i:i + chunk], cams.azimuth[i:i + chunk],
                      cams.elevation[i:i + chunk], cams.height, cams.width)
        views = render(field, bg, sub.to(device), step)
        rgb01 = (views.image.float().clamp(-1, 1) + 1) / 2
        opacity = views.opacity.float().reshape(rgb01[:, 0].shape)
        out.append(view_ink(rgb01, opacity, cfg.ink_blur, cfg.ink_contrast).cpu())
    return torch.cat(out)


@functools.lru_cache(maxsize=64)
def truth_ink(caption: str, cfg: JanusConfig, camera: CameraConfig, device: str = "cpu") -> Tensor:
    """Mean ink [V] of the true object's views, rendered on `device` (cached per caption and settings)."""
    return ink_per_view(truth_field(caption).to(device), ring(cfg, camera), TRUTH_STEP, cfg)


def face_runs(front: list[bool], min_gap: int) -> list[list[int]]:
    """Circular runs of True indices, runs separated by fewer than min_gap False entries merged."""
    n, idx = len(front), [i for i, f in enumerate(front) if f]
    if not idx or len(idx) == n:
        return [idx] if idx else []
    runs = [[idx[0]]]
    for i in idx[1:]:
        if i - runs[-1][-1] - 1 < min_gap:
            runs[-1].append(i)
        else:
            runs.append([i])
    if len(runs) > 1 and (runs[0][0] + n) - runs[-1][-1] - 1 < min_gap:  # wrap around azimuth 0
        runs[0] = runs.pop() + runs[0]
    return runs


def circular_mean(degrees: list[float], weights: list[float]) -> float:
    """Weighted circular mean in (-180, 180] degrees."""
    rad = torch.deg2rad(torch.tensor(degrees, dtype=torch.float64))
    w = torch.tensor(weights, dtype=torch.float64)
    mean = math.degrees(math.atan2(float((w * rad.sin()).sum()), float((w * rad.cos()).sum())))
    return 180.0 if mean <= -180.0 else mean


def circular_interp(curve: Tensor, shift_deg: float) -> Tensor:
    """curve [V] (V evenly spaced azimuths from 0) linearly interpolated at each azimuth + shift_deg."""
    v = len(curve)
    pos = (torch.arange(v, dtype=torch.float64) + shift_deg * v / 360) % v
    lo = pos.floor().long()
    frac = (pos - lo).to(curve.dtype)
    return curve[lo] * (1 - frac) + curve[(lo + 1) % v] * frac


def feature_voxels(field: VoxelField, level: float) -> tuple[Tensor, Tensor]:
    """Opacity [N, N, N] and the surface voxels [N, N, N] (bool) whose colour is ink (ink >= 0.5)."""
    opac = field_opacity(field)
    rgb01 = (field.feature_grid().float().clamp(-1, 1) + 1) / 2
    return opac, surface(opac >= level) & (inkness(rgb01, dim=0) >= 0.5)


@functools.lru_cache(maxsize=64)
def truth_voxels(caption: str, n: int, bbox_len: float, level: float) -> tuple[Tensor, Tensor]:
    """The truth's occupancy and its feature voxels by the result's own rule (`feature_voxels` of the true
    field on the result's grid), dilated by one voxel."""
    shape, _ = parse(caption)
    _, ink = feature_voxels(volume_field(*volumes(caption, n, bbox_len), bbox_len), level)
    return occupancy(shape, n, bbox_len), dilate(ink)


def dilate(mask: Tensor) -> Tensor:
    """A boolean volume [N, N, N] grown by one voxel (26-neighbourhood)."""
    return F.max_pool3d(mask.float()[None, None], 3, stride=1, padding=1)[0, 0] > 0


def _iou_per_yaw(moved: Tensor, truth: Tensor) -> Tensor:
    """IoU [Y] of boolean volumes moved [Y, N, N, N] with truth [N, N, N]; 1 where both are empty."""
    inter = (moved & truth).sum((1, 2, 3)).double()
    union = (moved | truth).sum((1, 2, 3)).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def oriented_yaw(field: VoxelField, caption: str, level: float = 0.1, yaw_step: float = 5.0) -> OrientedYaw:
    """Max over yaws in [0, 360) of IoU(rotated occupancy) + IoU(rotated feature voxels) against the truth's;
    feature voxels are compared dilated by one voxel (a soft field's surface sits a voxel or two off)."""
    true_occ, true_ink = truth_voxels(caption, field.cfg.grid_size, field.bbox_len, level)
    opac, ink = feature_voxels(field, level)
    true_occ, true_ink = true_occ.to(opac.device), true_ink.to(opac.device)
    vol = torch.stack([opac, dilate(ink).float()])
    yaws = torch.arange(0.0, 360.0, yaw_step).tolist()
    per_chunk = max(1, 2**22 // vol.numel())
    occ_iou, ink_iou = [], []
    for i in range(0, len(yaws), per_chunk):
        moved = transform_volumes(vol, yaws[i:i + per_chunk])
        occ_iou.append(_iou_per_yaw(moved[:, 0] >= level, true_occ))
        ink_iou.append(_iou_per_yaw(moved[:, 1] >= 0.5, true_ink))
    occ_iou, ink_iou = torch.cat(occ_iou), torch.cat(ink_iou)
    best = int((occ_iou + ink_iou).argmax())  # the first of equal maxima: the smallest yaw
    return OrientedYaw(yaws[best], float(occ_iou[best]), float(ink_iou[best]))


def count_faces(front: Tensor, level: float, min_gap: int) -> tuple[int, bool, list[list[int]]]:
    """(faces, all_around, runs) of a front curve [V]."""
    flags = (front >= level).tolist()
    runs = face_runs(flags, min_gap)
    all_around = all(flags)
    return (2 if all_around else len(runs)), all_around, runs


def janus_scores(field: VoxelField, caption: str, camera: CameraConfig | None = None,
                 cfg: JanusConfig | None = None) -> JanusScores:
    """The Janus score of an RGB field against the oriented object of `caption` (ValueError if undefined)."""
    camera, cfg = camera or CameraConfig(), cfg or JanusConfig()
    if not applies(field, caption):
        raise ValueError(f"the Janus score needs an RGB field and an oriented caption ({caption!r})")
    reference = truth_ink(caption, cfg, camera, str(field.grid.device))
    front = ink_per_view(field, ring(cfg, camera), cfg.render_step, cfg) / reference.max()
    faces, all_around, runs = count_faces(front, cfg.front_level, cfg.min_gap)
    az = [i * 360 / cfg.azimuths for i in range(cfg.azimuths)]
    strongest = max(runs, key=lambda r: float(front[r].max()), default=[])
    front_az = circular_mean([az[i] for i in strongest], front[strongest].tolist()) if strongest else math.nan
    yaw = oriented_yaw(field, caption, cfg.iou_level, cfg.yaw_step)
    truth_front = circular_interp(reference / reference.max(), yaw.yaw)
    agree = float(((front >= cfg.front_level) == (truth_front >= cfg.front_level)).float().mean())
    return JanusScores(faces, all_around, front_az, yaw.yaw, yaw.iou, yaw.feature_iou, agree,
                       tuple(front.tolist()), tuple(truth_front.tolist()))
