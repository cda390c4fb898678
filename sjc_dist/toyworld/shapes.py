"""Procedural objects of the toy world, each with a caption ("a red cube", "a blue house").

Two families, in the same 5 colours:
- 5 symmetric shapes (sphere, cube, cylinder, cone, torus): `captions()`, the world's original 25 objects (the
  `toy` benchmark set and the toy CLIP's zero-shot set depend on this list and its order: it never changes);
- 3 oriented shapes with a distinct front (house, camera, owl): `oriented_captions()`, 15 objects.
`world_captions()` is both, the training set of the toy models.

Ground truth is analytic: a signed distance function per shape (z up, inside the box [-1, 1]^3 with margin),
giving an occupancy volume and a base-colour volume on any grid. For rendering, the colour volume bakes in a
fixed Lambertian shading (light from above-front) so that shape is visible in 2D, as in real photographs.

Orientation: an oriented object's front faces +x, i.e. the camera at azimuth 0 (camera position (cos a, sin a)
in x, y), the centre of the SJC cameras' "front" labels (|azimuth| <= 45 deg). Its body has the caption's colour
and its front feature alone is INK (near black, darker than every shaded world colour), large enough to read
in a 32x32 view at radius 1.5 and FoV 40-70 (6 to 14 pixels across):
- house: a cube body under a gable roof (ridge along y, so front and back have the same outline); a door on
  the front wall, 0.26 wide and 0.45 high;
- camera: a flat box with a lens (a cylinder along x, radius 0.2) on its front; the lens's glass (its front
  disc) is the ink, the lens barrel has the body colour;
- owl: a round body with two ear tufts on top; two eyes (discs of radius 0.15) at azimuth +-22 deg, elevation 12.
Every object is mirror-symmetric in y (so mirrored training views keep their view labels) and has its volume
centroid on the z axis (within 0.01), like the symmetric shapes.
"""
import itertools
import math

import torch
from torch import Tensor

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
ORIENTED_SHAPES = ("house", "camera", "owl")
COLORS = {  # base colours in [0, 1]
    "red": (0.90, 0.12, 0.10),
    "green": (0.15, 0.70, 0.15),
    "blue": (0.12, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.60, 0.15, 0.75),
}
INK = (0.08, 0.08, 0.08)  # the colour of every front feature
LIGHT = (0.45, 0.3, 0.84)
OWL_EYES = ((22.0, 12.0), (-22.0, 12.0))  # (azimuth, elevation) of the eye centres, degrees


def captions() -> list[str]:
    """The 25 captions of the symmetric objects, colour-major: 'a red sphere', 'a red cube', ... (unchanged)."""
    return [f"a {c} {s}" for c, s in itertools.product(COLORS, SHAPES)]


def oriented_captions() -> list[str]:
    """The 15 captions of the oriented objects, colour-major: 'a red house', 'a red camera', 'a red owl', ..."""
    return [f"a {c} {s}" for c, s in itertools.product(COLORS, ORIENTED_SHAPES)]


def world_captions() -> list[str]:
    """Every object of the world: `captions()` then `oriented_captions()` (40)."""
    return captions() + oriented_captions()


def is_oriented(shape: str) -> bool:
    """Whether the shape has a front (a feature facing azimuth 0)."""
    return shape in ORIENTED_SHAPES


def parse(caption: str) -> tuple[str, str]:
    """'a red cube' -> ('cube', 'red'), also with a view prefix ('front view of a red house' -> ('house', 'red'));
    raises ValueError naming the known captions otherwise."""
    words = caption.lower().strip().rstrip(".").split()
    shape = next((w for w in words if w in SHAPES + ORIENTED_SHAPES), None)
    color = next((w for w in words if w in COLORS), None)
    if shape is None or color is None:
        raise ValueError(f"'{caption}' is not a toy-world caption; known: {', '.join(world_captions())}")
    return shape, color


