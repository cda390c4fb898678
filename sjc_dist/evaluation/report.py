"""The benchmark report: one self-contained folder with report.html, report.md (the same tables in Markdown)
and its PNGs (plots and best/worst image grids), built from the rows of an evaluation (summary.py does the
numbers). Also returns the headline numbers flat, for experiment tracking. No pandas, no network: the HTML has
no scripts and no external resources.
"""
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import plots
from .tables import Table, fmt, fmt_p, table_html, table_markdown
from .summary import (AGREEMENT_TRUTH, LOWER_IS_BETTER, MetricKey, correlations, method_means, methods_of,
                      object_records, paired_comparisons, per_prompt_table, primary_key, ranked_prompts,
                      signal_agreements)
from .validation import Agreement, validate
from .validation_report import TRUTHS, agreement_table, plot_agreement


@dataclass
class ReportMeta:
    """What the report says about how it was made."""

    title: str = "SJC vs SDS benchmark"
    command: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Report:
    """The files written and the flat headline metrics ('judge/metric/method/mean', ...)."""

    html: Path
    markdown: Path
    images: list[Path]
    metrics: dict[str, float]


def colour_floor_note(rows: list[dict]) -> str:
    """The truth's own colour error (its baked-in shading), averaged over the prompts that have one."""
    floors = {r["prompt"]: r.get("color_error_floor", math.nan) for r in rows}
    values = [v for v in floors.values() if math.isfinite(v)]
    return f" The truth's own color_error (shading baked into the renders) is {fmt(float(np.mean(values)))} " \
           "on these prompts: a perfect result scores about that." if values else ""


def means_table(means: list[dict], floor_note: str = "") -> Table:
    rows = [[m["judge"], m["metric"], m["method"], fmt(m["mean"]), f"[{fmt(m['low'])}, {fmt(m['high'])}]",
             str(m["prompts"]), str(m["objects"])] for m in means]
    return Table("Per-method means (over prompts; seeds averaged first)",
                 ["judge", "metric", "method", "mean", "95% CI (bootstrap)", "prompts", "objects"], rows,
                 "Lower is better for: " + ", ".join(sorted(LOWER_IS_BETTER)) + "; higher for the rest." + floor_note)


def agreement_cell(p: dict, agreements: dict[MetricKey, Agreement]) -> str:
    """The measured agreement of the signal behind a verdict: within-prompt rho with the truth and its CI."""
    if p["judge"] == "truth":
        return "truth"
    a = agreements.get(MetricKey(p["judge"], p["metric"]))
    if a is None:
        return "not measured (no truth)"
    if not math.isfinite(a.rho):
        return "not measured (fewer than 3 results per prompt)"
    return f"{fmt(a.rho)} [{fmt(a.rho_low)}, {fmt(a.rho_high)}]"


def paired_table(pairs: list[dict], agreements: dict[MetricKey, Agreement] | None = None) -> Table:
    agreements = agreements or {}
    rows = [[p["judge"], p["metric"], f"{p['a']} - {p['b']}", fmt(p["mean_diff"]),
             f"[{fmt(p['low'])}, {fmt(p['high'])}]", fmt_p(p["p_wilcoxon"]), fmt_p(p["p_bootstrap"]),
             f"{p['wins']}/{p['ties']}/{p['losses']}", str(p["n"]),
             p["better"] + (" (p<0.05)" if p["p_wilcoxon"] < 0.05 else ""), agreement_cell(p, agreements)]
            for p in pairs]
    return Table("Paired per-prompt comparison", ["judge", "metric", "difference", "mean diff", "95% CI",
                                                  "Wilcoxon p", "bootstrap p", "wins/ties/losses", "prompts",
                                                  "better", f"agreement with {AGREEMENT_TRUTH}"], rows,
                 "Per-prompt seed means; difference = first method minus the other; wins/ties/losses of the first "
                 "method (a win is a better value). Wilcoxon signed-rank test, two-sided, zero differences "
                 "dropped: with n prompts its smallest possible p is 2 / 2^n. Agreement: how far the verdict's "
                 f"signal can be trusted: Spearman rho of the signal with the truth's {AGREEMENT_TRUTH} within "
                 "prompts (across this benchmark's seeds and methods), mean over prompts, bootstrap 95% CI.")


def correlation_table(corr: list[dict]) -> Table:
    rows = [[c["judge"], c["method"], fmt(c["rho"]), fmt_p(c["p"]), fmt(c["rho_within"]), fmt_p(c["p_within"]),
             str(c["objects"])] for c in corr]
    return Table("Does the CLIP ranking agree with the truth? Spearman rho(CLIP score, 3D IoU)",
                 ["judge", "method", "rho", "p", "rho within prompts", "p within", "objects"], rows,
                 "rho: over all objects as they are. Within prompts: each prompt's mean CLIP score and mean IoU "
                 "removed first (CLIP scores of different prompts have different baselines), i.e. does CLIP "
                 "rank the results of one prompt as the truth does.")


def prompt_table(rows: list[dict], key: MetricKey) -> Table:
    recs = per_prompt_table(rows, key)
    methods = methods_of(rows)
    cells = [[r["prompt"], *[fmt(r[m]) for m in methods]] for r in recs]
    return Table(f"Per prompt: {key.metric} ({key.judge}), mean over seeds", ["prompt", *methods], cells)


ROW_COLUMNS = ("prompt", "method", "seed", "judge", "clip_score", "r_precision", "toy_r1", "iou", "iou_centred",
               "color_error", "run_dir")


