"""Volume rendering of a VoxelField f(theta) (SJC Sec. 4, NeRF quadrature), batched over views.

For each ray: intersect the box [-L, L]^3, take S = ceil(2 sqrt(3) L / delta) samples at equal steps delta
(samples past the exit point get zero density), then
  alpha_i = 1 - exp(-tau_i delta),  T_i = exp(-sum_{j<i} tau_j delta),  w_i = alpha_i T_i,
  pixel = sum_i w_i c_i + (1 - sum_i w_i) bg(d),  depth = sum_i w_i t_i + (1 - sum_i w_i) bg_depth.
Shapes: image [B, C, H, W], depth and opacity [B, 1, H, W], weights [B, H*W, S].
`render_many` renders K fields of one shape (each with its own B cameras and background) in one pass: one
grid_sample and one set of compositing kernels for all K scenes, which is what batched scenes on a GPU need
(per-scene kernel launches, not arithmetic, bound a small render). `render` is its K = 1 case.
Which samples are read (`RenderConfig.samples`): 'all' S per ray (the plain path above); 'inside' only those
before the exit point, packed (packed.py: the same image, weights and gradients); 'visible' also colour only
where w > 1e-4, as the official code (colour moves by at most the dropped weight times |c|).
`fuse='triton'` runs the whole dense render, reads included, in one Triton kernel forward and one backward
(triton_render.py: the same values and gradients, 1.2-1.4x faster alone and 0.6x the memory on an H200; on the CPU
only in Triton's interpreter, TRITON_INTERPRET=1); 'auto' (the default) is 'triton' on a GPU with Triton installed
and the plain path elsewhere. `fuse='compile'` runs the shading through torch.compile on a GPU (measured no gain).
"""
import importlib.util
import os
from functools import cache
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..configtools import opt
from .background import Background, backgrounds_of
from .cameras import Cameras
from .field import VoxelField, activate, sample_channels
from .packed import pack, render_packed
from .packed import shade as shade_packed

SAMPLES = ("all", "inside", "visible")
FUSE = ("auto", "none", "compile", "triton")


@dataclass(frozen=True)
class RenderConfig:
    """How views are rendered during optimisation."""

    resolution: int | None = opt(None, "rendered side in pixels (latents for SD); null = the model's own size",
                                 ge=4, le=1024)
    step: float = opt(0.01, "ray-marching step delta in world units (official: 0.01 for the 100^3 grid)", gt=0.0)
    views_per_step: int = opt(1, "cameras rendered (and scored) per optimisation step (official: 1)", ge=1)
    samples: str = opt("all", "ray samples read from the field: 'all' (S per ray), 'inside' (those inside the box "
                              "only: the same render, fewer reads), 'visible' (also colour only where the weight "
                              "> 1e-4, as the official code)", choices=SAMPLES)
    fuse: str = opt("auto", "samples 'all': 'triton' renders in one Triton kernel each way on a GPU; 'auto' is "
                            "triton on a GPU with Triton installed, none elsewhere; 'compile': the shading through "
                            "torch.compile on a GPU", choices=FUSE)


@dataclass
class RenderOutput:
    """What a render returns. `weights` is None for the 2D (identity) scene."""

    image: Tensor
    depth: Tensor | None = None
    opacity: Tensor | None = None
    weights: Tensor | None = None
    chord: Tensor | None = None  # [B]: each view's longest chord through the box (t_out - t_in), world units


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
    """(weights [K*B, R, S], colour [K*B, R, C], depth [K*B, R]) from densities tau [K*B, R, S] and features
    channels first [K, C, B*R*S]: the colour sum runs along each channel's contiguous samples (no transposed
    copy of the features, vectorised kernels forward and backward; the GPU's render is memory-bound)."""
    tau_delta = tau * step
    alpha = 1 - torch.exp(-tau_delta)
    trans = torch.exp(-(torch.cumsum(tau_delta, -1) - tau_delta))
    w = alpha * trans
    k, c = feats.shape[:2]
    rays = w.shape[:-1]  # (K*B, R)
    colour = (feats.reshape(k, c, -1, w.shape[-1]) * w.reshape(k, 1, -1, w.shape[-1])).sum(-1)  # [K, C, B*R]
    return w, colour.transpose(1, 2).reshape(*rays, c), (w * t).sum(-1)


