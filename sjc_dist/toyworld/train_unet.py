"""Train the toy world's text-conditioned pixel diffusion model (DDPM schedule, epsilon prediction).

Data: renders of every world object (`shapes.world_captions()`: the 25 symmetric and the 15 oriented objects)
from the SJC camera distribution on the white background, made with the project's own renderer (pre-rendered
once on the device, then sampled), each with the view label of its camera (`scene.cameras.view_labels` at
CameraConfig's overhead_above: front |azimuth| <= 45, backside >= 135, side between, overhead above 41.8 deg
elevation). Captions: with probability `view_fraction` the view-prefixed caption ("front view of a red house",
the run's `prompt.view_template`, as `diffusion.text.view_prompt` builds it), else the plain one; then 10% of
all captions dropped to "" so classifier-free guidance works. Random horizontal mirroring (every object is
mirror-symmetric in y, so a mirrored view keeps its label).
Model: a diffusers UNet2DConditionModel on 32x32 RGB (block channels `channels`) with a small CLIPTextModel
(width `text_width`, trained jointly) and the word tokenizer; EMA weights are what is saved (fp16). Saved in
diffusers format (unet/, text_encoder/, tokenizer/, scheduler/) so it loads through the same `load_diffusers`
path as Stable Diffusion; train_unet_log.json and train_unet_loss.png beside them.

  python -m sjc_dist.toyworld.train_unet --out sjc_dist/toyworld/weights --seconds 300 --device cuda
  python -m sjc_dist.toyworld.packed sjc_dist/toyworld/weights   # ship it xz-packed (packed.py)
  python -m sjc_dist.toyworld.train_unet --out DIR --channels 32,64,64 --seed 1 --seconds 150 --device cuda
"""
import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import PromptConfig
from ..configtools import opt, parse_config_cli
from ..diffusion.text import VIEWS, view_prompt
from ..errors import ConfigError
from ..scene.cameras import CameraConfig, CameraSampler, view_labels
from .data import render_truth
from .shapes import world_captions
from .tokenizer import word_tokenizer

VIEW_TEMPLATE = PromptConfig().view_template  # "{view} view of {prompt}": the official prefix, the runs' default
CAPTIONS_PER_OBJECT = 1 + len(VIEWS)  # plain, then one per view label


@dataclass(frozen=True)
class UNetTrainConfig:
    """How the toy diffusion model is trained (defaults: the shipped model, one GPU, about 5 minutes)."""

    seconds: float = opt(300.0, "training time budget in seconds (rendering and saving not counted)", gt=0.0)
    max_steps: int = opt(0, "stop after this many steps as well (0 = the time budget alone)", ge=0)
    batch: int = opt(256, "images per step", ge=1)
    per_caption: int = opt(600, "training renders per world object", ge=1)
    lr: float = opt(3e-4, "AdamW peak learning rate", gt=0.0)
    ema_decay: float = opt(0.999, "EMA decay of the saved weights", ge=0.0, lt=1.0)
    size: int = opt(32, "render side in pixels = the UNet's sample size", ge=8)
    channels: str = opt("64,128,128", "UNet block channels, comma-separated, each a multiple of 32 (the shipped "
                                      "model: 64,128,128, 6.6 M parameters)")
    text_width: int = opt(64, "text encoder width = cross-attention dim (a multiple of 4: 4 attention heads)", ge=4)
    view_fraction: float = opt(0.5, "fraction of samples captioned with their camera's view prefix", ge=0.0, le=1.0)
    dropout: float = opt(0.1, "fraction of captions dropped to '' (classifier-free guidance)", ge=0.0, lt=1.0)
    seed: int = opt(0, "seed of model init, training cameras and batches")
    log_every: int = opt(100, "steps between loss log lines", ge=1)
    render_chunk: int = opt(200, "views per render call (bounds memory)", ge=1)

    def block_channels(self) -> tuple[int, ...]:
        """`channels` as a tuple of 3 multiples of 32 (GroupNorm's 32 groups); ConfigError otherwise."""
        try:
            out = tuple(int(c) for c in self.channels.split(","))
        except ValueError:
            out = ()
        if len(out) != 3 or any(c <= 0 or c % 32 for c in out):
            raise ConfigError("channels", self.channels, "three comma-separated multiples of 32, e.g. 64,128,128")
        return out

    def check(self) -> "UNetTrainConfig":
        self.block_channels()
        if self.text_width % 4:
            raise ConfigError("text_width", self.text_width, "a multiple of 4 (4 attention heads)")
        return self


