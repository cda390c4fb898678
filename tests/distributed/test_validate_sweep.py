"""`sjc results SWEEP --validate`: a tiny synthetic results table whose answer is known (one signal tracks the
truth, one is its opposite, one is noise) goes through the Parquet writer, the record builder and the CLI."""
import json

import numpy as np
import pytest

from sjc_dist.cli import main
from sjc_dist.distributed.results import ResultRow, write_table
from sjc_dist.distributed.validate import records, validate_sweep

PROMPTS = ("a red cube", "a blue torus", "a green cone", "a yellow sphere")


def result_rows(seed: int = 0) -> list[ResultRow]:
    rng = np.random.default_rng(seed)
    rows = []
    for prompt in PROMPTS:
        for kind in ("paas", "sds"):
            for w in (1.5, 3.0, 10.0):
                iou = float(rng.uniform(0.2, 0.9))
                final = {"eval/iou": iou, "eval/silhouette_iou": iou ** 0.5, "eval/fit": -1 + iou,
                         "eval/clip_score": -iou, "eval/judge_fit": float(rng.normal()), "score/fit": iou}
                rows.append(ResultRow(f"t{len(rows)}", "ok", "", prompt, 0, "toy", 800, 800, 1.0, 1.0, 0.0,
                                      "score", iou, iou, 800, "", {"prompt.text": prompt, "guidance.kind": kind,
                                                                  "guidance.weight": w}, final, {}))
    rows.append(ResultRow("failed", "failed", "boom", PROMPTS[0], 0, "toy", 2, 800, 1.0, 1.0, 0.0, "score", 0, 0, 0,
                          "", {"prompt.text": PROMPTS[0], "guidance.kind": "paas"}, {"eval/iou": 5.0}, {}))
    return rows


@pytest.fixture
def sweep_dir(tmp_path):
    write_table(result_rows(), tmp_path / "results.parquet", ["guidance.kind", "prompt.text", "guidance.weight"],
                "eval/fit", "max")
    return tmp_path


def test_records_keep_finished_trials_with_truth(sweep_dir):
    from sjc_dist.distributed.results import read_table

    frame, _ = read_table(sweep_dir)
    recs = records(frame)
    assert len(recs) == 24 and {r["method"] for r in recs} == {"paas", "sds"}
    assert all(r["iou"] <= 1 for r in recs)  # the failed trial's bogus 5.0 is not among them


def test_validation_finds_the_signal_that_tracks_the_truth(sweep_dir):
    from sjc_dist.distributed.results import read_table

    frame, _ = read_table(sweep_dir)
    results, files = validate_sweep(frame, sweep_dir)
    by = {(a.signal, a.truth): a for a in results}
    assert by["fit", "iou"].rho == pytest.approx(1.0) and by["fit", "iou"].regret == 0.0
    assert by["score/fit", "silhouette_iou"].rho == pytest.approx(1.0)
    assert by["clip_score", "iou"].rho == pytest.approx(-1.0)
    assert -1 < by["judge_fit", "iou"].rho < 1
    saved = json.loads(files["json"].read_text())
    ceiling = [a for a in saved[len(results):] if a["truth"] == "iou"]  # the image truth as a signal, after them
    assert [a["signal"] for a in ceiling] == ["silhouette_iou"] and len(saved) == len(results) + 1
    assert "What the views can tell" in files["markdown"].read_text() and files["png"].is_file()


def test_the_cli_prints_the_table_and_where_it_wrote(sweep_dir, capsys):
    assert main(["results", str(sweep_dir), "--validate"]) == 0
    out = capsys.readouterr().out
    assert "ranking signals against the truth" in out and "within-prompt rho" in out
    assert f"validation: {sweep_dir / 'validation.md'}" in out
