"""Train the toy CLIP ('toy-clip', an open_clip model) on a wide toy world: true objects and imperfect versions
of them, each with a soft target over a caption bank (clip_world.py), so its similarity tracks quality.

Data: samples of clip_world (a world object, at most one identity change such as a morph into another shape or
another colour, up to two quality degradations such as dilation, cuts, fog or floaters, random light, flat
shading) rendered on the fly with the project's own renderer from wide cameras (radius 1.2-2.2, elevation
-30..90, FoV 30-75), 32x32, white background, ray step 0.02. A ring buffer of `buffer` views is refreshed by
`fresh` new views of one new sample every `refresh_every` steps; batches are drawn from it with mild
augmentation (mirror, a 1-2 px shift, light blur and noise; colour is never jittered: it is part of the label). Texts: every bank caption
under a random template each step ("a red cube", "a photo of a red cube", ...; open_clip's BPE tokenizer).

Loss: cross-entropy of the image's softmax over the bank's texts (scale s = the learnt logit scale) against the
sample's soft target t: -sum_k t_k log softmax(s <img, txt_k>). Its floor is the targets' entropy; the log
reports the loss and its excess over that floor. AdamW, linear warm-up then cosine decay over a fixed time
budget, bf16 autocast on CUDA. The judge never sees any SJC or SDS result or any IoU: its targets are functions
of the degradation amounts alone.

Writes to --out: open_clip_model.safetensors (fp16 state dict: `create_model_and_transforms('toy-clip',
pretrained=path)` loads it), toy-clip.json (the model config), loss.png, training_log.json and training_log.md
(data, architecture, time, device, final loss, held-out zero-shot accuracy over the 25 captions and over every
world caption on clean renders from the SJC cameras of another seed, at ray step 0.01, and the calibration: the
mean CLIP score and probability of the true caption against each degradation's amount, scored with the
reloaded fp16 checkpoint).

  python -m sjc_dist.toyworld.train_clip --out DIR --seconds 180 --device cuda
"""
import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..configtools import opt, parse_config_cli
from ..errors import ConfigError
from . import clip_model
from .clip_report import build_log, device_name, held_out_report, markdown, plot_curves
from .clip_world import EVAL_STEP, TEMPLATES, TruthViews, WorldRenderer, bank, draw, target
from .shapes import captions


@dataclass(frozen=True)
class ClipTrainConfig:
    """How the toy CLIP is trained (defaults: one GPU, about 3 minutes)."""

    seconds: float = opt(180.0, "training time budget in seconds (setup and final evaluation not counted)", gt=0.0)
    batch: int = opt(512, "views per contrastive batch", ge=2)
    buffer: int = opt(4000, "rendered views in the ring buffer that batches are drawn from (rounded up to a "
                            "multiple of 25)", ge=25)
    fresh: int = opt(64, "new views of one new world sample rendered every refresh_every steps, replacing the "
                         "oldest", ge=0)
    refresh_every: int = opt(1, "steps between buffer refreshes (rendering a world sample is most of a step's cost "
                                "on a CPU)", ge=1)
    world_grid: int = opt(64, "side of the voxel grid world samples are built on", ge=16, le=128)
    lr: float = opt(1e-3, "AdamW peak learning rate", gt=0.0)
    weight_decay: float = opt(0.05, "AdamW weight decay of matrices (none on gains, biases, embeddings)", ge=0.0)
    warmup: float = opt(0.05, "fraction of the time budget spent in linear warm-up", ge=0.0, lt=1.0)
    render_step: float = opt(0.02, "ray step of the training renders (world units)", gt=0.0)
    resolution: int = opt(32, "render side in pixels (the model's input is 32; other sizes are resized)", ge=8)
    augment: bool = opt(True, "mirror, small shift, light blur and noise on training batches")
    monitor_per_caption: int = opt(8, "views per caption of the fixed monitor set checked during training", ge=1)
    monitor_every: float = opt(20.0, "seconds between monitor accuracy checks", gt=0.0)
    eval_per_caption: int = opt(40, "fresh held-out views per caption for the final zero-shot accuracy", ge=1)
    calibration_objects: int = opt(5, "world objects per degradation kind and amount of the calibration check", ge=1)
    log_every: int = opt(50, "steps between loss log lines", ge=1)
    render_chunk: int = opt(256, "views per render call (bounds memory)", ge=1)
    seed: int = opt(0, "seed of model init, training cameras and batches; held-out sets use seed+1 and seed+2")