def build_models(vocab_size: int, size: int = 32, width: int = 64, channels: tuple[int, ...] = (64, 128, 128)):
    """The UNet (down: plain, cross-attention, cross-attention) and the 2-layer text encoder, randomly initialised."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=width * 4,
                                        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=10,
                                        pad_token_id=0, bos_token_id=2, eos_token_id=3))
    unet = UNet2DConditionModel(
        sample_size=size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=tuple(channels), cross_attention_dim=width, attention_head_dim=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=32)
    return unet, text


def caption_table(caps: list[str]) -> list[str]:
    """Every training caption: for object k at [k * 5 + j] its plain caption (j = 0) and its view prefixes
    (j = 1 + index in VIEWS), then "" (dropout) last."""
    table = []
    for cap in caps:
        table += [cap] + [view_prompt(cap, v, VIEW_TEMPLATE) for v in VIEWS]
    return table + [""]


@dataclass
class Renders:
    """The training set: images [M, 3, S, S] (fp16, [-1, 1]), object index [M] and view index [M] (into VIEWS)."""

    images: Tensor
    objects: Tensor
    views: Tensor

    def __len__(self) -> int:
        return len(self.images)


@torch.no_grad()
def render_dataset(caps: list[str], per_caption: int, size: int, device: str, seed: int = 0,
                   chunk: int = 200) -> Renders:
    """per_caption renders of each caption's object from random SJC cameras, with their view labels."""
    gen = torch.Generator().manual_seed(seed)
    sampler, overhead = CameraSampler(CameraConfig(), size), CameraConfig().overhead_above
    images, objects, views = [], [], []
    for i, cap in enumerate(caps):
        for start in range(0, per_caption, chunk):
            cams = sampler.sample(min(chunk, per_caption - start), gen)
            images.append(render_truth(cap, cams, step=0.01, device=device).half())
            objects.append(torch.full((len(cams),), i, dtype=torch.long))
            views.append(torch.tensor([VIEWS.index(v) for v in view_labels(cams, overhead)]))
    return Renders(torch.cat(images), torch.cat(objects).to(device), torch.cat(views).to(device))


def text_index(objects: Tensor, views: Tensor, view_fraction: float, dropout: float, n_objects: int,
               generator: torch.Generator) -> Tensor:
    """Rows of `caption_table` for a batch: the view caption with probability view_fraction, else the plain
    one; then "" with probability dropout."""
    u = torch.rand(2, len(objects), generator=generator, device=objects.device)
    idx = objects * CAPTIONS_PER_OBJECT + torch.where(u[0] < view_fraction, 1 + views, torch.zeros_like(views))
    return torch.where(u[1] < dropout, torch.full_like(idx, n_objects * CAPTIONS_PER_OBJECT), idx)


