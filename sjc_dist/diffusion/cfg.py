"""Classifier-free guidance as a Denoiser: D = D_u + w (D_c - D_u) (equal to eps_u + w (eps_c - eps_u)).

The conditional and unconditional halves run as one batched call of 2B samples; w is a scalar or [B].
Comparing with threestudio: its `guidance_scale` s forms eps_c + s (eps_c - eps_u) = eps_u + (s + 1)(eps_c - eps_u),
so its s is our weight w = s + 1 (its stable-diffusion guidance default 100 is our w = 101).
"""
import torch
from torch import Tensor

from .denoiser import Cond, Denoiser, append_dims


def guided(d_u: Tensor, delta: Tensor, weight: Tensor) -> Tensor:
    """D_u + w Delta for denoised [N, C, H, W], guidance direction Delta [N, C, H, W] and weight [N]."""
    return d_u + append_dims(weight.to(d_u), d_u.ndim) * delta


class CFGDenoiser(Denoiser):
    """Wraps an inner conditional Denoiser; a Cond without `uncond` bypasses guidance."""

    def __init__(self, inner: Denoiser, weight: float = 1.0):
        self.inner, self.weight = inner, weight
        for name in ("sigma_min", "sigma_max", "channels", "size", "is_latent", "sigmas"):
            setattr(self, name, getattr(inner, name))

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        if cond is None or cond.uncond is None:
            return self.inner(x, sigma, cond)
        both = Cond(context=torch.cat([cond.uncond, cond.context]))
        d_u, d_c = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), both).chunk(2)
        w = cond.weight if cond.weight is not None else torch.full_like(sigma, float(self.weight))
        return guided(d_u, d_c - d_u, w)
