"""Ranking signals: the CLIP distractor signals on hand-built embeddings, the fixed distractor sets, the denoiser
fit (a perfect result fits best, an empty one worst, a shifted one between), and their place in evaluate_runs."""
import math

import pytest
import torch

from sjc_dist.evaluation.evaluate import EvalConfig, evaluate_runs
from sjc_dist.evaluation.fit import FIT_SIGMAS, denoiser_fit, fit_renders
from sjc_dist.evaluation.saved import ModelCache, load_saved_run
from sjc_dist.evaluation.signals import clip_signals, distractor_prompts
from sjc_dist.toyworld.shapes import captions

from test_evaluate import truth_run

E = torch.eye(4)


def test_views_on_the_prompt_score_best():
    sig = clip_signals(E[[0, 0]], E[0], E[1:], logit_scale=100.0)
    assert sig.clip_worst == pytest.approx(1.0) and sig.rp_distractors == 1.0 and sig.clip_prob > 0.99


def test_one_bad_view_sets_the_worst_and_halves_the_r_precision():
    views = torch.stack([E[0], E[1]])  # the second view looks exactly like distractor 1
    sig = clip_signals(views, E[0], E[1:], logit_scale=100.0)
    assert sig.clip_worst == pytest.approx(0.0, abs=1e-6)
    assert sig.rp_distractors == 0.5
    assert sig.clip_prob == pytest.approx(0.5, abs=1e-3)


def test_a_tie_with_a_distractor_is_not_a_retrieval_and_temperature_matters():
    view = (E[0] + E[1])[None]
    sig = clip_signals(view, E[0], E[1:], logit_scale=10.0)
    assert sig.rp_distractors == 0.0
    assert clip_signals(view, E[0], E[1:], 1.0).clip_prob > sig.clip_prob * 0 and sig.clip_prob < 0.5


def test_distractor_sets_are_fixed_and_never_hold_the_prompt():
    toy = distractor_prompts("auto", "a red cube")
    assert "a red cube" not in toy and set(toy) == set(captions()) - {"a red cube"}
    coco = distractor_prompts("auto", "a hamburger")
    assert len(coco) >= 150 and "a hamburger" not in coco
    assert distractor_prompts("toy", "a hamburger") == captions()


def test_fit_orders_a_perfect_a_shifted_and_an_empty_result(tmp_path, make_config):
    """Under the exact (empirical) denoiser of the cube's renders, the true cube denoises back to itself."""
    perfect = load_saved_run(truth_run(tmp_path / "cube", make_config))
    shifted = load_saved_run(truth_run(tmp_path / "shifted", make_config))
    empty = load_saved_run(truth_run(tmp_path / "empty", make_config))
    with torch.no_grad():
        shifted.scene.field.grid.copy_(torch.roll(shifted.scene.field.grid, 6, dims=-1))
        empty.scene.field.grid[0, 0] = -100.0
    model = ModelCache(torch.device("cpu")).guiding(perfect)
    fits = []
    for run in (perfect, shifted, empty):
        y, _ = fit_renders(run.scene, run.cfg.camera, 4)
        fits.append(denoiser_fit(model, y, ["a red cube"] * 4))
    assert fits[0] > fits[1] > fits[2]
    y, _ = fit_renders(perfect.scene, perfect.cfg.camera, 4)
    assert denoiser_fit(model, y, ["a red cube"] * 4) == fits[0]  # fixed noise: the same value every time
    assert denoiser_fit(model, y, ["a red cube"] * 4, seed=1) != fits[0]
    assert len(FIT_SIGMAS) == 3


def test_fit_calls_the_denoiser_as_occasional_calls():
    """A fit is a score, not a round: its denoiser call runs under fast.occasional() (never compiles a size)."""
    from types import SimpleNamespace

    from sjc_dist.diffusion import fast

    seen = []

    class Den:
        channels = 3

        def __call__(self, x, sigma, cond):
            seen.append((fast._OCCASIONAL.get(), x.shape[0]))
            return torch.zeros_like(x)  # y = 0: a perfect fit

    model = SimpleNamespace(denoiser=Den(), text=None, name="stub")
    assert denoiser_fit(model, torch.zeros(2, 3, 4, 4), ["a red cube"] * 2) == 0.0
    assert seen == [(True, 2 * len(FIT_SIGMAS))] and fast._OCCASIONAL.get() is False


def test_evaluate_runs_reports_every_signal_and_truth(tmp_path, make_config, tiny_judge):
    cube = truth_run(tmp_path / "cube", make_config)
    cfg = EvalConfig(views=4, device="cpu", yaw_step=15.0, truth_elevations=(0.0, 30.0), truth_azimuths=4,
                     fit_views=4, judge_model="toy")
    row = evaluate_runs([cube], [tiny_judge], None, cfg)[0]
    for name in ("clip_worst", "rp_distractors", "clip_prob", "fit", "judge_fit", "psnr", "ssim",
                 "silhouette_iou", "depth_error"):
        assert math.isfinite(getattr(row, name)), name
    assert row.silhouette_iou > 0.9 and row.psnr > 12  # the truth shape (flat red: the truth is shaded)
    assert row.clip_worst <= row.clip_score and 0 <= row.clip_prob <= 1
    auto = evaluate_runs([cube], [tiny_judge], None, EvalConfig(views=4, device="cpu", yaw_step=15.0,
                                                                fit=False))[0]
    assert math.isnan(auto.fit) and math.isnan(auto.judge_fit)  # fit off; and no judge model for 'empirical'


@pytest.mark.slow  # three runs through the whole evaluation CLI (about 15 s on an idle 2-core machine)
def test_sjc_evaluate_writes_the_validation_section_where_truth_exists(tmp_path, make_config, tiny_clip_dir, capsys):
    """Three results of one prompt (true, drifted, empty): silhouette IoU orders them, and the section says so."""
    import json

    from sjc_dist.cli import main

    folders = [truth_run(tmp_path / name, make_config) for name in ("a", "b", "c")]
    for folder, shift in zip(folders[1:], (5, None)):
        run = load_saved_run(folder)
        with torch.no_grad():
            if shift is None:
                run.scene.field.grid[0, 0] = -100.0
            else:
                run.scene.field.grid.copy_(torch.roll(run.scene.field.grid, shift, dims=-1))
        from sjc_dist.artifacts import save_field

        save_field(run.scene, folder / "field.safetensors")
    args = ["evaluate", str(tmp_path), "--executor", "local", "--judges", f"local-dir:{tiny_clip_dir}",
            "--eval", "views=2", "--eval", "fit=false", "--eval", "truth_azimuths=2", "--eval",
            "truth_elevations=[0.0]", "--eval", "yaw_step=90", "--eval", "device=cpu", "--out", str(tmp_path / "ev")]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    text = (tmp_path / "ev" / "validation.md").read_text()
    assert out["validation"].endswith("validation.md") and "within-prompt rho" in text
    res = json.loads((tmp_path / "ev" / "validation.json").read_text())
    sil = next(a for a in res if a["truth"] == "silhouette_iou" and a["signal"].endswith("/clip_score"))
    assert sil["groups"] == 1 and -1 <= sil["rho"] <= 1
