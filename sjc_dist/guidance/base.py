"""The Guidance contract and the one definition of chaining an image-space update through a renderer.

A Guidance maps a rendered batch y [B, C, H, W] (and sigma [B], cond) to an update u of the same shape: the
direction in which y should move. Chaining (SJC eq. 10): the surrogate loss -<u, y> has gradient -u w.r.t. y,
so backpropagating it applies u through the renderer's Jacobian into theta. The denoiser runs under no-grad:
no gradient ever flows through the UNet.

Every guidance splits into perturb (z = y + sigma n, n ~ N(0, I)), its denoiser passes (`passes`, a generator of
Requests that `passes.drive` shares across scenes) and `update(y, z, noise, guided, sigma)`, where the one-pass
kinds differ. Cost: `evals_per_view` = UNet image-evaluations per rendered view and step (CFG halves counted):
  paas, sds: 2    csd: 2 (3 with csd_negative > 0)    nfsd: 3    ism: ism_steps + 3
  (times n_noise; +2 with cfg perp_neg; 1 per guided pass for a model without text).
"""
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..configtools import opt
from ..diffusion.denoiser import Cond, Denoiser, append_dims
from ..errors import ConfigError
from .guided import MODES, Guided, guide, rows
from .passes import Passes, drive

KINDS = ("paas", "sds", "csd", "nfsd", "ism")
# The estimators' published negative prompts (guidance.negative_prompt = null): CSD's configs (CVMI-Lab
# Classifier-Score-Distillation, csd-sd-refine.yaml) and the NFSD paper's (Katzir et al. 2023, Sec. 4).
NEGATIVE_PROMPTS = {"csd": "oversaturated color, ugly, tiling, low quality, noisy",
                    "nfsd": "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
                            "low-resolution, gloomy"}


@dataclass(frozen=True)
class GuidanceConfig:
    """Which score estimator drives the optimisation, and its settings."""

    kind: str = opt("paas", "paas (SJC: perturb-and-average scoring), sds (DreamFusion), csd (classifier score "
                            "distillation), nfsd (noise-free score distillation), ism (interval score matching)",
                    choices=KINDS)
    weight: float = opt(100.0, "classifier-free guidance weight w of eps_u + w (eps_c - eps_u) (official SJC: 100; "
                               "1 = no guidance; threestudio's guidance_scale s is w = s + 1)", ge=0.0)
    estimator: str = opt("var_red", "PAAS estimator: var_red = (D - y)/sigma (eq. 16, official default), "
                                    "plain = (D - z)/sigma (eq. 15)", choices=("var_red", "plain"))
    n_noise: int = opt(1, "noise draws averaged per view and step (official: 1)", ge=1, le=64)
    through_vae: bool = opt(False, "SDS only: render RGB and encode it with the model's VAE, with gradients")
    cfg: str = opt("standard", "guidance direction: standard CFG (D_c - D_u) or perp_neg (Perp-Neg over view "
                               "prompts: needs prompt.view_dependent and a text model; 2 more evaluations)",
                   choices=MODES)
    perp_neg_scale: float = opt(-2.0, "Perp-Neg: weight of a negative view next to the positive one, decaying "
                                      "away from it (stable-dreamfusion: -2)", le=0.0)
    negative_prompt: str | None = opt(None, "csd/nfsd: their negative prompt (eps_n); null = the paper's: "
                                            + "; ".join(f"{k}: '{v}'" for k, v in NEGATIVE_PROMPTS.items()))
    csd_negative: float = opt(0.0, "CSD: weight of the negative-prompt term, u ~ (eps_c - eps_u) - c (eps_n - "
                                   "eps_u); 0 = plain CSD (2 evaluations); CSD's configs use 0.5 to 1", ge=0.0)
    nfsd_t: int = opt(200, "NFSD: tick from which the denoising term subtracts the negative prompt (paper: 200)",
                      ge=0, le=1000)
    ism_steps: int = opt(5, "ISM: DDIM inversion steps from tick 0 to x_s (LucidDreamer: 5)", ge=1, le=50)
    ism_interval: int = opt(80, "ISM: ticks between x_s and x_t (LucidDreamer's default 80; its configs 25 to 80)",
                            ge=0, le=1000)


@dataclass
class GuidanceOutput:
    """target: the tensor the update applies to (the render, or its VAE latent), with grad;
    update: [B, C, H, W] detached ascent direction; sigma [B]; metrics: scalars for logging."""

    target: Tensor
    update: Tensor
    sigma: Tensor
    metrics: dict = field(default_factory=dict)


def chain(out: GuidanceOutput) -> Tensor:
    """Surrogate loss whose gradient w.r.t. the target is -update, summed over pixels and views (the official
    code's sum; threestudio divides its SDS loss by the batch size, so with B views its gradient is ours / B)."""
    return -(out.update.detach() * out.target).sum()


