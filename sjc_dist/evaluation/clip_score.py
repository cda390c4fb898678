"""CLIP score and CLIP R-Precision, on embeddings only (so they can be tested on hand-built vectors).

clip_score: mean over V views of cos(image_v, prompt), the views rendered at fixed azimuths and a stated
elevation (CLIPScore without its 2.5 rescaling or clipping at 0).
R-Precision (Dream Fields, Jain et al. 2022; DreamFusion, Poole et al. 2022): for each view of an object,
rank the object's true prompt among all P prompts of the benchmark by cosine similarity; R@K is 1 if it is in
the top K. Per object: the mean over its views; overall: the mean over objects. Ties count against the true
prompt (a tie is not a retrieval). Embeddings are normalised here, whatever the caller passed.
"""
import torch
import torch.nn.functional as F
from torch import Tensor


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarities [N, M] of a [N, D] and b [M, D]."""
    return F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T


def clip_score(image_emb: Tensor, text_emb: Tensor) -> float:
    """Mean cosine between V view embeddings [V, D] and one prompt embedding [D]."""
    return float(cosine(image_emb, text_emb.reshape(1, -1)).mean())


def prompt_ranks(image_emb: Tensor, text_emb: Tensor, true_idx: Tensor) -> Tensor:
    """0-based rank [N, V] of the true prompt for each view.

    image_emb [N, V, D] (N objects, V views), text_emb [P, D], true_idx [N] (int, index into the P prompts).
    rank = how many other prompts score at least as high as the true one.
    """
    n, v, d = image_emb.shape
    sims = cosine(image_emb.reshape(n * v, d), text_emb).reshape(n, v, -1)  # [N, V, P]
    true = sims.gather(-1, true_idx.to(sims.device).long().reshape(n, 1, 1).expand(n, v, 1))  # [N, V, 1]
    at_least = (sims >= true).sum(-1) - 1  # the true prompt ties with itself
    return at_least


def r_precision_per_object(image_emb: Tensor, text_emb: Tensor, true_idx: Tensor, k: int = 1) -> Tensor:
    """R@k of each object [N]: the fraction of its views whose true prompt ranks in the top k."""
    if not 1 <= k <= text_emb.shape[0]:
        raise ValueError(f"k = {k} must be in [1, {text_emb.shape[0]}] (the number of prompts)")
    return (prompt_ranks(image_emb, text_emb, true_idx) < k).float().mean(-1)


def r_precision(image_emb: Tensor, text_emb: Tensor, true_idx: Tensor, k: int = 1) -> float:
    """R@k averaged over views and objects (Dream Fields / DreamFusion CLIP R-Precision)."""
    return float(r_precision_per_object(image_emb, text_emb, true_idx, k).mean())


def clip_scores(image_emb: Tensor, text_emb: Tensor, true_idx: Tensor) -> Tensor:
    """clip_score of each object with its own prompt, [N]: image_emb [N, V, D], text_emb [P, D]."""
    sims = torch.einsum("nvd,nd->nv", F.normalize(image_emb.float(), dim=-1),
                        F.normalize(text_emb.float(), dim=-1)[true_idx.long()])
    return sims.mean(-1)
