"""The parts of an SJC step outside the UNet, each timed alone, and FP8 against fp16 at the UNet call: the GPU
bench's evidence for the engine's render, optimiser and precision defaults.

- render: forward + backward of the engine's loss form (<u, image> + lambda mean log(1 + 10 w)) for each
  RenderConfig.samples rule (all / inside / visible) and fuse, at K = 1 and K = max, on fresh fields (every
  sample visible) and on sphere fields (a converged run's: empty space below the 1e-4 colour threshold), with
  the fractions of samples inside the box and visible;
- adamax: K scenes' optimiser steps one by one against grouped (optim/adamax.py);
- stack: what concatenating the K grids costs per step (the renderer does it once per step);
- scan: the packed renderer's per-ray sums, forward and backward, as one cumsum along dim 0 of [P, D] (what
  packed.ray_sums did before: on CUDA one serial thread per column) against one 1-D scan per column (now);
- fp8: agreement of the float8-linear denoiser with eager fp32 and the UNet call's time against fp16;
- upsample: the same for diffusers' upsamplers as they are (NCHW from 64 images) against kept channels-last
  (upsample.py), agreement on 63 images (padded to 64: the branch).
"""
import copy
from functools import partial

import torch
from bench_timing import bench_ms, guarded, release
from gpu_variants import agreement
from sd_standin import make_denoiser, run_config, sphere_field

from sjc_dist.diffusion.denoiser import Cond
from sjc_dist.diffusion.fast import FastConfig
from sjc_dist.optim.adamax import Adamax, together
from sjc_dist.scene.packed import ray_sums
from sjc_dist.scene.render import n_samples, ray_box, use_triton
from sjc_dist.scene.scenes import VoxelScene, render_scenes

CELLS = [("all", "none"), ("all", "triton"), ("inside", "none"), ("visible", "none")]
FUSED_CELLS = [("all", "compile"), ("inside", "compile")]


def scenes_for(size, k: int, state: str, samples: str, fuse: str, device) -> list[VoxelScene]:
    cfg, gen = run_config(size, 0), torch.Generator().manual_seed(0)
    res = size.unet["sample_size"]
    out = []
    for _ in range(k):
        sc = VoxelScene(cfg.field, cfg.background, cfg.camera, 4, res, cfg.render.step, gen, samples, fuse)
        sc.to(device)
        if state == "sphere":
            sphere_field(sc.field)
        out.append(sc)
    return out


def render_step(scenes: list[VoxelScene], cams: list, u: torch.Tensor):
    """One render of every scene, forward and backward, with the engine's loss form."""
    for sc in scenes:
        for p in sc.parameters():
            p.grad = None
    outs = render_scenes(scenes, cams)
    loss = sum((o.image * uk).sum() + 1e4 * torch.log1p(10 * o.weights).mean() for o, uk in zip(outs, u))
    loss.backward()


def sample_fractions(scenes: list[VoxelScene], cams: list) -> dict:
    """Fractions of all K*B*R*S samples inside the box and with weight > 1e-4 (from the dense weights)."""
    with torch.no_grad():
        outs = render_scenes(scenes, cams)
        o, d = cams[0].to(scenes[0].field.grid.device).rays()
        t_in, t_out = ray_box(o, d, scenes[0].field.bbox_len)
        s = n_samples(scenes[0].field.bbox_len, scenes[0].step)
        inside = float(((t_out - t_in) / scenes[0].step).clamp(0, s).sum() / (t_in.numel() * s))
        visible = sum(float((x.weights > 1e-4).float().mean()) for x in outs) / len(outs)
    return {"inside_first_view": inside, "visible": visible}


