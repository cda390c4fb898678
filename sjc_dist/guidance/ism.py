"""Interval score matching (ISM, LucidDreamer, Liang et al. 2023), in the VE form x = x0 + sigma eps.

Deterministic DDIM (eta = 0) is the Euler step of the probability-flow ODE: x_b = x_a + (sigma_b - sigma_a)
eps_u(x_a; sigma_a). Inversion runs it upward with the unconditional eps: from x_0 = y + sigma_0 n at tick 0, K =
ism_steps equal strides to x_s at tick s = t - ism_interval, then one stride from s to the sampled sigma_t:
  x_t = x_s + (sigma_t - sigma_s) eps_u(x_s; sigma_s),
  u = w(t) (eps_u(x_s; sigma_s) - eps_cfg(x_t; sigma_t)),   w(t) = sigma_t^2 / (1 + sigma_t^2) = 1 - abar_t,
the ascent direction of ISM's gradient w(t) (eps_cfg(x_t) - eps_u(x_s)). Evaluations per view: K + 1
unconditional + 2 (CFG at x_t) = K + 3, in K + 2 passes that a batch of scenes shares pass by pass.
Where LucidDreamer's code differs: its w(t) is sqrt((1 - abar_t) / abar_t) = sigma_t (here SDS's, as the other
estimators); its inversion strides 200 ticks from max(s - 200 K, 0) (here K equal strides from tick 0, so every
scene takes the same passes); its noise has a 0.1 per-channel offset; it anneals the interval from 100 to 80.
"""
from itertools import pairwise

import torch
from torch import Tensor

from ..diffusion.denoiser import Cond, append_dims
from ..diffusion.sigmas import tick_index, tick_table
from .base import Guidance, sds_weight
from .guided import blocks
from .passes import Passes, predict


class ISM(Guidance):
    """The ISM update, averaged over `n_noise` draws."""

    def rows_per_sample(self, text: bool = True) -> int:
        return self.cfg.ism_steps + 1 + super().rows_per_sample(text)

    def levels(self, sigma: Tensor) -> Tensor:
        """sigma_0 .. sigma_K = sigma_s, [K + 1, N]: K equal strides in ticks from tick 0 to s = t - interval."""
        den = self.denoiser
        table = tick_table(den.sigmas, den.sigma_min, den.sigma_max).to(sigma.device)
        s = (tick_index(table, sigma) - self.cfg.ism_interval).clamp_min(0).float()
        frac = torch.arange(self.cfg.ism_steps + 1, device=sigma.device) / self.cfg.ism_steps
        return table[(frac[:, None] * s[None]).round().long()]

    def passes(self, y: Tensor, z: Tensor, noise: Tensor, sigma: Tensor, cond: Cond) -> Passes:
        levels = self.levels(sigma)
        unc = blocks(cond, "standard", False)[:1]  # eps_u: the unconditional (or only) context
        x = y + append_dims(levels[0], y.ndim) * noise
        for a, b in pairwise(levels):
            (d,) = yield from predict(x, a, unc)
            x = x + append_dims(b - a, y.ndim) * (x - d) / append_dims(a, y.ndim)
        (d_s,) = yield from predict(x, levels[-1], unc)
        eps_s = (x - d_s) / append_dims(levels[-1], y.ndim)
        x_t = x + append_dims(sigma - levels[-1], y.ndim) * eps_s
        g = yield from self.guide(x_t, sigma, cond)
        eps_t = (x_t - g.cfg()) / append_dims(sigma, y.ndim)
        return sds_weight(sigma, y.ndim) * (eps_s - eps_t)

