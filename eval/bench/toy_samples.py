"""Issue 3's first quality bar: ancestral samples of the toy diffusion model, per caption, recognised by the toy
CLIP (zero-shot over all 25 captions).

  python eval/bench/toy_samples.py --out OUT [--per-caption 8] [--weights 1,3,7.5] [--steps 50] [--clip CKPT]
Writes OUT/samples_w<w>.png (one row per caption) and OUT/toy_samples.json (accuracy per CFG weight).
"""
import argparse
import json
from pathlib import Path

import torch

from sjc_dist.diffusion.load import ModelConfig, load_model
from sjc_dist.diffusion.sampling import sample_ancestral
from sjc_dist.scene.export import save_grid
from sjc_dist.toyworld.clip_model import load_toy_clip, zero_shot_predict
from sjc_dist.toyworld.shapes import captions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--per-caption", type=int, default=8)
    ap.add_argument("--weights", default="1,3,7.5")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--clip", default=None, help="toy CLIP checkpoint (default: the shipped one)")
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    model = load_model(ModelConfig(name="toy", device=a.device))
    clip, _, tok = load_toy_clip(model.device, a.clip)
    caps = captions()
    prompts = [c for c in caps for _ in range(a.per_caption)]
    truth = torch.tensor([i for i in range(len(caps)) for _ in range(a.per_caption)])
    results = {}
    for w in [float(x) for x in a.weights.split(",")]:
        cond = model.text.cond(prompts, "", w)
        gen = torch.Generator().manual_seed(0)
        x = sample_ancestral(model.denoiser, (len(prompts), 3, 32, 32), cond, a.steps, gen, model.device)
        x = x.clamp(-1, 1)
        pred = zero_shot_predict(clip, tok, x, caps).cpu()
        acc = float((pred == truth).float().mean())
        per_caption = {c: float((pred[truth == i] == i).float().mean()) for i, c in enumerate(caps)}
        results[str(w)] = {"accuracy": acc, "per_caption": per_caption}
        save_grid(x.cpu(), a.out / f"samples_w{w}.png", cols=a.per_caption)
        print(f"cfg weight {w}: toy-CLIP accuracy of samples {acc:.3f}", flush=True)
    info = {"per_caption": a.per_caption, "steps": a.steps, "device": str(model.device), "results": results}
    (a.out / "toy_samples.json").write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
