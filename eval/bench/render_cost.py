"""What one render step costs at the official SD size (100^3 grid, 64x64 latents, step 0.01, 347 samples a ray):
forward + backward of the engine's loss form for each `render.samples` rule, timed, and counted by what every
non-view aten op writes (bytes and op count, backward included: a device-independent proxy for the memory
traffic and kernel launches of the GPU's memory-bound render). Counts are exact and comparable across commits;
times are medians of repeats on the device given.

    PYTHONPATH=. python eval/bench/render_cost.py --out OUT [--device cuda] [--ks 1,4] [--states fresh,sphere]
"""
import argparse
import collections
import sys
from pathlib import Path

import torch
from bench_report import Report, fmt, now_utc, python_env, table
from bench_timing import bench_ms
from gpu_parts import render_step, sample_fractions, scenes_for
from sd_standin import SD15, TINY
from torch.utils._python_dispatch import TorchDispatchMode

VIEW_OPS = {"view", "_unsafe_view", "_reshape_alias", "alias", "as_strided", "detach", "select", "slice", "split",
            "split_with_sizes", "unbind", "unsqueeze", "squeeze", "expand", "permute", "t", "transpose"}


class Written(TorchDispatchMode):
    """Bytes written and ops run by every non-view aten op under it, by op name."""

    def __init__(self):
        super().__init__()
        self.bytes: collections.Counter = collections.Counter()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name not in VIEW_OPS:
            self.ops += 1
            for o in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(o, torch.Tensor):
                    self.bytes[name] += o.numel() * o.element_size()
        return out


def cell(size, k: int, state: str, samples: str, device: torch.device) -> dict:
    """One (K, field state, sample rule): its time, bytes written, ops and its largest writers."""
    scenes = scenes_for(size, k, state, samples, "none", device)
    gen = torch.Generator().manual_seed(1)
    cams = [sc.cameras.sample(1, gen).to(device) for sc in scenes]
    res = size.unet["sample_size"]
    u = torch.randn(k, 1, 4, res, res, device=device)
    render_step(scenes, cams, u)
    with Written() as w:
        render_step(scenes, cams, u)
    row = {"k": k, "state": state, "samples": samples, "gib_written": sum(w.bytes.values()) / 2**30,
           "ops": w.ops, "top": {n: b / 2**30 for n, b in w.bytes.most_common(6)},
           **bench_ms(lambda: render_step(scenes, cams, u), device, warmup=1, repeats=3)}
    if samples == "all":
        row.update(sample_fractions(scenes, cams))
    return row


def markdown(d: dict) -> str:
    rows = [[r["k"], r["state"], r["samples"], fmt(r["ms"], ".1f"), fmt(r["gib_written"], ".3f"), r["ops"],
             ", ".join(f"{n} {b:.2f}" for n, b in r["top"].items())] for r in d["rows"]]
    head = f"# Render cost ({d['date_utc']})\n\nDevice: {d['device']}; {d['env']}; size {d['size']}.\n\n"
    return head + "\n".join(table(["K", "fields", "samples", "ms", "GiB written", "ops", "largest writers (GiB)"],
                                  rows, "rllrrrl")) + f"\n\nCommand: `{d['command']}`\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ks", default="1,4", help="fields rendered together")
    ap.add_argument("--states", default="fresh,sphere", help="fresh fields and/or a converged run's sphere")
    ap.add_argument("--samples", default="all,inside,visible")
    ap.add_argument("--tiny", action="store_true", help="the 16^3 tiny size (tests)")
    args = ap.parse_args(argv)
    device, size = torch.device(args.device), TINY if args.tiny else SD15
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    env = ", ".join(f"{k} {v}" for k, v in python_env().items() if k in ("torch", "python"))
    report = Report(Path(args.out), {"command": " ".join(sys.argv), "date_utc": now_utc(), "device": name,
                                     "env": env, "size": size.name, "rows": []}, markdown)
    for k in [int(x) for x in args.ks.split(",")]:
        for state in args.states.split(","):
            for samples in args.samples.split(","):
                report.data["rows"].append(cell(size, k, state, samples, device))
                report.write()
                r = report.data["rows"][-1]
                print(f"K={k} {state} {samples}: {r['ms']:.1f} ms, {r['gib_written']:.3f} GiB written, "
                      f"{r['ops']} ops", flush=True)
    print(f"render_cost: {len(report.data['rows'])} cells; table in {args.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
