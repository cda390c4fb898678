"""Evaluation of saved runs, separate from generation: a run folder built from the truth scores IoU ~ 1; real
(tiny) runs, pixel and latent, are re-rendered and scored by several judges; prompt lists are checked."""
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from sjc_dist.artifacts import save_field
from sjc_dist.configtools import to_json
from sjc_dist.errors import ConfigError
from sjc_dist.evaluation.evaluate import VIEWS_FILE, EvalConfig, evaluate_runs
from sjc_dist.evaluation.saved import load_saved_run, native_size
from sjc_dist.jobs import run_job
from sjc_dist.scene.scenes import VoxelScene
from sjc_dist.toyworld.shapes import COLORS, occupancy

EVAL = EvalConfig(views=4, device="cpu", yaw_step=15.0)


def truth_run(folder, make_config, caption="a red cube", shape="cube", n=24):
    """A run folder whose field is the true object in its true base colour (as if SJC were perfect)."""
    cfg = make_config(f"field.grid_size={n}", "field.density_shift=0.0", f"prompt.text={caption}",
                      "render.resolution=32", "render.step=0.05")
    scene = VoxelScene(cfg.field, cfg.background, cfg.camera, 3, 32, cfg.render.step)
    color = torch.tensor(COLORS[caption.split()[1]])
    with torch.no_grad():
        scene.field.grid[0, 0] = occupancy(shape, n).float() * 200 - 100
        scene.field.grid[0, 1:] = torch.atanh(color * 2 - 1)[:, None, None, None]
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(to_json(cfg))
    save_field(scene, folder / "field.safetensors")
    return folder


def test_saved_run_round_trip(tmp_path, make_config):
    run = load_saved_run(truth_run(tmp_path / "cube", make_config))
    assert run.method == "sjc" and not run.is_latent
    assert run.scene.field.cfg.grid_size == 24 and native_size(run.cfg) == 32


def test_truth_run_scores_perfectly_on_the_truth(tmp_path, make_config, tiny_judge):
    cube = truth_run(tmp_path / "cube", make_config)
    torus = truth_run(tmp_path / "torus", make_config, "a blue torus", "torus")
    rows = evaluate_runs([cube, torus], [tiny_judge], None, EVAL)
    assert [r.prompt for r in rows] == ["a red cube", "a blue torus"]
    for r in rows:
        assert r.iou > 0.95 and r.iou_centred > 0.95
        assert r.color_error == pytest.approx(0.0, abs=0.02)
        assert r.n_prompts == 2 and r.views == 4 and r.judge == tiny_judge.label
        assert -1 <= r.clip_score <= 1 and r.r_precision in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert math.isnan(r.toy_r1)  # no toy judge given
    views = Image.open(cube / VIEWS_FILE)
    assert views.size[0] == 4 * views.size[1]  # 4 views in one row
    # the cube is red on a white background: the views' centre is red
    arr = torch.tensor(np.array(views.convert("RGB")), dtype=torch.float32)
    centre = arr[views.size[1] // 2, views.size[1] // 2]
    assert centre[0] > 150 and centre[1] < 100


def test_a_new_judge_rescores_old_runs(tmp_path, make_config, tiny_judge, other_judge):
    """Two judges: one row per run per judge; the ground truth does not depend on the judge, CLIP scores do."""
    cube = truth_run(tmp_path / "cube", make_config)
    rows = evaluate_runs([cube], [tiny_judge, other_judge], ["a red cube", "a blue torus"], EVAL)
    assert [r.judge for r in rows] == [tiny_judge.label, other_judge.label]
    assert rows[0].iou == rows[1].iou and rows[0].clip_score != rows[1].clip_score


def test_toy_clip_accuracy_is_r_at_1_over_the_25_captions(tmp_path, make_config, tiny_judge, other_judge):
    """Whatever CLIP plays the toy judge, toy_r1 is R@1 of the true caption among all the world's captions."""
    from sjc_dist.evaluation.clip_score import r_precision
    from sjc_dist.evaluation.saved import PixelDecoder, render_saved
    from sjc_dist.toyworld.shapes import captions

    cube = truth_run(tmp_path / "cube", make_config)
    row = evaluate_runs([cube], [tiny_judge], None, EVAL, toy_judge=other_judge)[0]
    views = render_saved(load_saved_run(cube), PixelDecoder(), 4, 15.0)
    expected = r_precision(other_judge.embed_images(views)[None], other_judge.embed_texts(captions()),
                           torch.tensor([captions().index("a red cube")]))
    assert row.toy_r1 == pytest.approx(expected)


def test_prompts_must_contain_every_runs_prompt(tmp_path, make_config, tiny_judge):
    cube = truth_run(tmp_path / "cube", make_config)
    with pytest.raises(ConfigError, match="prompt"):
        evaluate_runs([cube], [tiny_judge], ["a blue sphere"], EVAL)
    rows = evaluate_runs([cube], [tiny_judge], ["a blue sphere", "a red cube", "a green cone"], EVAL)
    assert rows[0].prompt_index == 1 and rows[0].n_prompts == 3


def test_not_a_run_folder_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="run_dir"):
        load_saved_run(tmp_path)


def test_real_pixel_and_latent_runs(tmp_path, make_config, tiny_pipeline, tiny_judge):
    """Runs written by run_job (the empirical pixel model; the tiny SD-shaped latent model, decoded by its VAE)."""
    pixel = run_job(make_config(f"output.dir={tmp_path / 'pixel'}"))
    latent = run_job(make_config(f"output.dir={tmp_path / 'latent'}", f"model.name={tiny_pipeline}",
                                 "field.feature_activation=none"))
    assert load_saved_run(latent).is_latent
    rows = evaluate_runs([pixel, latent], [tiny_judge], None, EVAL)
    assert [r.method for r in rows] == ["sjc", "sjc"]
    assert rows[0].steps == 6 and rows[1].model == str(tiny_pipeline)
    assert math.isfinite(rows[0].iou) and 0 <= rows[0].iou <= 1  # a toy caption: ground truth is computed
    latent_views = Image.open(latent / VIEWS_FILE)
    assert latent_views.size == (4 * 64 * 1, 64)  # 8x8 latents decode to 64x64 RGB
    summary = json.loads((pixel / "summary.json").read_text())
    assert rows[0].seconds == pytest.approx(summary["seconds"])