def render_cell(scenes: list[VoxelScene], size, state: str, samples: str, fuse: str, device) -> dict:
    """The render of `scenes` (their sample rule and fuse set to these) timed forward and backward."""
    for sc in scenes:
        sc.samples, sc.fuse = samples, fuse
    gen, k = torch.Generator().manual_seed(1), len(scenes)
    cams = [sc.cameras.sample(1, gen).to(device) for sc in scenes]
    u = torch.randn(k, 1, 4, size.unet["sample_size"], size.unet["sample_size"], device=device)
    row = {"k": k, "state": state, "samples": samples, "fuse": fuse,
           **bench_ms(lambda: render_step(scenes, cams, u), device)}
    if samples == "all" and fuse == "none":
        row.update(sample_fractions(scenes, cams))
    if fuse == "triton":
        row["agreement"] = triton_agreement(scenes, cams, u)
    return row


def render_grads(scenes: list[VoxelScene], cams: list, u: torch.Tensor, fuse: str) -> list[torch.Tensor]:
    """Image, weights, grid gradient and d_scale gradient of `render_step` with this fuse, flattened."""
    for sc in scenes:
        sc.fuse = fuse
    render_step(scenes, cams, u)
    with torch.no_grad():
        outs = render_scenes(scenes, cams)
        return [torch.cat([x.flatten() for x in xs]) for xs in
                ([o.image for o in outs], [o.weights for o in outs], [sc.field.grid.grad for sc in scenes],
                 [sc.field.d_scale.grad for sc in scenes])]


def triton_agreement(scenes: list[VoxelScene], cams: list, u: torch.Tensor) -> dict:
    """max |triton - dense| / max |dense| of the image, weights and both gradients (the scenes' fuse left as
    'triton')."""
    dense = render_grads(scenes, cams, u, "none")
    fused = render_grads(scenes, cams, u, "triton")
    names = ("image", "weights", "grid_grad", "d_scale_grad")
    return {n: float((f - d).abs().max() / d.abs().max().clamp_min(1e-30)) for n, d, f in zip(names, dense, fused)}


def render_parts(size, ks: list[int], states: list[str], cells: list, device, clock, log,
                 reserve: float = 15.0) -> list[dict]:
    """Each (sample rule, fuse) of `cells` at each K and field state on the same scenes (the budget cuts the
    tail; fused cells compile their shading on first use)."""
    rows = []
    for k in ks:
        for state in states:
            scenes = scenes_for(size, k, state, "all", "none", device)
            for samples, fuse in cells:
                unavailable = fuse == "compile" and device.type != "cuda" or fuse == "triton" and not use_triton(
                    fuse, device)
                if unavailable or clock.left() < reserve:
                    continue
                row = guarded(partial(render_cell, scenes, size, state, samples, fuse, device))
                rows.append({"k": k, "state": state, "samples": samples, "fuse": fuse, **row})
                log(f"    render K={k} {state} {samples} fuse={fuse}: {row.get('ms', row.get('error'))}")
            scenes.clear()
            release(device)
    return rows


def adamax_part(size, k: int, device) -> dict:
    """K scenes' Adamax steps on 100^3 grids: one optimiser after another vs grouped (one foreach call)."""
    scenes = scenes_for(size, k, "fresh", "all", "none", device)
    opts = [Adamax(sc.param_groups(0.05, 1e-4)) for sc in scenes]
    for sc in scenes:
        for p in sc.parameters():
            p.grad = torch.randn_like(p) if p.requires_grad else None

    def grouped():
        with together():
            for opt in opts:
                opt.step()

    return {"k": k, "each": bench_ms(lambda: [opt.step() for opt in opts], device), "grouped": bench_ms(grouped, device)}


def stack_part(size, k: int, device) -> dict:
    """torch.cat of K grids [1, 5, N, N, N], what keeping them stacked would save per step."""
    grids = [sc.field.grid.detach() for sc in scenes_for(size, k, "fresh", "all", "none", device)]
    return {"k": k, "bytes": sum(g.numel() * g.element_size() for g in grids),
            **bench_ms(lambda: torch.cat(grids), device)}


