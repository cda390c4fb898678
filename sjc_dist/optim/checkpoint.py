"""Atomic checkpoints: the run's whole state (theta, optimiser, step, both RNG states) in one file.

Written to a temporary file and renamed, so an interruption never leaves a half-written checkpoint and the
previous good one survives. Loaded with `weights_only=True`: tensors and plain containers, no code.
"""
import os
from pathlib import Path

import torch


def save_checkpoint(state: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """The saved state, on the CPU: RNG states must stay CPU ByteTensors; load_state_dict moves the rest."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
