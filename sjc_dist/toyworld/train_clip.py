"""Train the toy CLIP ('toy-clip', an open_clip model) contrastively on renders of the toy world.

Data: the 25 true objects (truth_field, built once on the device) rendered on the fly with the project's own
renderer from the SJC camera distribution (CameraSampler(CameraConfig())), 32x32, white background, ray step
0.02 (renders at 0.01 differ by < 0.013 per pixel). A ring buffer of `buffer` views is refreshed by `fresh` new
views a step (one caption a step, round robin); batches are drawn from it with mild augmentation (mirror, a
1-2 px shift, light blur and noise; colour is never jittered: it is the label). Captions are the world's
"a red cube" or a template of it ("a photo of a red cube", ...), tokenised by open_clip's BPE tokenizer.

Loss: CLIP's symmetric InfoNCE over the batch with the false negatives removed: every pair with the same
object is a positive (soft targets uniform over them, as in UniCL), since 25 objects repeat within a batch.
So the loss cannot reach 0: its floor is the batch mean of log(#positives of a row), about log(batch / 25);
the log reports the loss and its excess over that floor.
AdamW, linear warm-up then cosine decay over a fixed time budget, bf16 autocast on CUDA.

Writes to --out: open_clip_model.safetensors (fp16 state dict: `create_model_and_transforms('toy-clip',
pretrained=path)` loads it), toy-clip.json (the model config), loss.png, training_log.json and training_log.md
(data, architecture, time, device, final loss, held-out zero-shot accuracy over all 25 captions on fresh
renders at ray step 0.01 from cameras of another seed, scored with the reloaded fp16 checkpoint).

  python -m sjc_dist.toyworld.train_clip --out DIR --seconds 180 --device cuda
"""
import argparse
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

from ..configtools import from_dict, opt, to_dict
from ..errors import ConfigError
from ..scene.background import Background
from ..scene.cameras import CameraConfig, CameraSampler
from ..scene.render import render
from . import clip_model
from .data import BACKGROUND, truth_field
from .shapes import captions, parse

TEMPLATES = ("a {c} {s}", "a {c} {s}", "a photo of a {c} {s}", "a 3d render of a {c} {s}",
             "a {c} {s} on a white background", "{c} {s}")
EVAL_STEP = 0.01  # the ray step of render_truth: held-out views are rendered exactly as the evaluator's truth


@dataclass(frozen=True)
class ClipTrainConfig:
    """How the toy CLIP is trained (defaults: one GPU, about 3 minutes)."""

    seconds: float = opt(180.0, "training time budget in seconds (setup and final evaluation not counted)", gt=0.0)
    batch: int = opt(512, "views per contrastive batch", ge=2)
    buffer: int = opt(4000, "rendered views in the ring buffer that batches are drawn from (rounded up to a "
                            "multiple of 25)", ge=25)
    fresh: int = opt(64, "new views rendered per step (one caption a step, round robin), replacing the oldest",
                     ge=0)
    lr: float = opt(1e-3, "AdamW peak learning rate", gt=0.0)
    weight_decay: float = opt(0.05, "AdamW weight decay of matrices (none on gains, biases, embeddings)", ge=0.0)
    warmup: float = opt(0.05, "fraction of the time budget spent in linear warm-up", ge=0.0, lt=1.0)
    render_step: float = opt(0.02, "ray step of the training renders (world units)", gt=0.0)
    resolution: int = opt(32, "render side in pixels (the model's input is 32; other sizes are resized)", ge=8)
    augment: bool = opt(True, "mirror, small shift, light blur and noise on training batches")
    monitor_per_caption: int = opt(8, "views per caption of the fixed monitor set checked during training", ge=1)
    monitor_every: float = opt(20.0, "seconds between monitor accuracy checks", gt=0.0)
    eval_per_caption: int = opt(40, "fresh held-out views per caption for the final zero-shot accuracy", ge=1)
    log_every: int = opt(50, "steps between loss log lines", ge=1)
    render_chunk: int = opt(256, "views per render call (bounds memory)", ge=1)
    seed: int = opt(0, "seed of model init, training cameras and batches; held-out sets use seed+1 and seed+2")