def scan_part(device, samples: int = 3_500_000, rays: int = 16_384, columns: int = 6) -> dict:
    """Per-ray sums of x [P, D] over `rays` equal segments, forward + backward: one [P, D] scan along dim 0
    against packed.ray_sums (a 1-D scan per column); P ~ the SD bench's packed samples of 4 views at K = 1."""
    x = torch.rand(samples, columns, device=device, requires_grad=True)
    counts = torch.full((rays,), samples // rays, device=device)
    first = counts.cumsum(0) - counts

    def outer_dim():
        cs = torch.nn.functional.pad(x.double().cumsum(0), (0, 0, 1, 0))
        (cs.index_select(0, first + counts) - cs.index_select(0, first)).float().sum().backward()

    def per_column():
        ray_sums(x, first, counts).sum().backward()

    return {"samples": samples, "columns": columns, "outer_dim": bench_ms(outer_dim, device),
            "per_column": bench_ms(per_column, device)}


UNET_CALLS = {"fp8": {"float16": FastConfig(), "fp8": FastConfig(fp8=True)},
              "upsample": {"keep_layout": FastConfig(), "diffusers": FastConfig(keep_layout=False)}}


def unet_call_part(stage: str, master, size, device, images: tuple[int, ...], check_n: int = 3,
                   cpu_fallback: bool = True) -> dict:
    """For each FastConfig of UNET_CALLS[stage] (fp16, CUDA graphs, no compile): agreement with eager fp32 on
    `check_n` images and the UNet call's time at each batch of `images`."""
    out = {}
    for name, cfg in UNET_CALLS[stage].items():
        den = make_denoiser(copy.deepcopy(master), "float16", cfg, cpu_fallback=cpu_fallback)
        out[name] = {"agreement": guarded(partial(agreement, den, master, size, device, check_n))}
        for n in images:
            out[name][f"ms_{n}"] = guarded(partial(unet_call_ms, den, size, device, n))
        den = None
        release(device)
    return out


def upsample_part(master, size, device, kmax: int, cpu_fallback: bool) -> dict:
    """diffusers' upsamplers as they are against kept channels-last: the UNet calls at 2, 2 K and 4 K images
    (agreement on 63, padded to 64, on the GPU), and the nearest kernel's two layouts compared."""
    out = unet_call_part("upsample", master, size, device, (2, 2 * kmax, 4 * kmax),
                         63 if device.type == "cuda" else 3, cpu_fallback)
    out["nearest_equal"] = nearest_layouts_equal(master, device, (64, 4 * kmax, 512))
    return out


def nearest_layouts_equal(master, device, batches: tuple[int, ...]) -> dict:
    """Whether F.interpolate (nearest, x2) of a channels-last input equals that of its NCHW copy, fp16, at the
    UNet's upsampler inputs [n, C, h, h] (the kernel diffusers works around from 64 images): 'nxCxh' -> bool."""
    chans, res = master.config.block_out_channels[::-1], master.config.sample_size
    out = {}
    for n in batches:
        for i, c in enumerate(chans[:-1]):
            h = res // 2 ** (len(chans) - 1 - i)
            x = torch.randn(n, c, h, h, device=device).half().contiguous(memory_format=torch.channels_last)
            up = [torch.nn.functional.interpolate(v, scale_factor=2.0, mode="nearest") for v in (x, x.contiguous())]
            out[f"{n}x{c}x{h}"] = bool(torch.equal(*up))
    return out


def unet_call_ms(den, size, device, n: int) -> dict:
    gen = torch.Generator(device).manual_seed(2)
    cfg = den.unet.config
    x = torch.randn(n, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=gen, device=device)
    sigma = torch.full((n,), 3.0, device=device)
    cond = Cond(context=torch.randn(n, size.context_len, size.context_dim, generator=gen, device=device))
    return bench_ms(lambda: den(x, sigma, cond), device)
