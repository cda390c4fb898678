"""The dense render (`samples='all'`) of K voxel fields in one Triton kernel forward and one backward
(`render.fuse='triton'`): trilinear reads, activation and compositing per ray, no [K, 1 + C, P] sample tensors.

Per ray (origin o, direction d, box entry t_in and exit t_out, field k), sample i < S at t_i = t_in + (i + 1/2) delta:
  raw_i = trilinear(grid_k, (o + t_i d) / L) [1 + C],   x_i = raw_i[0] e^{d_scale_k} + shift,
  tau_i = softplus(x_i) [t_i < t_out],   a_i = tau_i delta,   T_i = exp(-sum_{j<i} a_j),   w_i = T_i (1 - e^{-a_i}),
  colour = sum_i w_i c_i (c_i = raw_i[1:], or tanh of it),   depth = sum_i w_i t_i,   opacity = sum_i w_i.
Backward, with g_i = <dL/dcolour, c_i> + dL/ddepth t_i + dL/dopacity + dL/dw_i and the suffix
U_i = sum_{j>i} w_j g_j = G - sum_{j<=i} w_j g_j (G = <dL/dcolour, colour> + dL/ddepth depth + dL/dopacity opacity
+ sum_j w_j dL/dw_j, from the forward's outputs):
  dL/dtau_i = delta (T_{i+1} g_i - U_i),   dL/dc_i = w_i dL/dcolour,
added to the 8 corners of each sample with its trilinear weights (atomic adds; samples past t_out add nothing,
and a block of rays stops at the last chunk any of them has before its exit: 38% of the samples lie outside the box),
and dL/dd_scale_k = sum over its rays and samples of dL/dtau_i sigmoid(x_i) raw_i[0] e^{d_scale_k}.
The same maths as `render.shade` over `field.sample_channels` (grid_sample, align_corners=True, zeros outside the
grid); tests check both directions against it in Triton's interpreter (TRITON_INTERPRET=1, on the CPU).
Shapes: grid [K, 1 + C, N, N, N] fp32, d_scale [K], o and d [K*B*R, 3], t_in and t_out [K*B*R];
weights [K*B*R, S], colour [K*B*R, C], depth and opacity [K*B*R]. A program takes BLOCK_R rays and walks their
samples in chunks of BLOCK_S with a running prefix; the channels are read (and their gradients added) one at a time
over [BLOCK_R, BLOCK_S] tiles, which keeps the registers, and so the loads in flight, within what the GPU holds.
"""
import torch
import triton
import triton.language as tl
from torch import Tensor

TILE = {"BLOCK_R": 16, "BLOCK_S": 16, "num_warps": 4}  # the fastest at K = 32 of eval/bench/render_tiles.py
FEW_TILE = {"BLOCK_R": 8, "BLOCK_S": 16, "num_warps": 2}  # the fastest at K = 1 (4,096 rays): twice the programs
FEW_RAYS = 8192  # renders of at most this many rays take FEW_TILE


@triton.jit
def _grid_coords(ox, oy, oz, dx, dy, dz, t, half, n):
    """Grid coordinates (ix, iy, iz) [BR, BS] of the points o + t d (o, d components [BR]), as grid_sample
    unnormalises them (align_corners=True: ((p / L + 1) / 2) (N - 1))."""
    scale = (n - 1).to(tl.float32)
    px = ((ox[:, None] + t * dx[:, None]) / half + 1) / 2 * scale
    py = ((oy[:, None] + t * dy[:, None]) / half + 1) / 2 * scale
    pz = ((oz[:, None] + t * dz[:, None]) / half + 1) / 2 * scale
    return px, py, pz


