"""The Janus experiment's report (issue 16): every run of the experiment's benchmarks scored by the Janus score
(sjc_dist/evaluation/janus.py) and by the image truth at its oriented yaw, merged with each benchmark's own
results.parquet, then summarised per setting (method x view-dependent prompts x Perp-Neg x guidance weight).

Per run (janus_runs.jsonl in each benchmark folder, written by --collect; runs already scored are skipped):
faces, janus (faces >= 2), front azimuth, whether a single front faces the prompted front (|azimuth| <= 45, the
SJC cameras' "front" label), the oriented yaw and its IoUs, the per-view front agreement, and PSNR / SSIM /
silhouette IoU of 5 x 8 views against the truth turned by that yaw (evaluation/image_truth.py).
Per setting (report.md, report.json): rates and means with 95% percentile-bootstrap CIs over prompts (seeds
averaged first, the benchmark's unit), the paired per-prompt difference from the baseline setting of the same
method (stats.paired_test: bootstrap CI, paired-bootstrap and Wilcoxon p), and the Janus rate per shape.

  python eval/bench/janus_report.py --collect BENCH_DIR [--device cuda]       # one benchmark's runs
  python eval/bench/janus_report.py ROOT --out eval/reports/janus [--baseline "plain w3"]
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sjc_dist.evaluation.image_truth import image_truth
from sjc_dist.evaluation.janus import JanusConfig, applies, janus_scores
from sjc_dist.evaluation.saved import load_saved_run
from sjc_dist.evaluation.stats import bootstrap_ci, paired_test
from sjc_dist.toyworld.shapes import parse

RUNS_FILE = "janus_runs.jsonl"
RATES = {"janus": "Janus rate (faces >= 2)", "one_face": "one front", "no_face": "no front",
         "front_at_0": "one front facing azimuth 0 (+-45)"}
MEANS = {"faces": "mean faces", "iou": "3D IoU (bench, best yaw)", "psnr_o": "PSNR at oriented yaw",
         "silhouette_iou_o": "silhouette IoU at oriented yaw", "feature_iou": "front-feature IoU",
         "color_error": "colour error (lower better)", "judge_fit": "judge-model fit", "clip_score": "toy CLIP score"}


def setting_label(cfg) -> str:
    """'sjc view perp-neg w3': the method and what the experiment varies."""
    method = {"paas": "sjc"}.get(cfg.guidance.kind, cfg.guidance.kind)
    prompts = "view" if cfg.prompt.view_dependent else "plain"
    perp = " perp-neg" if cfg.guidance.cfg == "perp_neg" else ""
    return f"{method} {prompts}{perp} w{cfg.guidance.weight:g}"


def score_run(run_dir: Path, device: str, cfg: JanusConfig) -> dict | None:
    """One run's row, or None if the Janus score does not apply (a symmetric object, a latent field)."""
    run = load_saved_run(run_dir, device)
    prompt, field = run.cfg.prompt.text, run.scene.field
    if not applies(field, prompt):
        return None
    s = janus_scores(field, prompt, run.cfg.camera, cfg)
    img = image_truth(field, prompt, run.cfg.camera, run.scene.cameras.res, run.cfg.render.step, s.yaw)
    front_ok = s.faces == 1 and abs(s.front_azimuth) <= 45
    return {"run_dir": str(run_dir.resolve()), "prompt": prompt, "shape": parse(prompt)[0], "seed": run.cfg.seed,
            "method": run.method, "setting": setting_label(run.cfg), "faces": s.faces, "janus": float(s.janus),
            "one_face": float(s.faces == 1), "no_face": float(s.faces == 0), "front_at_0": float(front_ok),
            "all_around": s.all_around, "front_azimuth": s.front_azimuth, "yaw_o": s.yaw, "iou_o": s.iou,
            "feature_iou": s.feature_iou, "view_agreement": s.view_agreement, "psnr_o": img.psnr,
            "ssim_o": img.ssim, "silhouette_iou_o": img.silhouette_iou, "front": list(s.front)}


def run_dirs(bench_dir: Path) -> list[Path]:
    return sorted(p.parent for p in bench_dir.glob("runs/*/*/seed*/field.safetensors"))


