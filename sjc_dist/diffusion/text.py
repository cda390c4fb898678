"""Prompts to text embeddings, with view-dependent prompts (SJC/DreamFusion) and a per-prompt cache.

`TextConditioner.cond(prompts, negative, weight)` -> Cond(context [B, L, D], uncond [B, L, D], weight [B]).
`TextConditioner.perp_neg(prompt, azimuths, ...)`: Perp-Neg's conditioning (Armandpour et al. 2023, the 3D rule
of stable-dreamfusion that LucidDreamer also uses): the positive embedding interpolated between the two views
nearest the azimuth, the two other views as negatives with weights `perp_neg_views` (no overhead view).
"""
import math

import torch
from torch import Tensor

from .denoiser import Cond

VIEWS = ("front", "side", "backside", "overhead")


def view_prompt(prompt: str, view: str, template: str) -> str:
    """The official code's view prefix: '{view} view of {prompt}' by default."""
    return template.format(view=view, prompt=prompt)


class TextConditioner:
    """A tokenizer and a text encoder (any transformers text model); embeddings are cached per string."""

    def __init__(self, tokenizer, encoder: torch.nn.Module, max_length: int | None = None):
        self.tokenizer, self.encoder = tokenizer, encoder.eval().requires_grad_(False)
        self.max_length = max_length or tokenizer.model_max_length
        self._cache: dict[str, Tensor] = {}

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.no_grad()
    def embed(self, prompts: list[str]) -> Tensor:
        """Last hidden states [P, L, D] (what SD's cross-attention reads), float32."""
        missing = sorted({p for p in prompts if p not in self._cache})
        if missing:
            tok = self.tokenizer(missing, padding="max_length", max_length=self.max_length,
                                 truncation=True, return_tensors="pt")
            hidden = self.encoder(tok.input_ids.to(self.device))[0].float()
            self._cache.update(zip(missing, hidden))
        return torch.stack([self._cache[p] for p in prompts])

    def cond(self, prompts: list[str], negative: str = "", weight: float | Tensor | None = None,
             extra_negative: str | None = None) -> Cond:
        """Cond for B prompts, with the negative prompt as CFG's unconditional half (and an estimator's own
        negative prompt, `extra_negative`, as Cond.negative)."""
        context = self.embed(prompts)
        uncond = self.embed([negative] * len(prompts))
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32).expand(len(prompts))
        extra = None if extra_negative is None else self.embed([extra_negative] * len(prompts))
        return Cond(context, uncond, None if w is None else w.to(context.device, non_blocking=True).clone(), extra)

    def perp_neg(self, prompt: str, azimuths: list[float], template: str, negative: str = "",
                 weight: float | None = None, extra_negative: str | None = None, scale: float = -2.0) -> Cond:
        """Perp-Neg's Cond for B views at `azimuths` (degrees, 0 = front): context = the interpolated view
        prompt [B, L, D], views = the two negative views [B, 2, L, D], view_weight [B, 2]."""
        names = ("front", "side", "backside")
        emb = dict(zip(names, self.embed([view_prompt(prompt, v, template) for v in names])))
        mixes = [perp_neg_views(a, scale) for a in azimuths]
        base = self.cond([prompt] * len(azimuths), negative, weight, extra_negative)
        base.context = torch.stack([r * emb[a] + (1 - r) * emb[b] for (a, b), r, _, _ in mixes])
        base.views = torch.stack([torch.stack([emb[n] for n in negs]) for _, _, negs, _ in mixes])
        base.view_weight = torch.tensor([w for *_, w in mixes], dtype=torch.float32).to(base.context.device)
        return base


def perp_neg_views(azimuth: float, scale: float = -2.0) -> tuple[tuple[str, str], float, tuple[str, str],
                                                                  tuple[float, float]]:
    """(views mixed, ratio r of the first, negative views, their weights) at `azimuth` degrees, stable-dreamfusion's
    rule (front decay 2, side decay 10, negative scale -2): front/side mixed within 90 degrees of the front, else
    side/backside; a negative view's weight is scale exp(-decay * distance), 0 while the positive is near it."""
    a = abs((azimuth + 180) % 360 - 180)
    if a < 90:
        r = 1 - a / 90
        front = 0.0 if r > 0.8 else math.exp(-2 * r) * scale
        side = 0.0 if r < 0.2 else math.exp(-10 * (1 - r)) * scale
        return ("front", "side"), r, ("front", "side"), (front, side)
    r = 1 - (a - 90) / 90
    side = 0.0 if r > 0.8 else math.exp(-10 * r) * scale / 2
    return ("side", "backside"), r, ("side", "front"), (side, scale)
