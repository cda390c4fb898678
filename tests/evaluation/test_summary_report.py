"""The report's numbers and files from hand-made rows (no models): seeds are averaged per prompt before the
bootstrap, the paired comparison finds the better method, truth metrics are judge-independent, Spearman
tracks agreement, best/worst prompts are ranked, and the HTML/Markdown carry the same tables."""
import math

import numpy as np
import pytest
from PIL import Image

from sjc_dist.evaluation.report import ReportMeta, build_report
from sjc_dist.evaluation.summary import (MetricKey, correlations, method_means, metric_keys, paired_comparisons,
                                         per_prompt, ranked_prompts)


def make_rows(tmp_path=None, n_prompts=8, seeds=(0, 1), judges=("j1", "j2")) -> list[dict]:
    """sjc beats sds by 0.1 CLIP score on every prompt; IoU rises with CLIP score; two judges."""
    rows = []
    for i in range(n_prompts):
        for method, bonus in (("sjc", 0.1), ("sds", 0.0)):
            for seed in seeds:
                png = ""
                if tmp_path is not None:
                    png = str(tmp_path / f"v{i}{method}{seed}.png")
                    Image.new("RGB", (64, 16), (10 * i, 100, 200)).save(png)
                base = 0.2 + 0.02 * i + bonus + 0.001 * seed
                for k, judge in enumerate(judges):
                    rows.append({"prompt": f"prompt {i}", "prompt_index": i, "method": method, "seed": seed,
                                 "judge": judge, "clip_score": base + 0.05 * k, "r_precision": float(i % 2),
                                 "iou": base, "iou_centred": base, "color_error": 0.3 - base / 2,
                                 "color_error_floor": 0.1, "toy_r1": math.nan, "views_png": png, "warning": ""})
    return rows


def test_metric_keys_skip_empty_metrics_and_add_truth_once():
    keys = metric_keys(make_rows())
    assert MetricKey("j1", "clip_score") in keys and MetricKey("j2", "r_precision") in keys
    assert MetricKey("truth", "iou") in keys and MetricKey("truth", "color_error") in keys
    assert MetricKey("truth", "toy_r1") not in keys  # all NaN


def test_seeds_are_averaged_per_prompt_first():
    values = per_prompt(make_rows(), MetricKey("j1", "clip_score"), "sds")
    assert len(values) == 8 and values["prompt 0"] == pytest.approx(0.2005)


def test_method_means_and_intervals():
    means = method_means(make_rows(), np.random.default_rng(0))
    rec = next(m for m in means if (m["judge"], m["metric"], m["method"]) == ("j1", "clip_score", "sjc"))
    assert rec["mean"] == pytest.approx(0.2005 + 0.1 + 0.07) and rec["low"] < rec["mean"] < rec["high"]
    assert rec["prompts"] == 8 and rec["objects"] == 16


def test_paired_comparison_finds_the_better_method():
    pairs = paired_comparisons(make_rows(), np.random.default_rng(0))
    clip = next(p for p in pairs if (p["judge"], p["metric"]) == ("j1", "clip_score"))
    assert clip["a"] == "sjc" and clip["b"] == "sds" and clip["mean_diff"] == pytest.approx(0.1)
    assert clip["wins"] == 8 and clip["p_wilcoxon"] < 0.01 and clip["better"] == "sjc"
    colour = next(p for p in pairs if p["metric"] == "color_error")
    assert colour["mean_diff"] < 0 and colour["better"] == "sjc"  # lower colour error is better
    assert colour["wins"] == 8 and colour["losses"] == 0
    rp = next(p for p in pairs if p["metric"] == "r_precision")
    assert rp["ties"] == 8 and rp["better"] == "-"


def test_spearman_between_clip_and_iou():
    corr = correlations(make_rows())
    overall = next(c for c in corr if (c["judge"], c["method"]) == ("j1", "all"))
    assert overall["rho"] == pytest.approx(1.0) and overall["objects"] == 32
    assert overall["rho_within"] == pytest.approx(1.0)


def test_within_prompt_correlation_removes_prompt_baselines():
    """Across prompts CLIP and IoU disagree (prompt offsets), within each prompt they agree perfectly."""
    rows = []
    for i in range(4):
        for k in range(3):
            rows.append({"prompt": f"p{i}", "prompt_index": i, "method": "sjc", "seed": k, "judge": "j",
                         "clip_score": -i + 0.1 * k**2 * (i + 1), "iou": i + 0.01 * k**2 * (i + 1)})
    c = next(c for c in correlations(rows) if c["method"] == "all")
    assert c["rho"] < -0.5 and c["rho_within"] == pytest.approx(1.0)


def test_ranked_prompts():
    best, worst = ranked_prompts(make_rows(), MetricKey("j1", "clip_score"), "sjc", 3)
    assert best == ["prompt 7", "prompt 6", "prompt 5"] and worst == ["prompt 0", "prompt 1", "prompt 2"]
    best, worst = ranked_prompts(make_rows(n_prompts=3), MetricKey("j1", "clip_score"), "sjc", 3)
    assert len(best) == len(worst) == 1  # never the same prompt in both lists


def test_report_files(tmp_path):
    rows = make_rows(tmp_path)
    meta = ReportMeta(command="sjc bench toy --seeds 0,1", settings={"preset": "toy"}, warnings=["careful"])
    report = build_report(rows, tmp_path / "report", meta)
    page = report.html.read_text()
    md = report.markdown.read_text()
    for title in ("Per-method means", "Paired per-prompt comparison", "Spearman rho", "Per prompt: clip_score"):
        assert title in page and title in md
    assert "warning: careful" in page and "sjc bench toy --seeds 0,1" in md
    names = {p.name for p in report.images}
    assert {"means.png", "paired_sjc_sds.png", "clip_vs_iou_j1.png", "best_sjc.png", "worst_sds.png"} <= names
    for p in report.images:
        assert Image.open(p).size[0] > 100 and f"src='{p.name}'" in page and f"]({p.name})" in md
    assert report.metrics["j1/clip_score/sjc-sds/mean_diff"] == pytest.approx(0.1)
    assert report.metrics["j1/spearman_clip_iou/all"] == pytest.approx(1.0)
    assert "0.100" in md  # the colour floor note


def test_empty_report_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no evaluated objects"):
        build_report([], tmp_path, ReportMeta())


def test_every_verdict_states_the_agreement_of_its_signal(tmp_path):
    """CLIP tracks IoU within each prompt here (rho 1), r_precision is flat (no agreement to measure), the truth
    rows say 'truth'; without any truth the report says the agreement is not measured."""
    report = build_report(make_rows(tmp_path), tmp_path / "report", ReportMeta())
    md = report.markdown.read_text()
    assert "agreement with iou" in md
    line = next(ln for ln in md.splitlines() if ln.startswith("| j1 | clip_score | sjc - sds"))
    assert line.rstrip(" |").endswith("1.000 [1.000, 1.000]")
    assert next(ln for ln in md.splitlines() if ln.startswith("| truth | iou | sjc - sds")).rstrip(" |").endswith("truth")
    assert "Do the ranking signals agree with the truth?" in md and "validation.png" in md
    blind = [{k: (math.nan if k in ("iou", "iou_centred", "color_error") else v) for k, v in r.items()}
             for r in make_rows()]
    md = build_report(blind, tmp_path / "blind", ReportMeta()).markdown.read_text()
    assert "not measured (no truth)" in md and "Do the ranking signals agree" not in md
