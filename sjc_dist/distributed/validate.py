"""`sjc results SWEEP --validate`: the agreement of a sweep's ranking signals with its ground truth.

A sweep's results table (results.parquet) becomes one record per finished, evaluated trial: its prompt
(`param.prompt.text`), method (`param.guidance.kind`), the final evaluation's signals (`final.eval/<signal>`) and
the last intermediate scores (`final.score/<name>`, as `score/<name>`), and its truth (`final.eval/<truth>`).
sjc_dist.evaluation.validation computes, per signal and truth metric, the within-prompt Spearman rho across
settings and seeds and the selection regret per prompt and method; validation_report writes validation.md,
validation.json and validation.png into the sweep folder (or `--plots`). Only toy-world sweeps have truth.
"""
import math
from pathlib import Path

from ..evaluation.validation import Agreement, validate, view_ceiling
from ..evaluation.validation_report import SIGNALS, TRUTHS, agreement_table, write_validation

SCORE_SIGNALS = ("score/fit",)  # the intermediate score a user can compute (score/soft_iou is truth)


def records(frame) -> list[dict]:
    """One flat record per finished trial with at least one truth value."""
    out = []
    for row in frame.to_dict("records"):
        if row.get("status") != "ok":
            continue
        rec = {"prompt": row.get("param.prompt.text", ""), "method": row.get("param.guidance.kind", "paas"),
               "trial_id": row.get("trial_id")}
        for name in (*SIGNALS, *TRUTHS):
            rec[name] = _number(row.get(f"final.eval/{name}"))
        for name in SCORE_SIGNALS:
            rec[name] = _number(row.get(f"final.{name}"))
        if any(math.isfinite(rec[t]) for t in TRUTHS):
            out.append(rec)
    return out


def _number(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v if math.isfinite(v) else math.nan


def validate_sweep(frame, out: Path, command: str = "") -> tuple[list[Agreement], dict[str, Path]]:
    """Validate every signal of a sweep's table against its truth; write the section into `out`."""
    recs = records(frame)
    results = validate(recs, [*SIGNALS, *SCORE_SIGNALS], list(TRUTHS))
    n_prompts = len({r["prompt"] for r in recs})
    title = f"Signal validation: {len(recs)} finished trials over {n_prompts} prompts"
    return results, write_validation(results, out, title, command, ceiling=view_ceiling(recs))


def validation_text(results: list[Agreement]) -> str:
    """The agreement table as plain text for the terminal (IoU first)."""
    t = agreement_table(results)
    widths = [max(len(c), *(len(r[i]) for r in t.rows)) if t.rows else len(c) for i, c in enumerate(t.columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(t.columns, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in t.rows]
    return "\n".join(lines)
