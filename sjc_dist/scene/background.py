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
        return look_up(self.texture, dirs[None])[0]


def look_up(textures: Tensor, dirs: Tensor) -> Tensor:
    """Textures [K, C, h, w] at ray directions dirs [K, ..., 3] -> [K, ..., C] (bilinear in spherical uv)."""
    d = F.normalize(dirs, dim=-1)
    u = torch.atan2(d[..., 1], d[..., 0]) / math.pi  # azimuth, [-1, 1]
    v = torch.acos(d[..., 2].clamp(-1, 1)) / math.pi * 2 - 1  # polar angle, [-1, 1]
    k, c = textures.shape[:2]
    g = torch.stack([u, v], -1).reshape(k, 1, -1, 2).to(textures.dtype)
    out = F.grid_sample(textures, g, mode="bilinear", padding_mode="border", align_corners=False)  # [K, C, 1, P]
    return out.reshape(k, c, -1).transpose(1, 2).reshape(*dirs.shape[:-1], c)


def backgrounds_of(backgrounds: list[Background], dirs: Tensor) -> Tensor:
    """K backgrounds at their B views' directions dirs [K*B, R, 3] -> [K*B, R, C]: one look-up for all when their
    textures have one shape, else one each."""
    k = len(backgrounds)
    if k == 1:
        return backgrounds[0](dirs)
    if len({bg.texture.shape for bg in backgrounds}) == 1:
        textures = torch.cat([bg.texture for bg in backgrounds])  # [K, C, h, w]
        return look_up(textures, dirs.reshape(k, -1, *dirs.shape[1:])).reshape(*dirs.shape[:-1], -1)
    return torch.cat([bg(dk) for bg, dk in zip(backgrounds, dirs.chunk(k))])
