"""The outputs of a run, written into its folder: field.safetensors, views.png (multi-view grid, decoded
through the VAE for latent models), depth.png, turntable.gif, mesh.ply; image.png for 2D runs.
In two parts, so a worker holds its device only for the first: `gather_outputs` (renders, decodes, copies to the
host) and `save_outputs` (encoding and writing files); `write_outputs` is both."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from .diffusion.load import Model
from .optim.run import SJCRun
from .scene import export
from .scene.scenes import VoxelScene


@torch.no_grad()
def render_eval(scene: VoxelScene, model: Model, n: int, elevation: float | None = None,
                chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n evenly spaced views: decoded RGB [n, 3, H, W] in [-1, 1], depth and opacity [n, 1, h, w]."""
    cams = scene.cameras.fixed(n, elevation)
    rgb, depth, opac = [], [], []
    for i in range(0, n, chunk):
        sub = type(cams)(cams.c2w[i:i + chunk], cams.fov[i:i + chunk], cams.azimuth[i:i + chunk],
                         cams.elevation[i:i + chunk], cams.height, cams.width)
        out = scene.render(sub)
        rgb.append(to_rgb(scene, model, out.image).cpu())
        depth.append(out.depth.cpu())
        opac.append(out.opacity.cpu())
    return torch.cat(rgb), torch.cat(depth), torch.cat(opac)


def to_rgb(scene: VoxelScene, model: Model, image: torch.Tensor) -> torch.Tensor:
    """Renders in model space go through the VAE; RGB renders (SDS through_vae) are already images."""
    if scene.field.channels == model.denoiser.channels:
        return model.decode(image)
    return image.float().clamp(-1, 1)


def field_tensors(scene: VoxelScene) -> dict[str, torch.Tensor]:
    """The field.safetensors tensors, copied to the host."""
    return {"grid": scene.field.grid.detach().cpu().contiguous(),
            "d_scale": scene.field.d_scale.detach().cpu().reshape(1),
            "background": scene.background.texture.detach().cpu().contiguous()}


def save_field(scene: VoxelScene, path: Path) -> Path:
    save_file(field_tensors(scene), str(path))
    return path


@dataclass
class Outputs:
    """A finished run's outputs on the host: what `gather_outputs` reads from the device (renders, VAE decodes,
    the occupancy grid) and `save_outputs` encodes into files (safetensors, PNG, GIF, PLY) without the device.
    Images [n, 3, H, W] in [-1, 1]; depth, opacity [n, 1, h, w]; occupancy [N, N, N]; colours [N, N, N, 3] uint8."""

    image: torch.Tensor | None = None  # 2D runs: the decoded image
    field: dict[str, torch.Tensor] | None = None
    views: torch.Tensor | None = None
    depth: torch.Tensor | None = None
    opacity: torch.Tensor | None = None
    turntable: torch.Tensor | None = None
    occupancy: np.ndarray | None = None
    colors: np.ndarray | None = None
    bbox_len: float = 1.0
    mesh_level: float = 0.5


@torch.no_grad()
def gather_outputs(run: SJCRun) -> Outputs:
    """Everything the output files need, on the host: the part of writing outputs that uses the device."""
    if not isinstance(run.scene, VoxelScene):
        return Outputs(image=run.model.decode(run.scene.image.detach()).cpu())
    scene, o = run.scene, run.cfg.output
    views, depth, opac = render_eval(scene, run.model, o.eval_views)
    turntable = render_eval(scene, run.model, o.turntable_frames)[0] if o.turntable_frames else None
    voxel = 2 * scene.field.bbox_len / (scene.field.cfg.grid_size - 1)
    occ = (1 - torch.exp(-scene.field.density_grid() * voxel)).cpu().numpy()
    colors = None
    if not run.model.denoiser.is_latent and scene.field.channels == 3:
        feats = scene.field.feature_grid().clamp(-1, 1).permute(1, 2, 3, 0)
        colors = ((feats + 1) * 127.5).round().byte().cpu().numpy()
    return Outputs(field=field_tensors(scene), views=views, depth=depth, opacity=opac, turntable=turntable,
                   occupancy=occ, colors=colors, bbox_len=scene.field.bbox_len, mesh_level=o.mesh_level)


def save_outputs(out: Outputs, run_dir: Path) -> dict[str, Path]:
    """The output files of gathered outputs (host work only); returns name -> path."""
    if out.image is not None:
        img = out.image
        return {"image": export.save_grid(img, run_dir / "image.png", upscale=max(1, 256 // img.shape[-1]))}
    files: dict[str, Path] = {"field": run_dir / "field.safetensors"}
    save_file(out.field, str(files["field"]))
    up = max(1, 128 // out.views.shape[-1])  # of the decoded image (latents decode 8x larger)
    files["views"] = export.save_grid(out.views, run_dir / "views.png", upscale=up)
    files["depth"] = export.save_grid(export.depth_to_image(out.depth, out.opacity), run_dir / "depth.png",
                                      upscale=max(1, 128 // out.depth.shape[-1]))
    if out.turntable is not None:
        files["turntable"] = export.save_gif(out.turntable, run_dir / "turntable.gif", upscale=up)
    mesh = export.save_mesh(out.occupancy, out.colors, out.bbox_len, out.mesh_level, run_dir / "mesh.ply")
    if mesh is not None:
        files["mesh"] = mesh
    return files


def write_outputs(run: SJCRun, run_dir: Path) -> dict[str, Path]:
    """Every output file of a finished (or interrupted) run; returns name -> path."""
    return save_outputs(gather_outputs(run), run_dir)


__all__ = ["Outputs", "field_tensors", "gather_outputs", "render_eval", "save_field", "save_outputs",
           "write_outputs"]