@triton.jit
def _corner(px, py, pz, c: tl.constexpr, n, live):
    """Corner c (bits x, y, z) of each sample's voxel: offset in an [N, N, N] grid, trilinear weight, in-grid mask."""
    x0f, y0f, z0f = tl.floor(px), tl.floor(py), tl.floor(pz)
    fx, fy, fz = px - x0f, py - y0f, pz - z0f
    ix = x0f.to(tl.int32) + (c % 2)
    iy = y0f.to(tl.int32) + ((c // 2) % 2)
    iz = z0f.to(tl.int32) + (c // 4)
    wx = fx if c % 2 == 1 else 1 - fx
    wy = fy if (c // 2) % 2 == 1 else 1 - fy
    wz = fz if c // 4 == 1 else 1 - fz
    ok = live & (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n) & (iz >= 0) & (iz < n)
    return (iz * n + iy) * n + ix, wx * wy * wz, ok


@triton.jit
def _gather(ptr, px, py, pz, n, live):
    """One channel's trilinear value [BR, BS]; ptr [BR] points at each ray's [N, N, N] channel (zeros outside)."""
    off, wgt, ok = _corner(px, py, pz, 0, n, live)
    value = wgt * tl.load(ptr[:, None] + off, mask=ok, other=0.0)
    for c in tl.static_range(1, 8):
        off, wgt, ok = _corner(px, py, pz, c, n, live)
        value += wgt * tl.load(ptr[:, None] + off, mask=ok, other=0.0)
    return value


@triton.jit
def _scatter(ptr, px, py, pz, n, live, grad):
    """Add grad [BR, BS] to the 8 corners of each sample in one channel, weighted as `_gather` reads them."""
    for c in tl.static_range(8):
        off, wgt, ok = _corner(px, py, pz, c, n, live)
        tl.atomic_add(ptr[:, None] + off, wgt * grad, mask=ok, sem="relaxed")


@triton.jit
def _feature(ptr, px, py, pz, n, live, TANH: tl.constexpr):
    """One feature channel [BR, BS]: raw, or tanh of it."""
    f = _gather(ptr, px, py, pz, n, live)
    if TANH:
        f = 2 * tl.sigmoid(2 * f) - 1
    return f


@triton.jit
def _column(tile, ch, c: tl.constexpr):
    """Column c [BR] of a [BR, CP] tile."""
    return tl.sum(tl.where(ch[None, :] == c, tile, 0.0), axis=1)


@triton.jit
def _ray_block(o_ptr, d_ptr, tin_ptr, tout_ptr, ds_ptr, n_rays, rays_per_field, n,
               C: tl.constexpr, BLOCK_R: tl.constexpr):
    """This program's rays [BR], their mask, o and d by component, entry/exit, e^{d_scale}, the offset of each
    ray's field in the stacked grids [BR] and the channel stride N^3."""
    rays = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = rays < n_rays
    ox = tl.load(o_ptr + rays * 3 + 0, mask=rmask, other=0.0)
    oy = tl.load(o_ptr + rays * 3 + 1, mask=rmask, other=0.0)
    oz = tl.load(o_ptr + rays * 3 + 2, mask=rmask, other=0.0)
    dx = tl.load(d_ptr + rays * 3 + 0, mask=rmask, other=0.0)
    dy = tl.load(d_ptr + rays * 3 + 1, mask=rmask, other=0.0)
    dz = tl.load(d_ptr + rays * 3 + 2, mask=rmask, other=0.0)
    t_in = tl.load(tin_ptr + rays, mask=rmask, other=0.0)
    t_out = tl.load(tout_ptr + rays, mask=rmask, other=0.0)
    k = tl.where(rmask, rays // rays_per_field, 0)
    es = tl.exp(tl.load(ds_ptr + k, mask=rmask, other=0.0))
    n3 = n * n * n
    return rays, rmask, ox, oy, oz, dx, dy, dz, t_in, t_out, es, k * (C + 1) * n3, n3


@triton.jit
def _chunk(s0, t_in, t_out, rmask, n_samples, step, BLOCK_S: tl.constexpr):
    """Samples s0 ... s0 + BLOCK_S - 1 of the block's rays: indices [BS], distances t and live mask [BR, BS]."""
    s = s0 + tl.arange(0, BLOCK_S)
    t = t_in[:, None] + (s[None, :].to(tl.float32) + 0.5) * step
    live = rmask[:, None] & (s[None, :] < n_samples) & (t < t_out[:, None])
    return s, t, live


@triton.jit
def _live_end(t_in, t_out, rmask, n_samples, step):
    """Where the block's samples end: the most samples of its rays before their exits, bounded above by
    max floor((t_out - t_in) / delta) + 1 (at most S); later chunks of every ray are past the exit (w = 0)."""
    count = tl.where(rmask, ((t_out - t_in) / step).to(tl.int32) + 1, 0)
    return tl.minimum(tl.max(count, axis=0), n_samples)


@triton.jit
def _density(ptr, px, py, pz, n, live, es, shift, carry, step):
    """(x, raw density, a = tau delta, inclusive prefix of a, w) [BR, BS] of a chunk, after `carry` [BR]."""
    raw0 = _gather(ptr, px, py, pz, n, live)
    x = raw0 * es[:, None] + shift
    tau = tl.where(live, tl.maximum(x, 0.0) + tl.log(1 + tl.exp(-tl.abs(x))), 0.0)  # softplus
    a = tau * step
    csum = tl.cumsum(a, axis=1) + carry[:, None]
    return x, raw0, a, csum, (1 - tl.exp(-a)) * tl.exp(-(csum - a))


@triton.jit
def _forward_kernel(grid_ptr, ds_ptr, o_ptr, d_ptr, tin_ptr, tout_ptr, w_ptr, colour_ptr, depth_ptr, opacity_ptr,
                    n_rays, rays_per_field, n_samples, n, half, step, shift,
                    C: tl.constexpr, TANH: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_S: tl.constexpr,
                    CP: tl.constexpr):
    rays, rmask, ox, oy, oz, dx, dy, dz, t_in, t_out, es, base, n3 = _ray_block(
        o_ptr, d_ptr, tin_ptr, tout_ptr, ds_ptr, n_rays, rays_per_field, n, C, BLOCK_R)
    ptr = grid_ptr + base
    ch = tl.arange(0, CP)
    carry = tl.zeros([BLOCK_R], tl.float32)
    colour = tl.zeros([BLOCK_R, CP], tl.float32)
    depth = tl.zeros([BLOCK_R], tl.float32)
    opacity = tl.zeros([BLOCK_R], tl.float32)
    for s0 in range(0, _live_end(t_in, t_out, rmask, n_samples, step), BLOCK_S):  # w past it stays 0
        s, t, live = _chunk(s0, t_in, t_out, rmask, n_samples, step, BLOCK_S)
        px, py, pz = _grid_coords(ox, oy, oz, dx, dy, dz, t, half, n)
        x, raw0, a, csum, w = _density(ptr, px, py, pz, n, live, es, shift, carry, step)
        carry += tl.sum(a, axis=1)
        for c in tl.static_range(C):
            f = _feature(ptr + (c + 1) * n3, px, py, pz, n, live, TANH)
            colour += tl.where(ch[None, :] == c, tl.sum(w * f, axis=1)[:, None], 0.0)
        depth += tl.sum(w * t, axis=1)
        opacity += tl.sum(w, axis=1)
        tl.store(w_ptr + rays[:, None] * n_samples + s[None, :], w, mask=rmask[:, None] & (s[None, :] < n_samples))
    tl.store(colour_ptr + rays[:, None] * C + ch[None, :], colour, mask=rmask[:, None] & (ch[None, :] < C))
    tl.store(depth_ptr + rays, depth, mask=rmask)
    tl.store(opacity_ptr + rays, opacity, mask=rmask)


@triton.jit
def _backward_kernel(grid_ptr, ds_ptr, o_ptr, d_ptr, tin_ptr, tout_ptr, gw_ptr, gc_ptr, gd_ptr, go_ptr, total_ptr,
                     grad_ptr, gds_ptr, n_rays, rays_per_field, n_samples, n, half, step, shift,
                     C: tl.constexpr, TANH: tl.constexpr, HAS_GW: tl.constexpr, BLOCK_R: tl.constexpr,
                     BLOCK_S: tl.constexpr, CP: tl.constexpr):
    rays, rmask, ox, oy, oz, dx, dy, dz, t_in, t_out, es, base, n3 = _ray_block(
        o_ptr, d_ptr, tin_ptr, tout_ptr, ds_ptr, n_rays, rays_per_field, n, C, BLOCK_R)
    ptr, gptr = grid_ptr + base, grad_ptr + base
    ch = tl.arange(0, CP)
    gc = tl.load(gc_ptr + rays[:, None] * C + ch[None, :], mask=rmask[:, None] & (ch[None, :] < C), other=0.0)
    gd = tl.load(gd_ptr + rays, mask=rmask, other=0.0)
    go = tl.load(go_ptr + rays, mask=rmask, other=0.0)
    total = tl.load(total_ptr + rays, mask=rmask, other=0.0)
    carry = tl.zeros([BLOCK_R], tl.float32)
    carry_wg = tl.zeros([BLOCK_R], tl.float32)
    gds = tl.zeros([BLOCK_R], tl.float32)
    for s0 in range(0, _live_end(t_in, t_out, rmask, n_samples, step), BLOCK_S):
        s, t, live = _chunk(s0, t_in, t_out, rmask, n_samples, step, BLOCK_S)
        px, py, pz = _grid_coords(ox, oy, oz, dx, dy, dz, t, half, n)
        x, raw0, a, csum, w = _density(ptr, px, py, pz, n, live, es, shift, carry, step)
        carry += tl.sum(a, axis=1)
        g = gd[:, None] * t + go[:, None]
        if HAS_GW:
            g += tl.load(gw_ptr + rays[:, None] * n_samples + s[None, :], mask=live, other=0.0)
        for c in tl.static_range(C):
            g += _column(gc, ch, c)[:, None] * _feature(ptr + (c + 1) * n3, px, py, pz, n, live, TANH)
        wg = w * g
        suffix = total[:, None] - (tl.cumsum(wg, axis=1) + carry_wg[:, None])
        carry_wg += tl.sum(wg, axis=1)
        dlx = tl.where(live, step * (tl.exp(-csum) * g - suffix) * tl.sigmoid(x), 0.0)  # dL/dx
        gds += tl.sum(dlx * raw0, axis=1) * es
        _scatter(gptr, px, py, pz, n, live, dlx * es[:, None])
        for c in tl.static_range(C):
            dfeat = w * _column(gc, ch, c)[:, None]
            if TANH:
                f = _feature(ptr + (c + 1) * n3, px, py, pz, n, live, TANH)
                dfeat = dfeat * (1 - f * f)
            _scatter(gptr + (c + 1) * n3, px, py, pz, n, live, dfeat)
    tl.store(gds_ptr + rays, gds, mask=rmask)


def _launch(kernel, n_rays: int, channels: int):
    """The kernel launched over ray blocks with the tile for n_rays (C features, the colour tile CP wide)."""
    tile = FEW_TILE if n_rays <= FEW_RAYS else TILE
    return kernel[(triton.cdiv(n_rays, tile["BLOCK_R"]),)], {**tile, "C": channels,
                                                              "CP": triton.next_power_of_2(channels)}


class FusedRender(torch.autograd.Function):
    """(weights, colour, depth, opacity) of rays through K stacked grids; see the module docstring."""

    @staticmethod
    def forward(ctx, grid: Tensor, d_scale: Tensor, o: Tensor, d: Tensor, t_in: Tensor, t_out: Tensor,
                meta: tuple) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n_samples, half, step, shift, tanh = meta
        k, c, n = grid.shape[0], grid.shape[1] - 1, grid.shape[-1]
        rays = o.shape[0]
        w = torch.zeros(rays, n_samples, device=o.device, dtype=torch.float32)  # the kernel writes the live chunks
        colour = torch.empty(rays, c, device=o.device, dtype=torch.float32)
        depth, opacity = torch.empty(rays, device=o.device), torch.empty(rays, device=o.device)
        run, tile = _launch(_forward_kernel, rays, c)
        run(grid, d_scale, o, d, t_in, t_out, w, colour, depth, opacity, rays, rays // k, n_samples, n, half, step,
            shift, TANH=tanh, **tile)
        ctx.save_for_backward(grid, d_scale, o, d, t_in, t_out, w, colour, depth, opacity)
        ctx.meta = meta
        return w, colour, depth, opacity

    @staticmethod
    def backward(ctx, gw: Tensor | None, gc: Tensor | None, gd: Tensor | None, go: Tensor | None):
        grid, d_scale, o, d, t_in, t_out, w, colour, depth, opacity = ctx.saved_tensors
        n_samples, half, step, shift, tanh = ctx.meta
        k, c, n = grid.shape[0], grid.shape[1] - 1, grid.shape[-1]
        rays = o.shape[0]
        gc = torch.zeros_like(colour) if gc is None else gc.contiguous()
        gd = torch.zeros_like(depth) if gd is None else gd.contiguous()
        go = torch.zeros_like(opacity) if go is None else go.contiguous()
        total = (gc * colour).sum(-1) + gd * depth + go * opacity
        if gw is not None:
            gw = gw.contiguous()
            total = total + (gw * w).sum(-1)
        grad = torch.zeros_like(grid)
        gds = torch.empty(rays, device=o.device)
        run, tile = _launch(_backward_kernel, rays, c)
        run(grid, d_scale, o, d, t_in, t_out, gw if gw is not None else w, gc, gd, go, total.contiguous(), grad,
            gds, rays, rays // k, n_samples, n, half, step, shift, TANH=tanh, HAS_GW=gw is not None, **tile)
        return grad, gds.view(k, -1).sum(1), None, None, None, None, None


def fused_render(grid: Tensor, d_scale: Tensor, o: Tensor, d: Tensor, t_in: Tensor, t_out: Tensor, n_samples: int,
                 half: float, step: float, shift: float, feature_activation: str):
    """(weights [K*B*R, S], colour [K*B*R, C], depth [K*B*R], opacity [K*B*R]) of the rays o, d [K*B*R, 3] (field k
    owns rays k*B*R ... (k+1)*B*R - 1) through grids [K, 1 + C, N, N, N] with d_scale [K]."""
    if grid.numel() >= 2 ** 31:
        raise ValueError("render.fuse 'triton' indexes the stacked grids with int32: fewer than 2^31 values")
    meta = (n_samples, float(half), float(step), float(shift), feature_activation == "tanh")
    args = [x.contiguous().float() for x in (o.reshape(-1, 3), d.reshape(-1, 3), t_in.reshape(-1), t_out.reshape(-1))]
    return FusedRender.apply(grid.contiguous(), d_scale.reshape(-1), *args, meta)
