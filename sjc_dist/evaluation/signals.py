"""CLIP ranking signals of one result against a fixed distractor set, on embeddings only.

For a result's V view embeddings x_v [V, D], its prompt's embedding t [D] and a fixed set of distractor prompts
d_1..d_P (never the run's own prompt; the same for every run, so a single-prompt sweep still gets them):
  clip_worst     min_v cos(x_v, t): the worst view's CLIP score (a result good from one side only scores low)
  rp_distractors R@1 of the prompt among {t, d_1..d_P}: the fraction of views whose nearest text is t
                 (ties count against t)
  clip_prob      mean_v softmax_k(s cos(x_v, k))[t] over k in {t, d_1..d_P}, s the judge's learnt logit scale:
                 how much probability the judge puts on the prompt among the distractors
The plain CLIP score (the mean cosine) and R-Precision among a benchmark's own prompts are clip_score.py's.
Distractor sets: 'toy' (the toy world's captions), 'coco153' (the 153 object-centric COCO captions of Dream
Fields / DreamFusion), a prompt file, or 'auto' (toy for toy-world captions, coco153 otherwise).
"""
from dataclasses import dataclass

import torch
from torch import Tensor

from .clip_score import cosine
from .prompts import load_prompts


@dataclass(frozen=True)
class ClipSignals:
    """The distractor-based signals of one result under one judge."""

    clip_worst: float
    rp_distractors: float
    clip_prob: float


def distractor_prompts(source: str, prompt: str) -> list[str]:
    """The distractor set named by `source` ('auto', 'toy', 'coco153' or a file), without `prompt`."""
    from ..toyworld.shapes import parse

    if source == "auto":
        try:
            parse(prompt)
            source = "toy"
        except ValueError:
            source = "coco153"
    return [p for p in load_prompts(source) if p != prompt]


def clip_signals(views: Tensor, prompt: Tensor, distractors: Tensor, logit_scale: float) -> ClipSignals:
    """Signals of view embeddings [V, D] for the prompt embedding [D] against distractor embeddings [P, D]."""
    texts = torch.cat([prompt.reshape(1, -1), distractors])  # the prompt is text 0
    sims = cosine(views, texts)  # [V, 1 + P]
    true = sims[:, :1]
    rp = ((sims[:, 1:] >= true).sum(-1) == 0).float().mean()
    prob = torch.softmax(logit_scale * sims, dim=-1)[:, 0].mean()
    return ClipSignals(float(true.min()), float(rp), float(prob))
