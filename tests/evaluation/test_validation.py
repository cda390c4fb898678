"""Signal validation on tiny synthetic sweeps whose answer is known: a signal equal to the truth agrees
perfectly (rho 1, regret 0), its negation worst (rho -1, the largest regret), a per-prompt offset does not matter,
error metrics are oriented, and the random-pick regret is the best minus the mean."""
import math

import numpy as np
import pytest

from sjc_dist.evaluation.validation import best_signal, regrets, validate, view_ceiling, within_rhos
from sjc_dist.evaluation.validation_report import write_validation

PROMPTS = ("a red cube", "a blue torus", "a green cone", "a yellow sphere")


def sweep(seed: int = 0) -> list[dict]:
    """4 prompts x 2 methods x 6 settings; truth iou in [0, 1]; signals derived from it."""
    rng = np.random.default_rng(seed)
    recs = []
    for k, prompt in enumerate(PROMPTS):
        for method in ("paas", "sds"):
            for s in range(6):
                iou = float(rng.uniform(0.2, 0.9))
                recs.append({"prompt": prompt, "method": method, "iou": iou, "depth_error": 1 - iou,
                             "same": iou, "offset": iou + 10 * k, "negated": -iou, "noise": float(rng.normal()),
                             "partial": math.nan if s == 0 else iou})
    return recs


def test_a_signal_equal_to_the_truth_agrees_perfectly_and_its_negation_worst():
    recs = sweep()
    res = {(a.signal, a.truth): a for a in validate(recs, ["same", "offset", "negated", "noise"], ["iou"])}
    assert res["same", "iou"].rho == pytest.approx(1.0) and res["same", "iou"].regret == 0.0
    assert res["offset", "iou"].rho == pytest.approx(1.0)  # a prompt's baseline does not count
    assert res["negated", "iou"].rho == pytest.approx(-1.0)
    worst = np.mean([max(r["iou"] for r in g) - min(r["iou"] for r in g) for g in
                     ([r for r in recs if (r["prompt"], r["method"]) == (p, m)] for p in PROMPTS for m in ("paas", "sds"))])
    assert res["negated", "iou"].regret == pytest.approx(worst)  # it always picks the worst result
    assert res["negated", "iou"].regret > res["noise", "iou"].regret
    assert res["same", "iou"].groups == 4 and res["same", "iou"].selections == 8
    assert res["same", "iou"].rho_low <= 1.0 and -1 < res["noise", "iou"].rho < 1


def test_error_metrics_are_negated_so_higher_rho_is_better():
    res = {a.truth: a for a in validate(sweep(), ["same"], ["iou", "depth_error"])}
    assert res["depth_error"].rho == pytest.approx(1.0) and res["depth_error"].regret == pytest.approx(0.0)


def test_random_regret_is_best_minus_mean_and_picking_the_worst_costs_best_minus_worst():
    recs = [{"prompt": "p", "method": "m", "iou": v, "sig": -v} for v in (0.1, 0.5, 0.9)]
    mine, chance = regrets(recs, "sig", "iou", ("prompt", "method"))
    assert mine == [pytest.approx(0.8)] and chance == [pytest.approx(0.9 - 0.5)]
    assert validate(recs, ["sig"], ["iou"])[0].random_regret == pytest.approx(0.4)


def test_groups_too_small_or_without_values_are_left_out():
    recs = sweep()
    small = [r for r in recs if r["prompt"] == PROMPTS[0]][:2] + [r for r in recs if r["prompt"] != PROMPTS[0]]
    assert len(within_rhos(small, "same", "iou", ("prompt",))) == 3
    res = validate(recs, ["partial", "missing"], ["iou", "psnr"])
    assert [(a.signal, a.truth) for a in res] == [("partial", "iou")]  # no 'missing' signal, no psnr truth
    assert res[0].rho == pytest.approx(1.0)


def test_best_signal_and_the_written_section(tmp_path):
    res = validate(sweep(), ["same", "noise", "negated"], ["iou"])
    assert best_signal(res, "iou", ["noise", "negated"]).signal == "noise"
    files = write_validation(res, tmp_path, "tiny", "sjc results X --validate")
    text = files["markdown"].read_text()
    assert "within-prompt rho" in text and "| same | iou | 1.000 |" in text
    assert files["png"].stat().st_size > 1000 and files["json"].is_file()


def test_the_view_ceiling_takes_the_image_truth_as_signals_against_3d_iou(tmp_path):
    recs = sweep()
    rng = np.random.default_rng(1)
    for r in recs:  # SSIM follows the volume's truth exactly, PSNR not at all; no silhouette IoU in these records
        r["ssim"], r["psnr"] = r["iou"], float(rng.normal())
    ceiling = {a.signal: a for a in view_ceiling(recs)}
    assert set(ceiling) == {"ssim", "psnr"} and {a.truth for a in ceiling.values()} == {"iou"}
    assert ceiling["ssim"].rho == pytest.approx(1.0) and ceiling["ssim"].regret == pytest.approx(0.0)
    assert abs(ceiling["psnr"].rho) < 0.5 and ceiling["psnr"].regret > 0
    files = write_validation(validate(recs, ["same"], ["iou"]), tmp_path, "tiny", ceiling=list(ceiling.values()))
    text = files["markdown"].read_text()
    assert "What the views can tell" in text and "| ssim | iou | 1.000 |" in text
