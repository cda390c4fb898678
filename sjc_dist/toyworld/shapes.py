"""Procedural objects of the toy world: 5 shapes x 5 colours, each with a caption ("a red cube").

Ground truth is analytic: a signed distance function per shape (z up, inside the box [-1, 1]^3 with margin),
giving an occupancy volume and a base-colour volume on any grid. For rendering, the colour volume bakes in a
fixed Lambertian shading (light from above-front) so that shape is visible in 2D, as in real photographs.
"""
import itertools

import torch
from torch import Tensor

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
COLORS = {  # base colours in [0, 1]
    "red": (0.90, 0.12, 0.10),
    "green": (0.15, 0.70, 0.15),
    "blue": (0.12, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.15, 0.75),
}
LIGHT = (0.45, 0.3, 0.84)


def captions() -> list[str]:
    """All captions of the world, colour-major: 'a red sphere', 'a red cube', ..."""
    return [f"a {c} {s}" for c, s in itertools.product(COLORS, SHAPES)]


def parse(caption: str) -> tuple[str, str]:
    """'a red cube' -> ('cube', 'red'); raises ValueError naming the known captions otherwise."""
    words = caption.lower().strip().rstrip(".").split()
    shape = next((w for w in words if w in SHAPES), None)
    color = next((w for w in words if w in COLORS), None)
    if shape is None or color is None:
        raise ValueError(f"'{caption}' is not a toy-world caption; known: {', '.join(captions())}")
    return shape, color


def sdf(shape: str, p: Tensor) -> Tensor:
    """Signed distance (negative inside) of `shape` at points p [..., 3]."""
    x, y, z = p.unbind(-1)
    r_xy = torch.sqrt(x**2 + y**2 + 1e-12)
    if shape == "sphere":
        return p.norm(dim=-1) - 0.5
    if shape == "cube":
        q = p.abs() - 0.4
        return q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0)
    if shape == "cylinder":
        d = torch.stack([r_xy - 0.4, z.abs() - 0.45], -1)
        return d.clamp_min(0).norm(dim=-1) + d.amax(-1).clamp_max(0)
    if shape == "cone":  # base radius 0.5 at z = -0.45, apex at z = 0.45 (an approximate SDF)
        h, r = 0.9, 0.5
        side = (r_xy - r * (0.45 - z) / h) * h / (h**2 + r**2) ** 0.5
        return torch.maximum(side, z.abs() - 0.45)
    if shape == "torus":
        return torch.sqrt((r_xy - 0.4) ** 2 + z**2) - 0.17
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def grid_points(n: int, bbox_len: float = 1.0) -> Tensor:
    """Voxel-centre points [n, n, n, 3] (x, y, z), indexed [z, y, x] like VoxelField."""
    lin = torch.linspace(-bbox_len, bbox_len, n)
    zz, yy, xx = torch.meshgrid(lin, lin, lin, indexing="ij")
    return torch.stack([xx, yy, zz], -1)


def occupancy(shape: str, n: int, bbox_len: float = 1.0) -> Tensor:
    """Boolean occupancy [n, n, n] of the shape on the field's grid."""
    return sdf(shape, grid_points(n, bbox_len)) <= 0


def volumes(caption: str, n: int, bbox_len: float = 1.0, sharpness: float = 60.0) -> tuple[Tensor, Tensor]:
    """Soft occupancy [n, n, n] in [0, 1] and shaded colour [3, n, n, n] in [-1, 1] for rendering."""
    shape, color = parse(caption)
    with torch.enable_grad():  # normals are the SDF's gradient, also when called under no_grad
        p = grid_points(n, bbox_len).requires_grad_(True)
        d = sdf(shape, p)
        (normal,) = torch.autograd.grad(d.sum(), p)
    d = d.detach()
    normal = torch.nn.functional.normalize(normal, dim=-1)
    shade = 0.55 + 0.45 * (normal @ torch.tensor(LIGHT)).clamp_min(0)
    base = torch.tensor(COLORS[color])
    rgb = (shade[..., None] * base).clamp(0, 1) * 2 - 1
    occ = torch.sigmoid(-d * sharpness * (n / 64))
    return occ, rgb.permute(3, 0, 1, 2)
