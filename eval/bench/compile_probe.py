"""The compile cost of a fresh process: build the SD-1.5-sized UNet, wrap it in FastDenoiser with the compiled
call of `--mode` (dynamic batch, NHWC unless --nchw), and time its first call at `--images` images (Dynamo,
AOTAutograd, Inductor or its on-disk cache, CUDA-graph capture), then a second call. Run by gpu_bench.py with
TORCHINDUCTOR_CACHE_DIR set to the folder its own compiles filled (a warm cache: what a second worker or a
resumed sweep pays) and, with --cold, to an empty one. Writes one JSON object to --out.

  python eval/bench/compile_probe.py --out probe.json --images 64 [--tiny --device cpu]
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

T0 = time.perf_counter()
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--mode", default="default")
    ap.add_argument("--nchw", action="store_true")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    import torch
    from sd_standin import SIZES, build_unet, make_denoiser

    from sjc_dist.diffusion.denoiser import Cond
    from sjc_dist.diffusion.fast import FastConfig

    device, size = torch.device(args.device), SIZES["tiny" if args.tiny else "sd15"]
    out = {"cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"), "images": args.images, "mode": args.mode,
           "import_s": time.perf_counter() - T0}
    t = time.perf_counter()
    cfg = FastConfig(dtype="float16" if device.type == "cuda" else "bfloat16", compile=args.mode,
                     channels_last=not args.nchw)
    den = make_denoiser(build_unet(size, device, seed=0), cfg.dtype, cfg)
    out["build_s"] = time.perf_counter() - t
    gen = torch.Generator(device).manual_seed(0)
    c = den.unet.config
    x = torch.randn(args.images, c.in_channels, c.sample_size, c.sample_size, generator=gen, device=device)
    cond = Cond(context=torch.randn(args.images, size.context_len, size.context_dim, generator=gen, device=device))
    sigma = torch.full((args.images,), 2.0, device=device)
    for name in ("first_call_s", "second_call_s"):
        t = time.perf_counter()
        den(x, sigma, cond)
        if device.type == "cuda":
            torch.cuda.synchronize()
        out[name] = time.perf_counter() - t
    out["compile_s"] = den.compile_seconds()
    out["process_s"] = time.perf_counter() - T0
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
