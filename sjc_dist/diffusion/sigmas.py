"""Noise levels per step, stateless: `sample(step, n_steps, n, generator) -> sigma [n]`.

ticks:    uniform over the model's discrete sigma ticks inside [min, max] (the official SJC default,
          ticks t = 10..969 of SD: sigma 0.0983..12.23); continuous models fall back to log-uniform.
uniform:  uniform in sigma over [min, max].
annealed: deterministic, log-linear from max down to min over the run (high to low).
"""
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..configtools import opt

# The official windows over the model's 1000 ticks: SJC samples us[30:-10] ~ t 10..969; SDS t 20..980.
DEFAULT_T_WINDOW = {"paas": (10, 969), "sds": (20, 980)}


@dataclass(frozen=True)
class SigmaConfig:
    """How the noise level of each step is chosen."""

    kind: str = opt("ticks", "ticks (uniform over model ticks), uniform (in sigma), annealed (high to low)",
                    choices=("ticks", "uniform", "annealed"))
    min: float | None = opt(None, "lowest sigma; null = the guidance's official window (SJC t=10, SDS t=20)",
                            gt=0.0)
    max: float | None = opt(None, "highest sigma; null = the official window (SJC t=969, SDS t=980)", gt=0.0)


class SigmaSampler:
    """One of the three kinds over a resolved range [lo, hi]; `ticks` is the model's sigma table or None."""

    def __init__(self, kind: str, lo: float, hi: float, ticks: Tensor | None = None):
        self.kind, self.lo, self.hi = kind, lo, hi
        self.ticks = None
        if ticks is not None:
            inside = ticks[(ticks >= lo * (1 - 1e-6)) & (ticks <= hi * (1 + 1e-6))].float().cpu()
            self.ticks = inside if len(inside) else None

    def sample(self, step: int, n_steps: int, n: int, generator: torch.Generator) -> Tensor:
        """sigma [n] for step `step` of `n_steps` (CPU float32; draws only from `generator`)."""
        if self.kind == "annealed":
            frac = step / max(n_steps - 1, 1)
            value = math.exp(math.log(self.hi) + frac * (math.log(self.lo) - math.log(self.hi)))
            return torch.full((n,), value)
        if self.kind == "ticks" and self.ticks is not None:
            idx = torch.randint(len(self.ticks), (n,), generator=generator)
            return self.ticks[idx]
        u = torch.rand(n, generator=generator)
        if self.kind == "uniform":
            return self.lo + u * (self.hi - self.lo)
        return torch.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))


def resolve_range(cfg: SigmaConfig, guidance_kind: str, sigmas: Tensor | None,
                  model_min: float, model_max: float) -> tuple[float, float]:
    """[min, max] from the config, defaulting to the guidance's official tick window of the model."""
    lo, hi = cfg.min, cfg.max
    if sigmas is not None and (lo is None or hi is None):
        t_lo, t_hi = DEFAULT_T_WINDOW[guidance_kind]
        t_hi = min(t_hi, len(sigmas) - 1)
        lo = float(sigmas[min(t_lo, t_hi)]) if lo is None else lo
        hi = float(sigmas[t_hi]) if hi is None else hi
    lo = model_min if lo is None else lo
    hi = model_max if hi is None else hi
    return lo, hi
