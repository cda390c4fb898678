"""Volume rendering over packed ray samples: only the samples that can contribute are read from the fields.

A ray's samples inside the box are a prefix of its S samples (n_r of them; about 38% of all samples lie past
the exit point at the official settings and get zero density anyway). Packed, ray after ray (the K fields'
rays in order), there are P = sum_r n_r of them, and the compositing runs on those alone:
  alpha_i = 1 - exp(-tau_i delta),  T_i = exp(-(sum of tau_j delta over the earlier samples j of its ray)),
  w_i = alpha_i T_i,  per-ray sums of w_i c_i, w_i t_i, w_i,
with the per-ray prefix sums and totals taken as differences of one float64 prefix sum over all P samples
(exact to ~1e-16 relative; no atomics, deterministic). This is the same function as the dense renderer.
Gradients flow through gathers only (index_select, whose backward adds into distinct places; the prefix sums'
backward is a reversed prefix sum, `ExclusiveSum`), never through a P-sized scatter onto few addresses: the
fields' density scale e^{d_scale} is applied in the padded [K, longest] layout, where its gradient is a sum.
'visible' also reads colour only where w_i > VISIBLE_WEIGHT (the official code's 1e-4): each pixel's colour
then moves by at most sum of w_i |c_i| over the dropped samples; weights, depth and opacity stay exact.
Host syncs: one per render (the sample counts size the buffers), two with 'visible'.
Scans are 1-D only: CUDA runs a 1-D cumsum as one device-wide (cub) scan, but a cumsum along dim 0 of [P, D]
gives each of the D columns one thread that walks all P rows in series (ATen's scan_outer_dim), forward and
backward: at the SD bench's P ~ 3.5e6 that is the likely cause of its 510 ms packed steps (BENCHMARKS section 1).
The CPU, serial either way, shows no difference; tests/scene/test_render.py checks every scan's shape.
Shapes: Q = K*B*R rays; packed tensors are [P] or [P, C].
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .field import VoxelField

VISIBLE_WEIGHT = 1e-4
OUTSIDE = 2.0  # grid_sample coordinate of padding points: out of [-1, 1], so they read zeros and get no gradient


@dataclass
class Segments:
    """The packed samples: `ray` [P] of each sample, its `index` [P] along the ray, the packed positions of its
    ray's first sample and one past its last (`start`, `end` [P]), each ray's `first` sample and `counts` [Q],
    and each field's number of samples (host ints: the one sync)."""

    ray: Tensor
    index: Tensor
    start: Tensor
    end: Tensor
    first: Tensor
    counts: Tensor
    field_sizes: list[int]

    @staticmethod
    def of(counts: Tensor) -> "Segments":
        """From the samples kept per ray, counts [K, B*R] (the rays of field k in row k)."""
        field_sizes = counts.sum(1).tolist()  # the host sync
        flat = counts.reshape(-1)
        first = flat.cumsum(0) - flat
        ray = torch.repeat_interleave(torch.arange(len(flat), device=flat.device), flat,
                                      output_size=sum(field_sizes))
        start = first[ray]
        return Segments(ray, torch.arange(len(ray), device=flat.device) - start, start, start + flat[ray], first,
                        flat, field_sizes)

    def dense(self, x: Tensor, samples: int) -> Tensor:
        """[Q, S] with x [P] at each sample's place and zeros elsewhere (differentiable)."""
        flat = x.new_zeros(len(self.counts) * samples)
        return flat.index_put((self.ray * samples + self.index,), x).reshape(-1, samples)


def prefix(x: Tensor) -> Tensor:
    """[P + 1] float64: the sum of x [P] before each position (0 first)."""
    return F.pad(x.double().cumsum(0), (1, 0))