def rows_table(rows: list[dict]) -> Table:
    """Every evaluated object (one line per object per judge), for `sjc evaluate`."""
    return Table("Evaluated runs", list(ROW_COLUMNS), [[fmt(r[c]) for c in ROW_COLUMNS] for r in rows])


def settings_table(meta: ReportMeta) -> Table:
    return Table("Settings", ["setting", "value"], [[k, str(v)] for k, v in meta.settings.items()])


# --- figures ----------------------------------------------------------------------------------------------
def grid_items(rows: list[dict], key: MetricKey, method: str, prompts: list[str]) -> list[tuple[str, str]]:
    """(label, views PNG) of every seed of each prompt, for one method."""
    sub = [r for r in rows if r["judge"] == key.judge and r["method"] == method and r["prompt"] in prompts]
    sub.sort(key=lambda r: (prompts.index(r["prompt"]), r["seed"]))
    return [(f"{r['prompt']} | seed {r['seed']} | {key.metric} {fmt(r[key.metric])}", r["views_png"]) for r in sub]


def figures(rows: list[dict], means: list[dict], corr: list[dict], out: Path, k: int) -> list[Path]:
    methods = methods_of(rows)
    key = primary_key(rows)
    paths = [plots.plot_means(means, methods, out / "means.png")]
    for other in methods[1:]:
        paths.append(plots.plot_paired(rows, key, methods[0], other, out / f"paired_{methods[0]}_{other}.png"))
    for c in corr:
        if c["method"] == "all":
            paths.append(plots.plot_clip_vs_iou(rows, c["judge"], c["rho"], c["rho_within"],
                                                out / f"clip_vs_iou_{c['judge']}.png"))
    for method in methods:
        best, worst = ranked_prompts(rows, key, method, k)
        for name, chosen in (("best", best), ("worst", worst)):
            title = f"{method}: {name} {len(chosen)} prompts by {key.metric} ({key.judge})"
            paths.append(plots.image_grid(grid_items(rows, key, method, chosen), title,
                                          out / f"{name}_{method}.png"))
    return paths


# --- writers ----------------------------------------------------------------------------------------------
STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
         "margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}th{background:#eee}"
         ".note{font-size:12px;color:#555}img{max-width:100%;margin:6px 0}code{background:#f4f4f4}")


def write_html(path: Path, meta: ReportMeta, tables: list[Table], images: list[Path]) -> Path:
    parts = [f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(meta.title)}</title>",
             f"<style>{STYLE}</style></head><body>\n<h1>{html.escape(meta.title)}</h1>"]
    if meta.command:
        parts.append(f"<p>Made by: <code>{html.escape(meta.command)}</code></p>")
    parts += [f"<p class='note'>warning: {html.escape(w)}</p>" for w in meta.warnings]
    parts += [table_html(t) for t in tables[:-1]]
    parts.append("<h2>Figures</h2>")
    parts += [f"<figure><img src='{html.escape(p.name)}' alt='{html.escape(p.stem)}'>"
              f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in images]
    parts.append(table_html(tables[-1]))
    path.write_text("\n".join(parts) + "\n</body></html>\n", encoding="utf-8")
    return path


def write_markdown(path: Path, meta: ReportMeta, tables: list[Table], images: list[Path]) -> Path:
    parts = [f"# {meta.title}", ""]
    if meta.command:
        parts += [f"Made by: `{meta.command}`", ""]
    parts += [f"> warning: {w}" for w in meta.warnings]
    parts += [table_markdown(t) for t in tables[:-1]]
    parts += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in images] + [""]
    parts.append(table_markdown(tables[-1]))
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def flat_metrics(means: list[dict], pairs: list[dict], corr: list[dict]) -> dict[str, float]:
    """Headline numbers as flat keys, e.g. 'toy/clip_score/sjc/mean', 'toy/clip_score/sjc-sds/p_wilcoxon'."""
    out = {}
    for m in means:
        for stat in ("mean", "low", "high"):
            out[f"{m['judge']}/{m['metric']}/{m['method']}/{stat}"] = m[stat]
    for p in pairs:
        for stat in ("mean_diff", "p_wilcoxon", "p_bootstrap"):
            out[f"{p['judge']}/{p['metric']}/{p['a']}-{p['b']}/{stat}"] = p[stat]
    for c in corr:
        out[f"{c['judge']}/spearman_clip_iou/{c['method']}"] = c["rho"]
        out[f"{c['judge']}/spearman_clip_iou_within/{c['method']}"] = c["rho_within"]
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def build_report(rows: list[dict], out: Path, meta: ReportMeta, seed: int = 0, k: int = 3) -> Report:
    """Compute the tables, draw the figures and write report.html and report.md into `out`."""
    if not rows:
        raise ValueError("no evaluated objects to report on (every run failed?)")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    means, pairs, corr = method_means(rows, rng), paired_comparisons(rows, rng), correlations(rows)
    agreements = signal_agreements(rows, seed)
    tables = [settings_table(meta), means_table(means, colour_floor_note(rows)), paired_table(pairs, agreements)]
    if corr:
        tables.append(correlation_table(corr))
    records, signals = object_records(rows)
    validation = validate(records, signals, list(TRUTHS), seed=seed)
    if validation:
        tables.append(agreement_table(validation))
    tables.append(prompt_table(rows, primary_key(rows)))
    images = figures(rows, means, corr, out, k)
    if validation:
        images.append(plot_agreement(validation, out / "validation.png"))
    return Report(write_html(out / "report.html", meta, tables, images),
                  write_markdown(out / "report.md", meta, tables, images), images,
                  flat_metrics(means, pairs, corr))