def collect(bench_dir: Path, device: str, cfg: JanusConfig) -> int:
    """Score every run of one benchmark folder not yet in its janus_runs.jsonl; returns the rows written."""
    path = bench_dir / RUNS_FILE
    done = {json.loads(line)["run_dir"] for line in path.read_text().splitlines()} if path.is_file() else set()
    written = 0
    with path.open("a") as f:
        for d in run_dirs(bench_dir):
            if str(d.resolve()) in done:
                continue
            row = score_run(d, device, cfg)
            if row is not None:
                f.write(json.dumps(row) + "\n")
                f.flush()
                written += 1
    return written


def load_table(roots: list[Path]) -> pd.DataFrame:
    """Every janus_runs.jsonl under the roots, with the benchmark's columns (first judge) merged by run_dir."""
    rows, bench = [], []
    for root in roots:
        for path in sorted(root.rglob(RUNS_FILE)):
            rows += [json.loads(line) for line in path.read_text().splitlines()]
            parquet = path.parent / "results.parquet"
            if parquet.is_file():
                t = pd.read_parquet(parquet)
                bench.append(t[t["judge"] == t["judge"].iloc[0]])
    df = pd.DataFrame(rows)
    if bench and len(df):
        keep = ["run_dir", "iou", "color_error", "judge_fit", "clip_score", "psnr", "silhouette_iou"]
        other = pd.concat(bench)
        df = df.merge(other[[c for c in keep if c in other]], on="run_dir", how="left")
    return df


def per_prompt(df: pd.DataFrame, metric: str) -> pd.Series:
    """Mean over seeds of `metric` for each prompt of one setting."""
    return df.groupby("prompt")[metric].mean() if metric in df else pd.Series(dtype=float)


def summary_rows(df: pd.DataFrame, rng: np.random.Generator) -> list[dict]:
    """One row per setting: runs, prompts, and every rate and mean with its CI over prompts."""
    out = []
    for label, g in df.groupby("setting", sort=True):
        row = {"setting": label, "runs": len(g), "prompts": g["prompt"].nunique()}
        for key in [*RATES, *MEANS]:
            ci = bootstrap_ci(per_prompt(g, key).to_numpy(), rng)
            row[key] = {"mean": ci.mean, "low": ci.low, "high": ci.high}
        out.append(row)
    return out


def paired_rows(df: pd.DataFrame, baseline: str, rng: np.random.Generator) -> list[dict]:
    """Each setting minus the baseline setting of the same method, paired over prompts."""
    out = []
    for label, g in df.groupby("setting", sort=True):
        method = label.split()[0]
        base = df[df["setting"] == f"{method} {baseline}"]
        if base.empty or label == f"{method} {baseline}":
            continue
        row = {"setting": label, "baseline": f"{method} {baseline}"}
        for key in ("janus", "front_at_0", "iou", "psnr_o", "judge_fit"):
            a, b = per_prompt(g, key), per_prompt(base, key)
            common = a.index.intersection(b.index)
            r = paired_test(a[common].to_numpy(), b[common].to_numpy(), rng)
            row[key] = {"diff": r.mean_diff, "low": r.low, "high": r.high, "p_boot": r.p_bootstrap,
                        "p_wilcoxon": r.p_wilcoxon, "n": r.n}
        out.append(row)
    return out


def shape_rows(df: pd.DataFrame) -> list[dict]:
    """Janus rate per setting and shape (over runs)."""
    table = df.pivot_table(index="setting", columns="shape", values="janus", aggfunc="mean")
    return [{"setting": s, **{k: float(v) for k, v in r.items()}} for s, r in table.iterrows()]


def fmt(cell: dict, digits: int = 2) -> str:
    if cell is None or not math.isfinite(cell.get("mean", math.nan)):
        return "n/a"
    ci = "" if not math.isfinite(cell["low"]) else f" [{cell['low']:.{digits}f}, {cell['high']:.{digits}f}]"
    return f"{cell['mean']:.{digits}f}{ci}"


def fmt_diff(cell: dict) -> str:
    if not math.isfinite(cell["diff"]):
        return "n/a"
    return f"{cell['diff']:+.2f} [{cell['low']:+.2f}, {cell['high']:+.2f}] p={cell['p_wilcoxon']:.3f}"