class TruthViews:
    """Renders [n, 3, R, R] in [-1, 1] of the 25 true objects from random SJC cameras, on one device."""

    def __init__(self, device: torch.device, resolution: int, chunk: int):
        self.fields = [truth_field(c).to(device) for c in captions()]
        self.background = Background(BACKGROUND, 3).to(device)
        self.sampler = CameraSampler(CameraConfig(), resolution)
        self.device, self.chunk = device, chunk

    @torch.no_grad()
    def render(self, k: int, n: int, step: float, generator: torch.Generator) -> Tensor:
        """n views of object k (caption index) from cameras drawn with `generator` (CPU)."""
        parts = []
        for start in range(0, n, self.chunk):
            cams = self.sampler.sample(min(self.chunk, n - start), generator).to(self.device)
            parts.append(render(self.fields[k], self.background, cams, step).image.clamp(-1, 1))
        return torch.cat(parts)

    def dataset(self, per_caption: int, step: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(images [25 * per_caption, 3, R, R], caption indices [25 * per_caption]), caption-major."""
        images = [self.render(k, per_caption, step, generator) for k in range(len(self.fields))]
        labels = torch.arange(len(self.fields), device=self.device).repeat_interleave(per_caption)
        return torch.cat(images), labels


class ViewBuffer:
    """A ring buffer of rendered views and their caption indices; new views overwrite the oldest."""

    def __init__(self, images: Tensor, labels: Tensor):
        self.images, self.labels, self.ptr = images, labels, 0

    def replace(self, images: Tensor, labels: Tensor) -> None:
        idx = (self.ptr + torch.arange(len(images), device=images.device)) % len(self.images)
        self.images[idx], self.labels[idx] = images, labels
        self.ptr = int((self.ptr + len(images)) % len(self.images))

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self.images), (n,), generator=generator, device=self.images.device)
        return self.images[idx], self.labels[idx]


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


def multi_positive_clip_loss(img: Tensor, txt: Tensor, labels: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE of unit embeddings img, txt [B, D] where all same-label pairs are positives."""
    logits = logit_scale * img @ txt.T
    pos = (labels[:, None] == labels[None, :]).float()
    target = pos / pos.sum(1, keepdim=True)  # symmetric, so it serves both directions
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def caption_tokens(tokenizer, device: torch.device) -> Tensor:
    """Tokens [25, T, L] of every caption under every template (template t of caption k at [k, t])."""
    texts = [t.format(c=c, s=s) for s, c in map(parse, captions()) for t in TEMPLATES]
    return tokenizer(texts).view(len(captions()), len(TEMPLATES), -1).to(device)


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


def train_step(model, optimizer, images: Tensor, tokens: Tensor, labels: Tensor, amp: bool) -> Tensor:
    """One AdamW step of the multi-positive CLIP loss; returns the loss (a 0-d tensor, not synchronised)."""
    inputs = clip_model.image_input(model, images)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        img = model.encode_image(inputs, normalize=True)
        txt = model.encode_text(tokens, normalize=True)
        loss = multi_positive_clip_loss(img.float(), txt.float(), labels, model.logit_scale.exp().float())
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
    monitor: list = dataclasses.field(default_factory=list)  # (step, seconds, accuracy)
    views_rendered: int = 0


def train_loop(model, tokenizer, views: TruthViews, buffer: ViewBuffer, monitor: tuple[Tensor, Tensor],
               cfg: ClipTrainConfig, generators: tuple[torch.Generator, torch.Generator]) -> TrainState:
    """Train for cfg.seconds of wall time; cam_gen (CPU) draws cameras, dev_gen batches and augmentation."""
    cam_gen, dev_gen = generators
    device = buffer.images.device
    amp = device.type == "cuda"
    tokens = caption_tokens(tokenizer, device)
    optimizer = make_optimizer(model, cfg)
    state, t0, next_monitor = TrainState(), time.time(), 0.0
    model.train()
    while (elapsed := time.time() - t0) < cfg.seconds:
        for g in optimizer.param_groups:
            g["lr"] = lr_at(elapsed / cfg.seconds, cfg)
        refresh(views, buffer, state, cfg, cam_gen)
        images, labels = buffer.sample(cfg.batch, dev_gen)
        images = augment(images.float(), dev_gen) if cfg.augment else images.float()
        template = torch.randint(len(TEMPLATES), (cfg.batch,), generator=dev_gen, device=device)
        loss = train_step(model, optimizer, images, tokens[labels, template], labels, amp)
        state.steps += 1
        if state.steps % cfg.log_every == 0:
            record_loss(state, model, loss, labels, time.time() - t0)
        if elapsed >= next_monitor:
            state.monitor.append((state.steps, elapsed, accuracy(model, tokenizer, *monitor)))
            print(f"step {state.steps} t={elapsed:.0f}s monitor accuracy {state.monitor[-1][2]:.3f}", flush=True)
            next_monitor = elapsed + cfg.monitor_every
    if state.steps % cfg.log_every:  # the last step's loss is always in the log
        record_loss(state, model, loss, labels, time.time() - t0)
    state.monitor.append((state.steps, time.time() - t0, accuracy(model, tokenizer, *monitor)))
    return state


def refresh(views: TruthViews, buffer: ViewBuffer, state: TrainState, cfg: ClipTrainConfig,
            generator: torch.Generator) -> None:
    """Render cfg.fresh new views of the next caption (round robin) into the buffer."""
    if cfg.fresh == 0:
        return
    k = state.steps % len(views.fields)
    images = views.render(k, cfg.fresh, cfg.render_step, generator)
    buffer.replace(images.to(buffer.images.dtype), torch.full((cfg.fresh,), k, device=images.device))
    state.views_rendered += cfg.fresh


def loss_floor(labels: Tensor) -> float:
    """The smallest possible multi-positive loss of a batch: mean over rows of log(#same-label entries)."""
    counts = (labels[:, None] == labels[None, :]).sum(1).float()
    return float(counts.log().mean())


def record_loss(state: TrainState, model, loss: Tensor, labels: Tensor, seconds: float) -> None:
    """Append (step, seconds, loss, floor) and print it with the learnt logit scale."""
    loss, floor, scale = float(loss), loss_floor(labels), model.logit_scale.detach().exp().item()
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


@torch.no_grad()
def held_out_report(checkpoint: Path, views: TruthViews, cfg: ClipTrainConfig) -> dict:
    """Zero-shot accuracy of the reloaded checkpoint on fresh renders (seed + 2, ray step 0.01)."""
    model, _, tokenizer = clip_model.load_toy_clip(views.device, checkpoint)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    images, labels = views.dataset(cfg.eval_per_caption, EVAL_STEP, gen)
    pred = clip_model.zero_shot_predict(model, tokenizer, images, captions())
    names = [parse(c) for c in captions()]
    per_caption = {c: float((pred[labels == k] == k).float().mean()) for k, c in enumerate(captions())}
    return {"views": len(labels), "views_per_caption": cfg.eval_per_caption, "camera_seed": cfg.seed + 2,
            "ray_step": EVAL_STEP, "accuracy": float((pred == labels).float().mean()),
            "shape_accuracy": _part_accuracy(pred, labels, [n[0] for n in names]),
            "colour_accuracy": _part_accuracy(pred, labels, [n[1] for n in names]),
            "per_caption": per_caption}


def _part_accuracy(pred: Tensor, labels: Tensor, part: list[str]) -> float:
    """Accuracy of one attribute (shape or colour) of the predicted caption."""
    return sum(part[p] == part[t] for p, t in zip(pred.tolist(), labels.tolist())) / len(labels)


def plot_curves(state: TrainState, path: Path) -> None:
    """Loss (log scale) and monitor accuracy against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.plot([x[0] for x in state.losses], [max(x[2] - x[3], 1e-4) for x in state.losses], color="tab:blue",
            label="loss - floor")
    ax.set(xlabel="step", ylabel="CLIP loss above its floor", yscale="log", title="toy CLIP training")
    acc = ax.twinx()
    acc.plot([x[0] for x in state.monitor], [x[2] for x in state.monitor], "o-", color="tab:orange",
             label="monitor zero-shot accuracy")
    acc.set(ylabel="zero-shot accuracy (25 captions)", ylim=(0, 1.02))
    lines = ax.get_lines() + acc.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="center left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def model_summary(model) -> dict:
    """Parameter counts and the architecture config."""
    config = json.loads((clip_model.TOY_CLIP_DIR / clip_model.CONFIG_FILE).read_text())
    total = sum(p.numel() for p in model.parameters())
    visual = sum(p.numel() for p in model.visual.parameters())
    return {"name": clip_model.TOY_CLIP_NAME, "config": config, "parameters": total, "visual_parameters": visual,
            "text_parameters": total - visual, "tokenizer": "open_clip SimpleTokenizer (BPE, vocab 49408)"}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"


def build_log(cfg: ClipTrainConfig, state: TrainState, model, device: torch.device, times: dict,
              report: dict, checkpoint: Path) -> dict:
    """Everything the weights README needs, as one JSON-able dict."""
    import open_clip

    tail = [x[2] for x in state.losses[-10:]]
    excess = [x[2] - x[3] for x in state.losses[-10:]]
    return {
        "data": {"objects": len(captions()), "captions": captions(), "templates": list(TEMPLATES),
                 "resolution": cfg.resolution, "train_ray_step": cfg.render_step,
                 "cameras": to_dict(CameraConfig()), "background": to_dict(BACKGROUND),
                 "augmentation": cfg.augment, "views_rendered": state.views_rendered + buffer_size(cfg)},
        "architecture": model_summary(model),
        "training": {"config": to_dict(cfg), "steps": state.steps, "images_seen": state.steps * cfg.batch,
                     "device": device_name(device), "torch": torch.__version__, "open_clip": open_clip.__version__,
                     "steps_per_second": state.steps / max(times["train_seconds"], 1e-9), **times,
                     "final_loss_mean_last_10_logs": sum(tail) / max(len(tail), 1),
                     "final_loss_above_floor_mean_last_10_logs": sum(excess) / max(len(excess), 1)},
        "losses": state.losses, "monitor_accuracy": state.monitor,
        "held_out": report,
        "checkpoint": {"file": checkpoint.name, "bytes": checkpoint.stat().st_size, "dtype": "float16"},
    }


def markdown(log: dict) -> str:
    """A short human summary of the training log."""
    a, t, h = log["architecture"], log["training"], log["held_out"]
    worst = sorted(h["per_caption"].items(), key=lambda kv: kv[1])[:5]
    lines = [
        "# toy CLIP training log", "",
        f"- data: {log['data']['objects']} toy objects x {len(log['data']['templates'])} caption templates, "
        f"rendered on the fly at {log['data']['resolution']}x{log['data']['resolution']} (ray step "
        f"{log['data']['train_ray_step']}) from the SJC camera distribution on a white background; "
        f"{log['data']['views_rendered']} views rendered",
        f"- architecture: open_clip '{a['name']}', {a['parameters']:,} parameters (vision {a['visual_parameters']:,}, "
        f"text {a['text_parameters']:,}); {a['tokenizer']}",
        f"- training: {t['steps']} steps of batch {t['config']['batch']} in {t['train_seconds']:.0f} s on "
        f"{t['device']} (setup {t['setup_seconds']:.0f} s; torch {t['torch']}, open_clip {t['open_clip']})",
        f"- final loss (mean of the last 10 logged): {t['final_loss_mean_last_10_logs']:.4f}, "
        f"{t['final_loss_above_floor_mean_last_10_logs']:.4f} above its floor (log #positives per row)",
        f"- held-out zero-shot accuracy over all 25 captions: **{h['accuracy']:.3f}** on {h['views']} fresh renders "
        f"(camera seed {h['camera_seed']}, ray step {h['ray_step']}); shape {h['shape_accuracy']:.3f}, "
        f"colour {h['colour_accuracy']:.3f}",
        "- lowest per-caption accuracies: " + ", ".join(f"{c} {v:.2f}" for c, v in worst),
        f"- checkpoint: {log['checkpoint']['file']}, {log['checkpoint']['bytes'] / 1e6:.2f} MB (fp16 safetensors)",
    ]
    return "\n".join(lines) + "\n"


def buffer_size(cfg: ClipTrainConfig) -> int:
    """cfg.buffer rounded up to a multiple of 25, so every object has as many buffered views."""
    return math.ceil(cfg.buffer / len(captions())) * len(captions())


def setup(cfg: ClipTrainConfig, device: torch.device):
    """Model, tokenizer, truth renderer, filled buffer, monitor set and the two generators."""
    import open_clip

    torch.manual_seed(cfg.seed)  # open_clip initialises weights from the global generator
    model, _, _ = clip_model.create_toy_clip(device)
    tokenizer = open_clip.get_tokenizer(clip_model.TOY_CLIP_NAME)
    views = TruthViews(device, cfg.resolution, cfg.render_chunk)
    cam_gen = torch.Generator().manual_seed(cfg.seed)
    dev_gen = torch.Generator(device=device).manual_seed(cfg.seed)
    images, labels = views.dataset(buffer_size(cfg) // len(captions()), cfg.render_step, cam_gen)
    buffer = ViewBuffer(images, labels)
    monitor = views.dataset(cfg.monitor_per_caption, EVAL_STEP, torch.Generator().manual_seed(cfg.seed + 1))
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
    report = held_out_report(checkpoint, views, cfg)
    times = {"setup_seconds": setup_seconds, "train_seconds": train_seconds, "eval_seconds": time.time() - t2}
    log = build_log(cfg, state, model, device, times, report, checkpoint)
    (out / "training_log.json").write_text(json.dumps(log, indent=1))
    (out / "training_log.md").write_text(markdown(log))
    plot_curves(state, out / "loss.png")
    return log


def parse_args(argv: list[str] | None) -> tuple[ClipTrainConfig, Path, str]:
    """--out, --device and one --flag per ClipTrainConfig field (validated by the config's ranges)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for the checkpoint, config, plot and logs")
    p.add_argument("--device", default="cuda", help="torch device, e.g. cuda or cpu")
    for f in dataclasses.fields(ClipTrainConfig):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                       help=f"{f.metadata['help']} (default {f.default})")
    args = vars(p.parse_args(argv))
    out, device = args.pop("out"), args.pop("device")
    return from_dict(ClipTrainConfig, {k: v for k, v in args.items() if v is not None}), out, device


def main(argv: list[str] | None = None) -> None:
    try:
        cfg, out, device = parse_args(argv)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    log = train(cfg, out, device)
    print(markdown(log), flush=True)


if __name__ == "__main__":
    main()
