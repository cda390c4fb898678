"""eval/bench/janus_experiment.py and janus_report.py (issue 16): the settings grid and its bench commands, and
the report's arithmetic on made-up per-run rows (rates over prompts with seeds averaged first, paired
differences against the baseline of the same method, per-shape rates)."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "eval" / "bench"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


experiment, report = load("janus_experiment"), load("janus_report")


def test_settings_cover_view_prompts_weights_and_perp_neg_with_view_prompts():
    grid = dict(experiment.settings([1.5, 3.0], [3.0]))
    assert set(grid) == {"plain-w1.5", "plain-w3", "view-w1.5", "view-w3", "view-perpneg-w3"}
    assert grid["plain-w3"] == ["prompt.view_dependent=false", "guidance.weight=3"]
    assert "guidance.cfg=perp_neg" in grid["view-perpneg-w3"] and "prompt.view_dependent=true" in grid[
        "view-perpneg-w3"]


def test_bench_command_runs_the_oriented_captions_with_the_settings_overrides(tmp_path):
    a = experiment.parse(["--out", str(tmp_path), "--seeds", "0,1", "--set", "steps=10", "--limit", "2",
                          "--eval", "fit=false", "--device", "cpu"])
    cmd = experiment.bench_command(a, "view-w3", ["prompt.view_dependent=true"])
    assert cmd[3:5] == ["bench", experiment.PROMPTS] and cmd[cmd.index("--seeds") + 1] == "0,1"
    sets = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--set"]
    assert sets[-3:] == ["model.device=cpu", "prompt.view_dependent=true", "steps=10"]
    assert cmd[cmd.index("--out") + 1] == str(tmp_path / "view-w3") and "--limit" in cmd and "--eval" in cmd
    assert experiment.PROMPTS.endswith("toy_oriented_captions.txt")


def row(setting: str, prompt: str, seed: int, faces: int, shape: str = "house") -> dict:
    return {"run_dir": f"/x/{setting}/{prompt}/{seed}", "prompt": prompt, "shape": shape, "seed": seed,
            "method": setting.split()[0], "setting": setting, "faces": faces, "janus": float(faces >= 2),
            "one_face": float(faces == 1), "no_face": float(faces == 0), "front_at_0": float(faces == 1),
            "iou_o": 0.5, "feature_iou": 0.5, "psnr_o": 10.0 + faces, "silhouette_iou_o": 0.5, "front": [0.0]}


def test_report_rates_are_means_over_prompts_and_paired_against_the_baseline(tmp_path):
    rows = []
    for p, shape in (("a red house", "house"), ("a red owl", "owl"), ("a red camera", "camera")):
        rows += [row("sjc plain w3", p, 0, 2, shape), row("sjc plain w3", p, 1, 2 if shape == "house" else 1, shape)]
        rows += [row("sjc view w3", p, 0, 1, shape), row("sjc view w3", p, 1, 1, shape)]
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / report.RUNS_FILE).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = report.report([tmp_path], tmp_path / "out", "plain w3", "test")
    summary = {r["setting"]: r for r in data["summary"]}
    # plain: house 2/2, owl 1/2, camera 1/2 Janus -> per-prompt rates 1, 0.5, 0.5 -> mean 2/3
    assert summary["sjc plain w3"]["janus"]["mean"] == pytest.approx(2 / 3)
    assert summary["sjc view w3"]["janus"]["mean"] == 0.0 and summary["sjc view w3"]["one_face"]["mean"] == 1.0
    assert summary["sjc plain w3"]["runs"] == 6 and summary["sjc plain w3"]["prompts"] == 3
    (paired,) = data["paired"]
    assert paired["setting"] == "sjc view w3" and paired["baseline"] == "sjc plain w3"
    assert paired["janus"]["diff"] == pytest.approx(-2 / 3) and paired["janus"]["n"] == 3
    shapes = {r["setting"]: r for r in data["shapes"]}
    assert shapes["sjc plain w3"]["house"] == 1.0 and shapes["sjc plain w3"]["owl"] == 0.5
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| sjc view w3 | 6 |" in md and "Made by: `test`" in md
    assert (tmp_path / "out" / "janus_rate.png").stat().st_size > 0
    assert len((tmp_path / "out" / "janus_runs.csv").read_text().splitlines()) == len(rows) + 1
