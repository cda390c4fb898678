"""The toy CLIP's training world: the toy objects and imperfect versions of them, each with a soft target over a
caption bank, so the judge's similarity falls as a render departs from its caption (a more realistic stand-in for
a real CLIP than a classifier of clean renders, which hardly moves with quality).

Bank: `shapes.world_captions()` then NULL_CAPTIONS. A sample is one world object, at most one identity change and
up to two quality degradations, each with an amount a uniform in (0, 1]. Its target puts q on the object's caption
and the rest where the degradations take it:
  morph     SDF (1 - a) d_A + a d_B with another shape B of the same colour: (1 - a) on A, a on B
  recolour  base colour (1 - a) c_A + a c_B: (1 - a) on A, a on the caption of colour B
  dilate    d - 0.25 a (fatter, like over-dense fields)        q = 1 - 0.6 a, rest on 'a shapeless blob'
  erode     d + 0.1 a (thinner)                                q = 1 - 0.6 a, rest on the blob
  cut       the half-space past a random plane at 0.5 - 0.6 a  q = 1 - 0.7 a, rest on the blob
  fog       a random low-frequency density of strength a       q = 1 - 0.6 a, rest on 'a cloud of fog'
  floaters  1 + round(5 a) small random blobs                  q = 1 - 0.5 a, rest on the fog
  faint     density scaled by 0.02^a (semi-transparent)        q = 1 - 0.6 a, rest on the fog
  empty     nothing at all (amount 1): all on 'an empty white background'
Nuisances keep the full target (a real CLIP still names them): the light's direction, flat shading (no
Lambertian term: SJC's one-colour voxels look so), and the wide cameras (WIDE_CAMERAS); train_clip adds mirror,
shift, blur and noise. Amounts are drawn uniformly and targets are functions of the amounts alone: never of a
measured overlap with the truth, never of any SJC or SDS result.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..scene.background import Background
from ..scene.cameras import CameraConfig, CameraSampler
from ..scene.render import render
from .data import BACKGROUND, truth_field, volume_field
from .shapes import COLORS, captions, INK, SHAPES, front_feature, grid_points, parse, sdf, world_captions

NULL_CAPTIONS = ("a shapeless blob", "a cloud of fog", "an empty white background")
BLOB, FOG, EMPTY = NULL_CAPTIONS
IDENTITY = ("morph", "recolour")
QUALITY = {"dilate": (0.6, BLOB), "erode": (0.6, BLOB), "cut": (0.7, BLOB), "fog": (0.6, FOG),
           "floaters": (0.5, FOG), "faint": (0.6, FOG)}  # kind -> (q = 1 - slope * a, where the rest goes)
TEMPLATES = ("{}", "{}", "a photo of {}", "a 3d render of {}", "{} on a white background")  # of every bank text
EVAL_STEP = 0.01  # the ray step of render_truth: held-out views are rendered exactly as the evaluator's truth
WIDE_CAMERAS = CameraConfig(radius_min=1.2, radius_max=2.2, fov_min=30.0, fov_max=75.0, elevation_min=-30.0)
P_CLEAN, P_IDENTITY, P_EMPTY, P_FLAT = 0.3, 0.3, 0.02, 0.25


@dataclass(frozen=True)
class Sample:
    """One training object: its caption, changes [(kind, amount, partner caption or '')], lighting."""

    caption: str
    changes: tuple[tuple[str, float, str], ...] = ()
    light: tuple[float, float, float] = (0.45, 0.3, 0.84)
    flat: bool = False
    seed: int = 0


def bank() -> list[str]:
    """The captions every target is a distribution over: the world's objects, then the null captions."""
    return world_captions() + list(NULL_CAPTIONS)


def _u(gen: torch.Generator) -> float:
    return float(torch.rand((), generator=gen))


def _pick(items, gen: torch.Generator):
    return items[int(torch.randint(len(items), (), generator=gen))]


def partner(caption: str, kind: str, gen: torch.Generator) -> str:
    """Another world caption: a symmetric shape of the same colour (morph) or another colour (recolour)."""
    shape, color = parse(caption)
    if kind == "morph":
        return f"a {color} {_pick([s for s in SHAPES if s != shape], gen)}"
    return f"a {_pick([c for c in COLORS if c != color], gen)} {shape}"


