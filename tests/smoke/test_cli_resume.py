"""`sjc run --resume` in the user's terms: a missing folder, a folder without config.json or checkpoint.pt, and a
finished run are each one line, with nothing written; a resume that diverges keeps the last good checkpoint and
config.json, so the next resume continues; and the end of a run prints its scores and where to look."""
import json

import pytest

from sjc_dist.cli import main

TINY = ["--config", "empirical", "--prompt", "a red cube", "--device", "cpu", "--set", "field.grid_size=8",
        "--set", "render.step=0.25", "--set", "output.eval_views=2", "--set", "output.turntable_frames=0",
        "--set", "output.progress=false", "--set", "output.log_every=1", "--set", "output.checkpoint_every=1"]


@pytest.fixture(autouse=True)
def session_model(monkeypatch, empirical_model):
    """The session's empirical model instead of a fresh load per command (the commands are what is tested)."""
    monkeypatch.setattr("sjc_dist.jobs.load_model", lambda *args, **kwargs: empirical_model)


def snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def finished(tmp_path, capsys):
    """A finished 2-step run folder (scoring off)."""
    out = tmp_path / "run"
    assert main(["run", *TINY, "--steps", "2", "--out", str(out), "--no-eval"]) == 0
    capsys.readouterr()
    return out


def test_resume_of_a_missing_folder(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err == f"sjc: error: cannot resume '{tmp_path / 'nope'}': there is no such folder\n"
    assert not (tmp_path / "nope").exists()


def test_resume_of_a_folder_without_config_or_checkpoint(finished, capsys):
    (finished / "checkpoint.pt").unlink()
    before = snapshot(finished)
    assert main(["run", "--resume", str(finished)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sjc: error: cannot resume '{finished}': it has no checkpoint.pt")
    assert "without --resume" in err
    assert snapshot(finished) == before  # nothing overwritten
    (finished / "config.json").unlink()
    assert main(["run", "--resume", str(finished)]) == 2
    assert "it has no config.json, so it is not a run folder" in capsys.readouterr().err


def test_resume_of_a_finished_run_says_so_and_writes_nothing(finished, capsys):
    before = snapshot(finished)
    assert main(["run", "--resume", str(finished)]) == 0
    out = capsys.readouterr()
    assert out.err.startswith(f"sjc: run {finished} is finished (2 of 2 steps)") and "--steps N" in out.err
    assert out.out == "" and snapshot(finished) == before


def test_a_diverged_resume_keeps_the_last_good_config_and_checkpoint(finished, capsys):
    good_config = (finished / "config.json").read_text()
    bad = ["--set", "emptiness.lambda1=1e39", "--set", "emptiness.lambda2=1e39"]  # an Inf loss at the next step
    assert main(["run", "--resume", str(finished), "--steps", "4", *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sjc: error: run diverged at step 2: the loss is NaN or Inf") and "config.json kept" in err
    assert (finished / "config.json").read_text() == good_config
    assert main(["run", "--resume", str(finished), "--steps", "4", "--no-eval"]) == 0  # the plain resume continues
    assert json.loads((finished / "summary.json").read_text())["steps"] == 4
    assert json.loads((finished / "config.json").read_text())["emptiness"]["lambda1"] != 1e39


def test_the_end_of_a_run_prints_its_scores_and_where_to_look(tmp_path, capsys, monkeypatch):
    from functools import partial

    from sjc_dist.evaluation import evaluate

    pytest.importorskip("sjc_dist.toyworld.clip_model")
    monkeypatch.setattr(evaluate, "EvalConfig", partial(evaluate.EvalConfig, views=2, yaw_step=30.0,
                                                        truth_elevations=(0.0,), truth_azimuths=2, fit=False))
    out = tmp_path / "run"
    assert main(["run", *TINY, "--steps", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("sjc: 2 steps in ") and lines[0].endswith(f"s/step on cpu) -> {out}")
    scores_text = " ".join(line.strip() for line in lines[1:-2])  # wrapped to the terminal's width
    assert lines[1].startswith("  scores (judge toy): ") and " IoU " in scores_text and " CLIP " in scores_text
    assert f"  look in {out}: views.png, " in lines[-2] and "metrics.jsonl" in lines[-2]
    assert json.loads(lines[-1]) == {"run_dir": str(out)}
    scores = json.loads((out / "summary.json").read_text())["eval"]["scores"]
    assert {"iou", "clip_score", "toy_r1"} <= set(scores)
