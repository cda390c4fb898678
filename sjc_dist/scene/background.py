"""Backgrounds seen by rays that leave the box: a learnable texture on the sphere of directions
(the official 4x4 texture, spherical uv, its own small learning rate, initialised N(value, init_std^2) with the
official std 1: voxnerf's `torch.randn` bg) or a fixed solid colour.
`forward(dirs [..., 3]) -> [..., C]`.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..configtools import opt


@dataclass(frozen=True)
class BackgroundConfig:
    """What rays see behind the object."""

    kind: str = opt("texture", "learnable texture over ray directions (official) or a fixed solid colour",
                    choices=("texture", "solid"))
    texture_hw: int = opt(4, "texture height and width (official 4x4)", ge=1, le=256)
    value: float = opt(0.0, "initial mean (texture) or fixed (solid) value of every channel, in model space")
    init_std: float = opt(1.0, "texture: std of its N(value, std^2) initial texels (official: 1)", ge=0.0)
    depth: float = opt(10.0, "depth assigned to background pixels in depth renders", gt=0.0)


class Background(nn.Module):
    """A [1, C, h, w] texture indexed by (azimuth, polar angle) of the ray; frozen when kind is solid."""

    def __init__(self, cfg: BackgroundConfig, channels: int, generator: torch.Generator | None = None):
        super().__init__()
        hw = cfg.texture_hw if cfg.kind == "texture" else 1
        texture = torch.full((1, channels, hw, hw), float(cfg.value))
        if cfg.kind == "texture" and cfg.init_std > 0:
            texture += cfg.init_std * torch.randn(texture.shape, generator=generator)
        self.texture = nn.Parameter(texture, requires_grad=cfg.kind == "texture")
        self.cfg = cfg

    def forward(self, dirs: Tensor) -> Tensor:
        d = F.normalize(dirs, dim=-1)
        u = torch.atan2(d[..., 1], d[..., 0]) / math.pi  # azimuth, [-1, 1]
        v = torch.acos(d[..., 2].clamp(-1, 1)) / math.pi * 2 - 1  # polar angle, [-1, 1]
        g = torch.stack([u, v], -1).reshape(1, 1, -1, 2).to(self.texture.dtype)
        out = F.grid_sample(self.texture, g, mode="bilinear", padding_mode="border", align_corners=False)
        return out.reshape(self.texture.shape[1], -1).T.reshape(*dirs.shape[:-1], -1)
