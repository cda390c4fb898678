"""Cameras on a sphere looking at the origin (z up, OpenGL convention: a camera looks down its -z axis).

Sampling follows the official code: radius R, field of view uniform in [fov_min, fov_max], azimuth uniform,
elevation area-uniform (sin(elevation) uniform). View labels for view-dependent prompts: overhead above
`overhead_above` degrees of elevation, else front / side / backside by azimuth (front: |azimuth| <= 45).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..configtools import opt


@dataclass(frozen=True)
class CameraConfig:
    """The distribution of training cameras (degrees and world units)."""

    radius_min: float = opt(1.5, "smallest camera distance from the origin (official 1.5)", gt=0.0)
    radius_max: float = opt(1.5, "largest camera distance (official 1.5)", gt=0.0)
    fov_min: float = opt(40.0, "smallest vertical field of view, degrees", gt=0.0, lt=180.0)
    fov_max: float = opt(70.0, "largest vertical field of view, degrees", gt=0.0, lt=180.0)
    fov_test: float = opt(60.0, "field of view of evaluation views and turntables, degrees", gt=0.0, lt=180.0)
    elevation_min: float = opt(-6.4, "lowest elevation, degrees", ge=-90.0, le=90.0)
    elevation_max: float = opt(90.0, "highest elevation, degrees", ge=-90.0, le=90.0)
    test_elevation: float = opt(15.0, "elevation of evaluation views and turntables, degrees", ge=-90.0, le=90.0)
    overhead_above: float = opt(41.8, "elevation above which a view is labelled 'overhead'", ge=-90.0, le=90.0)


@dataclass
class Cameras:
    """A batch of B cameras: c2w [B, 4, 4], fov [B] (radians), azimuth/elevation [B] (degrees), H x W."""

    c2w: Tensor
    fov: Tensor
    azimuth: Tensor
    elevation: Tensor
    height: int
    width: int

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def rays(self) -> tuple[Tensor, Tensor]:
        """Origins and unit directions, each [B, H*W, 3], pixel centres in row-major order."""
        device = self.c2w.device
        ys = (torch.arange(self.height, device=device) + 0.5) / self.height * 2 - 1
        xs = (torch.arange(self.width, device=device) + 0.5) / self.width * 2 - 1
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        tan = torch.tan(self.fov / 2)[:, None, None]
        aspect = self.width / self.height
        d_cam = torch.stack([xx * tan * aspect, -yy * tan, -torch.ones_like(xx).expand_as(tan * xx)], -1)
        d = torch.einsum("bij,bhwj->bhwi", self.c2w[:, :3, :3], d_cam).reshape(len(self), -1, 3)
        o = self.c2w[:, None, :3, 3].expand_as(d)
        return o, F.normalize(d, dim=-1)

    @staticmethod
    def cat(cams: list["Cameras"]) -> "Cameras":
        """One batch of all cameras (same H x W), in order."""
        if len(cams) == 1:
            return cams[0]
        return Cameras(torch.cat([c.c2w for c in cams]), torch.cat([c.fov for c in cams]),
                       torch.cat([c.azimuth for c in cams]), torch.cat([c.elevation for c in cams]),
                       cams[0].height, cams[0].width)

    def split(self, n: int) -> list["Cameras"]:
        """Consecutive batches of n cameras (views of this one's tensors)."""
        parts = zip(*(t.split(n) for t in (self.c2w, self.fov, self.azimuth, self.elevation)))
        return [Cameras(*p, self.height, self.width) for p in parts]

    def to(self, device: torch.device) -> "Cameras":
        # non_blocking: no host sync per step (the bench's profile showed two here)
        return Cameras(self.c2w.to(device, non_blocking=True), self.fov.to(device, non_blocking=True),
                       self.azimuth, self.elevation,
                       self.height, self.width)


def orbit(azimuth: Tensor, elevation: Tensor, radius: Tensor, fov_deg: Tensor, height: int, width: int) -> Cameras:
    """Cameras at (azimuth, elevation, radius) [B] in degrees, looking at the origin, z up."""
    a, e = torch.deg2rad(azimuth.double()), torch.deg2rad(elevation.double())
    pos = radius.double()[:, None] * torch.stack([e.cos() * a.cos(), e.cos() * a.sin(), e.sin()], -1)
    forward = -F.normalize(pos, dim=-1)
    right = torch.stack([-a.sin(), a.cos(), torch.zeros_like(a)], -1)  # defined even straight overhead
    up = torch.cross(right, forward, dim=-1)
    c2w = torch.eye(4, dtype=torch.float64).repeat(len(a), 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, up, -forward, pos
    return Cameras(c2w.float(), torch.deg2rad(fov_deg.float()), azimuth.float(), elevation.float(),
                   height, width)


def view_labels(cams: Cameras, overhead_above: float) -> list[str]:
    """'front' | 'side' | 'backside' | 'overhead' for each camera."""
    az = (cams.azimuth + 180) % 360 - 180
    labels = []
    for a, e in zip(az.tolist(), cams.elevation.tolist()):
        if e > overhead_above:
            labels.append("overhead")
        else:
            labels.append("front" if abs(a) <= 45 else "backside" if abs(a) >= 135 else "side")
    return labels


class CameraSampler:
    """Random training cameras from a CameraConfig; draws only from the given generator."""

    def __init__(self, cfg: CameraConfig, resolution: int):
        self.cfg, self.res = cfg, resolution

    def sample(self, n: int, generator: torch.Generator) -> Cameras:
        return orbit(*self.draw(n, generator), self.res, self.res)

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """The random part of `sample`: [4, n] float64 rows azimuth, elevation (degrees), radius, fov (degrees)."""
        c = self.cfg
        u = torch.rand(4, n, generator=generator, dtype=torch.float64)
        lo, hi = math.sin(math.radians(c.elevation_min)), math.sin(math.radians(c.elevation_max))
        elevation = torch.rad2deg(torch.asin((lo + u[0] * (hi - lo)).clamp(-1, 1)))
        azimuth = u[1] * 360 - 180
        radius = c.radius_min + u[2] * (c.radius_max - c.radius_min)
        fov = c.fov_min + u[3] * (c.fov_max - c.fov_min)
        return torch.stack([azimuth, elevation, radius, fov])

    def fixed(self, n: int, elevation: float | None = None) -> Cameras:
        """n evaluation cameras at evenly spaced azimuths (front first), test FoV and elevation."""
        c = self.cfg
        az = torch.arange(n, dtype=torch.float64) * 360 / n
        el = torch.full((n,), c.test_elevation if elevation is None else elevation, dtype=torch.float64)
        r = torch.full((n,), (c.radius_min + c.radius_max) / 2, dtype=torch.float64)
        return orbit(az, el, r, torch.full((n,), c.fov_test), self.res, self.res)


def sample_many(samplers: list[CameraSampler], ns: list[int], generators: list[torch.Generator]) -> list[Cameras]:
    """ns[i] cameras from each sampler, drawn from its own generator (the same cameras as its `sample`), their
    matrices built in one `orbit` per resolution and count: a batch of scenes pays the geometry's ops once."""
    draws = [s.draw(n, g) for s, n, g in zip(samplers, ns, generators)]
    groups: dict[tuple, list[int]] = {}
    for i, (s, n) in enumerate(zip(samplers, ns)):
        groups.setdefault((s.res, n), []).append(i)
    out: list[Cameras | None] = [None] * len(samplers)
    for (res, n), idx in groups.items():
        joint = orbit(*torch.cat([draws[i] for i in idx], 1), res, res)
        for i, cams in zip(idx, joint.split(n)):
            out[i] = cams
    return out
