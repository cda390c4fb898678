"""scene/export.py's PLY writer: the vertex and face lines formatted in one call are the text a line-by-line
writer produces (5-decimal coordinates, uchar colours, faces wound 0 2 1)."""
import numpy as np
import pytest

from sjc_dist.scene.export import save_mesh


def reference_body(xyz: np.ndarray, cols: np.ndarray | None, faces: np.ndarray) -> str:
    out = []
    for i, v in enumerate(xyz):
        extra = " {} {} {}".format(*cols[i]) if cols is not None else ""
        out.append(f"{v[0]:.5f} {v[1]:.5f} {v[2]:.5f}{extra}\n")
    out += [f"3 {t[0]} {t[2]} {t[1]}\n" for t in faces]
    return "".join(out)


@pytest.mark.parametrize("coloured", [True, False])
def test_mesh_text_matches_a_line_by_line_writer(tmp_path, coloured):
    from skimage.measure import marching_cubes

    rng = np.random.default_rng(0)
    n = 12
    axis = np.linspace(-1, 1, n)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    occ = ((x * x + y * y + z * z) < 0.5).astype(np.float32) * 0.5 + rng.random((n, n, n), np.float32) * 0.2
    cols = rng.integers(0, 255, (n, n, n, 3), dtype=np.uint8) if coloured else None
    path = save_mesh(occ, cols, 0.8, 0.3, tmp_path / "mesh.ply")
    verts, faces, _, _ = marching_cubes(occ, level=0.3)
    idx = np.clip(np.round(verts).astype(int), 0, n - 1)
    xyz = (verts[:, ::-1] / (n - 1) * 2 - 1) * 0.8
    body = path.read_text().split("end_header\n", 1)[1]
    assert body == reference_body(xyz, cols[idx[:, 0], idx[:, 1], idx[:, 2]] if coloured else None, faces)
    assert len(faces) > 10