class Guidance:
    """Base: holds its Denoiser; subclasses define `update` (one-pass kinds) or `passes`. Optionally encodes
    renders first (`encode`)."""

    def __init__(self, denoiser: Denoiser, cfg: GuidanceConfig, encode=None):
        self.denoiser, self.cfg, self.encode = denoiser, cfg, encode

    @property
    def uses_negative(self) -> bool:
        """Whether this estimator reads Cond.negative (its own negative prompt)."""
        return False

    def negative_text(self) -> str | None:
        """The estimator's negative prompt, or None when it uses none."""
        if not self.uses_negative:
            return None
        return self.cfg.negative_prompt if self.cfg.negative_prompt is not None else NEGATIVE_PROMPTS[self.cfg.kind]

    def rows_per_sample(self, text: bool = True) -> int:
        """Denoiser evaluations per noisy sample and step."""
        return rows(self.cfg.cfg, self.uses_negative, text)

    def evals_per_view(self, text: bool = True) -> int:
        """UNet image-evaluations per rendered view and step (CFG halves and n_noise draws counted)."""
        return self.cfg.n_noise * self.rows_per_sample(text)

    def target(self, image: Tensor) -> Tensor:
        """What the update applies to: the render, or its differentiable VAE encoding."""
        return self.encode(image) if self.encode is not None else image

    def perturb(self, y: Tensor, sigma: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """n_noise draws per sample, repeated to [n_noise * B, ...]: (y, sigma, noise n, z = y + sigma n)."""
        k = self.cfg.n_noise
        y_k, s_k = y.detach().repeat(k, 1, 1, 1), sigma.to(y.device).repeat(k)
        noise = self.noise(y, generator)
        return y_k, s_k, noise, y_k + append_dims(s_k, y_k.ndim) * noise

    def noise(self, y: Tensor, generator: torch.Generator) -> Tensor:
        """n ~ N(0, I) [n_noise B, ...] for y [B, ...], drawn from `generator` (on its device), on y's device."""
        shape = (self.cfg.n_noise * y.shape[0], *y.shape[1:])
        return torch.randn(shape, generator=generator, device=generator.device).to(y.device)

    @torch.no_grad()
    def denoise(self, z: Tensor, sigma: Tensor, cond: Cond) -> Tensor:
        return self.denoiser(z, sigma, cond)

    def guide(self, x: Tensor, sigma: Tensor, cond: Cond):
        """One guided pass at x (see guided.py), with this guidance's direction and negative prompt."""
        return guide(x, sigma, cond, self.cfg.cfg, self.uses_negative, getattr(self.denoiser, "weight", 1.0))

    def passes(self, y: Tensor, z: Tensor, noise: Tensor, sigma: Tensor, cond: Cond) -> Passes:
        """The update u [N, C, H, W] for z = y + sigma n, as a generator of denoiser requests (one pass here)."""
        g = yield from self.guide(z, sigma, cond)
        return self.update(y, z, noise, g, sigma)

    def update(self, y: Tensor, z: Tensor, noise: Tensor, g: Guided, sigma: Tensor) -> Tensor:
        raise NotImplementedError

    def reduce(self, u: Tensor, batch: int) -> Tensor:
        """Average the n_noise draws back to [B, ...]."""
        return u.reshape(self.cfg.n_noise, batch, *u.shape[1:]).mean(0)

    def __call__(self, image: Tensor, cond: Cond, sigma: Tensor, generator: torch.Generator) -> GuidanceOutput:
        target = self.target(image)
        y, s, noise, z = self.perturb(target, sigma, generator)
        cond_k = Cond.cat([cond] * self.cfg.n_noise)
        u = drive([self.passes(y, z, noise, s, cond_k)], self.denoise)[0]
        return GuidanceOutput(target, self.reduce(u, target.shape[0]), sigma)


def make_guidance(denoiser: Denoiser, cfg: GuidanceConfig, encode=None) -> Guidance:
    """The Guidance of `cfg.kind`."""
    return GUIDANCES[cfg.kind](denoiser, cfg, encode)


def validate_guidance(cfg: GuidanceConfig, view_dependent: bool, text_model: bool) -> None:
    """Cross-field checks of the guidance against the prompt and the model (ConfigError naming the field)."""
    if cfg.kind in NEGATIVE_PROMPTS and not text_model:
        raise ConfigError("guidance.kind", cfg.kind, "paas, sds or ism: csd and nfsd need a text-conditioned model")
    if cfg.cfg == "perp_neg" and not (text_model and view_dependent):
        raise ConfigError("guidance.cfg", cfg.cfg, "standard unless the model has text and prompt.view_dependent "
                                                   "is true (Perp-Neg contrasts view prompts)")


def sds_weight(sigma: Tensor, ndim: int) -> Tensor:
    """DreamFusion's w(t) = 1 - abar_t = sigma^2 / (1 + sigma^2), as [N, 1, ..., 1]."""
    s = append_dims(sigma, ndim)
    return s**2 / (1 + s**2)


from .csd import CSD  # noqa: E402
from .ism import ISM  # noqa: E402
from .nfsd import NFSD  # noqa: E402
from .paas import PAAS  # noqa: E402
from .sds import SDS  # noqa: E402

GUIDANCES: dict[str, type[Guidance]] = {"paas": PAAS, "sds": SDS, "csd": CSD, "nfsd": NFSD, "ism": ISM}
