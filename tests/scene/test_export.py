"""scene/export.py's PLY writer: the binary records are what a record-by-record struct reader finds (float32
coordinates, uchar colours, faces as 3 + int32 indices wound 0 2 1), and read_mesh gives them back."""
import struct

import numpy as np
import pytest

from sjc_dist.scene.export import read_mesh, save_mesh


def struct_read(path, coloured: bool) -> tuple[list, list]:
    """An independent reader: header by lines, then one struct.unpack per record."""
    raw = path.read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    counts = {w[1]: int(w[2]) for w in (l.split() for l in head.decode().splitlines()) if w[0] == "element"}
    vfmt = "<fffBBB" if coloured else "<fff"
    vsize, fsize = struct.calcsize(vfmt), struct.calcsize("<Biii")
    verts = [struct.unpack_from(vfmt, body, i * vsize) for i in range(counts["vertex"])]
    start = counts["vertex"] * vsize
    faces = [struct.unpack_from("<Biii", body, start + i * fsize) for i in range(counts["face"])]
    assert len(body) == start + counts["face"] * fsize
    return verts, faces


@pytest.mark.parametrize("coloured", [True, False])
def test_mesh_records_match_a_struct_reader(tmp_path, coloured):
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
    xyz = ((verts[:, ::-1] / (n - 1) * 2 - 1) * 0.8).astype(np.float32)
    want_cols = cols[idx[:, 0], idx[:, 1], idx[:, 2]] if coloured else None

    got_v, got_f = struct_read(path, coloured)
    assert np.array_equal(np.array([v[:3] for v in got_v], np.float32), xyz)
    if coloured:
        assert np.array_equal(np.array([v[3:] for v in got_v], np.uint8), want_cols)
    assert [f[0] for f in got_f] == [3] * len(faces)
    assert np.array_equal(np.array([f[1:] for f in got_f]), faces[:, [0, 2, 1]])
    assert len(faces) > 10

    back_xyz, back_cols, back_faces = read_mesh(path)
    assert np.array_equal(back_xyz, xyz) and np.array_equal(back_faces, faces[:, [0, 2, 1]])
    assert (back_cols is None) == (not coloured) and (not coloured or np.array_equal(back_cols, want_cols))


def test_empty_field_writes_no_mesh(tmp_path):
    assert save_mesh(np.zeros((8, 8, 8), np.float32), None, 1.0, 0.5, tmp_path / "mesh.ply") is None
    assert not (tmp_path / "mesh.ply").exists()