class ExclusiveSum(torch.autograd.Function):
    """y_i = sum of x_j over the earlier samples j of i's ray = prefix_i - prefix_start(i); its backward
    dx_j = sum of dy_i over the later samples i of j's ray = prefix'_end(j) - prefix'_(j+1): gathers only."""

    @staticmethod
    def forward(ctx, x: Tensor, start: Tensor, end: Tensor) -> Tensor:
        ctx.save_for_backward(start, end)
        cs = prefix(x)
        return (cs[:-1] - cs.index_select(0, start)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        _, end = ctx.saved_tensors
        cs = prefix(grad)
        return (cs.index_select(0, end) - cs[1:]).to(grad.dtype), None, None


def ray_sums(x: Tensor, first: Tensor, counts: Tensor) -> Tensor:
    """[Q, D] per-ray sums of x [P, D]: per column, differences of one 1-D prefix sum (the module note on scans)."""
    end = first + counts
    sums = [cs.index_select(0, end) - cs.index_select(0, first) for cs in map(prefix, x.unbind(1))]
    return torch.stack(sums, 1).to(x.dtype)


def sample_weights(tau: Tensor, seg_start: Tensor, seg_end: Tensor, step: float) -> Tensor:
    """w [P] = alpha T of densities tau [P]."""
    tau_delta = tau * step
    return (1 - torch.exp(-tau_delta)) * torch.exp(-ExclusiveSum.apply(tau_delta, seg_start, seg_end))


def composite(w: Tensor, feats: Tensor, t: Tensor, first: Tensor, counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(colour [Q, C], depth [Q], opacity [Q]) from weights w [P], features [P, C], distances t [P]."""
    sums = ray_sums(torch.cat([w[:, None] * feats, (w * t)[:, None], w[:, None]], 1), first, counts)
    return sums[:, :-2], sums[:, -2], sums[:, -1]


def activate_scaled(raw: Tensor, density_shift: float, feature_activation: str) -> tuple[Tensor, Tensor]:
    """field.activate for raw [P, 1 + C] whose density is already scaled by e^{d_scale}: (tau [P], feat [P, C])."""
    feat = raw[:, 1:]
    return F.softplus(raw[:, 0] + density_shift), torch.tanh(feat) if feature_activation == "tanh" else feat


def shade(raw: Tensor, t: Tensor, start: Tensor, end: Tensor, first: Tensor, counts: Tensor, step: float,
          density_shift: float, feature_activation: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Raw samples [P, 1 + C] (density scaled) -> (w [P], colour [Q, C], depth [Q], opacity [Q])."""
    tau, feats = activate_scaled(raw, density_shift, feature_activation)
    w = sample_weights(tau, start, end, step)
    return (w, *composite(w, feats, t, first, counts))


def stacked(fields: list[VoxelField]) -> tuple[Tensor, Tensor]:
    """The K grids [K, 1 + C, N, N, N] (one copy) and their density scales e^{d_scale} [K]."""
    grid = fields[0].grid if len(fields) == 1 else torch.cat([f.grid for f in fields])
    return grid, torch.stack([f.d_scale for f in fields]).exp()


def scale_density(raw: Tensor, scale: Tensor | None) -> Tensor:
    """raw [K, C', L] with channel 0 multiplied by scale [K] (None: unchanged)."""
    if scale is None:
        return raw
    return torch.cat([raw[:, :1] * scale[:, None, None], raw[:, 1:]], 1)


def sample_packed(grid: Tensor, coords: Tensor, field: Tensor, sizes: list[int],
                  scale: Tensor | None = None) -> Tensor:
    """Trilinear samples [P, C'] of grid [K, C', N, N, N] at coords [P, 3] in [-1, 1] (field k's points the k-th
    range of `sizes`), channel 0 times its field's `scale`, in one grid_sample: each field's points padded to
    the longest range with OUTSIDE points."""
    k, channels = grid.shape[:2]
    if k == 1:
        raw = F.grid_sample(grid, coords.reshape(1, 1, 1, -1, 3), mode="bilinear", align_corners=True)
        return scale_density(raw.reshape(1, channels, -1), scale)[0].T
    longest = max(max(sizes), 1)
    offsets = torch.tensor([0] + sizes[:-1], device=coords.device).cumsum(0)
    flat = field * longest + torch.arange(len(coords), device=coords.device) - offsets[field]
    padded = coords.new_full((k * longest, 3), OUTSIDE).index_copy_(0, flat, coords)
    raw = F.grid_sample(grid, padded.reshape(k, 1, 1, longest, 3), mode="bilinear", align_corners=True)
    raw = scale_density(raw.reshape(k, channels, longest), scale)
    return raw.transpose(1, 2).reshape(k * longest, channels).index_select(0, flat)


@dataclass
class Packed:
    """One render's packed samples: segments, field of each sample [P], distance t [P], points [P, 3] / L."""

    seg: Segments
    field: Tensor
    t: Tensor
    coords: Tensor


def pack(o: Tensor, d: Tensor, t_in: Tensor, inside: Tensor, step: float, half: float, k: int) -> Packed:
    """The inside samples of the rays o, d [K*B, R, 3] entering the box at t_in [K*B, R]; inside [K*B, R, S]."""
    seg = Segments.of(inside.sum(-1).reshape(k, -1))
    t = t_in.reshape(-1)[seg.ray] + (seg.index.to(o.dtype) + 0.5) * step  # the dense renderer's arithmetic
    pts = o.reshape(-1, 3)[seg.ray] + t[:, None] * d.reshape(-1, 3)[seg.ray]
    field = torch.div(seg.ray, inside.shape[0] // k * inside.shape[1], rounding_mode="floor")
    return Packed(seg, field, t, pts / half)


def visible_features(grid: Tensor, p: Packed, w: Tensor, feature_activation: str) -> Tensor:
    """Features [P, C] of grid [K, C, N, N, N] where w > VISIBLE_WEIGHT, zeros elsewhere (the second sync)."""
    keep = w.detach() > VISIBLE_WEIGHT
    counted = F.pad(keep.long().cumsum(0), (1, 0))  # fields are contiguous ranges: counts by differences
    bounds = torch.tensor([0] + p.seg.field_sizes, device=w.device).cumsum(0)
    sizes = (counted[bounds[1:]] - counted[bounds[:-1]]).tolist()
    idx = torch.nonzero_static(keep, size=sum(sizes)).squeeze(1)
    raw = sample_packed(grid, p.coords[idx], p.field[idx], sizes)
    feats = torch.tanh(raw) if feature_activation == "tanh" else raw
    return feats.new_zeros(len(w), grid.shape[1]).index_put((idx,), feats)


def render_packed(fields: list[VoxelField], p: Packed, step: float, samples: str, shade_fn=shade):
    """(w [P], colour [Q, C], depth [Q], opacity [Q]) of the packed samples p: 'inside' reads every packed
    sample's density and colour, 'visible' the colour of visible samples only."""
    cfg, seg = fields[0].cfg, p.seg
    grid, scale = stacked(fields)
    if samples == "inside":
        raw = sample_packed(grid, p.coords, p.field, seg.field_sizes, scale)
        return shade_fn(raw, p.t, seg.start, seg.end, seg.first, seg.counts, step, cfg.density_shift,
                        cfg.feature_activation)
    density = sample_packed(grid[:, :1], p.coords, p.field, seg.field_sizes, scale)
    tau, _ = activate_scaled(density, cfg.density_shift, cfg.feature_activation)
    w = sample_weights(tau, seg.start, seg.end, step)
    feats = visible_features(grid[:, 1:], p, w, cfg.feature_activation)
    return (w, *composite(w, feats, p.t, seg.first, seg.counts))
