"""The voxel radiance field theta (SJC Sec. 4): one grid [1, 1 + C, N, N, N] over the box [-L, L]^3.

Channel 0 is raw density, channels 1..C are features (C = 3 RGB for pixel models, 4 SD latents).
Trilinear interpolation of the raw values, then tau = softplus(raw * e^{d_scale} + density_shift) (the official
activation, d_scale a learnable scalar initialised at 0); features are raw ("none") or tanh-squashed.
Grid axes follow grid_sample: index [z, y, x] for a point (x, y, z) / L in [-1, 1].
`sample_channels` samples K fields of one shape in one batched grid_sample (the renderer's batched-scenes path).
Coarse-to-fine (off by default, as in the official code): the grid starts at `coarse_size` and is upsampled at the
fractions `upsample_at` of the run, its side growing log-linearly to `grid_size` (TensoRF's rule); `grid_size` is
always the final size, so readers of a finished field rebuild it from the config alone.
"""
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..configtools import opt
from ..errors import ConfigError


@dataclass(frozen=True)
class FieldConfig:
    """The voxel grid that is optimised."""

    grid_size: int = opt(100, "voxels per side N of the density (1xN^3) and feature (CxN^3) grids", ge=2, le=512)
    bbox_len: float = opt(1.0, "half side L of the box [-L, L]^3 that holds the grid", gt=0.0)
    density_shift: float = opt(-1.0, "shift inside softplus(raw * e^d_scale + shift): negative starts empty")
    feature_activation: str = opt("none", "features as raw values (official, SD latents) or tanh in [-1, 1]",
                                  choices=("none", "tanh"))
    init_feature_std: float = opt(1.0, "std of the N(0, s^2) initial features (official: 1)", ge=0.0)
    coarse_size: int = opt(0, "coarse-to-fine: the side the grid starts at (0 = grid_size throughout, official)",
                           ge=0, le=512)
    upsample_at: tuple[float, ...] = opt((0.25, 0.5), "coarse-to-fine: fractions of the run at which the grid is "
                                                      "upsampled (trilinear), its side growing log-linearly from "
                                                      "coarse_size to grid_size")

    def __post_init__(self):
        if self.coarse_size == 0:
            return
        if not 2 <= self.coarse_size < self.grid_size:
            raise ConfigError("field.coarse_size", self.coarse_size,
                              f"0, or in [2, field.grid_size = {self.grid_size})")
        at = self.upsample_at
        if not at or any(not 0 < a < 1 for a in at) or list(at) != sorted(set(at)):
            raise ConfigError("field.upsample_at", at, "increasing fractions in (0, 1), at least one")

    def sizes(self) -> list[int]:
        """The grid side of each stage: coarse_size ... grid_size (one stage when coarse-to-fine is off)."""
        if self.coarse_size == 0:
            return [self.grid_size]
        m, lo, hi = len(self.upsample_at), math.log(self.coarse_size), math.log(self.grid_size)
        return [round(math.exp(lo + j / m * (hi - lo))) for j in range(m + 1)]

    def size_at(self, step: int, n_steps: int) -> int:
        """The grid side during step `step` of `n_steps`: stage j + 1 starts at step floor(upsample_at[j] n_steps)."""
        sizes = self.sizes()
        starts = [math.floor(a * n_steps) for a in self.upsample_at] if len(sizes) > 1 else []
        return sizes[sum(step >= s for s in starts)]