class ViewBuffer:
    """A ring buffer of rendered views [N, 3, R, R] and their soft targets [N, K]; new views overwrite the oldest."""

    def __init__(self, images: Tensor, targets: Tensor):
        self.images, self.targets, self.ptr = images, targets, 0

    def replace(self, images: Tensor, targets: Tensor) -> None:
        idx = (self.ptr + torch.arange(len(images), device=images.device)) % len(self.images)
        self.images[idx], self.targets[idx] = images, targets
        self.ptr = int((self.ptr + len(images)) % len(self.images))

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self.images), (n,), generator=generator, device=self.images.device)
        return self.images[idx], self.targets[idx]


def augment(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mild label-preserving augmentation of renders [B, 3, R, R] in [-1, 1]: mirror, shift (white fill),
    blur and noise."""
    b, dev = x.shape[0], x.device
    u = torch.rand(b, 5, generator=generator, device=dev)
    x = torch.where((u[:, 0] < 0.5).view(b, 1, 1, 1), x.flip(-1), x)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = (u[:, 1:3] - 0.5) * 0.2  # up to 5% of the width: 1.6 px at 32
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    amount = (u[:, 3] * (u[:, 3] < 0.3)).view(b, 1, 1, 1) / 0.3
    x = x + amount * (blurred - x)
    noise = torch.randn(x.shape, generator=generator, device=dev) * 0.04 * u[:, 4].view(b, 1, 1, 1)
    return (x + noise).clamp(-1, 1)


def soft_bank_loss(img: Tensor, txt: Tensor, targets: Tensor, logit_scale: Tensor) -> Tensor:
    """-sum_k t_k log softmax_k(s <img, txt_k>), averaged over the batch: unit embeddings img [B, D] and
    txt [K, D], soft targets [B, K] (rows sum to 1)."""
    logp = F.log_softmax(logit_scale * img @ txt.T, dim=-1)
    return -(targets * logp).sum(-1).mean()


def bank_tokens(tokenizer, device: torch.device) -> Tensor:
    """Tokens [K, T, L] of every bank caption under every template (template t of caption k at [k, t])."""
    names = bank()
    return tokenizer([t.format(c) for c in names for t in TEMPLATES]).view(len(names), len(TEMPLATES), -1).to(device)


def make_optimizer(model, cfg: ClipTrainConfig) -> torch.optim.AdamW:
    """AdamW with open_clip's split: no decay on gains, biases, embeddings and the logit scale."""
    def no_decay(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n or "embedding" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in named if no_decay(n, p)], "weight_decay": 0.0},
              {"params": [p for n, p in named if not no_decay(n, p)], "weight_decay": cfg.weight_decay}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


def lr_at(frac: float, cfg: ClipTrainConfig) -> float:
    """Linear warm-up over `warmup` of the budget, then cosine to zero; frac = elapsed / seconds."""
    if frac < cfg.warmup:
        return cfg.lr * frac / cfg.warmup
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (frac - cfg.warmup) / (1 - cfg.warmup))))


def train_step(model, optimizer, images: Tensor, tokens: Tensor, targets: Tensor, amp: bool) -> Tensor:
    """One AdamW step of the soft bank loss (tokens [K, L]: one template per bank caption); returns the loss (a
    0-d tensor, not synchronised)."""
    inputs = clip_model.image_input(model, images)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        img = model.encode_image(inputs, normalize=True)
        txt = model.encode_text(tokens, normalize=True)
        loss = soft_bank_loss(img.float(), txt.float(), targets, model.logit_scale.exp().float())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))  # CLIP's cap on the temperature
    return loss.detach()


