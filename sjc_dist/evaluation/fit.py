"""Denoiser fit: how well a diffusion model explains fixed renders of a result, for any model and no truth.

  fit = -mean over views v, noise levels s of |D(y_v + s n_v,s; s, c_v) - y_v|^2
y_v: renders in the model's space (pixels in [-1, 1]; latents for Stable Diffusion, the VAE encoding of an RGB
field) from `views` fixed cameras (evenly spaced azimuths, front first, the test elevation and field of view);
c_v: the prompt (with its view prefix when the run used view-dependent prompts), the conditional denoiser alone
(CFG weight 1, one evaluation per sample); n: one fixed Gaussian draw (seed 0) shared by every result, so fits
of different runs are paired; s: FIT_SIGMAS, fixed for every run and model (noise levels relative to a
unit-scale model space) so runs that swept their own sigma window stay comparable. Renders the model finds
plausible for the prompt denoise back to themselves; blurry, empty or wrong ones do not. Higher is better.
The guiding model's own fit (`fit`) can flatter the method that optimised it; the fit under an independent
judge model (`judge_fit`: another diffusion model with the same image space) cannot.
Cost: views x len(FIT_SIGMAS) denoiser evaluations, no gradients.
"""
import torch
from torch import Tensor

from ..diffusion.denoiser import Cond, append_dims
from ..diffusion.fast import occasional
from ..diffusion.load import Model
from ..diffusion.text import view_prompt
from ..scene.cameras import CameraConfig, view_labels
from ..scene.scenes import VoxelScene

FIT_VIEWS = 4
FIT_SIGMAS = (0.19, 0.71, 2.66)  # geometric; the quartiles in log-sigma of the toy preset's window [0.05, 10]


def fit_prompts(text: str, negative: str, view_dependent: bool, template: str, labels: list[str] | None,
                n: int) -> tuple[list[str], str]:
    """The n view prompts of a run (prefixed by their view labels when view-dependent) and its negative."""
    if labels is not None and view_dependent:
        return [view_prompt(text, v, template) for v in labels], negative
    return [text] * n, negative


@torch.no_grad()
def fit_renders(scene: VoxelScene, camera: CameraConfig, views: int = FIT_VIEWS) -> tuple[Tensor, list[str]]:
    """Renders [views, C, H, W] of the fixed fit cameras (the scene's own background) and their view labels."""
    cams = scene.cameras.fixed(views)
    return scene.render(cams).image.float(), view_labels(cams, camera.overhead_above)


@torch.no_grad()
def denoiser_fit(model: Model, y: Tensor, prompts: list[str], negative: str = "",
                 sigmas: tuple[float, ...] = FIT_SIGMAS, seed: int = 0) -> float:
    """-mean |D(y + s n; s, c) - y|^2 over y [V, C, H, W] (model space) and the noise levels `sigmas`."""
    den = model.denoiser
    if y.shape[1] != den.channels:
        raise ValueError(f"model '{model.name}' denoises {den.channels}-channel images, not {y.shape[1]}")
    v = y.shape[0]
    s = torch.tensor(sigmas, dtype=torch.float32).repeat_interleave(v).to(y.device)
    ys = y.float().repeat(len(sigmas), 1, 1, 1)
    noise = torch.randn(ys.shape, generator=torch.Generator().manual_seed(seed)).to(y.device)
    with occasional():  # a score, not a round: never worth a compile of its own batch size
        d = den(ys + append_dims(s, ys.ndim) * noise, s, conditional(model, prompts * len(sigmas), negative))
    return -float((d.float() - ys).pow(2).mean())


def conditional(model: Model, prompts: list[str], negative: str) -> Cond | None:
    """The plain conditional Cond of the prompts (no unconditional half: CFG weight 1 costs one evaluation)."""
    if model.text is None:
        return None
    return model.text.cond(prompts, negative).without_guidance()
