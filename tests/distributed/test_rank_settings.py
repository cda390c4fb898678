"""`sjc results --average-over`: settings ranked by their mean over prompts, best per method, failed and
unevaluated trials left out, bad keys named."""
import math

import pandas as pd
import pytest

from sjc_dist.distributed.results import bench_set_for, best_settings, rank_settings
from sjc_dist.errors import ConfigError

SWEPT = ["guidance.kind", "prompt.text", "guidance.weight"]


def frame() -> pd.DataFrame:
    rows = []
    iou = {("paas", 3.0): [0.6, 0.4], ("paas", 7.5): [0.5, 0.8], ("sds", 3.0): [0.3, 0.9], ("sds", 7.5): [0.2, 0.2]}
    for (kind, w), values in iou.items():
        for prompt, v in zip(("a red cube", "a blue torus"), values):
            rows.append({"status": "ok", "param.guidance.kind": kind, "param.prompt.text": prompt,
                         "param.guidance.weight": w, "final.eval/iou": v})
    rows.append({"status": "failed", "param.guidance.kind": "sds", "param.prompt.text": "a red cube",
                 "param.guidance.weight": 7.5, "final.eval/iou": 5.0})
    rows.append({"status": "stopped", "param.guidance.kind": "sds", "param.prompt.text": "a red cube",
                 "param.guidance.weight": 7.5, "final.eval/iou": math.nan})
    return pd.DataFrame(rows)


def test_settings_ranked_by_mean_over_prompts():
    table = rank_settings(frame(), SWEPT, "eval/iou", "max", ["prompt.text"])
    assert list(table.columns) == ["guidance.kind", "guidance.weight", "mean", "min", "n"]
    assert table["mean"].tolist() == pytest.approx([0.65, 0.6, 0.5, 0.2])
    assert table["n"].tolist() == [2, 2, 2, 2]  # the failed and the unevaluated trial are not counted
    last = table.iloc[-1]
    assert (last["guidance.kind"], last["guidance.weight"], last["min"]) == ("sds", 7.5, 0.2)


def test_best_settings_per_method():
    table = rank_settings(frame(), SWEPT, "eval/iou", "max", ["prompt.text"], per="guidance.kind")
    best = best_settings(table, "guidance.kind")
    assert best == {"paas": "--set guidance.weight=7.5", "sds": "--set guidance.weight=3.0"}
    low = rank_settings(frame(), SWEPT, "eval/iou", "min", ["prompt.text"])
    assert best_settings(low) == {"best": "--set guidance.kind=sds --set guidance.weight=7.5"}


def test_best_per_kind_as_bench_flags_that_plan_each_method_at_its_best(tmp_path):
    from sjc_dist.evaluation.benchmark import plan_jobs

    table = rank_settings(frame(), SWEPT, "eval/iou", "max", ["prompt.text"], per="guidance.kind")
    flags = bench_set_for(table)
    assert flags == "--methods sjc,sds --set-for sjc:guidance.weight=7.5 --set-for sds:guidance.weight=3.0"
    words = flags.split()
    jobs = plan_jobs(["a red cube"], words[1].split(","), [0], tmp_path, "empirical", ["steps=5"], words[3::2])
    assert {j.method: j.config["guidance"]["weight"] for j in jobs} == {"sjc": 7.5, "sds": 3.0}


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="seed"):
        rank_settings(frame(), SWEPT, "eval/iou", "max", ["seed"])


def test_per_key_must_not_be_averaged_over():
    with pytest.raises(ConfigError, match="--per"):
        rank_settings(frame(), SWEPT, "eval/iou", "max", ["guidance.kind"], per="guidance.kind")


def test_settings_covering_fewer_prompts_rank_last_and_sets_paste_into_a_shell():
    rows = frame().to_dict("records")
    rows.append({"status": "ok", "param.guidance.kind": "paas", "param.prompt.text": "a red cube",
                 "param.guidance.weight": 50.0, "final.eval/iou": 0.99})  # one prompt only
    table = rank_settings(pd.DataFrame(rows), SWEPT, "eval/iou", "max", ["prompt.text"], per="guidance.kind")
    assert table.iloc[0]["guidance.weight"] == 7.5 and table.iloc[2]["guidance.weight"] == 50.0
    by_weight = rank_settings(frame(), SWEPT, "eval/iou", "max", ["guidance.weight"])
    assert best_settings(by_weight) == {"best": "--set guidance.kind=paas --set 'prompt.text=a blue torus'"}
