"""Noise-free score distillation (NFSD, Katzir et al. 2023): the CFG update without its noise.

The NFSD gradient is w(t) (delta_D + s delta_C) with delta_C = eps_c - eps_u, and the denoising term
delta_D = eps_u for t < 200, eps_u - eps_n from t = 200 on (eps_n at the negative prompt 'unrealistic, blurry, low
quality, out of focus, ugly, low contrast, dull, dark, low-resolution, gloomy'; s = 7.5 in the paper). The update
is its negative, with s our CFG weight w and eps = (x - D) / sigma:
  u = w(t) / sigma [w Delta - (z - D_u)]      (t < nfsd_t)
  u = w(t) / sigma [w Delta - (D_n - D_u)]    (t >= nfsd_t),     w(t) = sigma^2 / (1 + sigma^2),
t the nearest tick of sigma (models without ticks: 1000 log-spaced levels). One pass: 3 evaluations per view
(u, c, n; the negative is evaluated below the threshold too, so every sample has the same rows).
"""
from torch import Tensor

from ..diffusion.denoiser import append_dims
from ..diffusion.sigmas import tick_index, tick_table
from .base import Guidance, sds_weight
from .guided import Guided


class NFSD(Guidance):
    """The NFSD update, averaged over `n_noise` draws."""

    @property
    def uses_negative(self) -> bool:
        return True

    def update(self, y: Tensor, z: Tensor, noise: Tensor, g: Guided, sigma: Tensor) -> Tensor:
        den = self.denoiser
        t = tick_index(tick_table(den.sigmas, den.sigma_min, den.sigma_max), sigma).to(y.device)
        small = append_dims(t < self.cfg.nfsd_t, y.ndim)
        denoising = (z - g.uncond).where(small, g.negative - g.uncond)
        w = append_dims(g.weight.to(y), y.ndim)
        return sds_weight(sigma, y.ndim) / append_dims(sigma, y.ndim) * (w * g.delta - denoising)