class VoxelField(nn.Module):
    """`query(points [..., 3]) -> (tau [...], features [..., C])`; zero density outside the box."""

    def __init__(self, cfg: FieldConfig, channels: int, generator: torch.Generator | None = None,
                 size: int | None = None):
        super().__init__()
        n = size or cfg.grid_size
        cfg = replace(cfg, grid_size=n, coarse_size=0) if n != cfg.grid_size else cfg
        grid = torch.zeros(1, 1 + channels, n, n, n)
        grid[:, 1:] = torch.randn(1, channels, n, n, n, generator=generator) * cfg.init_feature_std
        self.grid = nn.Parameter(grid)
        self.d_scale = nn.Parameter(torch.zeros(()))
        self.cfg, self.channels = cfg, channels

    @property
    def bbox_len(self) -> float:
        return self.cfg.bbox_len

    @property
    def size(self) -> int:
        return self.grid.shape[-1]

    def set_grid(self, grid: Tensor) -> None:
        """Replace the grid parameter (any side N); cfg.grid_size follows it."""
        self.grid = nn.Parameter(grid)
        self.cfg = replace(self.cfg, grid_size=grid.shape[-1], coarse_size=0)

    def activate(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        """raw [..., 1 + C] -> (tau [...], features [..., C])."""
        return activate(raw, self.d_scale, self.cfg.density_shift, self.cfg.feature_activation)

    def query(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Density tau [...] and features [..., C] at world points [..., 3]."""
        tau, feat = query_fields([self], points.reshape(1, -1, 3))
        return tau.reshape(points.shape[:-1]), feat.reshape(*points.shape[:-1], self.channels)

    def stack_key(self) -> tuple:
        """Fields with equal keys can be queried together by `query_fields`."""
        return (tuple(self.grid.shape), self.grid.dtype, self.grid.device, self.cfg.bbox_len,
                self.cfg.density_shift, self.cfg.feature_activation)

    def density_grid(self) -> Tensor:
        """Activated density at the voxel centres, [N, N, N] indexed [z, y, x]."""
        with torch.no_grad():
            return self.activate(self.grid[0].permute(1, 2, 3, 0))[0]

    def feature_grid(self) -> Tensor:
        """Activated features at the voxel centres, [C, N, N, N]."""
        with torch.no_grad():
            return self.activate(self.grid[0].permute(1, 2, 3, 0))[1].permute(3, 0, 1, 2)


@torch.no_grad()
def resample_grid(grid: Tensor, n: int) -> Tensor:
    """A grid [1, C, N, N, N] (or an optimiser moment of it) trilinearly resampled to [1, C, n, n, n] at the same
    world points (align_corners=True, as `sample_fields` reads it)."""
    return F.interpolate(grid.detach(), size=(n, n, n), mode="trilinear", align_corners=True)


def activate(raw: Tensor, d_scale: Tensor, density_shift: float, feature_activation: str,
             dim: int = -1) -> tuple[Tensor, Tensor]:
    """raw [K, P, 1 + C] (or [..., 1 + C] with a scalar d_scale; channels along `dim`: [K, 1 + C, P] with dim=1),
    d_scale [K, 1] -> (tau [K, P], feat [K, P, C] or [K, C, P]). A split, whose backward is one cat."""
    density, feat = raw.split([1, raw.shape[dim] - 1], dim)
    tau = F.softplus(density.squeeze(dim) * d_scale.exp() + density_shift)
    return tau, torch.tanh(feat) if feature_activation == "tanh" else feat


def sample_channels(fields: list[VoxelField], points: Tensor) -> tuple[Tensor, Tensor]:
    """Raw trilinear samples [K, 1 + C, P] (channels first, as grid_sample gives them) of K fields of one
    `stack_key` at their own points [K, P, 3], one grid_sample over the stacked grids [K, 1 + C, N, N, N], and the
    fields' d_scale [K, 1]."""
    first = fields[0]
    k, n_pts = points.shape[:2]
    grid = first.grid if k == 1 else torch.cat([f.grid for f in fields])
    d_scale = torch.stack([f.d_scale for f in fields])[:, None]
    g = (points / first.cfg.bbox_len).reshape(k, 1, 1, n_pts, 3).to(grid.dtype)
    raw = F.grid_sample(grid, g, mode="bilinear", align_corners=True)  # [K, 1+C, 1, 1, P]
    return raw.reshape(k, 1 + first.channels, n_pts), d_scale


def sample_fields(fields: list[VoxelField], points: Tensor) -> tuple[Tensor, Tensor]:
    """`sample_channels` with the channels last: raw [K, P, 1 + C] (a transposed view) and d_scale [K, 1]."""
    raw, d_scale = sample_channels(fields, points)
    return raw.transpose(1, 2), d_scale


def query_fields(fields: list[VoxelField], points: Tensor) -> tuple[Tensor, Tensor]:
    """(tau [K, P], features [K, P, C]) of K fields of one `stack_key` at points [K, P, 3] (`VoxelField.query`
    with K = 1); zero density outside the box."""
    cfg = fields[0].cfg
    tau, feat = activate(*sample_fields(fields, points), cfg.density_shift, cfg.feature_activation)
    inside = (points.abs() <= fields[0].cfg.bbox_len).all(-1)
    return tau * inside, feat
