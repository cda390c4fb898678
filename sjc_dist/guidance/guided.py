"""What a guidance reads from one denoiser pass at x: D_u, the guidance direction Delta and D_n, each [N, C, H, W].

standard (classifier-free guidance): Delta = D_c - D_u, so D_cfg = D_u + w Delta (cfg.py's `guided`).
perp_neg (Perp-Neg, Armandpour et al. 2023, with the 3D view rule of stable-dreamfusion):
  Delta = (D_p - D_u) + sum_k w_k perp(D_k - D_u, D_p - D_u), with D_p at the azimuth's interpolated view prompt,
  D_k at the two other views' prompts, w_k <= 0 (text.py's `perp_neg_views`) and perp(a, b) = a - <a, b> b / <b, b>
  per sample (the part of a orthogonal to b).
The papers write both with eps. Since eps_a - eps_b = (D_b - D_a) / sigma and perp is homogeneous, the same
formulas hold for D, up to the factor -1/sigma that each estimator applies. Rows per sample (the denoiser
evaluations of the pass): 1 without text (Delta = 0), 2 (u, c), 2 more for perp_neg's views, 1 more for the
estimator's own negative prompt (Cond.negative: CSD, NFSD).
"""
from collections.abc import Generator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.cfg import guided
from ..diffusion.denoiser import Cond, append_dims
from .passes import Request, predict

MODES = ("standard", "perp_neg")


@dataclass
class Guided:
    """One pass's predictions at x: D_u, Delta, the CFG weight w [N] and D_n (None unless asked for)."""

    uncond: Tensor
    delta: Tensor
    weight: Tensor
    negative: Tensor | None = None

    def cfg(self) -> Tensor:
        """D_cfg = D_u + w Delta."""
        return guided(self.uncond, self.delta, self.weight)


def blocks(cond: Cond, mode: str, negative: bool) -> list[Tensor | None]:
    """The context blocks of a guided pass, in order: u, c, (perp_neg's views), (n); [None] without text."""
    if cond.context is None:
        return [None]
    out = [cond.context] if cond.uncond is None else [cond.uncond, cond.context]
    if mode == "perp_neg" and cond.uncond is not None:
        out += list(cond.views.unbind(1))
    if negative:
        if cond.negative is None:
            raise ValueError("this estimator needs the Cond's negative prompt embeddings (Cond.negative)")
        out.append(cond.negative)
    return out


def rows(mode: str, negative: bool, text: bool = True) -> int:
    """Denoiser evaluations per sample of one guided pass (the length of `blocks`)."""
    if not text:
        return 1
    return 2 + 2 * (mode == "perp_neg") + int(negative)


def guide(x: Tensor, sigma: Tensor, cond: Cond, mode: str = "standard", negative: bool = False,
          weight: float = 1.0) -> Generator[Request, Tensor, Guided]:
    """One pass at x [N, C, H, W]: D_u, Delta (of `mode`), w (cond.weight, else `weight`) and D_n if asked."""
    d = yield from predict(x, sigma, blocks(cond, mode, negative))
    w = cond.weight if cond.weight is not None else torch.full_like(sigma, float(weight))
    d_n = d.pop() if negative else None
    if len(d) == 1:  # no text, or no uncond: no guidance, D = D(x; c)
        return Guided(d[0], torch.zeros_like(d[0]), w, d_n)
    d_u, d_c, *views = d
    delta = d_c - d_u if mode == "standard" else perp_neg_delta(d_u, d_c, views, cond.view_weight)
    return Guided(d_u, delta, w, d_n)


def perpendicular(a: Tensor, b: Tensor) -> Tensor:
    """a - <a, b> / max(<b, b>, 1e-6) b per sample of [N, C, H, W]."""
    dims = tuple(range(1, a.ndim))
    coef = (a * b).sum(dims) / (b * b).sum(dims).clamp_min(1e-6)
    return a - append_dims(coef, a.ndim) * b


def perp_neg_delta(d_u: Tensor, d_p: Tensor, views: list[Tensor], weight: Tensor) -> Tensor:
    """(D_p - D_u) + sum_k w_k perp(D_k - D_u, D_p - D_u) for views [K x [N, C, H, W]], weight [N, K]."""
    pos = d_p - d_u
    delta = pos
    for k, d_k in enumerate(views):
        delta = delta + append_dims(weight[:, k].to(pos), pos.ndim) * perpendicular(d_k - d_u, pos)
    return delta
