"""The end of `sjc run`: a finished run folder scored through the evaluator (a field that is the truth scores
IoU ~ 1), every finite score of the EvalRow printed with a label (new fields
too), the scores added to summary.json, and a one-line note where the judge cannot score."""
import dataclasses
import json
import math

import pytest
import torch

from sjc_dist.artifacts import save_field
from sjc_dist.configtools import to_json
from sjc_dist.evaluation import run_summary
from sjc_dist.evaluation.evaluate import EvalConfig, EvalRow
from sjc_dist.evaluation.judges import JudgeNotFoundError
from sjc_dist.evaluation.run_summary import RunScores, row_scores, score_run, summary_lines, write_scores
from sjc_dist.scene.scenes import VoxelScene
from sjc_dist.toyworld.shapes import COLORS, occupancy

CHEAP = EvalConfig(views=4, device="cpu", yaw_step=30.0, truth_elevations=(0.0,), truth_azimuths=2, fit=False,
                   save_views=False)


def truth_folder(folder, make_config, caption="a red cube", shape="cube", n=16):
    """A finished run folder whose field is the true object in its base colour."""
    cfg = make_config(f"field.grid_size={n}", "field.density_shift=0.0", f"prompt.text={caption}",
                      "render.resolution=32", "render.step=0.08")
    scene = VoxelScene(cfg.field, cfg.background, cfg.camera, 3, 32, cfg.render.step)
    with torch.no_grad():
        scene.field.grid[0, 0] = occupancy(shape, n).float() * 200 - 100
        scene.field.grid[0, 1:] = torch.atanh(torch.tensor(COLORS[caption.split()[1]]) * 2 - 1)[:, None, None, None]
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(to_json(cfg))
    save_field(scene, folder / "field.safetensors")
    (folder / "summary.json").write_text(json.dumps({"steps": 6, "resumed_from": 0, "seconds": 3.0,
                                                     "seconds_per_step": 0.5, "device": "cpu"}))
    return folder


def test_a_true_field_scores_high_and_its_scores_reach_summary_json(tmp_path, make_config):
    pytest.importorskip("sjc_dist.toyworld.clip_model")
    run_dir = truth_folder(tmp_path / "cube", make_config)
    result = score_run(run_dir, "toy", CHEAP)
    assert result.note == "" and result.judge == "toy"
    s = result.scores
    assert s["iou"] > 0.9 and 0.0 <= s["toy_r1"] <= 1.0 and "clip_score" in s
    assert "r_precision" not in s  # ranked among its own prompt alone: 1 by construction
    assert not {"seed", "steps", "views", "yaw"} & set(s) and all(math.isfinite(v) for v in s.values())
    summary = write_scores(run_dir, result)
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert summary["eval"]["scores"] == s and summary["steps"] == 6  # added to, not replacing, the summary
    text = " ".join(line.strip() for line in summary_lines(run_dir, summary, result))  # unwrapped
    assert "scores (judge toy): " in text and f"IoU {s['iou']:.3g}" in text
    assert f"toy-CLIP R@1 {s['toy_r1']:.3g}" in text


def test_every_finite_score_field_is_reported_including_new_ones():
    Extended = dataclasses.make_dataclass("Extended", [("sharpness", float, dataclasses.field(default=0.25))],
                                          bases=(EvalRow,))
    row = Extended(run_dir="r", prompt="a red cube", prompt_index=0, method="sjc", seed=3, model="toy", judge="toy",
                   views=8, elevation=15.0, clip_score=0.3, r_precision=1.0, n_prompts=4, iou=0.5)
    scores = row_scores(row)
    assert scores["sharpness"] == 0.25 and scores["iou"] == 0.5 and scores["r_precision"] == 1.0  # 4 prompts
    assert "psnr" not in scores  # NaN: not measured
    assert "sharpness 0.25" in run_summary.score_text(scores)


def test_the_toy_judge_skips_prompts_it_does_not_know(tmp_path, make_config):
    run_dir = truth_folder(tmp_path / "cube", make_config)
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["prompt"]["text"] = "a hamburger"
    (run_dir / "config.json").write_text(json.dumps(cfg))
    result = score_run(run_dir, "toy", CHEAP)
    assert result.scores == {} and "toy-world captions" in result.note
    assert "scores: none (the toy judge" in "\n".join(summary_lines(run_dir, write_scores(run_dir, result), result))


def test_a_missing_judge_is_a_note(tmp_path, make_config, monkeypatch):
    run_dir = truth_folder(tmp_path / "cube", make_config)

    def missing(spec, device="cpu"):
        raise JudgeNotFoundError("toy", "the toy CLIP checkpoint is missing")

    monkeypatch.setattr("sjc_dist.evaluation.judges.load_judge", missing)
    result = score_run(run_dir, "toy", CHEAP)
    assert result.scores == {} and result.note.startswith("not scored: judge 'toy' is not available offline")


def test_a_2d_run_is_not_scored_and_names_its_image(tmp_path):
    (tmp_path / "image.png").write_bytes(b"")
    result = score_run(tmp_path, "toy")
    assert result.scores == {} and "2D run" in result.note
    lines = summary_lines(tmp_path, {"steps": 3, "seconds": 1.0, "seconds_per_step": 0.3, "device": "cpu"}, result)
    assert lines[-1] == f"  look in {tmp_path}: image.png" and lines[0].startswith("sjc: 3 steps in 1 s")


def test_summary_without_scoring_says_where_to_look(tmp_path):
    for name in ("views.png", "turntable.gif", "mesh.ply", "metrics.jsonl"):
        (tmp_path / name).write_bytes(b"")
    lines = summary_lines(tmp_path, {"steps": 8, "resumed_from": 4, "seconds": 2.0, "seconds_per_step": 0.5,
                                     "device": "cpu"}, None)
    assert lines == [f"sjc: 4 steps (resumed at 4) in 2 s (0.5 s/step on cpu) -> {tmp_path}",
                     f"  look in {tmp_path}: views.png, turntable.gif, mesh.ply, metrics.jsonl"]
    assert RunScores("toy", {}).note == ""
