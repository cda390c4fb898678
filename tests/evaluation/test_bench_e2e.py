"""A tiny benchmark end to end on CPU, through the CLI: 2 toy prompts x 2 methods x 1 seed on the 'empirical'
model (40 steps, 16^3 grid) fanned out on Ray, judged by a tiny random open_clip model. Checks the Parquet table,
the HTML report opened in headless Chromium (tables present, every image decoded), the MLflow run read back,
that SJC and SDS differ only in guidance.kind, that finished runs are skipped, and that `sjc evaluate`
re-scores the saved runs with another judge."""
import json
import re
import shutil
import subprocess

import pytest

from sjc_dist.cli import main

PROMPTS = ["a red cube", "a blue sphere"]
SETS = ["steps=40", "field.grid_size=16", "render.step=0.08", "render.views_per_step=1", "output.turntable_frames=0",
        "output.eval_views=4", "output.log_every=10", "output.checkpoint_every=0", "model.device=cpu"]
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
CHECK_PAGE = """<!DOCTYPE html><html><body><iframe id="r" src="{src}" width="1200" height="900"></iframe>
<pre id="out">pending</pre><script>
document.getElementById('r').onload = function () {{
  let res;
  try {{
    const d = document.getElementById('r').contentDocument;
    const imgs = Array.from(d.images);
    res = {{tables: d.querySelectorAll('table').length, images: imgs.length, title: d.title,
           loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
           headers: Array.from(d.querySelectorAll('h2')).map(h => h.textContent)}};
  }} catch (e) {{ res = {{error: String(e)}}; }}
  document.getElementById('out').textContent = JSON.stringify(res);
}};
</script></body></html>"""


@pytest.fixture(scope="module")
def bench(tmp_path_factory, tiny_clip_dir):
    out = tmp_path_factory.mktemp("bench")
    prompts = out / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["bench", str(prompts), "--methods", "sjc,sds", "--seeds", "0", "--config", "empirical",
            *[x for s in SETS for x in ("--set", s)], "--judges", f"local-dir:{tiny_clip_dir}",
            "--eval", "views=4", "--eval", "yaw_step=30", "--executor", "ray", "--num-cpus", "2",
            "--out", str(out / "result")]
    try:
        assert main(args) == 0
    finally:
        mp.undo()
    return out / "result"


def test_parquet_has_one_row_per_object_per_judge(bench):
    import pandas as pd

    table = pd.read_parquet(bench / "results.parquet")
    assert len(table) == 4 and set(table["method"]) == {"sjc", "sds"} and set(table["prompt"]) == set(PROMPTS)
    assert table["judge"].nunique() == 1 and (table["n_prompts"] == 2).all() and (table["views"] == 4).all()
    assert table["clip_score"].between(-1, 1).all() and table["r_precision"].isin([0, 0.25, 0.5, 0.75, 1]).all()
    assert table["iou"].between(0, 1).all()  # toy captions: ground truth present
    assert (table["steps"] == 40).all()
    from sjc_dist.toyworld.clip_model import default_checkpoint

    if default_checkpoint().is_file():  # the toy CLIP scores toy captions even when it is not a judge
        assert table["toy_r1"].between(0, 1).all()
    else:
        assert table["toy_r1"].isna().all() and "toy_r1" in (bench / "report" / "report.md").read_text()


def test_methods_differ_only_in_guidance_kind(bench):
    configs = {}
    for cfg_file in bench.glob("runs/*/*/seed0/config.json"):
        cfg = json.loads(cfg_file.read_text())
        configs[(cfg["guidance"]["kind"], cfg["prompt"]["text"])] = cfg
    assert set(configs) == {(k, p) for k in ("paas", "sds") for p in PROMPTS}
    a, b = configs[("paas", "a red cube")], configs[("sds", "a red cube")]
    for cfg in (a, b):
        cfg["guidance"].pop("kind")
        cfg["output"].pop("dir")
    assert a == b and a["steps"] == 40 and a["field"]["grid_size"] == 16


def test_report_opens_in_headless_chromium(bench, chromium, tmp_path):
    report = bench / "report" / "report.html"
    page = report.read_text()
    assert page.count("<table>") >= 4 and "Paired per-prompt comparison" in page
    pngs = sorted(p.name for p in report.parent.glob("*.png"))
    assert {"means.png", "paired_sjc_sds.png", "best_sjc.png", "worst_sds.png"} <= set(pngs)
    seen = open_in_chromium(chromium, report, tmp_path / "a")
    assert seen["tables"] >= 4 and seen["images"] == len(pngs) and seen["loaded"] == seen["images"]
    assert "Per-method means (over prompts; seeds averaged first)" in seen["headers"]
    # the check is real: a report folder missing one PNG shows one image fewer decoded
    broken = tmp_path / "broken"
    shutil.copytree(report.parent, broken)
    (broken / "means.png").unlink()
    seen = open_in_chromium(chromium, broken / "report.html", tmp_path / "b")
    assert seen["loaded"] == seen["images"] - 1


def open_in_chromium(chromium: str, report, workdir) -> dict:
    """Load the report in an iframe of a checking page, headless; return what the page saw."""
    workdir.mkdir(parents=True)
    check = workdir / "check.html"
    check.write_text(CHECK_PAGE.format(src=report.resolve().as_uri()))
    cmd = [chromium, *CHROME_FLAGS, f"--user-data-dir={workdir / 'profile'}", "--allow-file-access-from-files",
           "--virtual-time-budget=10000", "--dump-dom", check.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    result = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert "error" not in result, result
    return result


def test_mlflow_run_reads_back(bench):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{bench / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sjc-bench")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["methods"] == "sjc,sds" and run.data.params["objects"] == "4"
    judge = next(k.split("/")[0] for k in run.data.metrics if k.endswith("/clip_score/sjc/mean"))
    assert -1 <= run.data.metrics[f"{judge}/clip_score/sjc/mean"] <= 1
    assert f"{judge}/clip_score/sjc-sds/p_wilcoxon" in run.data.metrics
    assert run.data.metrics["time/generate_s"] > 0
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report", "results.parquet"} <= names
    report_files = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert "report/report.html" in report_files and "report/means.png" in report_files


def test_finished_runs_are_skipped(bench):
    from sjc_dist.evaluation.batch_runs import run_group
    from sjc_dist.evaluation.benchmark import plan_jobs

    jobs = plan_jobs(PROMPTS, ["sjc", "sds"], [0], bench, "empirical", SETS)
    outcomes = run_group(jobs)  # no model is loaded: every folder holds a summary
    assert [o.status for o in outcomes] == ["skipped"] * 4


def test_evaluate_rescores_saved_runs_with_another_judge(bench, other_judge, tmp_path, capsys):
    folder = other_judge.spec.source
    assert main(["evaluate", str(bench / "runs"), "--judges", f"local-dir:{folder}", "--eval", "views=2",
                 "--eval", "yaw_step=45", "--out", str(tmp_path / "ev")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["runs"] == 4 and printed["rows"] == 4
    import pandas as pd

    table = pd.read_parquet(tmp_path / "ev" / "eval.parquet")
    assert set(table["judge"]) == {"other"} and (table["views"] == 2).all()
    assert "| prompt | method |" in (tmp_path / "ev" / "eval.md").read_text()
