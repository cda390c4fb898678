"""The outputs of a run, written into its folder: field.safetensors, views.png (multi-view grid, decoded
through the VAE for latent models), depth.png, turntable.gif, mesh.ply; image.png for 2D runs."""
from pathlib import Path

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


def save_field(scene: VoxelScene, path: Path) -> Path:
    tensors = {"grid": scene.field.grid.detach().cpu().contiguous(),
               "d_scale": scene.field.d_scale.detach().cpu().reshape(1),
               "background": scene.background.texture.detach().cpu().contiguous()}
    save_file(tensors, str(path))
    return path


def write_outputs(run: SJCRun, run_dir: Path) -> dict[str, Path]:
    """Every output file of a finished (or interrupted) run; returns name -> path."""
    o = run.cfg.output
    files: dict[str, Path] = {}
    if not isinstance(run.scene, VoxelScene):
        img = run.model.decode(run.scene.image.detach())
        files["image"] = export.save_grid(img, run_dir / "image.png", upscale=max(1, 256 // img.shape[-1]))
        return files
    scene = run.scene
    files["field"] = save_field(scene, run_dir / "field.safetensors")
    rgb, depth, opac = render_eval(scene, run.model, o.eval_views)
    up = max(1, 128 // rgb.shape[-1])  # of the decoded image (latents decode 8x larger)
    files["views"] = export.save_grid(rgb, run_dir / "views.png", upscale=up)
    files["depth"] = export.save_grid(export.depth_to_image(depth, opac), run_dir / "depth.png",
                                      upscale=max(1, 128 // depth.shape[-1]))
    if o.turntable_frames:
        frames, _, _ = render_eval(scene, run.model, o.turntable_frames)
        files["turntable"] = export.save_gif(frames, run_dir / "turntable.gif", upscale=up)
    voxel = 2 * scene.field.bbox_len / (scene.field.cfg.grid_size - 1)
    occ = (1 - torch.exp(-scene.field.density_grid() * voxel)).cpu().numpy()
    colors = None
    if not run.model.denoiser.is_latent and scene.field.channels == 3:
        feats = scene.field.feature_grid().clamp(-1, 1).permute(1, 2, 3, 0)
        colors = ((feats + 1) * 127.5).round().byte().cpu().numpy()
    mesh = export.save_mesh(occ, colors, scene.field.bbox_len, o.mesh_level, run_dir / "mesh.ply")
    if mesh is not None:
        files["mesh"] = mesh
    return files


__all__ = ["render_eval", "save_field", "write_outputs"]
