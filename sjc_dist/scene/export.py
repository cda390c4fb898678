"""Files a person can look at: PNG grids, depth PNGs, turntable GIFs, and a marching-cubes mesh (binary PLY).
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
    """Marching cubes of occupancy [N, N, N] (indexed z, y, x) at `level` into a binary little-endian PLY
    (float32 x y z [uchar r g b]; faces as uchar 3 + int32 indices, wound 0 2 1). colors: [N, N, N, 3] uint8
    sampled at the nearest voxel, or None. Returns None if the field is empty."""
    mesh = mesh_arrays(occupancy, colors, bbox_len, level)
    if mesh is None:
        return None
    xyz, cols, faces = mesh
    vertex, face = ply_records(xyz, cols, faces)
    with open(path, "wb") as f:
        f.write(ply_header(len(vertex), len(face), cols is not None).encode("ascii"))
        f.write(vertex.tobytes())
        f.write(face.tobytes())
    return path


def mesh_arrays(occupancy: np.ndarray, colors: np.ndarray | None, bbox_len: float,
                level: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray] | None:
    """Marching cubes -> world vertices [V, 3] (x, y, z), their nearest voxel's colours [V, 3] or None, and
    triangles [F, 3] as marching cubes winds them; None if `level` is outside the field's range."""
    from skimage.measure import marching_cubes

    if not (occupancy.min() < level < occupancy.max()):
        return None
    n = occupancy.shape[0]
    verts, faces, _, _ = marching_cubes(occupancy.astype(np.float32), level=level)
    idx = np.clip(np.round(verts).astype(int), 0, n - 1)
    xyz = (verts[:, ::-1] / (n - 1) * 2 - 1) * bbox_len  # (z, y, x) index -> (x, y, z) world
    cols = colors[idx[:, 0], idx[:, 1], idx[:, 2]] if colors is not None else None
    return xyz, cols, faces


VERTEX_XYZ = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
VERTEX_RGB = [("red", "u1"), ("green", "u1"), ("blue", "u1")]
FACE = np.dtype([("n", "u1"), ("v", "<i4", (3,))])


def vertex_dtype(coloured: bool) -> np.dtype:
    return np.dtype(VERTEX_XYZ + (VERTEX_RGB if coloured else []))


def ply_header(n_vertex: int, n_face: int, coloured: bool) -> str:
    """The PLY header for save_mesh's records."""
    props = "".join(f"property {'float' if t == '<f4' else 'uchar'} {k}\n"
                    for k, t in VERTEX_XYZ + (VERTEX_RGB if coloured else []))
    return (f"ply\nformat binary_little_endian 1.0\nelement vertex {n_vertex}\n{props}"
            f"element face {n_face}\nproperty list uchar int vertex_indices\nend_header\n")


def ply_records(xyz: np.ndarray, cols: np.ndarray | None, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V, 3] (+ colours [V, 3] uint8) and triangles [F, 3] -> packed PLY records (one copy each)."""
    vertex = np.empty(len(xyz), vertex_dtype(cols is not None))
    for i, (k, _) in enumerate(VERTEX_XYZ):
        vertex[k] = xyz[:, i]
    for i, (k, _) in enumerate(VERTEX_RGB if cols is not None else []):
        vertex[k] = cols[:, i]
    face = np.empty(len(faces), FACE)
    face["n"] = 3
    face["v"] = faces[:, [0, 2, 1]]
    return vertex, face


def read_mesh(path: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """save_mesh's PLY -> vertices [V, 3] float32, colours [V, 3] uint8 or None, triangles [F, 3] int32
    (as written, wound 0 2 1)."""
    head, body = Path(path).read_bytes().split(b"end_header\n", 1)
    lines = head.decode("ascii").splitlines()
    if lines[:2] != ["ply", "format binary_little_endian 1.0"]:
        raise ValueError(f"{path}: not a binary little-endian PLY as save_mesh writes it")
    counts = {w[1]: int(w[2]) for w in (l.split() for l in lines) if w[0] == "element"}
    vdtype = vertex_dtype(any(l.endswith(" red") for l in lines))
    vertex = np.frombuffer(body, vdtype, counts["vertex"])
    face = np.frombuffer(body, FACE, counts["face"], offset=vdtype.itemsize * counts["vertex"])
    xyz = np.stack([vertex[k] for k, _ in VERTEX_XYZ], 1)
    cols = np.stack([vertex[k] for k, _ in VERTEX_RGB], 1) if "red" in vdtype.names else None
    return xyz, cols, face["v"].copy()
