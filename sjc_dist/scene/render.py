"""Volume rendering of a VoxelField f(theta) (SJC Sec. 4, NeRF quadrature), batched over views.

For each ray: intersect the box [-L, L]^3, take S = ceil(2 sqrt(3) L / delta) samples at equal steps delta
(samples past the exit point get zero density), then
  alpha_i = 1 - exp(-tau_i delta),  T_i = exp(-sum_{j<i} tau_j delta),  w_i = alpha_i T_i,
  pixel = sum_i w_i c_i + (1 - sum_i w_i) bg(d),  depth = sum_i w_i t_i + (1 - sum_i w_i) bg_depth.
Shapes: image [B, C, H, W], depth and opacity [B, 1, H, W], weights [B, H*W, S].
"""
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..configtools import opt
from .background import Background
from .cameras import Cameras
from .field import VoxelField


@dataclass(frozen=True)
class RenderConfig:
    """How views are rendered during optimisation."""

    resolution: int | None = opt(None, "rendered side in pixels (latents for SD); null = the model's own size",
                                 ge=4, le=1024)
    step: float = opt(0.01, "ray-marching step delta in world units (official: 0.01 for the 100^3 grid)", gt=0.0)
    views_per_step: int = opt(1, "cameras rendered (and scored) per optimisation step (official: 1)", ge=1)


@dataclass
class RenderOutput:
    """What a render returns. `weights` is None for the 2D (identity) scene."""

    image: Tensor
    depth: Tensor | None = None
    opacity: Tensor | None = None
    weights: Tensor | None = None


def ray_box(origins: Tensor, dirs: Tensor, half: float) -> tuple[Tensor, Tensor]:
    """Entry and exit distances [..] of rays through [-half, half]^3 (slab method); a miss gives t_in = t_out."""
    inv = 1.0 / torch.where(dirs.abs() < 1e-9, torch.full_like(dirs, 1e-9), dirs)
    t0, t1 = (-half - origins) * inv, (half - origins) * inv
    t_in = torch.minimum(t0, t1).amax(-1).clamp_min(0)
    t_out = torch.maximum(t0, t1).amin(-1)
    return t_in, torch.maximum(t_out, t_in)


def n_samples(half: float, step: float) -> int:
    """Samples per ray: enough to cross the box's diagonal."""
    return math.ceil(2 * math.sqrt(3) * half / step)


def composite(tau: Tensor, feats: Tensor, t: Tensor, step: float) -> tuple[Tensor, Tensor, Tensor]:
    """(weights [..., S], colour [..., C], depth [...]) from densities [..., S], features [..., S, C]."""
    tau_delta = tau * step
    alpha = 1 - torch.exp(-tau_delta)
    trans = torch.exp(-(torch.cumsum(tau_delta, -1) - tau_delta))
    w = alpha * trans
    return w, (w[..., None] * feats).sum(-2), (w * t).sum(-1)


def render(field: VoxelField, background: Background, cams: Cameras, step: float) -> RenderOutput:
    """Render B views of the field over the background."""
    o, d = cams.rays()  # [B, R, 3]
    half = field.bbox_len
    t_in, t_out = ray_box(o, d, half)
    s = torch.arange(n_samples(half, step), device=o.device, dtype=o.dtype) + 0.5
    t = t_in[..., None] + s * step  # [B, R, S]
    pts = o[..., None, :] + t[..., None] * d[..., None, :]
    tau, feats = field.query(pts)
    tau = tau * (t < t_out[..., None])
    w, colour, depth = composite(tau, feats, t, step)
    opacity = w.sum(-1)
    colour = colour + (1 - opacity)[..., None] * background(d)
    depth = depth + (1 - opacity) * background.cfg.depth
    b, h, wd = len(cams), cams.height, cams.width
    return RenderOutput(image=colour.reshape(b, h, wd, -1).permute(0, 3, 1, 2),
                        depth=depth.reshape(b, 1, h, wd), opacity=opacity.reshape(b, 1, h, wd), weights=w)