# --- signed distances ---------------------------------------------------------------------------------------
def _box(p: Tensor, centre: tuple, half: tuple) -> Tensor:
    """Box of half-extents `half` around `centre`, p [..., 3] -> [...]."""
    q = (p - p.new_tensor(centre)).abs() - p.new_tensor(half)
    return q.clamp_min(0).norm(dim=-1) + q.amax(-1).clamp_max(0)


def _capped(radial: Tensor, axial: Tensor, radius: float, half_len: float) -> Tensor:
    """Cylinder of `radius` and half length `half_len` from the radial and axial coordinates of the points."""
    d = torch.stack([radial - radius, axial.abs() - half_len], -1)
    return d.clamp_min(0).norm(dim=-1) + d.amax(-1).clamp_max(0)


def _cone(p: Tensor, base: tuple, radius: float, height: float) -> Tensor:
    """Upright cone, base disc of `radius` at `base`, apex `height` above it (an approximate SDF)."""
    x, y, z = (p - p.new_tensor(base)).unbind(-1)
    r_xy = torch.sqrt(x**2 + y**2 + 1e-12)
    side = (r_xy - radius * (height - z) / height) * height / (height**2 + radius**2) ** 0.5
    return torch.maximum(side, (z - height / 2).abs() - height / 2)


def _sphere(p: Tensor) -> Tensor:
    return p.norm(dim=-1) - 0.5


def _cube(p: Tensor) -> Tensor:
    return _box(p, (0.0, 0.0, 0.0), (0.4, 0.4, 0.4))


def _cylinder(p: Tensor) -> Tensor:
    x, y, z = p.unbind(-1)
    return _capped(torch.sqrt(x**2 + y**2 + 1e-12), z, 0.4, 0.45)


def _cone_shape(p: Tensor) -> Tensor:  # base radius 0.5 at z = -0.45, apex at z = 0.45
    return _cone(p, (0.0, 0.0, -0.45), 0.5, 0.9)


def _torus(p: Tensor) -> Tensor:
    x, y, z = p.unbind(-1)
    return torch.sqrt((torch.sqrt(x**2 + y**2 + 1e-12) - 0.4) ** 2 + z**2) - 0.17


def _house(p: Tensor) -> Tensor:
    """Body [-0.35, 0.35]^2 x [-0.45, 0.15], gable roof up to z = 0.5 (eaves at |x| = 0.4, ridge along y)."""
    x, y, z = p.unbind(-1)
    body = _box(p, (0.0, 0.0, -0.15), (0.35, 0.35, 0.3))
    k = 0.35 / 0.4
    slope = (z - 0.5 + k * x.abs()) / math.sqrt(1 + k**2)
    roof = torch.maximum(torch.maximum(slope, y.abs() - 0.4), 0.15 - z)
    return torch.minimum(body, roof)


def _camera(p: Tensor) -> Tensor:
    """Box x in [-0.29, 0.21], |y| <= 0.42, |z| <= 0.28; lens along x from 0.20 to 0.42, radius 0.2."""
    x, y, z = p.unbind(-1)
    body = _box(p, (-0.04, 0.0, 0.0), (0.25, 0.42, 0.28))
    lens = _capped(torch.sqrt(y**2 + z**2 + 1e-12), x - 0.31, 0.2, 0.11)
    return torch.minimum(body, lens)


def _owl(p: Tensor) -> Tensor:
    """Body sphere of radius 0.46 at z = -0.04; ear cones (radius 0.1, height 0.24) based at y = +-0.2, z = 0.3."""
    body = (p - p.new_tensor((0.0, 0.0, -0.04))).norm(dim=-1) - 0.46
    ears = torch.minimum(_cone(p, (0.0, 0.2, 0.3), 0.1, 0.24), _cone(p, (0.0, -0.2, 0.3), 0.1, 0.24))
    return torch.minimum(body, ears)


