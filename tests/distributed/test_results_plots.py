"""`sjc results` plots (issue 17): stopped trials show (a second panel of the intermediate score when they lack
the rank metric), the legend names each status with its count, and a key whose values span more than 10x gets a
log axis."""
import math

import matplotlib
import pandas as pd

from sjc_dist.distributed.results import metric_figure, plot_metric

matplotlib.use("Agg")


def frame() -> pd.DataFrame:
    rows = []
    for i, (weight, lam, status) in enumerate([(3.0, 2000.0, "ok"), (7.5, 32000.0, "ok"), (3.0, 32000.0, "stopped"),
                                               (7.5, 2000.0, "stopped")]):
        rows.append({"trial_id": f"t{i}", "status": status, "metric": "score", "param.guidance.weight": weight,
                     "param.emptiness.lambda2": lam, "best_metric": 0.1 * (i + 1),
                     "final.eval/iou": 0.5 + i if status == "ok" else math.nan})
    return pd.DataFrame(rows)


def legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_stopped_trials_are_plotted_and_named():
    fig = metric_figure(frame(), "guidance.weight", "eval/iou")
    top, bottom = fig.axes
    assert legend(top) == ["ok (2)"] and top.get_ylabel() == "eval/iou"
    assert legend(bottom) == ["ok (2)", "stopped (2)"] and bottom.get_ylabel() == "best score"
    assert top.get_xscale() == "linear"  # 3 to 7.5: less than 10x


def test_values_spanning_a_decade_get_a_log_axis(tmp_path):
    fig = metric_figure(frame(), "emptiness.lambda2", "eval/iou")
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    paths = plot_metric(frame(), ["guidance.weight", "emptiness.lambda2"], "eval/iou", tmp_path)
    assert [p.name for p in paths] == ["eval_iou_vs_guidance.weight.png", "eval_iou_vs_emptiness.lambda2.png"]


def test_one_panel_when_every_trial_has_the_metric():
    ok = frame().assign(status="ok", **{"final.eval/iou": [0.1, 0.2, 0.3, 0.4]})
    assert len(metric_figure(ok, "guidance.weight", "eval/iou").axes) == 1
