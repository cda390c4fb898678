"""The one contract of the diffusion side (EDM / k-diffusion): a Denoiser D(x; sigma, cond) -> x0_hat.

Shapes: x [B, C, H, W], sigma [B] (one noise level per sample), output float32 [B, C, H, W].
Score: grad log p_sigma(x) ~= (D(x; sigma) - x) / sigma^2 (Tweedie). Wrappers such as CFG are Denoisers too.
"""
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


@dataclass
class Cond:
    """Conditioning for a batch of B samples.

    context: text embeddings [B, L, D] (None for an unconditional model).
    uncond: the negative/empty-prompt embeddings [B, L, D] used by classifier-free guidance (None: no CFG).
    weight: per-sample CFG weight [B] (None: the CFGDenoiser's own weight).
    negative: an estimator's own negative prompt [B, L, D] (CSD, NFSD; uncond is then the empty prompt), or None.
    views: Perp-Neg's other-view prompts [B, K, L, D] and view_weight their weights [B, K] (<= 0), or None.
    """

    context: Tensor | None = None
    uncond: Tensor | None = None
    weight: Tensor | None = None
    negative: Tensor | None = None
    views: Tensor | None = None
    view_weight: Tensor | None = None

    def select(self, index: Tensor | slice) -> "Cond":
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Cond(*(pick(getattr(self, f.name)) for f in fields(self)))

    def without_guidance(self) -> "Cond":
        return replace(self, uncond=None, weight=None)

    @staticmethod
    def cat(conds: list["Cond"]) -> "Cond":
        """Concatenate the conditioning of several batches (scenes) into one."""
        def join(ts):
            return None if any(t is None for t in ts) else torch.cat(ts)
        return Cond(*(join([getattr(c, f.name) for c in conds]) for f in fields(Cond)))


class Denoiser:
    """Base of every denoiser: `__call__(x [B,C,H,W], sigma [B], cond) -> x0_hat [B,C,H,W]` (float32).

    Attributes: sigma_min, sigma_max (the valid range), channels, size (H = W), is_latent, and
    `sigmas` (ascending tensor of the model's discrete noise levels, or None for continuous models).
    """

    sigma_min: float
    sigma_max: float
    channels: int
    size: int
    is_latent: bool = False
    sigmas: Tensor | None = None

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        raise NotImplementedError


def score(denoiser: Denoiser, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
    """grad_x log p_sigma(x) = (D(x; sigma) - x) / sigma^2, sigma [B] broadcast over [B, C, H, W]."""
    s = append_dims(sigma, x.ndim)
    return (denoiser(x, sigma, cond) - x) / s**2


def eps_from_x0(x: Tensor, x0: Tensor, sigma: Tensor) -> Tensor:
    """eps_hat = (x - x0_hat) / sigma for the VE form x = x0 + sigma * eps."""
    return (x - x0) / append_dims(sigma, x.ndim)


def append_dims(t: Tensor, ndim: int) -> Tensor:
    """[B] -> [B, 1, ..., 1] with `ndim` dims in all."""
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))
