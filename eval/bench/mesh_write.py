"""What a trial's mesh.ply costs to write: scene/export.py's binary PLY against the ASCII text it replaced
(the same marching cubes and records, formatted as '%.5f' text), side by side in one run (issue 14).

  python eval/bench/mesh_write.py [--grid 100] [--repeats 3] [--json PATH]
Fields: 'noise' (uniform noise in [0, 1], level 0.5: the worst case, about 1.5 M vertices at 100^3) and 'ball'
(a solid ball with 10% noise: a typical trial). Prints the median seconds of each writer (marching cubes
included in both), their ratio and the file sizes. A CPU figure: it depends on the machine and its load.
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from sjc_dist.scene.export import mesh_arrays, save_mesh


def ascii_mesh(occupancy: np.ndarray, colors: np.ndarray, bbox_len: float, level: float, path: Path) -> Path:
    """The writer mesh.ply had before (text lines; kept here as the comparison only)."""
    xyz, cols, faces = mesh_arrays(occupancy, colors, bbox_len, level)
    table = np.concatenate([xyz.astype(np.float64), cols], 1)
    with open(path, "w") as f:
        f.write(f"ply\nformat ascii 1.0\nelement vertex {len(xyz)}\nproperty float x\nproperty float y\n"
                "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
                f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
        f.write(("%.5f %.5f %.5f %d %d %d\n" * len(table)) % tuple(table.ravel().tolist()))
        f.write(("3 %d %d %d\n" * len(faces)) % tuple(faces[:, [0, 2, 1]].ravel().tolist()))
    return path


def fields(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    axis = np.linspace(-1, 1, n)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    ball = ((x * x + y * y + z * z) < 0.5).astype(np.float32) + rng.random((n, n, n), np.float32) * 0.1
    return {"noise": rng.random((n, n, n), np.float32), "ball": ball}


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--grid", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 255, (a.grid,) * 3 + (3,), dtype=np.uint8)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        binary, text = Path(tmp) / "binary.ply", Path(tmp) / "ascii.ply"
        for name, occ in fields(a.grid, rng).items():
            t_bin = median_seconds(lambda: save_mesh(occ, colors, 1.0, 0.5, binary), a.repeats)
            t_txt = median_seconds(lambda: ascii_mesh(occ, colors, 1.0, 0.5, text), a.repeats)
            rows[name] = {"binary_s": t_bin, "ascii_s": t_txt, "ratio": t_txt / t_bin,
                          "binary_mb": binary.stat().st_size / 1e6, "ascii_mb": text.stat().st_size / 1e6}
            r = rows[name]
            print(f"{name}: binary {r['binary_s']:.2f} s, {r['binary_mb']:.1f} MB; ascii {r['ascii_s']:.2f} s, "
                  f"{r['ascii_mb']:.1f} MB; ascii / binary {r['ratio']:.2f}x (median of {a.repeats})")
    if a.json:
        Path(a.json).write_text(json.dumps({"grid": a.grid, "repeats": a.repeats, "fields": rows}, indent=2))
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