@torch.no_grad()
def accuracy(model, tokenizer, images: Tensor, labels: Tensor) -> float:
    """Zero-shot accuracy over all 25 captions (the world's own wording)."""
    was_training = model.training
    model.eval()
    pred = clip_model.zero_shot_predict(model, tokenizer, images, captions())
    model.train(was_training)
    return float((pred == labels).float().mean())


@dataclass
class TrainState:
    """What the loop records: step count, logged losses, monitor accuracies and views rendered."""

    steps: int = 0
    losses: list = dataclasses.field(default_factory=list)  # (step, seconds, loss, loss floor of the batch)
    samples: int = 0  # world samples rendered into the buffer
    monitor: list = dataclasses.field(default_factory=list)  # (step, seconds, accuracy)
    views_rendered: int = 0


def train_loop(model, tokenizer, views: WorldRenderer, buffer: ViewBuffer, monitor: tuple[Tensor, Tensor],
               cfg: ClipTrainConfig, generators: tuple[torch.Generator, torch.Generator]) -> TrainState:
    """Train for cfg.seconds of wall time; cam_gen (CPU) draws samples and cameras, dev_gen batches and
    augmentation."""
    cam_gen, dev_gen = generators
    device = buffer.images.device
    amp = device.type == "cuda"
    tokens = bank_tokens(tokenizer, device)
    rows = torch.arange(len(tokens), device=device)
    optimizer = make_optimizer(model, cfg)
    state, t0, next_monitor = TrainState(), time.time(), 0.0
    model.train()
    while (elapsed := time.time() - t0) < cfg.seconds:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(elapsed / cfg.seconds, cfg)
        refresh(views, buffer, state, cfg, cam_gen)
        images, targets = buffer.sample(cfg.batch, dev_gen)
        images = augment(images.float(), dev_gen) if cfg.augment else images.float()
        template = torch.randint(len(TEMPLATES), (len(tokens),), generator=dev_gen, device=device)
        loss = train_step(model, optimizer, images, tokens[rows, template], targets, amp)
        state.steps += 1
        if state.steps % cfg.log_every == 0:
            record_loss(state, model, loss, targets, time.time() - t0)
        if elapsed >= next_monitor:
            state.monitor.append((state.steps, elapsed, accuracy(model, tokenizer, *monitor)))
            print(f"step {state.steps} t={elapsed:.0f}s monitor accuracy {state.monitor[-1][2]:.3f}", flush=True)
            next_monitor = elapsed + cfg.monitor_every
    if state.steps % cfg.log_every:  # the last step's loss is always in the log
        record_loss(state, model, loss, targets, time.time() - t0)
    state.monitor.append((state.steps, time.time() - t0, accuracy(model, tokenizer, *monitor)))
    return state


