"""The validation section: the agreement of every ranking signal with every truth metric as a table, a PNG
(heatmap of within-group rho; selection regret against a random pick) and validation.md / validation.json,
written wherever truth exists (a sweep folder, a benchmark report). Numbers come from validation.py.
"""
import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .plots import _figure, _save
from .tables import Table, fmt, table_markdown
from .validation import Agreement

# the signals a user can compute without the truth, and the truth metrics (evaluation.evaluate.EvalRow fields)
SIGNALS = ("clip_score", "clip_worst", "r_precision", "rp_distractors", "clip_prob", "fit", "judge_fit")
TRUTHS = ("iou", "silhouette_iou", "ssim", "psnr", "depth_error", "iou_centred", "color_error")


def agreement_table(results: list[Agreement], primary: str = "iou") -> Table:
    """One line per signal x truth metric, the primary truth metric first."""
    ordered = sorted(results, key=lambda a: (a.truth != primary, TRUTHS.index(a.truth) if a.truth in TRUTHS else 99))
    rows = [[a.signal, a.truth, fmt(a.rho), f"[{fmt(a.rho_low)}, {fmt(a.rho_high)}]", str(a.groups),
             fmt(a.regret), f"[{fmt(a.regret_low)}, {fmt(a.regret_high)}]", fmt(a.random_regret), str(a.selections)]
            for a in ordered]
    return Table("Do the ranking signals agree with the truth?",
                 ["signal", "truth", "within-prompt rho", "95% CI", "prompts", "selection regret", "95% CI",
                  "random pick regret", "selections"], rows,
                 "rho: Spearman between the signal and the truth metric over the results of one prompt, averaged "
                 "over prompts (bootstrap CI over prompts). Regret: the truth metric of the best result of a "
                 "prompt and method minus that of the result the signal picks (0 is perfect), beside a random "
                 "pick's. Error metrics (depth_error, color_error) are negated, so higher rho is better for all.")


def ceiling_table(ceiling: Sequence[Agreement]) -> Table:
    """The image truth metrics as if they were signals, against the 3D truth (validation.view_ceiling)."""
    rows = [[a.signal, a.truth, fmt(a.rho), f"[{fmt(a.rho_low)}, {fmt(a.rho_high)}]", str(a.groups), fmt(a.regret),
             fmt(a.random_regret)] for a in ceiling]
    return Table("What the views can tell: the image truth as a signal",
                 ["image truth", "against", "within-prompt rho", "95% CI", "prompts", "selection regret",
                  "random pick regret"], rows,
                 "A judge that saw exactly how well the views match the true renders (same cameras) would agree "
                 "with the 3D truth this well: the reference for any judge of views (CLIP); 3D IoU also counts "
                 "density no view shows.")


def plot_agreement(results: list[Agreement], path: Path, primary: str = "iou") -> Path:
    """Left: heatmap of within-prompt rho (signals x truth metrics); right: regret on `primary` per signal."""
    signals = list(dict.fromkeys(a.signal for a in results))
    truths = list(dict.fromkeys(a.truth for a in results))
    grid = np.full((len(signals), len(truths)), np.nan)
    for a in results:
        grid[signals.index(a.signal), truths.index(a.truth)] = a.rho
    fig = _figure(4 + 0.9 * len(truths), 0.9 + 0.45 * len(signals))
    ax = fig.add_subplot(1, 2, 1)
    ax.imshow(grid, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_xticks(range(len(truths)), truths, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(signals)), signals, fontsize=8)
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, "-" if math.isnan(v) else f"{v:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title("within-prompt Spearman rho", fontsize=9)
    bars = [a for a in results if a.truth == primary]
    bx = fig.add_subplot(1, 2, 2)
    if bars:
        y = np.arange(len(bars))
        bx.barh(y, [a.regret for a in bars], color="C0", label="pick by the signal")
        bx.scatter([a.random_regret for a in bars], y, color="C3", marker="|", s=200, label="random pick")
        bx.set_yticks(y, [a.signal for a in bars], fontsize=8)
        bx.legend(fontsize=7)
    bx.set_title(f"selection regret ({primary})", fontsize=9)
    return _save(fig, path)


def write_validation(results: list[Agreement], out: Path, title: str, command: str = "",
                     primary: str = "iou", ceiling: Sequence[Agreement] = ()) -> dict[str, Path]:
    """validation.md, validation.json and validation.png in `out` (with the view ceiling's table if given)."""
    out.mkdir(parents=True, exist_ok=True)
    table = agreement_table(results, primary)
    png = plot_agreement(results, out / "validation.png", primary) if results else None
    lines = [f"# {title}", ""] + ([f"Made by: `{command}`", ""] if command else []) + [table_markdown(table)]
    if ceiling:
        lines += ["", table_markdown(ceiling_table(ceiling))]
    if png is not None:
        lines += ["", f"![validation]({png.name})", ""]
    md = out / "validation.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    js = out / "validation.json"
    js.write_text(json.dumps([dataclasses.asdict(a) for a in [*results, *ceiling]], indent=1))
    return {"markdown": md, "json": js, **({"png": png} if png is not None else {})}
