"""The end of `sjc run`: a finished run folder scored by the evaluator, its scores added to summary.json, and the
lines that tell the user how it went and where to look.

`score_run` is `evaluate_runs([run_dir], [judge], prompts=None, toy_judge=judge)`: the judge's CLIP score, and
for toy-world captions the ground truth (3D IoU, colour error, the image-space agreement with the true renders)
and the toy CLIP's R@1 over the world's captions. Every finite numeric field of the EvalRow is a score except
the row's metadata (`METADATA`), so metrics added to EvalRow are printed without edits here. R-Precision over
the run's own prompt alone is 1 by construction and left out. The judge applies only where it can (the toy CLIP
knows only toy captions); where it cannot, or is not installed, the result is a one-line note, never an error.
"""
import dataclasses
import json
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

from ..errors import SJCError

METADATA = {"prompt_index", "seed", "views", "elevation", "n_prompts", "steps", "seconds", "guidance_weight", "yaw"}
LABELS = {"clip_score": "CLIP", "r_precision": "R@1", "clip_worst": "CLIP worst view",
          "rp_distractors": "R@1 among distractors", "clip_prob": "P(prompt)", "fit": "denoiser fit",
          "judge_fit": "judge fit", "toy_r1": "toy-CLIP R@1", "iou": "IoU",
          "iou_centred": "IoU centred", "color_error": "colour error", "color_error_floor": "colour error floor",
          "occupied_fraction": "occupied", "psnr": "PSNR", "ssim": "SSIM", "silhouette_iou": "silhouette IoU",
          "depth_error": "depth error"}
LOOK_AT = ("views.png", "turntable.gif", "mesh.ply", "image.png", "metrics.jsonl")


@dataclass
class RunScores:
    """A run's scores by one judge (EvalRow field -> value), or the note saying why there are none."""

    judge: str
    scores: dict[str, float]
    note: str = ""


def row_scores(row) -> dict[str, float]:
    """Every finite numeric score of an EvalRow (its metadata and an R-Precision over one prompt left out)."""
    out = {}
    for f in dataclasses.fields(row):
        value = getattr(row, f.name)
        if f.name in METADATA or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value) and not (f.name == "r_precision" and row.n_prompts < 2):
            out[f.name] = float(value)
    return out


def not_applicable(run_dir: Path, judge: str) -> str:
    """Why `judge` cannot score this run ('' when it can)."""
    from .saved import read_run_config
    from .truth import is_toy_caption

    if not (run_dir / "field.safetensors").is_file():
        return "a 2D run (sjc image) has no 3D field to score"
    prompt = read_run_config(run_dir).prompt.text
    if judge == "toy" and not is_toy_caption(prompt):
        return f"the toy judge knows only toy-world captions (sjc captions), not {prompt!r}"
    return ""


def score_run(run_dir: str | Path, judge: str = "toy", cfg=None) -> RunScores:
    """Score one finished run folder with `judge` (a judge spec) through the evaluator (`cfg`: an EvalConfig,
    by default the evaluator's own settings without writing eval_views.png)."""
    from .evaluate import EvalConfig, evaluate_runs
    from .judges import load_judge

    run_dir = Path(run_dir)
    note = not_applicable(run_dir, judge)
    if note:
        return RunScores(judge, {}, note)
    try:
        j = load_judge(judge)
        row = evaluate_runs([run_dir], [j], prompts=None, cfg=cfg or EvalConfig(save_views=False),
                            toy_judge=j)[0]
    except (SJCError, OSError, ImportError) as err:  # a missing judge or weights: a note, the run stands
        return RunScores(judge, {}, f"not scored: {err}")
    return RunScores(judge, row_scores(row))


def write_scores(run_dir: Path, result: RunScores) -> dict:
    """Add the scores (or the note) to the folder's summary.json; returns the whole summary."""
    path = run_dir / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    summary["eval"] = {"judge": result.judge, "scores": result.scores, **({"note": result.note} if result.note
                                                                          else {})}
    path.write_text(json.dumps(summary, indent=2))
    return summary


def score_text(scores: dict[str, float]) -> str:
    """'IoU 0.612, CLIP 0.311, ...': each score with its short label, in the EvalRow's order."""
    return ", ".join(f"{LABELS.get(k, k.replace('_', ' '))} {v:.3g}" for k, v in scores.items())


def summary_lines(run_dir: Path, summary: dict, result: RunScores | None) -> list[str]:
    """What the user reads at the end of a run: steps and time, scores (or why none), where to look."""
    steps, first, secs = summary.get("steps", 0), summary.get("resumed_from", 0), summary.get("seconds", 0.0)
    done = f"{steps - first} steps" + (f" (resumed at {first})" if first else "")
    rate = f"{summary.get('seconds_per_step', 0.0):.3g} s/step on {summary.get('device', '?')}"
    lines = [f"sjc: {done} in {secs:.0f} s ({rate}) -> {run_dir}"]
    if result is not None and result.scores:
        lines += textwrap.wrap(score_text(result.scores), 116, initial_indent=f"  scores (judge {result.judge}): ",
                               subsequent_indent="    ")
    elif result is not None:
        lines.append(f"  scores: none ({result.note})")
    look = [n for n in LOOK_AT if (run_dir / n).is_file()]
    lines.append(f"  look in {run_dir}: {', '.join(look)}")
    return lines
