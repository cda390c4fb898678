"""Train the toy world's text-conditioned pixel diffusion model (DDPM schedule, epsilon prediction).

Data: renders of the 25 toy objects from the SJC camera distribution on the white background, made with the
project's own renderer (pre-rendered once on the device, then sampled). Model: a diffusers
UNet2DConditionModel on 32x32 RGB with a small CLIPTextModel (trained jointly) and the word tokenizer; 10%
caption dropout to the empty prompt so classifier-free guidance works; EMA weights are what is saved.
Saved in diffusers format (unet/, text_encoder/, tokenizer/, scheduler/) so it loads through the same
`load_diffusers` path as Stable Diffusion.

  python -m sjc_dist.toyworld.train_unet --out sjc_dist/toyworld/weights --seconds 240 --device cuda
"""
import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ..scene.cameras import CameraConfig, CameraSampler
from .data import render_truth
from .shapes import captions
from .tokenizer import word_tokenizer


def build_models(vocab_size: int, size: int = 32, width: int = 64):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=width * 4,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=10,
                                        pad_token_id=0, bos_token_id=2, eos_token_id=3))
    unet = UNet2DConditionModel(
        sample_size=size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(64, 128, 128), cross_attention_dim=width, attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=32)
    return unet, text


@torch.no_grad()
def render_dataset(per_caption: int, size: int, device: str, seed: int = 0, chunk: int = 200):
    """Images [25 * per_caption, 3, size, size] in [-1, 1] and caption indices, rendered on `device`."""
    gen = torch.Generator().manual_seed(seed)
    sampler = CameraSampler(CameraConfig(), size)
    images, labels = [], []
    for i, cap in enumerate(captions()):
        for start in range(0, per_caption, chunk):
            n = min(chunk, per_caption - start)
            images.append(render_truth(cap, sampler.sample(n, gen), step=0.01, device=device).half())
            labels.append(torch.full((n,), i, dtype=torch.long))
    return torch.cat(images), torch.cat(labels).to(device)


def train(out: Path, seconds: float, device: str, batch: int = 256, per_caption: int = 600, lr: float = 3e-4,
          ema_decay: float = 0.999, size: int = 32, seed: int = 0, log_every: int = 100) -> dict:
    from diffusers import DDPMScheduler

    torch.manual_seed(seed)
    t_start = time.time()
    tok = word_tokenizer()
    caps = captions()
    ids = tok(caps + [""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    ids = ids.to(device)
    images, labels = render_dataset(per_caption, size, device, seed)
    print(f"rendered {len(images)} training images in {time.time() - t_start:.1f}s", flush=True)
    unet, text = build_models(len(tok), size)
    unet.to(device).train()
    text.to(device).train()
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text).eval()
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          prediction_type="epsilon")
    abar = sched.alphas_cumprod.to(device)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    n_params = sum(p.numel() for p in params)
    print(f"parameters: unet {sum(p.numel() for p in unet.parameters()):,}, text {sum(p.numel() for p in text.parameters()):,}",
          flush=True)
    use_amp = device.startswith("cuda")
    losses, step, t0 = [], 0, time.time()
    while time.time() - t0 < seconds:
        loss = diffusion_loss(unet, text, images, labels, ids, abar, batch, len(caps), use_amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt.param_groups:
            g["lr"] = lr * lr_factor(step, (time.time() - t0) / seconds)
        opt.step()
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))
            for m_ema, m in ((ema_unet, unet), (ema_text, text)):
                for pe, p in zip(m_ema.parameters(), m.parameters()):
                    pe.lerp_(p, 1 - decay)
        step += 1
        if step % log_every == 0:
            losses.append((step, time.time() - t0, float(loss)))
            print(f"step {step} t={time.time() - t0:.0f}s loss={float(loss):.4f}", flush=True)
    train_seconds = time.time() - t0
    save(out, ema_unet, ema_text, tok, sched)
    log = {"steps": step, "batch": batch, "train_seconds": train_seconds, "images": len(images),
           "parameters": n_params, "device": torch.cuda.get_device_name() if use_amp else device,
           "final_loss_mean_last10": sum(x[2] for x in losses[-10:]) / max(len(losses[-10:]), 1),
           "losses": losses, "lr": lr, "ema_decay": ema_decay, "size": size, "torch": torch.__version__}
    (out / "train_unet_log.json").write_text(json.dumps(log, indent=1))
    plot_losses(losses, out / "train_unet_loss.png")
    return log


def diffusion_loss(unet, text, images, labels, ids, abar, batch: int, n_captions: int, use_amp: bool):
    """Epsilon MSE on a random batch: mirrored views, 10% of captions dropped to "" (index n_captions)."""
    device = images.device
    idx = torch.randint(len(images), (batch,), device=device)
    x0 = images[idx].float()
    x0 = torch.where(torch.rand(batch, 1, 1, 1, device=device) < 0.5, x0, x0.flip(-1))
    lab = labels[idx]
    lab = torch.where(torch.rand(batch, device=device) < 0.1, torch.full_like(lab, n_captions), lab)
    t = torch.randint(0, 1000, (batch,), device=device)
    noise = torch.randn_like(x0)
    a = abar[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
        pred = unet(xt, t, encoder_hidden_states=text(ids[lab])[0]).sample
    return F.mse_loss(pred.float(), noise)


def lr_factor(step: int, frac: float) -> float:
    """Linear warm-up over 200 steps, then cosine from 1 to 0.1 over the time budget (frac in [0, 1])."""
    return min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def save(out: Path, unet, text, tok, sched) -> None:
    out.mkdir(parents=True, exist_ok=True)
    unet.to(torch.float16).save_pretrained(out / "unet")
    text.to(torch.float16).save_pretrained(out / "text_encoder")
    tok.save_pretrained(out / "tokenizer")
    sched.save_pretrained(out / "scheduler")


def plot_losses(losses: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([x[0] for x in losses], [x[2] for x in losses])
    ax.set(xlabel="step", ylabel="epsilon MSE", yscale="log", title="toy UNet training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=240)
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--per-caption", type=int, default=600)
    p.add_argument("--lr", type=float, default=3e-4)
    a = p.parse_args(argv)
    log = train(a.out, a.seconds, a.device, a.batch, a.per_caption, a.lr)
    print(json.dumps({k: v for k, v in log.items() if k != "losses"}))


if __name__ == "__main__":
    main()