def sample_views(views: WorldRenderer, n: int, step: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """n views of one new world sample and their targets [n, K]."""
    sample = draw(generator)
    images = views.render(sample, n, step, generator)
    return images, target(sample, bank()).to(images.device).expand(n, -1)


def refresh(views: WorldRenderer, buffer: ViewBuffer, state: TrainState, cfg: ClipTrainConfig,
            generator: torch.Generator) -> None:
    """Render cfg.fresh new views of one new world sample into the buffer."""
    if cfg.fresh == 0 or state.steps % cfg.refresh_every:
        return
    images, targets = sample_views(views, cfg.fresh, cfg.render_step, generator)
    buffer.replace(images.to(buffer.images.dtype), targets)
    state.views_rendered += cfg.fresh
    state.samples += 1


def loss_floor(targets: Tensor) -> float:
    """The smallest possible loss of a batch: the mean entropy of its soft targets [B, K]."""
    t = targets.float()
    return float(-(t * t.clamp_min(1e-12).log()).sum(-1).mean())


def record_loss(state: TrainState, model, loss: Tensor, targets: Tensor, seconds: float) -> None:
    """Append (step, seconds, loss, floor) and print it with the learnt logit scale."""
    loss, floor, scale = float(loss), loss_floor(targets), model.logit_scale.detach().exp().item()
    state.losses.append((state.steps, seconds, loss, floor))
    print(f"step {state.steps} t={seconds:.0f}s loss {loss:.4f} (floor {floor:.3f}) logit scale {scale:.1f}",
          flush=True)


def save_checkpoint(model, out: Path) -> Path:
    """fp16 safetensors state dict beside a copy of the model config; returns the checkpoint path."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}
    path = out / clip_model.CHECKPOINT_FILE
    save_file(state, str(path), metadata={"format": "pt", "model": clip_model.TOY_CLIP_NAME})
    config = clip_model.TOY_CLIP_DIR / clip_model.CONFIG_FILE
    if (out / clip_model.CONFIG_FILE).resolve() != config.resolve():
        shutil.copyfile(config, out / clip_model.CONFIG_FILE)
    return path


def buffer_size(cfg: ClipTrainConfig) -> int:
    """cfg.buffer rounded up to a multiple of `fresh` (whole samples)."""
    per = max(cfg.fresh, 1)
    return math.ceil(cfg.buffer / per) * per


def setup(cfg: ClipTrainConfig, device: torch.device):
    """Model, tokenizer, truth renderer, filled buffer, monitor set and the two generators."""
    import open_clip

    torch.manual_seed(cfg.seed)  # open_clip initialises weights from the global generator
    model, _, _ = clip_model.create_toy_clip(device)
    tokenizer = open_clip.get_tokenizer(clip_model.TOY_CLIP_NAME)
    views = WorldRenderer(device, cfg.resolution, cfg.render_chunk, cfg.world_grid)
    cam_gen = torch.Generator().manual_seed(cfg.seed)
    dev_gen = torch.Generator(device=device).manual_seed(cfg.seed)
    parts = [sample_views(views, max(cfg.fresh, 1), cfg.render_step, cam_gen)
             for _ in range(buffer_size(cfg) // max(cfg.fresh, 1))]
    buffer = ViewBuffer(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    monitor = TruthViews(device, cfg.resolution, cfg.render_chunk).dataset(
        cfg.monitor_per_caption, EVAL_STEP, torch.Generator().manual_seed(cfg.seed + 1))
    return model, tokenizer, views, buffer, monitor, (cam_gen, dev_gen)


def train(cfg: ClipTrainConfig, out: Path, device: str | torch.device) -> dict:
    """Set up, train for cfg.seconds, save, reload and score; returns the training log."""
    device = torch.device(device)
    t0 = time.time()
    model, tokenizer, views, buffer, monitor, gens = setup(cfg, device)
    setup_seconds = time.time() - t0
    print(f"setup {setup_seconds:.1f}s: {len(buffer.images)} buffered views, device {device_name(device)}", flush=True)
    t1 = time.time()
    state = train_loop(model, tokenizer, views, buffer, monitor, cfg, gens)
    train_seconds = time.time() - t1
    checkpoint = save_checkpoint(model, out)
    t2 = time.time()
    report = held_out_report(checkpoint, device, cfg)
    times = {"setup_seconds": setup_seconds, "train_seconds": train_seconds, "eval_seconds": time.time() - t2}
    log = build_log(cfg, state, model, device, times, report, checkpoint, buffer_size(cfg))
    (out / "training_log.json").write_text(json.dumps(log, indent=1))
    (out / "training_log.md").write_text(markdown(log))
    plot_curves(state, out / "loss.png")
    return log


def parse_args(argv: list[str] | None) -> tuple[ClipTrainConfig, Path, str]:
    """--out, --device and one --flag per ClipTrainConfig field (validated by the config's ranges)."""
    return parse_config_cli(ClipTrainConfig, argv, __doc__, "folder for the checkpoint, config, plot and logs")


def main(argv: list[str] | None = None) -> None:
    try:
        cfg, out, device = parse_args(argv)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    log = train(cfg, out, device)
    print(markdown(log), flush=True)


if __name__ == "__main__":
    main()
