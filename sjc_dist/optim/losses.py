"""The regularisers of SJC Sec. 4.

emptiness(w) = mean log(1 + beta w_i) over all ray samples: pushes density to be sparse.
center_depth: the paper asks for -log(border_depth - center_depth) (object nearer than the background at the
image's centre). The official code computes -log(center - border), whose argument is usually negative: its
value is NaN but autograd still yields the intended gradient (pals-ttic/sjc issue 21). Here the argument is
gap = mean border depth - mean centre depth, and the log barrier is continued linearly below eps:
  L(gap) = -log(gap)                          if gap > eps
         = -log(eps) - (gap - eps) / eps      otherwise
which is finite and C^1 for every input and still pushes the object toward the centre when gap <= 0.
"""
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..configtools import opt


@dataclass(frozen=True)
class EmptinessConfig:
    """The emptiness loss lambda(step) * mean log(1 + beta w) and its step schedule."""

    lambda1: float = opt(1e4, "weight until the switch (official 1e4)", ge=0.0)
    lambda2: float = opt(2e5, "weight after the switch (official 1e4 x 20)", ge=0.0)
    k: float = opt(0.5, "switch point as a fraction of the steps (official 0.5)", ge=0.0, le=1.0)
    beta: float = opt(10.0, "beta inside log(1 + beta w) (official 10)", gt=0.0)


@dataclass(frozen=True)
class DepthConfig:
    """The center-depth loss (off by default, as in the official code)."""

    weight: float = opt(0.0, "weight of the center-depth loss (official README uses 0, 10, 50, 100)", ge=0.0)
    center: float = opt(0.78, "side of the central box as a fraction of the image (official 50/64)",
                        gt=0.0, lt=1.0)
    eps: float = opt(1e-3, "below this gap the log barrier continues linearly", gt=0.0)


def emptiness_weight(cfg: EmptinessConfig, step: int, n_steps: int) -> float:
    """lambda1 before step K = k * n_steps, lambda2 from it on."""
    return cfg.lambda1 if step < cfg.k * n_steps else cfg.lambda2


def emptiness(weights: Tensor, beta: float) -> Tensor:
    """mean log(1 + beta w) over weights [B, R, S]."""
    return torch.log1p(beta * weights).mean()


def safe_neg_log(x: Tensor, eps: float) -> Tensor:
    """-log(x) for x > eps, its tangent line below: finite and C^1 everywhere."""
    return torch.where(x > eps, -torch.log(x.clamp_min(eps)), -math.log(eps) - (x - eps) / eps)


def center_depth(depth: Tensor, center: float, eps: float) -> Tensor:
    """Safe -log(mean border depth - mean centre depth) for depth [B, 1, H, W], averaged over views."""
    h, w = depth.shape[-2:]
    mh, mw = round(h * (1 - center) / 2), round(w * (1 - center) / 2)
    mask = torch.zeros(h, w, dtype=torch.bool, device=depth.device)
    mask[mh:h - mh, mw:w - mw] = True
    flat = depth.flatten(1)
    centre = flat[:, mask.flatten()].mean(1)
    border = flat[:, ~mask.flatten()].mean(1) if (~mask).any() else centre
    return safe_neg_log(border - centre, eps).mean()
