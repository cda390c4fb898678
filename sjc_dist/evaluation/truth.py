"""Ground-truth scores of a 3D result in the toy world: 3D IoU at the best yaw, colour error, and the toy
CLIP's multi-view zero-shot accuracy over all the world's captions.

Occupancy of a result: the voxel opacity 1 - exp(-tau * voxel) >= level (voxel = 2L / (N - 1), the quantity the
mesh of artifacts.py is cut at), on the field's own grid; the truth is `shapes.occupancy` on that same grid, so
nothing is resampled on the truth side. The evaluator's level is 0.1, not the mesh's 0.5: SJC's fields are
soft (a red cube after 300 empirical-model steps has voxel opacities of about 0.2 inside, max 0.31, which
render opaque over the object's ~20 voxels of thickness, and is empty at 0.5).
Yaw: SJC has no preferred azimuth (cameras are sampled uniformly around z), so the result may be any rotation
of the object about the vertical axis. The predicted opacity is rotated about z by every yaw in [0, 360) in
steps of `yaw_step` degrees (trilinear grid_sample, zero outside the box), re-thresholded, and the best IoU kept.
Scale: never rescaled. The camera distribution (radius, field of view) is the same for the truth renders and
for SJC, so a faithful result has the true size; a shrunken or bloated one is a real error.
Centring: `iou` does not move the result. `iou_centred` first translates it so that its occupied centroid is
the truth's, then rotates about the world z axis (exact for every toy shape: their centroids lie on z); it
separates "wrong shape" from "right shape, drifted".
Colour error: mean over the result's surface voxels (occupied, with an empty voxel among their 26
neighbours: interior voxels are never seen and keep their random initial colour) of the per-channel mean
|rgb - base colour|, rgb in [0, 1]. The toy renders bake Lambertian shading into colour (0.55 to 1 x base), so
even the truth scores above zero: `color_error_floor` is the truth field's own error, for reference.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..scene.field import VoxelField
from ..toyworld.shapes import COLORS, captions, grid_points, occupancy, parse, volumes
from .clip_score import r_precision


@dataclass(frozen=True)
class YawMatch:
    """The best IoU over yaws and the yaw (degrees, applied to the result) that reaches it."""

    iou: float
    yaw: float


@dataclass(frozen=True)
class TruthScores:
    """Ground-truth scores of one result (NaN where undefined)."""

    iou: float
    yaw: float
    iou_centred: float
    color_error: float
    color_error_floor: float
    occupied_fraction: float


def iou(a: Tensor, b: Tensor) -> float:
    """Intersection over union of two boolean volumes of one shape; 1 when both are empty."""
    union = (a | b).sum()
    return 1.0 if int(union) == 0 else float((a & b).sum() / union)


def _sample_points(n: int, yaws_deg: list[float], shift: tuple[float, float, float], device) -> Tensor:
    """Source points [Y, N, N, N, 3] (normalised x, y, z) whose values land on the output grid."""
    p = grid_points(n, 1.0).to(device, torch.float64)
    t = -torch.deg2rad(torch.tensor(yaws_deg, dtype=torch.float64, device=device)).reshape(-1, 1, 1, 1)
    c, s = t.cos(), t.sin()
    x, y, z = p.unbind(-1)
    src = torch.stack([c * x - s * y, s * x + c * y, z.expand_as(c * x)], -1)
    return (src - torch.tensor(shift, dtype=torch.float64, device=device)).float()


def transform_volumes(volume: Tensor, yaws_deg: list[float], shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
                      ) -> Tensor:
    """The content of volume [C, N, N, N] (indexed z, y, x over [-1, 1]^3) moved by `shift` (normalised
    units), then rotated by each yaw (degrees, counter-clockwise seen from +z) about the z axis:
    [Y, C, N, N, N], trilinear, zeros outside."""
    src = _sample_points(volume.shape[-1], yaws_deg, shift, volume.device)
    inp = volume[None].float().expand(len(yaws_deg), *volume.shape)
    return F.grid_sample(inp, src, mode="bilinear", padding_mode="zeros", align_corners=True)


def transform_volume(volume: Tensor, yaw_deg: float, shift: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Tensor:
    """One yaw of `transform_volumes`: [C, N, N, N] -> [C, N, N, N]."""
    return transform_volumes(volume, [yaw_deg], shift)[0]


def centroid(occ: Tensor) -> tuple[float, float, float]:
    """Centroid (x, y, z) of a boolean volume [N, N, N] in normalised units; the origin if empty."""
    if not occ.any():
        return (0.0, 0.0, 0.0)
    p = grid_points(occ.shape[-1], 1.0).to(occ.device)[occ]
    return tuple(float(v) for v in p.double().mean(0))


def best_yaw_iou(opacity: Tensor, truth: Tensor, level: float = 0.5, yaw_step: float = 5.0,
                 centre: bool = False) -> YawMatch:
    """Max over yaws of IoU(rotate(opacity) >= level, truth): opacity [N, N, N] float, truth [N, N, N] bool.
    Yaws are resampled in chunks of about 4 M voxels."""
    shift, truth = (0.0, 0.0, 0.0), truth.to(opacity.device)
    if centre:
        pc, tc = centroid(opacity >= level), centroid(truth)
        shift = tuple(b - a for a, b in zip(pc, tc))
    yaws = torch.arange(0.0, 360.0, yaw_step).tolist()
    per_chunk = max(1, 2**22 // opacity.numel())
    scores = []
    for i in range(0, len(yaws), per_chunk):
        moved = transform_volumes(opacity[None], yaws[i:i + per_chunk], shift)[:, 0] >= level
        inter = (moved & truth).sum((1, 2, 3)).double()
        union = (moved | truth).sum((1, 2, 3)).double()
        scores.append(torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union)))
    scores = torch.cat(scores)
    best = int(scores.argmax())  # the first of equal maxima: the smallest yaw
    return YawMatch(float(scores[best]), yaws[best])


def surface(occ: Tensor) -> Tensor:
    """Occupied voxels [N, N, N] with at least one empty voxel among their 26 neighbours."""
    empty_near = F.max_pool3d((~occ).float()[None, None], 3, stride=1, padding=1)[0, 0] > 0
    return occ & empty_near


def color_error(rgb01: Tensor, occ: Tensor, base: Tensor) -> float:
    """Mean |rgb - base| over the surface voxels of occ; rgb01 [3, N, N, N] in [0, 1], base [3]; NaN if empty."""
    shell = surface(occ)
    if not shell.any():
        return math.nan
    diff = (rgb01[:, shell] - base.reshape(3, 1).to(rgb01)).abs()
    return float(diff.mean())


def field_opacity(field: VoxelField) -> Tensor:
    """Voxel opacity 1 - exp(-tau * voxel) [N, N, N] of a field (the rule of the mesh export), on the field's
    device (the yaw searches run there: on a GPU machine they took most of a benchmark's scoring on the CPU)."""
    voxel = 2 * field.bbox_len / (field.cfg.grid_size - 1)
    return 1 - torch.exp(-field.density_grid().float() * voxel)


def color_floor(caption: str, n: int, bbox_len: float = 1.0) -> float:
    """The colour error of the truth field's own shaded colours (the shading floor)."""
    shape, color = parse(caption)
    occ, rgb = volumes(caption, n, bbox_len)
    return color_error((rgb + 1) / 2, occ >= 0.5, torch.tensor(COLORS[color]))


def truth_scores(field: VoxelField, caption: str, level: float = 0.5, yaw_step: float = 5.0) -> TruthScores:
    """IoU at the best yaw (plain and centred) and colour error of a field against the caption's object."""
    shape, color = parse(caption)
    n, length = field.cfg.grid_size, field.bbox_len
    truth = occupancy(shape, n, length)
    opac = field_opacity(field)
    plain = best_yaw_iou(opac, truth, level, yaw_step)
    centred = best_yaw_iou(opac, truth, level, yaw_step, centre=True)
    err = math.nan
    if field.channels == 3:
        rgb01 = (field.feature_grid().float().clamp(-1, 1) + 1) / 2
        err = color_error(rgb01, opac >= level, torch.tensor(COLORS[color]))
    return TruthScores(plain.iou, plain.yaw, centred.iou, err, color_floor(caption, n, length),
                       float((opac >= level).float().mean()))


def toy_caption_accuracy(image_emb: Tensor, caption_emb: Tensor, caption: str) -> float:
    """Multi-view zero-shot accuracy: R@1 of the true caption among all the world's captions.
    image_emb [V, D] (the toy CLIP's view embeddings), caption_emb [25, D] (embeddings of `captions()`); NaN
    for an object outside those 25 (the oriented objects of `shapes.oriented_captions()`)."""
    names = captions()
    shape, color = parse(caption)
    if f"a {color} {shape}" not in names:
        return math.nan
    idx = torch.tensor([names.index(f"a {color} {shape}")], device=image_emb.device)
    return r_precision(image_emb[None], caption_emb, idx)


def is_toy_caption(prompt: str) -> bool:
    try:
        parse(prompt)
    except ValueError:
        return False
    return True