def draw(gen: torch.Generator) -> Sample:
    """A random sample of the world (CPU generator)."""
    caption = _pick(world_captions(), gen)
    light = F.normalize(torch.tensor([_u(gen) - 0.5, _u(gen) - 0.5, 0.3 + _u(gen)]), dim=0)
    flat, seed = _u(gen) < P_FLAT, int(torch.randint(2**31 - 1, (), generator=gen))
    if _u(gen) < P_EMPTY:
        return Sample(caption, (("empty", 1.0, ""),), tuple(light.tolist()), flat, seed)
    changes = []
    if _u(gen) >= P_CLEAN:
        if _u(gen) < P_IDENTITY:
            kind = _pick(IDENTITY, gen)
            changes.append((kind, _u(gen), partner(caption, kind, gen)))
        for kind in [_pick(list(QUALITY), gen) for _ in range(1 + int(_u(gen) < 0.3))]:
            changes.append((kind, max(_u(gen), 1e-3), ""))
    return Sample(caption, tuple(changes), tuple(light.tolist()), flat, seed)


def target(sample: Sample, captions: list[str]) -> Tensor:
    """The soft caption distribution [K] of a sample over `captions` (the bank)."""
    t = torch.zeros(len(captions))
    t[captions.index(sample.caption)] = 1.0
    for kind, a, other in sample.changes:
        if kind == "empty":
            t = torch.zeros_like(t)
            t[captions.index(EMPTY)] = 1.0
        elif kind in IDENTITY:
            t = (1 - a) * t
            t[captions.index(other)] += a
        else:
            slope, rest = QUALITY[kind]
            t = (1 - slope * a) * t
            t[captions.index(rest)] += slope * a
    return t / t.sum()


def signed_distance(sample: Sample, p: Tensor, gen: torch.Generator) -> Tensor:
    """The sample's (degraded) SDF at points p [..., 3]: morph, dilate, erode, cut."""
    shape, _ = parse(sample.caption)
    d = sdf(shape, p)
    for kind, a, other in sample.changes:
        if kind == "morph":
            d = (1 - a) * d + a * sdf(parse(other)[0], p)
        elif kind == "dilate":
            d = d - 0.25 * a
        elif kind == "erode":
            d = d + 0.1 * a
        elif kind == "cut":
            normal = F.normalize(torch.randn(3, generator=gen), dim=0).to(p)
            d = torch.maximum(d, p @ normal - (0.5 - 0.6 * a))
    return d


def base_colour(sample: Sample, p: Tensor) -> Tensor:
    """Base colour [..., 3] in [0, 1]: the caption's colour (mixed when recoloured), the front feature in INK."""
    shape, color = parse(sample.caption)
    c = torch.tensor(COLORS[color], device=p.device)
    for kind, a, other in sample.changes:
        if kind == "recolour":
            c = (1 - a) * c + a * torch.tensor(COLORS[parse(other)[1]], device=p.device)
    base = c.expand(*p.shape[:-1], 3)
    if not any(kind == "morph" for kind, _, _ in sample.changes):
        base = torch.where(front_feature(shape, p)[..., None], torch.tensor(INK, device=p.device), base)
    return base


def clutter(sample: Sample, n: int, gen: torch.Generator, device: torch.device) -> Tensor:
    """Extra soft occupancy [n, n, n] of fog and floaters (zeros without them)."""
    extra = torch.zeros(n, n, n, device=device)
    for kind, a, _ in sample.changes:
        if kind == "fog":
            noise = torch.rand(1, 1, 6, 6, 6, generator=gen).to(device)
            up = F.interpolate(noise, size=(n, n, n), mode="trilinear", align_corners=True)[0, 0]
            extra = extra + 0.04 * a * (up - 0.5).clamp_min(0) * 2
        elif kind == "floaters":
            p = grid_points(n).to(device)
            for _ in range(1 + round(5 * a)):
                centre = ((torch.rand(3, generator=gen) * 2 - 1) * 0.85).to(device)
                radius = 0.04 + 0.06 * _u(gen)
                extra = extra + torch.sigmoid(((p - centre).norm(dim=-1) - radius) * -60.0)
    return extra.clamp(0, 1)


