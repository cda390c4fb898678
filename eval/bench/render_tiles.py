"""The Triton render's tile (`render.fuse='triton'`, sjc_dist/scene/triton_render.py) chosen by measurement: the
render of K fields alone, forward and forward + backward with the engine's loss form, for each tile (rays x
samples per program, warps) beside the dense render (`fuse='none'`) on the same scenes and cameras, in one process.

    PYTHONPATH=. python eval/bench/render_tiles.py --out OUT [--ks 1,32] [--states sphere,fresh]
    TRITON_INTERPRET=1 PYTHONPATH=. python eval/bench/render_tiles.py --out /tmp/t --tiny --device cpu --ks 1
"""
import argparse
import sys
from pathlib import Path

import torch
from bench_report import Report, fmt, now_utc, python_env, table
from bench_timing import bench_ms, release
from gpu_parts import render_step, scenes_for
from sd_standin import SD15, TINY

from sjc_dist.scene import triton_render
from sjc_dist.scene.scenes import render_scenes

TILES = [(16, 16, 4), (8, 16, 2), (8, 32, 4), (16, 32, 4), (8, 64, 4), (32, 16, 4)]  # (BLOCK_R, BLOCK_S, warps);
# the first two are the engine's TILE and FEW_TILE; a row without a tile takes the engine's rule (FEW_RAYS)


def cell(scenes, cams, u, fuse: str, tile: tuple | None, device) -> dict:
    """Forward alone and forward + backward of the scenes' render with this fuse (and tile)."""
    for sc in scenes:
        sc.fuse = fuse
    if tile:
        for t in (triton_render.TILE, triton_render.FEW_TILE):
            t.update(BLOCK_R=tile[0], BLOCK_S=tile[1], num_warps=tile[2])

    def forward():
        with torch.no_grad():
            render_scenes(scenes, cams)

    both = bench_ms(lambda: render_step(scenes, cams, u), device)
    return {"fuse": fuse, "tile": list(tile) if tile else None, "forward_ms": bench_ms(forward, device)["ms"],
            "ms": both["ms"], "min_ms": both["min_ms"], "max_ms": both["max_ms"]}


def markdown(d: dict) -> str:
    rows = [[r["k"], r["state"], r["fuse"], "x".join(map(str, r["tile"])) if r["tile"] else "", fmt(r["forward_ms"]),
             fmt(r["ms"]), f"{fmt(r['min_ms'])}-{fmt(r['max_ms'])}", fmt(r.get("vs_dense"), ".2f", "")]
            for r in d["rows"]]
    head = (f"# The Triton render's tile ({d['date_utc']})\n\nDevice: {d['device']}; {d['env']}; size {d['size']}; "
            f"tiles are rays x samples x warps.\n\n")
    return head + "\n".join(table(["K", "fields", "fuse", "tile", "forward ms", "fwd + bwd ms", "range",
                                   "dense / this"], rows, "rllrrrrr")) + f"\n\nCommand: `{d['command']}`\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ks", default="1,32", help="fields rendered together")
    ap.add_argument("--states", default="sphere,fresh", help="a converged run's sphere and/or fresh fields")
    ap.add_argument("--tiles", type=int, default=len(TILES), help="how many of the tiles to time, in order")
    ap.add_argument("--tiny", action="store_true", help="the 16^3 tiny size (CPU checks, with TRITON_INTERPRET=1)")
    args = ap.parse_args(argv)
    device, size = torch.device(args.device), TINY if args.tiny else SD15
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    env = ", ".join(f"{k} {v}" for k, v in python_env().items() if k in ("torch", "triton", "python"))
    report = Report(Path(args.out), {"command": " ".join(sys.argv), "date_utc": now_utc(), "device": name,
                                     "env": env, "size": size.name, "rows": []}, markdown)
    defaults = [(t, dict(t)) for t in (triton_render.TILE, triton_render.FEW_TILE)]
    for k in [int(x) for x in args.ks.split(",")]:
        for state in args.states.split(","):
            scenes = scenes_for(size, k, state, "all", "none", device)
            gen = torch.Generator().manual_seed(1)
            cams = [sc.cameras.sample(1, gen).to(device) for sc in scenes]
            u = torch.randn(k, 1, 4, size.unet["sample_size"], size.unet["sample_size"], device=device)
            dense = cell(scenes, cams, u, "none", None, device)
            report.data["rows"].append({"k": k, "state": state, **dense})
            for tile in TILES[:args.tiles]:
                row = {"k": k, "state": state, **cell(scenes, cams, u, "triton", tile, device)}
                row["vs_dense"] = dense["ms"] / row["ms"]
                report.data["rows"].append(row)
                report.write()
                print(f"K={k} {state} tile {tile}: {row['ms']:.2f} ms (dense {dense['ms']:.2f})", flush=True)
            for t, d in defaults:
                t.update(d)
            del scenes
            release(device)
    best = min((r for r in report.data["rows"] if r["tile"]), key=lambda r: r["ms"] / r["k"], default=None)
    print(f"render_tiles: {len(report.data['rows'])} cells; fastest tile per field "
          f"{best and best['tile']}; table in {args.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
