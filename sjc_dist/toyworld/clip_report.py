"""What the toy CLIP's training leaves beside its checkpoint: the held-out report (clean zero-shot accuracy over
the 25 captions and over every world caption; calibration: the true caption's CLIP score and probability against
each degradation's amount), the loss curve, and the training log as JSON and Markdown."""
import json

import torch
from torch import Tensor

from ..configtools import to_dict
from . import clip_model
from .clip_world import EVAL_STEP, QUALITY, TEMPLATES, WIDE_CAMERAS, Sample, TruthViews, WorldRenderer, bank
from .data import BACKGROUND
from .shapes import captions, parse, world_captions

CALIBRATION_AMOUNTS = (0.0, 0.5, 1.0)


@torch.no_grad()
def held_out_report(checkpoint, device: torch.device, cfg) -> dict:
    """Zero-shot accuracy of the reloaded checkpoint on clean renders from the SJC cameras (seed + 2, ray step
    0.01): over the 25 captions, and over every world caption; and its calibration on degraded objects."""
    model, _, tokenizer = clip_model.load_toy_clip(device, checkpoint)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    views = TruthViews(device, cfg.resolution, cfg.render_chunk)
    images, labels = views.dataset(cfg.eval_per_caption, EVAL_STEP, gen)
    pred = clip_model.zero_shot_predict(model, tokenizer, images, captions())
    names = [parse(c) for c in captions()]
    per_caption = {c: float((pred[labels == k] == k).float().mean()) for k, c in enumerate(captions())}
    world = TruthViews(device, cfg.resolution, cfg.render_chunk, world_captions())
    w_images, w_labels = world.dataset(max(4, cfg.eval_per_caption // 4), EVAL_STEP, gen)
    w_pred = clip_model.zero_shot_predict(model, tokenizer, w_images, world_captions())
    return {"views": len(labels), "views_per_caption": cfg.eval_per_caption, "camera_seed": cfg.seed + 2,
            "ray_step": EVAL_STEP, "accuracy": float((pred == labels).float().mean()),
            "shape_accuracy": _part_accuracy(pred, labels, [n[0] for n in names]),
            "colour_accuracy": _part_accuracy(pred, labels, [n[1] for n in names]),
            "per_caption": per_caption, "world_captions": len(world_captions()),
            "world_accuracy": float((w_pred == w_labels).float().mean()),
            "calibration": calibration(model, tokenizer, device, cfg, cfg.calibration_objects)}


@torch.no_grad()
def calibration(model, tokenizer, device: torch.device, cfg, per_kind: int = 5) -> dict:
    """For each quality degradation and amount in CALIBRATION_AMOUNTS: the mean cosine of 4 views of `per_kind`
    objects with their caption, and the probability of the caption in the bank (it should fall with the amount)."""
    views = WorldRenderer(device, cfg.resolution, cfg.render_chunk)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    txt = clip_model.encode_texts(model, tokenizer, bank())
    scale = float(model.logit_scale.exp())
    objects = [world_captions()[int(i)] for i in torch.randint(len(world_captions()), (per_kind,), generator=gen)]
    out = {}
    for kind in QUALITY:
        rows = []
        for a in CALIBRATION_AMOUNTS:
            cos, prob = [], []
            for caption in objects:
                sample = Sample(caption, ((kind, a, ""),) if a > 0 else (), seed=int(torch.randint(9999, (), generator=gen)))
                emb = clip_model.encode_renders(model, views.render(sample, 4, EVAL_STEP, gen))
                k = bank().index(caption)
                cos.append(float((emb @ txt[k]).mean()))
                prob.append(float(torch.softmax(scale * emb @ txt.T, -1)[:, k].mean()))
            rows.append({"amount": a, "clip_score": sum(cos) / len(cos), "probability": sum(prob) / len(prob)})
        out[kind] = rows
    return out


def _part_accuracy(pred: Tensor, labels: Tensor, part: list[str]) -> float:
    """Accuracy of one attribute (shape or colour) of the predicted caption."""
    return sum(part[p] == part[t] for p, t in zip(pred.tolist(), labels.tolist())) / len(labels)


def plot_curves(state, path) -> None:
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


def build_log(cfg, state, model, device: torch.device, times: dict, report: dict, checkpoint,
              views_buffered: int) -> dict:
    """Everything the weights README needs, as one JSON-able dict."""
    import open_clip

    tail = [x[2] for x in state.losses[-10:]]
    excess = [x[2] - x[3] for x in state.losses[-10:]]
    return {
        "data": {"objects": len(world_captions()), "captions": world_captions(), "bank": bank(),
                 "templates": list(TEMPLATES), "degradations": {k: {"q_slope": v[0], "rest_on": v[1]}
                                                                for k, v in QUALITY.items()},
                 "resolution": cfg.resolution, "train_ray_step": cfg.render_step,
                 "cameras": to_dict(WIDE_CAMERAS), "background": to_dict(BACKGROUND),
                 "augmentation": cfg.augment, "samples": state.samples,
                 "views_rendered": state.views_rendered + views_buffered},
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
    d = log["data"]
    lines = [
        "# toy CLIP training log", "",
        f"- data: {d['objects']} toy objects, clean and degraded ({', '.join(d['degradations'])}; morphs and "
        f"recolours), {d['samples']} world samples, soft targets over a bank of {len(d['bank'])} captions x "
        f"{len(d['templates'])} templates, rendered on the fly at {d['resolution']}x{d['resolution']} (ray step "
        f"{d['train_ray_step']}) from wide cameras on a white background; {d['views_rendered']} views rendered",
        f"- architecture: open_clip '{a['name']}', {a['parameters']:,} parameters (vision {a['visual_parameters']:,}, "
        f"text {a['text_parameters']:,}); {a['tokenizer']}",
        f"- training: {t['steps']} steps of batch {t['config']['batch']} in {t['train_seconds']:.0f} s on "
        f"{t['device']} (setup {t['setup_seconds']:.0f} s; torch {t['torch']}, open_clip {t['open_clip']})",
        f"- final loss (mean of the last 10 logged): {t['final_loss_mean_last_10_logs']:.4f}, "
        f"{t['final_loss_above_floor_mean_last_10_logs']:.4f} above its floor (the targets' entropy)",
        f"- held-out zero-shot accuracy over all 25 captions: **{h['accuracy']:.3f}** on {h['views']} fresh renders "
        f"(camera seed {h['camera_seed']}, ray step {h['ray_step']}); shape {h['shape_accuracy']:.3f}, "
        f"colour {h['colour_accuracy']:.3f}",
        "- lowest per-caption accuracies: " + ", ".join(f"{c} {v:.2f}" for c, v in worst),
        f"- held-out zero-shot accuracy over all {h['world_captions']} world captions: {h['world_accuracy']:.3f}",
        "- calibration (mean CLIP score of the true caption at amount " + "/".join(
            f"{a:g}" for a in CALIBRATION_AMOUNTS) + "): " + "; ".join(
            f"{k} " + "/".join(f"{r['clip_score']:.2f}" for r in rows) for k, rows in h["calibration"].items()),
        f"- checkpoint: {log['checkpoint']['file']}, {log['checkpoint']['bytes'] / 1e6:.2f} MB (fp16 safetensors)",
    ]
    return "\n".join(lines) + "\n"
