"""The exact denoiser of an empirical distribution (SJC paper, Sec. 3): the test oracle and a real model.

D(x; sigma) = sum_i N(x; y_i, sigma^2 I) y_i / sum_i N(x; y_i, sigma^2 I) = sum_i softmax_i(-|x - y_i|^2 / 2 sigma^2) y_i,
computed with log-sum-exp in float64 so it stays exact at tiny sigma. Data: y [N, C, H, W]. Ignores text.
"""
import torch
from torch import Tensor

from .denoiser import Cond, Denoiser


class EmpiricalDenoiser(Denoiser):
    """Posterior mean under the empirical data distribution; `sigmas` is None (continuous sigma)."""

    def __init__(self, data: Tensor, sigma_min: float = 0.002, sigma_max: float = 80.0):
        if data.ndim != 4 or data.shape[0] < 1:
            raise ValueError(f"data must be [N, C, H, W] with N >= 1, got {tuple(data.shape)}")
        self.data = data.double()
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.channels, self.size = data.shape[1], data.shape[-1]

    def log_weights(self, x: Tensor, sigma: Tensor) -> Tensor:
        """Posterior log-probabilities of each data point, [B, N]."""
        flat_x, flat_y = x.double().flatten(1), self.data.to(x.device).flatten(1)
        d2 = torch.cdist(flat_x, flat_y).square()  # [B, N]
        logits = -d2 / (2 * sigma.double()[:, None] ** 2)
        return logits - torch.logsumexp(logits, dim=1, keepdim=True)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        w = self.log_weights(x, sigma).exp()
        y = self.data.to(x.device)
        return torch.einsum("bn,nchw->bchw", w, y).float()
