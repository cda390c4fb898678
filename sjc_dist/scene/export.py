"""Files a person can look at: PNG grids, depth PNGs, turntable GIFs, and a marching-cubes mesh (PLY).
Images come in as tensors [B, 3, H, W] in [-1, 1]; only I/O here.
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor


def to_uint8(images: Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> [B, H, W, 3] uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid(images: Tensor, cols: int | None = None, upscale: int = 1) -> Image.Image:
    """Tile [B, 3, H, W] images into one picture."""
    arr = to_uint8(images)
    b, h, w, _ = arr.shape
    cols = cols or min(b, 8)
    rows = -(-b // cols)
    canvas = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, im in enumerate(arr):
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = im
    img = Image.fromarray(canvas)
    return img.resize((img.width * upscale, img.height * upscale), Image.NEAREST) if upscale > 1 else img


def save_grid(images: Tensor, path: Path, cols: int | None = None, upscale: int = 1) -> Path:
    grid(images, cols, upscale).save(path)
    return path


def depth_to_image(depth: Tensor, opacity: Tensor) -> Tensor:
    """Depth [B, 1, H, W] -> grey images [B, 3, H, W] in [-1, 1]: near is bright, background black."""
    d = depth.detach().float()
    fg = opacity.detach().float() > 0.5
    if fg.any():
        lo, hi = d[fg].min(), d[fg].max()
        v = 1 - (d - lo) / (hi - lo + 1e-8)
    else:
        v = torch.zeros_like(d)
    v = torch.where(fg, v, torch.zeros_like(v))
    return (v * 2 - 1).expand(-1, 3, -1, -1)


def save_gif(frames: Tensor, path: Path, fps: int = 20, upscale: int = 1) -> Path:
    """[T, 3, H, W] in [-1, 1] -> looping GIF."""
    pics = [Image.fromarray(a) for a in to_uint8(frames)]
    if upscale > 1:
        pics = [p.resize((p.width * upscale, p.height * upscale), Image.NEAREST) for p in pics]
    pics[0].save(path, save_all=True, append_images=pics[1:], duration=int(1000 / fps), loop=0)
    return path


def save_mesh(occupancy: np.ndarray, colors: np.ndarray | None, bbox_len: float, level: float,
              path: Path) -> Path | None:
    """Marching cubes of occupancy [N, N, N] (indexed z, y, x) at `level` into an ASCII PLY.
    colors: [N, N, N, 3] uint8 sampled at the nearest voxel, or None. Returns None if the field is empty."""
    from skimage.measure import marching_cubes

    if not (occupancy.min() < level < occupancy.max()):
        return None
    n = occupancy.shape[0]
    verts, faces, _, _ = marching_cubes(occupancy.astype(np.float32), level=level)
    idx = np.clip(np.round(verts).astype(int), 0, n - 1)
    xyz = (verts[:, ::-1] / (n - 1) * 2 - 1) * bbox_len  # (z, y, x) index -> (x, y, z) world
    cols = colors[idx[:, 0], idx[:, 1], idx[:, 2]] if colors is not None else None
    with open(path, "w") as f:
        f.write(f"ply\nformat ascii 1.0\nelement vertex {len(xyz)}\n")
        f.write("property float x\nproperty float y\nproperty float z\n")
        if cols is not None:
            f.write("property uchar red\nproperty uchar green\nproperty uchar blue\n")
        f.write(f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
        f.write(ply_rows(xyz, cols))
        f.write(("3 %d %d %d\n" * len(faces)) % tuple(faces[:, [0, 2, 1]].ravel().tolist()))
    return path


def ply_rows(xyz: np.ndarray, cols: np.ndarray | None) -> str:
    """The vertex lines 'x y z[ r g b]' (5 decimals) formatted in one call (3x faster than a loop of f-strings;
    the same text)."""
    table = xyz.astype(np.float64) if cols is None else np.concatenate([xyz.astype(np.float64), cols], 1)
    line = "%.5f %.5f %.5f" + ("" if cols is None else " %d %d %d") + "\n"
    return (line * len(table)) % tuple(table.ravel().tolist())
