"""Classifier score distillation (CSD, Yu et al. 2023): SDS without its noise residual, only the classifier term.

The CSD gradient is w(t) [(eps_c - eps_u) - c (eps_n - eps_u)], so the update (its negative, scaled by the CFG
weight w so that it matches SDS's dominant term w(t) w (eps_u - eps_c) at the same settings) is
  u = w(t) w [(eps_u - eps_c) + c (eps_n - eps_u)] = w(t) w / sigma [Delta + c (D_u - D_n)],
w(t) = sigma^2 / (1 + sigma^2), Delta = D_c - D_u (or Perp-Neg's), c = guidance.csd_negative (0: no negative
prompt), eps_n at the negative prompt (guidance.negative_prompt; CSD's configs: 'oversaturated color, ugly,
tiling, low quality, noisy'). No noise term. One pass: 2 evaluations per view, 3 with the negative prompt.
CSD's own configs use uniform w(t) and normalise the gradient; here w(t) is SDS's, and Adamax normalises.
"""
from torch import Tensor

from ..diffusion.denoiser import append_dims
from .base import Guidance, sds_weight
from .guided import Guided


class CSD(Guidance):
    """The CSD update, averaged over `n_noise` draws."""

    @property
    def uses_negative(self) -> bool:
        return self.cfg.csd_negative > 0

    def update(self, y: Tensor, z: Tensor, noise: Tensor, g: Guided, sigma: Tensor) -> Tensor:
        direction = g.delta if g.negative is None else g.delta + self.cfg.csd_negative * (g.uncond - g.negative)
        scale = append_dims(g.weight.to(y), y.ndim) / append_dims(sigma, y.ndim)
        return sds_weight(sigma, y.ndim) * scale * direction