SDFS = {"sphere": _sphere, "cube": _cube, "cylinder": _cylinder, "cone": _cone_shape, "torus": _torus,
        "house": _house, "camera": _camera, "owl": _owl}


def sdf(shape: str, p: Tensor) -> Tensor:
    """Signed distance (negative inside) of `shape` at points p [..., 3]."""
    if shape not in SDFS:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPES + ORIENTED_SHAPES}")
    return SDFS[shape](p)


# --- front features -----------------------------------------------------------------------------------------
def _eye_centre(azimuth: float, elevation: float) -> tuple[float, float, float]:
    a, e = math.radians(azimuth), math.radians(elevation)
    return (0.46 * math.cos(e) * math.cos(a), 0.46 * math.cos(e) * math.sin(a), -0.04 + 0.46 * math.sin(e))


def front_feature(shape: str, p: Tensor) -> Tensor:
    """Boolean [...]: the points p [..., 3] coloured INK (the front feature; all False for symmetric shapes)."""
    x, y, z = p.unbind(-1)
    if shape == "house":  # the door, through the front wall (x = 0.35)
        return (x > 0.25) & (y.abs() < 0.13) & (z < 0.0)
    if shape == "camera":  # the lens's glass: its front end (x = 0.42)
        return (x > 0.38) & (y**2 + z**2 < 0.2**2)
    if shape == "owl":
        eyes = [(p - p.new_tensor(_eye_centre(a, e))).norm(dim=-1) < 0.15 for a, e in OWL_EYES]
        return (eyes[0] | eyes[1]) & (x > 0)
    return torch.zeros(p.shape[:-1], dtype=torch.bool, device=p.device)


def grid_points(n: int, bbox_len: float = 1.0) -> Tensor:
    """Voxel-centre points [n, n, n, 3] (x, y, z), indexed [z, y, x] like VoxelField."""
    lin = torch.linspace(-bbox_len, bbox_len, n)
    zz, yy, xx = torch.meshgrid(lin, lin, lin, indexing="ij")
    return torch.stack([xx, yy, zz], -1)


def occupancy(shape: str, n: int, bbox_len: float = 1.0) -> Tensor:
    """Boolean occupancy [n, n, n] of the shape on the field's grid."""
    return sdf(shape, grid_points(n, bbox_len)) <= 0


def feature_occupancy(shape: str, n: int, bbox_len: float = 1.0) -> Tensor:
    """Boolean [n, n, n]: occupied voxels of the front feature (empty for symmetric shapes)."""
    p = grid_points(n, bbox_len)
    return (sdf(shape, p) <= 0) & front_feature(shape, p)


def volumes(caption: str, n: int, bbox_len: float = 1.0, sharpness: float = 60.0,
            with_front: bool = True) -> tuple[Tensor, Tensor]:
    """Soft occupancy [n, n, n] in [0, 1] and shaded colour [3, n, n, n] in [-1, 1] for rendering.
    with_front=False paints the front feature in the body colour (the object's featureless twin)."""
    shape, color = parse(caption)
    with torch.enable_grad():  # normals are the SDF's gradient, also when called under no_grad
        p = grid_points(n, bbox_len).requires_grad_(True)
        d = sdf(shape, p)
        (normal,) = torch.autograd.grad(d.sum(), p)
    d, p = d.detach(), p.detach()
    normal = torch.nn.functional.normalize(normal, dim=-1)
    shade = 0.55 + 0.45 * (normal @ torch.tensor(LIGHT)).clamp_min(0)
    base = torch.tensor(COLORS[color]).expand(*d.shape, 3)
    if with_front:
        base = torch.where(front_feature(shape, p)[..., None], torch.tensor(INK), base)
    rgb = (shade[..., None] * base).clamp(0, 1) * 2 - 1
    occ = torch.sigmoid(-d * sharpness * (n / 64))
    return occ, rgb.permute(3, 0, 1, 2)
