"""DreamFusion's score distillation sampling (SDS) in the same engine, as the baseline.

u = w(t) (n - eps_hat) with eps_hat = (z - D_cfg(z; sigma)) / sigma and w(t) = 1 - abar_t = sigma^2 / (1 + sigma^2),
t uniform in [20, 980] (the default sigma window of kind 'sds'). On latents, or on RGB renders through the
VAE encoder (`through_vae`), whose Jacobian then sits in the chain as DreamFusion-SD does. One pass: 2 denoiser
evaluations per view. Against threestudio: its guidance_scale s is our weight s + 1, and it divides the loss by
the batch size where we sum over views (`chain`). Timestep annealing (HiFA, DreamTime) is a sigma.kind.
"""
from torch import Tensor

from ..diffusion.denoiser import append_dims
from .base import Guidance, sds_weight
from .guided import Guided


class SDS(Guidance):
    """The SDS update, averaged over `n_noise` draws."""

    def update(self, y: Tensor, z: Tensor, noise: Tensor, g: Guided, sigma: Tensor) -> Tensor:
        eps_hat = (z - g.cfg()) / append_dims(sigma, y.ndim)
        return sds_weight(sigma, y.ndim) * (noise - eps_hat)
