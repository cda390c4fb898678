"""A VP-trained diffusers UNet (DDPM, Stable Diffusion; eps- or v-prediction, pixel or latent) as a VE Denoiser.

SJC Sec. 3.2 / EDM Table 1: sigma_t = sqrt((1 - abar_t) / abar_t); the UNet sees z = x / sqrt(1 + sigma^2) at
the timestep t whose sigma_t matches, and D = c_skip x + c_out F(c_in x; t) with
  eps:  c_skip = 1,               c_out = -sigma,                 c_in = 1 / sqrt(1 + sigma^2)
  v:    c_skip = 1 / (1 + sigma^2), c_out = -sigma / sqrt(1 + sigma^2), c_in = 1 / sqrt(1 + sigma^2)
The timestep for a continuous sigma: "nearest", the nearest tick in log-sigma with the scalings at the continuous
sigma (k-diffusion's quantized mode), "interp", the fractional t interpolated linearly in log-sigma (k-diffusion's
default), both keeping the continuous sigma in the scalings; or "snap", the
official SJC code's rule (adapt_sd.py `snap_t_to_nearest_tick`): the nearest tick in *linear* sigma, whose sigma
then replaces the continuous one in the scalings too (D = z - sigma_tick eps(z / sqrt(1 + sigma_tick^2))). All three
agree exactly for sigmas drawn from the ticks (the official `ticks` sampler); they differ between ticks.
"""
import torch
from torch import Tensor

from .denoiser import Cond, Denoiser, append_dims

PREDICTION_TYPES = ("epsilon", "v_prediction")
SIGMA_TO_T = ("nearest", "interp", "snap")


def vp_sigmas(alphas_cumprod: Tensor) -> Tensor:
    """sigma_t = sqrt((1 - abar_t) / abar_t), [T], ascending in t."""
    a = alphas_cumprod.double()
    return ((1 - a) / a).sqrt()


def coefficients(sigma: Tensor, prediction_type: str) -> tuple[Tensor, Tensor, Tensor]:
    """(c_skip, c_out, c_in) for sigma [B] (EDM Table 1, VP column)."""
    c_in = 1 / (1 + sigma**2).sqrt()
    if prediction_type == "epsilon":
        return torch.ones_like(sigma), -sigma, c_in
    if prediction_type == "v_prediction":
        return 1 / (1 + sigma**2), -sigma * c_in, c_in
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


class VPDenoiser(Denoiser):
    """Wraps `UNet2DModel` or `UNet2DConditionModel` trained with a discrete VP schedule."""

    def __init__(self, unet: torch.nn.Module, alphas_cumprod: Tensor, prediction_type: str = "epsilon",
                 sigma_to_t: str = "nearest", dtype: torch.dtype = torch.float32, is_latent: bool = False):
        if sigma_to_t not in SIGMA_TO_T:
            raise ValueError(f"sigma_to_t must be one of {SIGMA_TO_T}, got {sigma_to_t!r}")
        coefficients(torch.ones(1), prediction_type)  # validates prediction_type
        self.unet, self.prediction_type, self.mode, self.dtype = unet, prediction_type, sigma_to_t, dtype
        device = next(unet.parameters()).device
        self.sigmas = vp_sigmas(alphas_cumprod).float().to(device)
        self.log_sigmas = self.sigmas.log()
        self.sigma_min, self.sigma_max = float(self.sigmas[0]), float(self.sigmas[-1])
        cfg = unet.config
        self.channels, self.size, self.is_latent = cfg.in_channels, cfg.sample_size, is_latent
        self.conditional = hasattr(cfg, "cross_attention_dim") and cfg.cross_attention_dim is not None

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Timestep for each sigma [B]: nearest tick (long; in linear sigma for "snap") or interpolated (float)."""
        if self.mode == "snap":
            return (sigma.float().to(self.sigmas.device)[:, None] - self.sigmas[None]).abs().argmin(dim=1)
        log_s = sigma.float().log().to(self.log_sigmas.device)
        if self.mode == "nearest":
            return (log_s[:, None] - self.log_sigmas[None]).abs().argmin(dim=1)
        log_s = log_s.clamp(self.log_sigmas[0], self.log_sigmas[-1])
        hi = torch.searchsorted(self.log_sigmas, log_s).clamp(1, len(self.log_sigmas) - 1)
        lo_v, hi_v = self.log_sigmas[hi - 1], self.log_sigmas[hi]
        return (hi - 1).float() + (log_s - lo_v) / (hi_v - lo_v)

    def round_sigma(self, sigma: Tensor) -> Tensor:
        """The sigma [B] the scalings use: the snapped tick's for "snap", else sigma itself."""
        if self.mode != "snap":
            return sigma
        return self.sigmas[self.sigma_to_t(sigma)].to(sigma)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        sigma = self.round_sigma(sigma.to(x.device, torch.float32))
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in coefficients(sigma, self.prediction_type))
        t = self.sigma_to_t(sigma).to(x.device)
        kwargs = {}
        if self.conditional:
            if cond is None or cond.context is None:
                raise ValueError("this UNet is text-conditioned: pass a Cond with `context` [B, L, D]")
            kwargs["encoder_hidden_states"] = cond.context.to(self.dtype)
        with torch.autocast(x.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = self.unet((x * c_in).to(self.dtype), t, **kwargs, return_dict=False)[0]
        return (c_skip * x + c_out * out.float()).float()
