"""Run under TRITON_INTERPRET=1 by test_triton_render.py (Triton's interpreter runs the kernels on the CPU): the
Triton render against the dense one on the same fields and cameras, forward and backward. Prints one JSON line:
per case, max |triton - dense| / max |dense| of each output and gradient."""
import json
import sys

import torch

from sjc_dist.scene.background import Background, BackgroundConfig
from sjc_dist.scene.cameras import orbit
from sjc_dist.scene.field import FieldConfig, VoxelField
from sjc_dist.scene.render import render_many


def scenes(k: int, n: int, activation: str, channels: int, seed: int):
    """K fields with random densities (some opaque), d_scale != 0, and their backgrounds and cameras (a wide
    field of view: the corner rays miss the box; 5 x 7 pixels: rays per field not a multiple of the tile)."""
    gen = torch.Generator().manual_seed(seed)
    fields = [VoxelField(FieldConfig(grid_size=n, feature_activation=activation), channels, gen) for _ in range(k)]
    for i, f in enumerate(fields):
        with torch.no_grad():
            f.grid[:, :1] = torch.randn(1, 1, n, n, n, generator=gen) * 3 + 1
            f.d_scale.fill_(0.1 * (i + 1))
    bgs = [Background(BackgroundConfig(), channels, gen) for _ in range(k)]
    az = torch.rand(k, 2, generator=gen) * 360
    cams = [orbit(a, torch.full((2,), 20.0), torch.full((2,), 2.5), torch.full((2,), 110.0), 5, 7) for a in az]
    return fields, bgs, cams


def outputs(fuse: str, k: int, n: int, activation: str, channels: int, use_weights: bool) -> list[torch.Tensor]:
    """Image, depth, opacity, weights and the grid and d_scale gradients of a loss over every output."""
    fields, bgs, cams = scenes(k, n, activation, channels, seed=0)
    outs = render_many(fields, bgs, cams, 0.04, "all", fuse)
    gen = torch.Generator().manual_seed(1)
    loss = sum((o.image * torch.randn(o.image.shape, generator=gen)).sum() + 0.3 * o.depth.sum() + 0.2 * o.opacity.sum()
               + (50 * torch.log1p(10 * o.weights).mean() if use_weights else 0) for o in outs)
    loss.backward()
    got = [torch.cat([getattr(o, name).detach().flatten() for o in outs]) for name in ("image", "depth", "opacity",
                                                                                        "weights")]
    return got + [torch.cat([f.grid.grad.flatten() for f in fields]), torch.stack([f.d_scale.grad for f in fields])]


def main() -> None:
    names = ("image", "depth", "opacity", "weights", "grid_grad", "d_scale_grad")
    cases = {"none_c4": (3, 9, "none", 4, True), "tanh_c3": (2, 8, "tanh", 3, True), "no_weight_grad": (2, 7, "none", 4,
                                                                                                           False)}
    result = {}
    for case, args in cases.items():
        dense, fused = outputs("none", *args), outputs("triton", *args)
        result[case] = {n: float((f - d).abs().max() / d.abs().max()) for n, d, f in zip(names, dense, fused)}
        result[case]["shapes_equal"] = all(d.shape == f.shape for d, f in zip(dense, fused))
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
