"""Image-space agreement of two renders of one scene: PSNR and SSIM of RGB, IoU of silhouettes, depth error.

All take batches [V, C, H, W] (V views; RGB in [-1, 1], opacity in [0, 1], depth in world units) and return one
float per view [V] (float64 on the CPU); callers average over views.
  psnr      10 log10(peak^2 / MSE) with the peak-to-peak range 2 of [-1, 1] images; capped at PSNR_CAP dB
            (identical images would give +inf, which no mean survives).
  ssim      Wang et al. 2004: mean over pixels and channels of
            (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)),
            local statistics under an 11x11 Gaussian window (sigma 1.5, 'valid' region), on [0, 1] images,
            C1 = (0.01)^2, C2 = (0.03)^2 (the reference constants for data range 1).
  mask_iou  |A & B| / |A | B| of silhouettes A = opacity_a >= level, B = opacity_b >= level; 1 if both empty.
  depth_err mean |d_a - d_b| over the union of the two silhouettes (0 if both empty). Depths are the renderer's
            composited depth clamped to [0, far]: a pixel one render misses is at the far bound there, so
            missing or extra silhouette counts as a depth error, bounded by the scene's extent.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_CAP = 60.0
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR [V] in dB of RGB [V, C, H, W] in [-1, 1] (peak-to-peak 2), capped at PSNR_CAP."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(4.0 / mse.clamp_min(4.0 * 10 ** (-PSNR_CAP / 10)))).cpu()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Normalised 2D Gaussian [size, size] (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x**2 / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """SSIM [V] of RGB [V, C, H, W] in [-1, 1] (mapped to [0, 1]); the window shrinks to fit small images."""
    x, y = (a.double().cpu() + 1) / 2, (b.double().cpu() + 1) / 2
    c = x.shape[1]
    size = min(SSIM_WINDOW, x.shape[-1], x.shape[-2])
    w = gaussian_window(size, SSIM_SIGMA * size / SSIM_WINDOW).expand(c, 1, size, size)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, w, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    num = (2 * mx * my + SSIM_C1) * (2 * sxy + SSIM_C2)
    den = (mx**2 + my**2 + SSIM_C1) * (sxx + syy + SSIM_C2)
    return (num / den).flatten(1).mean(1)


def mask_iou(opacity_a: Tensor, opacity_b: Tensor, level: float = 0.5) -> Tensor:
    """Silhouette IoU [V] of opacities [V, 1, H, W] thresholded at `level`."""
    a, b = opacity_a.cpu() >= level, opacity_b.cpu() >= level
    inter, union = (a & b).flatten(1).sum(1).double(), (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def depth_error(depth_a: Tensor, opacity_a: Tensor, depth_b: Tensor, opacity_b: Tensor, far: float,
                level: float = 0.5) -> Tensor:
    """Mean |d_a - d_b| [V] over the union of the silhouettes; depths [V, 1, H, W] clamped to [0, far]."""
    union = ((opacity_a.cpu() >= level) | (opacity_b.cpu() >= level)).flatten(1)
    diff = (depth_a.double().cpu().clamp(0, far) - depth_b.double().cpu().clamp(0, far)).abs().flatten(1)
    count = union.sum(1).double()
    return torch.where(count > 0, (diff * union).sum(1) / count.clamp_min(1), torch.zeros_like(count))


def finite_mean(values: Tensor) -> float:
    """Mean of the finite entries of a [V] tensor; NaN if none."""
    v = values[torch.isfinite(values)]
    return float(v.mean()) if len(v) else math.nan