def markdown(summary: list[dict], paired: list[dict], shapes: list[dict], command: str, baseline: str) -> str:
    """The report: per-setting table, paired differences, per-shape Janus rates."""
    lines = ["# Janus experiment (issue 16)", "", f"Made by: `{command}`", "",
             ("Unit: the prompt (seeds averaged first); 95% percentile-bootstrap CIs over prompts. Janus score: "
              "sjc_dist/evaluation/janus.py (faces = azimuth runs whose views show >= half the truth's front ink)."),
             "", "## Per setting", ""]
    for title, names in (("Janus score", {"runs": "runs", **RATES}), ("Other metrics", MEANS)):
        keys = [k for k in names if k != "runs"]
        lines += [f"### {title}", "", "| setting | " + " | ".join(names.values()) + " |",
                  "|---|" + "---|" * len(names)]
        lines += [f"| {r['setting']} | " + (f"{r['runs']} | " if "runs" in names else "")
                  + " | ".join(fmt(r[k]) for k in keys) + " |" for r in summary]
        lines.append("")
    lines += [f"## Paired against `<method> {baseline}` (setting - baseline; Wilcoxon p)", "",
              "| setting | Janus rate | front at 0 | 3D IoU | PSNR (oriented yaw) | judge fit |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | " + " | ".join(fmt_diff(r[k]) for k in ("janus", "front_at_0", "iou", "psnr_o",
                                                                           "judge_fit")) + " |" for r in paired]
    cols = sorted({k for r in shapes for k in r if k != "setting"})
    lines += ["", "## Janus rate per shape (over runs)", "", "| setting | " + " | ".join(cols) + " |",
              "|---|" + "---:|" * len(cols)]
    lines += [f"| {r['setting']} | " + " | ".join(f"{r.get(c, math.nan):.2f}" for c in cols) + " |" for r in shapes]
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.4 * len(summary) + 1.5))
    y = np.arange(len(summary))
    m = np.array([r["janus"]["mean"] for r in summary])
    lo, hi = np.array([r["janus"]["low"] for r in summary]), np.array([r["janus"]["high"] for r in summary])
    ax.barh(y, m, xerr=np.nan_to_num(np.stack([m - lo, hi - m])), color="tab:red", alpha=0.7)
    ax.set(yticks=y, yticklabels=[r["setting"] for r in summary], xlabel="Janus rate (faces >= 2), 95% CI",
           xlim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(roots: list[Path], out: Path, baseline: str, command: str) -> dict:
    """Write report.md, report.json, janus_runs.csv and janus_rate.png into `out`."""
    df = load_table(roots)
    if df.empty:
        raise SystemExit(f"no {RUNS_FILE} under {', '.join(map(str, roots))}: run --collect first")
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_rows(df, np.random.default_rng(0))
    paired, shapes = paired_rows(df, baseline, np.random.default_rng(1)), shape_rows(df)
    (out / "report.md").write_text(markdown(summary, paired, shapes, command, baseline))
    data = {"command": command, "baseline": baseline, "summary": summary, "paired": paired, "shapes": shapes}
    (out / "report.json").write_text(json.dumps(data, indent=1))
    df.drop(columns=["front"]).to_csv(out / "janus_runs.csv", index=False)
    plot(summary, out / "janus_rate.png")
    return data


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("roots", nargs="*", type=Path, help="folders holding the benchmarks' janus_runs.jsonl")
    p.add_argument("--collect", type=Path, help="score the runs of this benchmark folder (then exit)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--azimuths", type=int, default=JanusConfig().azimuths)
    p.add_argument("--out", type=Path, default=Path("eval/reports/janus"))
    p.add_argument("--baseline", default="plain w3", help="the setting every other is paired against, per method")
    a = p.parse_args(argv)
    if a.collect:
        n = collect(a.collect, a.device, JanusConfig(azimuths=a.azimuths))
        print(f"{a.collect}: {n} runs scored", flush=True)
        return
    data = report(a.roots, a.out, a.baseline, "python eval/bench/janus_report.py " + " ".join(argv or sys.argv[1:]))
    print((a.out / "report.md").read_text())
    print(f"{len(data['summary'])} settings -> {a.out}")


if __name__ == "__main__":
    main()
