"""The README's main job through the CLI, shrunk: `sjc sweep tune_configs/toy_quick.yaml` (the real toy model,
10 steps at 12^3), `sjc sweep --resume` of the finished folder, `sjc results`, and `--dry-run`; the trials
differ from the first report on (what ASHA compares is real)."""
import json
from pathlib import Path

import pandas as pd
import pytest

from sjc_dist.cli import main
from sjc_dist.errors import ModelNotFoundError

TOY_QUICK = str(Path(__file__).resolve().parents[2] / "tune_configs" / "toy_quick.yaml")
SHRINK = ["--set", "steps=10", "--set", "field.grid_size=12", "--set", "render.step=0.2",
          "--set", "output.turntable_frames=2", "--set", "output.eval_views=2",
          "--sweep-set", "scheduler.grace_period=5", "--sweep-set", "report_every=5"]


@pytest.fixture
def toy_weights():
    from sjc_dist.diffusion.load import model_path

    try:
        model_path("toy")
    except ModelNotFoundError as err:
        pytest.skip(f"toy weights not shipped in this checkout: {err}")


def last_json(text: str) -> dict:
    return json.loads([ln for ln in text.strip().splitlines() if ln.startswith("{")][-1])


def test_toy_quick_through_the_cli(ray_session, toy_weights, tmp_path, capsys):
    out = tmp_path / "toy_quick"
    assert main(["sweep", TOY_QUICK, *SHRINK, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ranked by" in printed and "1 model load(s)" in printed and "sweep toy_quick: 4 trials (" in printed
    info = last_json(printed)
    frame = pd.read_parquet(info["results"])
    assert len(frame) == 4 and (frame["model"] == "toy").all()
    ok = frame["status"] == "ok"
    assert ok.any() and set(frame["status"]) <= {"ok", "stopped"}  # ASHA may stop some at step 5
    assert (frame.loc[ok, "steps"] == 10).all() and frame["final.score"].between(0, 1).all()
    assert frame.loc[ok, "final.eval/iou"].notna().all()  # finished trials were evaluated (ground truth)
    assert sorted(set(frame["param.guidance.weight"])) == [3.0, 7.5]
    # both swept knobs act from step 1 (issue 17): no two trials tie at any report, the first included
    losses = [[json.loads(ln)["loss"] for ln in (Path(d) / "metrics.jsonl").read_text().splitlines()]
              for d in frame["run_dir"]]
    assert all(len({trial[i] for trial in losses}) == 4 for i in range(min(map(len, losses)))), losses
    assert (out / "ranking.txt").read_text().strip() in printed and "its views:" in printed
    assert f"mlflow ui --backend-store-uri sqlite:///{out}/mlflow.db" in printed and info["runs_url"] in printed
    first = json.loads((out / "summary.json").read_text())
    # resuming a finished sweep changes nothing and says so in the same table; no best/* metric is logged twice
    # and summary.json keeps the first session's counts (issue 15 item 7)
    assert main(["sweep", "--resume", str(out)]) == 0
    info = last_json(capsys.readouterr().out)
    again = pd.read_parquet(info["results"])
    pairs = lambda f: sorted(zip(f["trial_id"], f["status"], f["steps"]))
    assert pairs(again) == pairs(frame)
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["sessions"]) == 2 and summary["seconds"] > first["seconds"]
    assert summary["model_loads"] == first["model_loads"] == 1 and summary["scene_steps"] == first["scene_steps"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(info["mlflow_uri"])
    for key in client.get_run(info["parent_run_id"]).data.metrics:
        assert len(client.get_metric_history(info["parent_run_id"], key)) == 1, key
    assert main(["results", str(out), "--top", "2"]) == 0
    assert "4 trials ranked by" in capsys.readouterr().out
    assert len(list((out / "plots").glob("*.png"))) == 2


def test_dry_run_lists_validated_trials(capsys):
    assert main(["sweep", TOY_QUICK, "--set", "model.name=empirical", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "4 trial(s), every trial config validated" in text and text.count('"guidance.weight"') == 4
