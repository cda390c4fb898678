"""DreamFusion's score distillation sampling (SDS) in the same engine, as the baseline.

u = w(t) (n - eps_hat) with eps_hat = (z - D(z; sigma)) / sigma and w(t) = 1 - abar_t = sigma^2 / (1 + sigma^2),
t uniform in [20, 980] (the default sigma window of kind 'sds'). On latents, or on RGB renders through the
VAE encoder (`through_vae`), whose Jacobian then sits in the chain as DreamFusion-SD does.
"""
from torch import Tensor

from ..diffusion.denoiser import append_dims
from .base import Guidance


class SDS(Guidance):
    """The SDS update, averaged over `n_noise` draws."""

    def update(self, y: Tensor, z: Tensor, noise: Tensor, denoised: Tensor, sigma: Tensor) -> Tensor:
        s = append_dims(sigma, y.ndim)
        eps_hat = (z - denoised) / s
        return s**2 / (1 + s**2) * (noise - eps_hat)
