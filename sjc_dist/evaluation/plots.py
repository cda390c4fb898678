"""The report's PNG figures: per-method means with 95% CIs, paired per-prompt scatter, CLIP score against IoU,
and image grids of the best and worst prompts per method. Matplotlib's object API with the Agg canvas (no
pyplot, so no global figure state); every function writes one file and returns its path.
"""
import math
from pathlib import Path

import numpy as np
from PIL import Image

from .summary import MetricKey, per_prompt


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_means(means: list[dict], methods: list[str], path: Path) -> Path:
    """One panel per (judge, metric): each method's mean over prompts with its 95% bootstrap CI."""
    keys = list(dict.fromkeys((m["judge"], m["metric"]) for m in means))
    cols = min(3, len(keys)) or 1
    rows = -(-len(keys) // cols) or 1
    fig = _figure(3.2 * cols, 2.6 * rows)
    for i, (judge, metric) in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        recs = [next(m for m in means if (m["judge"], m["metric"], m["method"]) == (judge, metric, meth))
                for meth in methods]
        y = np.array([r["mean"] for r in recs])
        lo = np.nan_to_num(y - np.array([r["low"] for r in recs]))
        hi = np.nan_to_num(np.array([r["high"] for r in recs]) - y)
        ax.bar(methods, y, yerr=[lo, hi], capsize=4, color=[f"C{k}" for k in range(len(methods))])
        ax.set_title(f"{metric} ({judge})", fontsize=9)
    return _save(fig, path)


def plot_paired(rows: list[dict], key: MetricKey, a: str, b: str, path: Path) -> Path:
    """Per-prompt seed means of method a against method b, with the diagonal."""
    va, vb = per_prompt(rows, key, a), per_prompt(rows, key, b)
    common = [p for p in va if p in vb]
    x, y = np.array([vb[p] for p in common]), np.array([va[p] for p in common])
    fig = _figure(4, 4)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(x, y, s=14, alpha=0.8)
    if len(common):
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel(f"{b}: {key.metric} ({key.judge})")
    ax.set_ylabel(f"{a}: {key.metric} ({key.judge})")
    ax.set_title(f"per prompt, {len(common)} prompts", fontsize=9)
    return _save(fig, path)


def plot_clip_vs_iou(rows: list[dict], judge: str, rho: float, rho_within: float, path: Path) -> Path:
    """CLIP score (one judge) against 3D IoU, one point per object, coloured by method."""
    fig = _figure(4.5, 4)
    ax = fig.add_subplot(1, 1, 1)
    for k, method in enumerate(dict.fromkeys(r["method"] for r in rows)):
        sub = [r for r in rows if r["judge"] == judge and r["method"] == method]
        ax.scatter([r["iou"] for r in sub], [r["clip_score"] for r in sub], s=14, color=f"C{k}", label=method)
    ax.set_xlabel("3D IoU at the best yaw")
    ax.set_ylabel(f"CLIP score ({judge})")
    text = "Spearman rho " + (f"{rho:.3f}" if math.isfinite(rho) else "undefined")
    if math.isfinite(rho_within):
        text += f", within prompts {rho_within:.3f}"
    ax.set_title(text, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def image_grid(items: list[tuple[str, str]], title: str, path: Path) -> Path:
    """A column of labelled view strips: items are (label, PNG path of a run's evaluated views)."""
    items = [(label, png) for label, png in items if png and Path(png).is_file()]
    fig = _figure(8, 0.2 + 1.15 * max(len(items), 1))
    fig.suptitle(title, fontsize=10)
    for i, (label, png) in enumerate(items):
        ax = fig.add_subplot(len(items), 1, i + 1)
        ax.imshow(np.asarray(Image.open(png).convert("RGB")))
        ax.set_axis_off()
        ax.set_title(label, fontsize=8, loc="left")
    if not items:
        fig.text(0.5, 0.5, "no rendered views", ha="center")
    return _save(fig, path)
