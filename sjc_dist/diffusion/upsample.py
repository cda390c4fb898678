"""diffusers' nearest upsamplers with the memory format kept at every batch size.

`Upsample2D.forward` (diffusers 0.42) makes its input contiguous (NCHW) whenever the batch has >= 64 images, a
workaround for PyTorch's NHWC nearest-upsample kernel failing on large batches in 2022 (diffusers issue 984).
Under channels-last that costs two layout copies of each upsampler's activation (NHWC -> NCHW, then the conv's
NCHW -> NHWC), and under torch.compile the branch is a guard on the batch size, so one dynamic graph cannot
serve both batch 4 and batch 64: a K = 32 step (64 images with CFG) compiled a second graph (40 s cold on an
H200) whose upsampling kernels took 5 ms of the 128 ms UNet call. `keep_layout` swaps the class of each plain
upsampler (nearest interpolation, optional conv; no norm, no transposed conv) for one that skips that branch
and keeps diffusers' other rule: contiguous where the output would pass 2^31 elements (PyTorch issue 141831).
Nearest interpolation copies values, so the output is the same up to the conv's rounding in the other layout.
"""
import functools

import torch
import torch.nn.functional as F
from torch import Tensor

ELEMENT_LIMIT = 2**31  # diffusers' bound for the NHWC kernel: numel * scale factor above it -> contiguous


def nearest_then_conv(self, hidden_states: Tensor, output_size: tuple[int, int] | None = None, *args,
                      **kwargs) -> Tensor:
    """Upsample2D.forward without the batch >= 64 branch: x [N, C, H, W] -> conv(nearest(x)) [N, C', 2H, 2W]
    (or at `output_size`), in x's memory format."""
    x = hidden_states
    scale = 2 if output_size is None else max(f / s for f, s in zip(output_size, x.shape[-2:]))
    if x.numel() * scale > ELEMENT_LIMIT:
        x = x.contiguous()
    if output_size is None:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
    else:
        x = F.interpolate(x, size=output_size, mode="nearest")
    if self.use_conv:
        x = self.conv(x) if self.name == "conv" else self.Conv2d_0(x)
    return x


@functools.cache
def layout_keeping_class() -> type | None:
    """Upsample2D's subclass with `nearest_then_conv` as its forward (None without diffusers)."""
    try:
        from diffusers.models.upsampling import Upsample2D
    except ImportError:
        return None
    return type("LayoutKeepingUpsample2D", (Upsample2D,), {"forward": nearest_then_conv, "__module__": __name__})


def plain_upsampler(m: torch.nn.Module) -> bool:
    """A diffusers Upsample2D that only interpolates (nearest) and optionally convolves."""
    base = layout_keeping_class()
    return (base is not None and type(m) is base.__mro__[1] and m.norm is None and not m.use_conv_transpose
            and m.interpolate)


def keep_layout(unet: torch.nn.Module) -> int:
    """Swaps every plain upsampler of `unet` for the layout-keeping one, in place; returns how many."""
    ups = [m for m in unet.modules() if plain_upsampler(m)]
    for m in ups:
        m.__class__ = layout_keeping_class()
    return len(ups)
