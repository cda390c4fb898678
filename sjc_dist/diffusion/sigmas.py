"""Noise levels per step, stateless: `sample(step, n_steps, n, generator) -> sigma [n]`.

ticks:       uniform over the model's discrete sigma ticks inside [min, max] (the official SJC default,
             ticks t = 10..969 of SD: sigma 0.0983..12.23); continuous models fall back to log-uniform.
uniform:     uniform in sigma over [min, max].
annealed:    deterministic, log-linear from max down to min over the run (high to low).
sqrt_anneal: deterministic, HiFA's square-root schedule over the window's ticks:
             t(i) = t_max - (t_max - t_min) sqrt(i / n_steps) (threestudio's `sqrt_anneal`).
dreamtime:   deterministic, DreamTime's monotone schedule (Huang et al. 2023): t(i) = argmin_t |sum_{t' >= t} p(t')
             - (i + 1) / n_steps| with p(t) ~ W(t), W = 1 on [500, 800] and Gaussian tails of width 100 below and
             300 above (m1 = 800, m2 = 500, s1 = 300, s2 = 100 on the 1000-tick scale).
Every kind is usable by every guidance. Models without ticks use `tick_table`: 1000 log-spaced levels.
"""
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..configtools import opt

# The official windows over the model's 1000 ticks: SJC samples us[30:-10] ~ t 10..969; SDS t 20..980 (DreamFusion,
# and threestudio's 0.02..0.98 for CSD, NFSD and ISM; LucidDreamer's ISM also starts at 0.02..0.98).
DEFAULT_T_WINDOW = {"paas": (10, 969), "sds": (20, 980), "csd": (20, 980), "nfsd": (20, 980), "ism": (20, 980)}
DREAMTIME = (800.0, 500.0, 300.0, 100.0)  # m1, m2, s1, s2 of DreamTime's prior W(t), in ticks of 1000
KINDS = ("ticks", "uniform", "annealed", "sqrt_anneal", "dreamtime")


@dataclass(frozen=True)
class SigmaConfig:
    """How the noise level of each step is chosen."""

    kind: str = opt("ticks", "ticks (uniform over model ticks), uniform (in sigma), annealed (log-linear, high to "
                             "low), sqrt_anneal (HiFA's t_max - (t_max - t_min) sqrt(step/steps)), dreamtime "
                             "(DreamTime's monotone schedule)", choices=KINDS)
    min: float | None = opt(None, "lowest sigma; null = the guidance's official window (SJC t=10, others t=20)",
                            gt=0.0)
    max: float | None = opt(None, "highest sigma; null = the official window (SJC t=969, others t=980)", gt=0.0)


def tick_table(ticks: Tensor | None, lo: float, hi: float, n: int = 1000) -> Tensor:
    """The model's ascending sigma ticks [T] (CPU float32), or for a continuous model n log-spaced levels in
    [lo, hi]."""
    if ticks is not None:
        return ticks.float().cpu()
    return torch.exp(torch.linspace(math.log(lo), math.log(hi), n))


def tick_index(table: Tensor, sigma: Tensor) -> Tensor:
    """The index of the nearest level (in log sigma) of an ascending table [T] for each sigma [N] (long)."""
    log_t = table.to(sigma.device).log()
    return (sigma.float().log()[:, None] - log_t[None]).abs().argmin(dim=1)


def dreamtime_weight(t: Tensor) -> Tensor:
    """DreamTime's prior W(t) (unnormalised) for ticks t [T] on the 1000-tick scale."""
    m1, m2, s1, s2 = DREAMTIME
    above, below = torch.exp(-(t - m1) ** 2 / (2 * s1**2)), torch.exp(-(t - m2) ** 2 / (2 * s2**2))
    return torch.where(t > m1, above, torch.where(t < m2, below, torch.ones_like(t)))


class SigmaSampler:
    """One of the kinds over a resolved range [lo, hi]; `ticks` is the model's sigma table or None."""

    def __init__(self, kind: str, lo: float, hi: float, ticks: Tensor | None = None):
        self.kind, self.lo, self.hi = kind, lo, hi
        self.ticks = None
        table = tick_table(ticks, lo, hi)
        inside = (table >= lo * (1 - 1e-6)) & (table <= hi * (1 + 1e-6))
        if ticks is not None and inside.any():
            self.ticks = table[inside]
        self.window = table[inside] if inside.any() else torch.tensor([lo, hi])
        t = torch.nonzero(inside).flatten().float() if inside.any() else torch.tensor([0.0, len(table) - 1.0])
        p = dreamtime_weight(t * 1000 / len(table))
        self.tail = (p / p.sum()).flip(0).cumsum(0).flip(0)  # sum_{t' >= t} p(t') over the window, [T]

    def sample(self, step: int, n_steps: int, n: int, generator: torch.Generator) -> Tensor:
        """sigma [n] for step `step` of `n_steps` (CPU float32; draws only from `generator`)."""
        if self.kind in SCHEDULES:
            return torch.full((n,), SCHEDULES[self.kind](self, step, n_steps))
        if self.kind == "ticks" and self.ticks is not None:
            idx = torch.randint(len(self.ticks), (n,), generator=generator)
            return self.ticks[idx]
        u = torch.rand(n, generator=generator)
        if self.kind == "uniform":
            return self.lo + u * (self.hi - self.lo)
        return torch.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))

    def annealed(self, step: int, n_steps: int) -> float:
        frac = step / max(n_steps - 1, 1)
        return math.exp(math.log(self.hi) + frac * (math.log(self.lo) - math.log(self.hi)))

    def sqrt_anneal(self, step: int, n_steps: int) -> float:
        i = round((len(self.window) - 1) * (1 - math.sqrt(min(step / n_steps, 1.0))))
        return float(self.window[i])

    def dreamtime(self, step: int, n_steps: int) -> float:
        i = int((self.tail - min((step + 1) / n_steps, 1.0)).abs().argmin())
        return float(self.window[i])


SCHEDULES = {"annealed": SigmaSampler.annealed, "sqrt_anneal": SigmaSampler.sqrt_anneal,
             "dreamtime": SigmaSampler.dreamtime}


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