def background_depth(backgrounds: list[Background], b: int, device: torch.device) -> float | Tensor:
    """The depth of background pixels: one number, or [K*B, 1] when the K backgrounds differ (no host copy)."""
    depths = [bgk.cfg.depth for bgk in backgrounds]
    if len(set(depths)) == 1:
        return depths[0]
    return torch.cat([torch.full((b, 1), x, device=device) for x in depths])


def render(field: VoxelField, background: Background, cams: Cameras, step: float, samples: str = "all",
           fuse: str = "auto") -> RenderOutput:
    """Render B views of the field over the background."""
    return render_many([field], [background], [cams], step, samples, fuse)[0]


def render_many(fields: list[VoxelField], backgrounds: list[Background], cams: list[Cameras],
                step: float, samples: str = "all", fuse: str = "auto") -> list[RenderOutput]:
    """Render K fields of one `stack_key`, each from its own B cameras (same B, H, W; on any device: they are
    joined first and moved once) over its own background: `render_joined`, split per field."""
    return split_views(render_joined(fields, backgrounds, cams, step, samples, fuse), len(fields))


def render_joined(fields: list[VoxelField], backgrounds: list[Background], cams: list[Cameras],
                  step: float, samples: str = "all", fuse: str = "auto") -> RenderOutput:
    """The K fields' views as one RenderOutput of K*B views, field-major (image [K*B, C, H, W], weights
    [K*B, R, S], chord [K*B]): what the joined losses read (optim/joint.py)."""
    k, b = len(fields), len(cams[0])
    check_batch(fields, cams, samples)
    o, d = Cameras.cat(cams).to(fields[0].grid.device).rays()  # [K*B, R, 3]; cameras may come on the host
    half = fields[0].bbox_len
    t_in, t_out = ray_box(o, d, half)
    n = n_samples(half, step)
    bg = backgrounds_of(backgrounds, d)
    bg_depth = background_depth(backgrounds, b, o.device)
    if samples == "all" and use_triton(fuse, o.device):  # the kernels place the samples themselves
        w, colour, depth, opacity = render_triton(fields, o, d, t_in, t_out, n, step)
        w = w.reshape(*t_in.shape, n)
        colour, depth, opacity = blend(colour.reshape(bg.shape), depth.reshape(t_in.shape),
                                       opacity.reshape(t_in.shape), bg, bg_depth)
    else:
        t = t_in[..., None] + (torch.arange(n, device=o.device, dtype=o.dtype) + 0.5) * step  # [K*B, R, S]
        w, colour, depth, opacity = render_samples(fields, o, d, t_in, t, t_out, bg, bg_depth, step, samples, fuse)
    chord = (t_out - t_in).amax(-1)  # [K*B]: the official emptiness normalisation's longest ray (losses.py)
    h, wd = cams[0].height, cams[0].width
    return RenderOutput(image=colour.reshape(k * b, h, wd, -1).permute(0, 3, 1, 2),
                        depth=depth.reshape(k * b, 1, h, wd), opacity=opacity.reshape(k * b, 1, h, wd),
                        weights=w, chord=chord)


def render_samples(fields: list[VoxelField], o: Tensor, d: Tensor, t_in: Tensor, t: Tensor, t_out: Tensor,
                   bg: Tensor, bg_depth: float | Tensor, step: float, samples: str, fuse: str):
    """(weights [K*B, R, S], colour [K*B, R, C], depth, opacity [K*B, R]) of the torch paths: the dense samples t
    [K*B, R, S] ('all'), or those packed by `samples` ('inside', 'visible') from the rays' entries t_in [K*B, R]."""
    k = len(fields)
    if samples == "all":
        pts = o[..., None, :] + t[..., None] * d[..., None, :]
        raw, d_scale = sample_channels(fields, pts.reshape(k, -1, 3))
        cfg = fields[0].cfg
        return fused(shade, fuse, o.device)(raw, d_scale, t, t_out, bg, bg_depth, step, cfg.density_shift,
                                            cfg.feature_activation)
    p = pack(o, d, t_in, t < t_out[..., None], step, fields[0].bbox_len, k)
    w, colour, depth, opacity = render_packed(fields, p, step, samples, fused(shade_packed, fuse, o.device,
                                                                              dynamic=True))
    w = p.seg.dense(w, t.shape[-1]).reshape(t.shape)
    return w, *blend(colour.reshape(bg.shape), depth.reshape(t_out.shape), opacity.reshape(t_out.shape), bg,
                     bg_depth)


