"""Renders of toy-world objects with the project's own renderer and camera distribution, and the
exact (empirical) denoiser of one object's renders: model 'empirical'."""
import torch
from torch import Tensor

from ..diffusion.empirical import EmpiricalDenoiser
from ..scene.background import Background, BackgroundConfig
from ..scene.cameras import CameraConfig, Cameras, CameraSampler
from ..scene.field import FieldConfig, VoxelField
from ..scene.render import render
from .shapes import volumes

TRUTH_GRID = 64
BACKGROUND = BackgroundConfig(kind="solid", value=1.0)  # white, as the toy presets use
DENSITY_INSIDE = 60.0


def truth_field(caption: str, n: int = TRUTH_GRID) -> VoxelField:
    """A VoxelField holding the object's true density and shaded colour."""
    return volume_field(*volumes(caption, n))


def volume_field(occ: Tensor, rgb: Tensor, bbox_len: float = 1.0) -> VoxelField:
    """A VoxelField of density DENSITY_INSIDE * occ (occ [N, N, N] in [0, 1]) and colour rgb [3, N, N, N]."""
    n = occ.shape[-1]
    cfg = FieldConfig(grid_size=n, bbox_len=bbox_len, density_shift=0.0, init_feature_std=0.0)
    field = VoxelField(cfg, channels=3)
    # softplus(raw) ~ DENSITY_INSIDE * occ: raw = inverse softplus, with a floor far below zero
    tau = (occ * DENSITY_INSIDE).clamp_min(1e-6)
    raw = tau + torch.log(-torch.expm1(-tau))
    with torch.no_grad():
        field.grid[0, 0] = raw
        field.grid[0, 1:] = rgb
    return field.requires_grad_(False)


@torch.no_grad()
def render_truth(caption: str, cams: Cameras, step: float = 0.01, device: str | torch.device = "cpu") -> Tensor:
    """RGB renders [B, 3, H, W] in [-1, 1] of the object from the given cameras, on the toy background."""
    field = truth_field(caption).to(device)
    bg = Background(BACKGROUND, 3).to(device)
    out = render(field, bg, cams.to(torch.device(device)), step)
    return out.image.clamp(-1, 1)


def sample_views(caption: str, n: int, resolution: int = 32, seed: int = 0,
                 camera: CameraConfig | None = None, device: str | torch.device = "cpu") -> Tensor:
    """n renders from the SJC camera distribution, [n, 3, resolution, resolution]."""
    gen = torch.Generator().manual_seed(seed)
    cams = CameraSampler(camera or CameraConfig(), resolution).sample(n, gen)
    return render_truth(caption, cams, device=device)


def empirical_denoiser(prompt: str, device: torch.device, n: int = 64) -> EmpiricalDenoiser:
    """The exact denoiser of n renders of the object named by `prompt`."""
    data = sample_views(prompt, n).to(device)
    return EmpiricalDenoiser(data, sigma_min=0.01, sigma_max=20.0)
