"""Prompts to text embeddings, with view-dependent prompts (SJC/DreamFusion) and a per-prompt cache.

`TextConditioner.cond(prompts, negative, weight)` -> Cond(context [B, L, D], uncond [B, L, D], weight [B]).
"""
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

    def cond(self, prompts: list[str], negative: str = "", weight: float | Tensor | None = None) -> Cond:
        """Cond for B prompts, with the negative prompt as CFG's unconditional half."""
        context = self.embed(prompts)
        uncond = self.embed([negative] * len(prompts))
        w = None if weight is None else torch.as_tensor(weight, dtype=torch.float32).expand(len(prompts))
        return Cond(context, uncond, None if w is None else w.to(context.device, non_blocking=True).clone())
