"""Ancestral sampling from any Denoiser (k-diffusion's Euler ancestral in the VE form), used to check what a
model has learned (the toy world's quality bar: samples recognised by the toy CLIP).

For sigma_i -> sigma_{i+1}: sigma_up = sqrt(s1^2 (s0^2 - s1^2) / s0^2), sigma_down = sqrt(s1^2 - sigma_up^2),
x <- x + (sigma_down - s0) (x - D(x; s0)) / s0 + sigma_up n.
"""
import torch
from torch import Tensor

from .denoiser import Cond, Denoiser


def sigma_schedule(denoiser: Denoiser, n: int) -> Tensor:
    """n noise levels from sigma_max down to sigma_min (log-spaced; on the model's ticks if it has them), then 0."""
    hi, lo = torch.tensor(denoiser.sigma_max).log(), torch.tensor(denoiser.sigma_min).log()
    s = torch.exp(torch.linspace(float(hi), float(lo), n))
    if denoiser.sigmas is not None:
        ticks = denoiser.sigmas.float().cpu()
        s = ticks[(s[:, None].log() - ticks[None].log()).abs().argmin(1)]
    return torch.cat([s, torch.zeros(1)])


@torch.no_grad()
def sample_ancestral(denoiser: Denoiser, shape: tuple, cond: Cond | None, steps: int,
                     generator: torch.Generator, device: torch.device | str = "cpu") -> Tensor:
    """Draw samples [B, C, H, W] with `steps` Euler-ancestral steps."""
    sigmas = sigma_schedule(denoiser, steps).to(device)
    x = torch.randn(shape, generator=generator).to(device) * sigmas[0]
    for s0, s1 in zip(sigmas[:-1], sigmas[1:]):
        d = denoiser(x, s0.expand(shape[0]), cond)
        up = (s1**2 * (s0**2 - s1**2) / s0**2).clamp_min(0).sqrt()
        down = (s1**2 - up**2).clamp_min(0).sqrt()
        x = x + (down - s0) * (x - d) / s0
        if s1 > 0:
            x = x + up * torch.randn(shape, generator=generator).to(device)
    return x
