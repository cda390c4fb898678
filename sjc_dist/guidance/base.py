"""The Guidance contract and the one definition of chaining an image-space update through a renderer.

A Guidance maps a rendered batch y [B, C, H, W] (and sigma [B], cond) to an update u of the same shape: the
direction in which y should move. Chaining (SJC eq. 10): the surrogate loss -<u, y> has gradient -u w.r.t. y,
so backpropagating it applies u through the renderer's Jacobian into theta. The denoiser runs under no-grad:
no gradient ever flows through the UNet.

Every guidance splits into perturb (z = y + sigma n, n ~ N(0, I)), denoise (D(z; sigma), shareable across
scenes in one batched call) and `update(y, z, noise, denoised, sigma)`, the only part the kinds differ in.
"""
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..configtools import opt
from ..diffusion.denoiser import Cond, Denoiser, append_dims


@dataclass(frozen=True)
class GuidanceConfig:
    """Which score estimator drives the optimisation."""

    kind: str = opt("paas", "paas (SJC: perturb-and-average scoring) or sds (DreamFusion)",
                    choices=("paas", "sds"))
    weight: float = opt(100.0, "classifier-free guidance weight w (official SJC: 100; 1 = no guidance)", ge=0.0)
    estimator: str = opt("var_red", "PAAS estimator: var_red = (D - y)/sigma (eq. 16, official default), "
                                    "plain = (D - z)/sigma (eq. 15)", choices=("var_red", "plain"))
    n_noise: int = opt(1, "noise draws averaged per view and step (official: 1)", ge=1, le=64)
    through_vae: bool = opt(False, "SDS only: render RGB and encode it with the model's VAE, with gradients")


@dataclass
class GuidanceOutput:
    """target: the tensor the update applies to (the render, or its VAE latent), with grad;
    update: [B, C, H, W] detached ascent direction; sigma [B]; metrics: scalars for logging."""

    target: Tensor
    update: Tensor
    sigma: Tensor
    metrics: dict = field(default_factory=dict)


def chain(out: GuidanceOutput) -> Tensor:
    """Surrogate loss whose gradient w.r.t. the target is -update (summed over pixels, as the official code)."""
    return -(out.update.detach() * out.target).sum()


class Guidance:
    """Base: holds its Denoiser; subclasses define `update`. Optionally encodes renders first (`encode`)."""

    def __init__(self, denoiser: Denoiser, cfg: GuidanceConfig, encode=None):
        self.denoiser, self.cfg, self.encode = denoiser, cfg, encode

    def target(self, image: Tensor) -> Tensor:
        """What the update applies to: the render, or its differentiable VAE encoding."""
        return self.encode(image) if self.encode is not None else image

    def perturb(self, y: Tensor, sigma: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """n_noise draws per sample, repeated to [n_noise * B, ...]: (y, sigma, noise n, z = y + sigma n)."""
        k = self.cfg.n_noise
        y_k, s_k = y.detach().repeat(k, 1, 1, 1), sigma.to(y.device).repeat(k)
        noise = torch.randn(y_k.shape, generator=generator, device=generator.device).to(y.device)
        return y_k, s_k, noise, y_k + append_dims(s_k, y_k.ndim) * noise

    @torch.no_grad()
    def denoise(self, z: Tensor, sigma: Tensor, cond: Cond) -> Tensor:
        return self.denoiser(z, sigma, cond)

    def update(self, y: Tensor, z: Tensor, noise: Tensor, denoised: Tensor, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def reduce(self, u: Tensor, batch: int) -> Tensor:
        """Average the n_noise draws back to [B, ...]."""
        return u.reshape(self.cfg.n_noise, batch, *u.shape[1:]).mean(0)

    def __call__(self, image: Tensor, cond: Cond, sigma: Tensor, generator: torch.Generator) -> GuidanceOutput:
        target = self.target(image)
        y, s, noise, z = self.perturb(target, sigma, generator)
        cond_k = Cond.cat([cond] * self.cfg.n_noise)
        u = self.update(y, z, noise, self.denoise(z, s, cond_k), s)
        return GuidanceOutput(target, self.reduce(u, target.shape[0]), sigma)


def make_guidance(denoiser: Denoiser, cfg: GuidanceConfig, encode=None) -> Guidance:
    """The Guidance of `cfg.kind`."""
    return GUIDANCES[cfg.kind](denoiser, cfg, encode)


from .paas import PAAS  # noqa: E402
from .sds import SDS  # noqa: E402

GUIDANCES: dict[str, type[Guidance]] = {"paas": PAAS, "sds": SDS}
