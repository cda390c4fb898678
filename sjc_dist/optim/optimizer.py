"""The optimiser of theta: Adamax (the official choice) with per-group learning rates, and the bounds that follow
from it.

Adamax normalises its step by the running max of |g|, so one step moves a value by at most about lr, whatever the
gradient: |theta_t - theta_0| <= lr * t. Hence
  MAX_LR: the largest learning rate accepted at the edge. torch's first Adamax step computes lr / (1 - beta1) =
    10 lr as a float32 scalar, so lr >= 3.4e37 is a raw overflow RuntimeError; 1e3 is far inside that, and one
    step of it already moves theta 100x past every healthy value below.
  MAX_FIELD_ABS: `SJCRun.check_finite` calls a run diverged when any parameter reaches |x| > 1e4 while finite
    (lr 1e30 used to end "successfully" with values of 3e30). Healthy runs stay far below: toy-preset runs (25
    captions x SJC and SDS, 800 steps) stayed within |x| < 10, also at lr 0.2 (eval/reports/field_magnitudes/);
    the official settings (lr 0.05, 10,000 steps) can reach at most 500 from their N(0, 1) start; Stable
    Diffusion's latents are scaled to unit variance (0.18215).
"""
from dataclasses import dataclass

import torch

from ..configtools import opt

MAX_LR = 1e3
MAX_FIELD_ABS = 1e4


@dataclass(frozen=True)
class OptimConfig:
    """Adamax learning rates."""

    lr: float = opt(0.05, "learning rate of the voxel grid or image (official 0.05); Adamax moves each value by at "
                          "most about lr per step", gt=0.0, le=MAX_LR)
    lr_background: float = opt(1e-4, "learning rate of the background texture (official 1e-4)", ge=0.0, le=MAX_LR)


def make_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
    """torch's Adamax, whose steps a SceneBatch can group across scenes (`optim.adamax.together`)."""
    from .adamax import Adamax

    return Adamax(groups)
