"""The optimiser of theta: Adamax (the official choice) with per-group learning rates."""
from dataclasses import dataclass

import torch

from ..configtools import opt


@dataclass(frozen=True)
class OptimConfig:
    """Adamax learning rates."""

    lr: float = opt(0.05, "learning rate of the voxel grid or image (official 0.05)", gt=0.0)
    lr_background: float = opt(1e-4, "learning rate of the background texture (official 1e-4)", ge=0.0)


def make_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
    """torch's Adamax, whose steps a SceneBatch can group across scenes (`optim.adamax.together`)."""
    from .adamax import Adamax

    return Adamax(groups)