def diffusion_loss(unet, text, data: Renders, ids: Tensor, abar: Tensor, cfg: UNetTrainConfig, n_objects: int,
                   gen: torch.Generator, use_amp: bool) -> Tensor:
    """Epsilon MSE on a random batch: mirrored views, view/plain/empty captions (see `text_index`)."""
    device, b = data.images.device, cfg.batch
    idx = torch.randint(len(data), (b,), device=device, generator=gen)
    x0 = data.images[idx].float()
    x0 = torch.where(torch.rand(b, 1, 1, 1, device=device, generator=gen) < 0.5, x0, x0.flip(-1))
    rows = text_index(data.objects[idx], data.views[idx], cfg.view_fraction, cfg.dropout, n_objects, gen)
    t = torch.randint(0, 1000, (b,), device=device, generator=gen)
    noise = torch.randn(x0.shape, device=device, generator=gen)
    a = abar[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
        pred = unet(xt, t, encoder_hidden_states=text(ids[rows])[0]).sample
    return F.mse_loss(pred.float(), noise)


def lr_factor(step: int, frac: float) -> float:
    """Linear warm-up over 200 steps, then cosine from 1 to 0.1 over the time budget (frac in [0, 1])."""
    return min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


class EMA:
    """Exponential moving average of a module's parameters (decay warmed up as (1 + step) / (10 + step))."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.module, self.decay = copy.deepcopy(module).eval().requires_grad_(False), decay

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for pe, p in zip(self.module.parameters(), module.parameters()):
            pe.lerp_(p, 1 - decay)


def schedule():
    """The DDPM schedule of the toy model: linear betas 1e-4..0.02 over 1000 steps, epsilon prediction."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                         prediction_type="epsilon")


def train_loop(unet, text, data: Renders, ids: Tensor, cfg: UNetTrainConfig, device: str) -> tuple[list, int, list]:
    """AdamW on the epsilon loss for cfg.seconds (or cfg.max_steps); returns the EMA models, steps, loss log."""
    abar = schedule().alphas_cumprod.to(device)
    params = list(unet.parameters()) + list(text.parameters())
    opt_ = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    emas = [EMA(unet, cfg.ema_decay), EMA(text, cfg.ema_decay)]
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    n_objects, use_amp = len(ids) // CAPTIONS_PER_OBJECT, device.startswith("cuda")
    losses, step, t0 = [], 0, time.time()
    while time.time() - t0 < cfg.seconds and (cfg.max_steps == 0 or step < cfg.max_steps):
        loss = diffusion_loss(unet, text, data, ids, abar, cfg, n_objects, gen, use_amp)
        opt_.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for g in opt_.param_groups:
            g["lr"] = cfg.lr * lr_factor(step, (time.time() - t0) / cfg.seconds)
        opt_.step()
        for ema, m in zip(emas, (unet, text)):
            ema.update(m, step)
        step += 1
        if step % cfg.log_every == 0:
            losses.append((step, time.time() - t0, float(loss.detach())))
            print(f"step {step} t={time.time() - t0:.0f}s loss={losses[-1][2]:.4f}", flush=True)
    return [e.module for e in emas], step, losses


def train(cfg: UNetTrainConfig, out: Path, device: str) -> dict:
    """Render the world, train, save the EMA weights and the log to `out`; returns the log."""
    cfg.check()
    torch.manual_seed(cfg.seed)  # diffusers and transformers initialise weights from the global generator
    t_start = time.time()
    tok, caps = word_tokenizer(), world_captions()
    table = caption_table(caps)
    ids = tok(table, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    data = render_dataset(caps, cfg.per_caption, cfg.size, device, cfg.seed, cfg.render_chunk)
    render_seconds = time.time() - t_start
    print(f"rendered {len(data)} training images of {len(caps)} objects in {render_seconds:.1f}s", flush=True)
    unet, text = build_models(len(tok), cfg.size, cfg.text_width, cfg.block_channels())
    sizes = {"unet": count(unet), "text": count(text)}
    print(f"parameters: unet {sizes['unet']:,}, text {sizes['text']:,}", flush=True)
    t0 = time.time()
    (ema_unet, ema_text), steps, losses = train_loop(unet.to(device).train(), text.to(device).train(), data,
                                                     ids.to(device), cfg, device)
    train_seconds = time.time() - t0
    save(out, ema_unet, ema_text, tok, schedule())
    log = build_log(cfg, device, data, caps, sizes, steps, losses, render_seconds, train_seconds, out)
    (out / "train_unet_log.json").write_text(json.dumps(log, indent=1))
    plot_losses(losses, out / "train_unet_loss.png")
    return log


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_log(cfg: UNetTrainConfig, device: str, data: Renders, caps: list[str], sizes: dict, steps: int,
              losses: list, render_seconds: float, train_seconds: float, out: Path) -> dict:
    """The training log: config, data, sizes, time, device and the loss curve."""
    tail = losses[-10:]
    views = {v: int((data.views == i).sum()) for i, v in enumerate(VIEWS)}
    weight_bytes = {d: sum(f.stat().st_size for f in (out / d).glob("*.safetensors")) for d in ("unet", "text_encoder")}
    cuda = device.startswith("cuda")
    return {"config": dataclasses.asdict(cfg), "objects": len(caps), "captions": caps, "images": len(data),
            "view_labels": views, "view_template": VIEW_TEMPLATE, "steps": steps, "batch": cfg.batch,
            "render_seconds": render_seconds, "train_seconds": train_seconds, "parameters": sizes,
            "weight_bytes": weight_bytes, "device": torch.cuda.get_device_name() if cuda else device,
            "final_loss_mean_last10": sum(x[2] for x in tail) / max(len(tail), 1), "losses": losses,
            "torch": torch.__version__}


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


def parse_args(argv: list[str] | None) -> tuple[UNetTrainConfig, Path, str]:
    """--out, --device and one --flag per UNetTrainConfig field (validated by the config's ranges)."""
    cfg, out, device = parse_config_cli(UNetTrainConfig, argv, __doc__,
                                        "folder for the diffusers model, log and loss plot")
    return cfg.check(), out, device


def main(argv: list[str] | None = None) -> None:
    try:
        cfg, out, device = parse_args(argv)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    log = train(cfg, out, device)
    print(json.dumps({k: v for k, v in log.items() if k not in ("losses", "captions")}))


if __name__ == "__main__":
    main()
