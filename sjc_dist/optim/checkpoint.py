"""Atomic checkpoints: the run's whole state (theta, optimiser, step, both RNG states) in one file, and beside it
the config that produced it.

Written to a temporary file and renamed, so an interruption never leaves a half-written checkpoint and the
previous good one survives. Loaded with `weights_only=True`: tensors and plain containers, no code.
"""
import os
from pathlib import Path

import torch


def write_atomic(path: Path, write) -> Path:
    """`write(tmp)` into a temporary file beside `path`, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def save_checkpoint(state: dict, path: str | Path, config_json: str | None = None) -> Path:
    """The state into `path`; with `config_json`, that config into config.json beside it, once the state is
    safely on disk (so the folder's config.json is always the config of its checkpoint)."""
    path = write_atomic(Path(path), lambda tmp: torch.save(state, tmp))
    if config_json is not None:
        write_atomic(path.parent / "config.json", lambda tmp: tmp.write_text(config_json))
    return path


def to_host(state: object) -> object:
    """A state (nested dicts, lists, tuples of tensors and plain values) with every tensor on the CPU, so it can be
    written without the device. Dict types (a module state_dict's OrderedDict) and their `_metadata` are kept, so
    the file is what torch.save writes of the original; a tensor already on the CPU is kept, not copied."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        out = type(state)((k, to_host(v)) for k, v in state.items())
        if hasattr(state, "_metadata"):
            out._metadata = state._metadata
        return out
    if isinstance(state, (list, tuple)):
        return type(state)(to_host(v) for v in state)
    return state


def load_checkpoint(path: str | Path) -> dict:
    """The saved state, on the CPU: RNG states must stay CPU ByteTensors; load_state_dict moves the rest."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)