def use_triton(fuse: str, device: torch.device) -> bool:
    """fuse 'triton' takes the Triton kernels on a GPU, or on the CPU under Triton's interpreter (tests); 'auto' on a
    GPU where Triton is installed."""
    if fuse == "triton":
        return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    return fuse == "auto" and device.type == "cuda" and triton_installed()


@cache
def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def render_triton(fields: list[VoxelField], o: Tensor, d: Tensor, t_in: Tensor, t_out: Tensor, n: int,
                  step: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The dense render's (weights, colour, depth, opacity) before the background, by triton_render.py: rays
    o, d [K*B, R, 3] with entry/exit [K*B, R] through the K fields (imported here: Triton loads on first use)."""
    from .triton_render import fused_render

    first = fields[0]
    grid = first.grid if len(fields) == 1 else torch.cat([f.grid for f in fields])
    d_scale = torch.stack([f.d_scale for f in fields])
    return fused_render(grid, d_scale, o, d, t_in, t_out, n, first.bbox_len, step, first.cfg.density_shift,
                        first.cfg.feature_activation)


def check_batch(fields: list[VoxelField], cams: list[Cameras], samples: str) -> None:
    """render_many's preconditions: one stack_key, equal view counts and sizes, a known sample rule."""
    b = len(cams[0])
    if len({f.stack_key() for f in fields}) > 1:
        raise ValueError("render_many needs fields of one stack_key (grid shape, device, box, activation)")
    if any(len(c) != b or (c.height, c.width) != (cams[0].height, cams[0].width) for c in cams):
        raise ValueError("render_many needs the same number and size of views for every field")
    if samples not in SAMPLES:
        raise ValueError(f"samples must be one of {SAMPLES}, got {samples!r}")


def split_views(out: RenderOutput, k: int) -> list[RenderOutput]:
    """Per-field RenderOutputs (views of the joined one's tensors) of a joined render of K fields."""
    parts = [t.chunk(k) for t in (out.image, out.depth, out.opacity, out.weights, out.chord)]
    return [RenderOutput(image=i, depth=dp, opacity=op, weights=ww, chord=c) for i, dp, op, ww, c in zip(*parts)]


def blend(colour: Tensor, depth: Tensor, opacity: Tensor, bg: Tensor, bg_depth: float | Tensor):
    """The background behind what the samples leave: colour [..., C] + (1 - opacity) bg, depth likewise."""
    return colour + (1 - opacity)[..., None] * bg, depth + (1 - opacity) * bg_depth, opacity


def shade(raw: Tensor, d_scale: Tensor, t: Tensor, t_out: Tensor, bg: Tensor, bg_depth: float | Tensor,
          step: float, density_shift: float, feature_activation: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Raw samples [K, 1 + C, B*R*S] (channels first) at distances t [K*B, R, S] -> (weights [K*B, R, S], colour
    [K*B, R, C], depth [K*B, R], opacity [K*B, R]) over the background bg [K*B, R, C]; samples past t_out [K*B, R]
    are empty."""
    tau, feats = activate(raw, d_scale, density_shift, feature_activation, dim=1)
    tau = tau.reshape(t.shape) * (t < t_out[..., None])
    w, colour, depth = composite(tau, feats, t, step)
    return (w, *blend(colour, depth, w.sum(-1), bg, bg_depth))


_FUSED: dict = {}


def fused(fn, fuse: str, device: torch.device, dynamic: bool = False):
    """fn itself, or (fuse 'compile', on a GPU) its torch.compile'd version, made once per process."""
    if fuse != "compile" or device.type != "cuda":
        return fn
    if fn not in _FUSED:
        _FUSED[fn] = torch.compile(fn, dynamic=dynamic)
    return _FUSED[fn]