def volumes(sample: Sample, n: int = 64, device: torch.device | str = "cpu",
            sharpness: float = 60.0) -> tuple[Tensor, Tensor]:
    """Soft occupancy [n, n, n] in [0, 1] and shaded colour [3, n, n, n] in [-1, 1] of a sample, on `device`."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(sample.seed)
    with torch.enable_grad():
        p = grid_points(n).to(device).requires_grad_(True)
        d = signed_distance(sample, p, gen)
        (normal,) = torch.autograd.grad(d.sum(), p)
    d, p = d.detach(), p.detach()
    shade = torch.ones_like(d)
    if not sample.flat:
        light = torch.tensor(sample.light, device=device)
        shade = 0.55 + 0.45 * (F.normalize(normal, dim=-1) @ light).clamp_min(0)
    rgb = (shade[..., None] * base_colour(sample, p)).clamp(0, 1) * 2 - 1
    occ = torch.sigmoid(-d * sharpness * (n / 64))
    if any(kind == "empty" for kind, _, _ in sample.changes):
        occ = torch.zeros_like(occ)
    occ = torch.maximum(occ, clutter(sample, n, gen, device))
    for kind, a, _ in sample.changes:
        if kind == "faint":
            occ = occ * 0.02**a
    return occ, rgb.permute(3, 0, 1, 2)


def describe(sample: Sample) -> str:
    """'a red cube + dilate 0.42 + fog 0.10' (for logs)."""
    parts = [sample.caption] + [f"{k} {a:.2f}" + (f" -> {o}" if o else "") for k, a, o in sample.changes]
    return " + ".join(parts) + (" (flat)" if sample.flat else "")


class WorldRenderer:
    """Renders [n, 3, R, R] in [-1, 1] of samples from the wide cameras over the white background, on a device."""

    def __init__(self, device: torch.device, resolution: int, chunk: int = 256, grid: int = 64):
        self.background = Background(BACKGROUND, 3).to(device)
        self.sampler = CameraSampler(WIDE_CAMERAS, resolution)
        self.device, self.chunk, self.grid = device, chunk, grid

    @torch.no_grad()
    def render(self, sample: Sample, n: int, step: float, generator: torch.Generator) -> Tensor:
        """n views of the sample from cameras drawn with `generator` (CPU)."""
        occ, rgb = volumes(sample, self.grid, self.device)
        field = volume_field(occ.cpu(), rgb.cpu()).to(self.device)
        parts = []
        for start in range(0, n, self.chunk):
            cams = self.sampler.sample(min(self.chunk, n - start), generator).to(self.device)
            parts.append(render(field, self.background, cams, step).image.clamp(-1, 1))
        return torch.cat(parts)


class TruthViews:
    """Renders [n, 3, R, R] in [-1, 1] of clean true objects (the given captions, default the 25) from random SJC
    cameras, on one device: the held-out and monitor sets."""

    def __init__(self, device: torch.device, resolution: int, chunk: int, names: list[str] | None = None):
        self.names = names or captions()
        self.fields = [truth_field(c).to(device) for c in self.names]
        self.background = Background(BACKGROUND, 3).to(device)
        self.sampler = CameraSampler(CameraConfig(), resolution)
        self.device, self.chunk = device, chunk

    @torch.no_grad()
    def render(self, k: int, n: int, step: float, generator: torch.Generator) -> Tensor:
        """n views of object k (caption index) from cameras drawn with `generator` (CPU)."""
        parts = []
        for start in range(0, n, self.chunk):
            cams = self.sampler.sample(min(self.chunk, n - start), generator).to(self.device)
            parts.append(render(self.fields[k], self.background, cams, step).image.clamp(-1, 1))
        return torch.cat(parts)

    def dataset(self, per_caption: int, step: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(images [25 * per_caption, 3, R, R], caption indices [25 * per_caption]), caption-major."""
        images = [self.render(k, per_caption, step, generator) for k in range(len(self.fields))]
        labels = torch.arange(len(self.fields), device=self.device).repeat_interleave(per_caption)
        return torch.cat(images), labels
