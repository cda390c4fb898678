"""The benchmark's plan (prompts x methods x seeds, grouped by shared model), prompt sets, and CLI errors that
must stop a benchmark before it computes anything."""
import pytest

from sjc_dist.cli import main
from sjc_dist.errors import ConfigError
from sjc_dist.evaluation.benchmark import batch_groups, parse_methods, parse_seeds, plan_jobs
from sjc_dist.evaluation.prompts import load_prompts

TINY = ["steps=5", "field.grid_size=8"]


def test_plan_covers_every_combination(tmp_path):
    jobs = plan_jobs(["a red cube", "a blue torus"], ["sjc", "sds"], [0, 1, 2], tmp_path, "empirical", TINY)
    assert len(jobs) == 12
    assert {(j.method, j.config["guidance"]["kind"]) for j in jobs} == {("sjc", "paas"), ("sds", "sds")}
    assert sorted({j.seed for j in jobs}) == [0, 1, 2] and all(j.config["steps"] == 5 for j in jobs)
    first = jobs[0]
    assert first.run_dir.endswith("runs/sjc/000-a-red-cube/seed0") and first.config["output"]["dir"] == first.run_dir
    assert first.run_config().prompt.text == "a red cube"
    assert len({j.run_dir for j in jobs}) == 12


def test_prompts_with_yaml_special_characters_stay_strings(tmp_path, tiny_pipeline):
    jobs = plan_jobs(["yes", "a sign: stop", "1e4"], ["sjc"], [0], tmp_path, "empirical",
                     [*TINY, f"model.name={tiny_pipeline}"])
    assert [j.config["prompt"]["text"] for j in jobs] == ["yes", "a sign: stop", "1e4"]


def test_groups_share_a_model(tmp_path, tiny_pipeline):
    emp = plan_jobs(["a red cube", "a blue torus"], ["sjc", "sds"], [0, 1], tmp_path, "empirical", TINY)
    groups = batch_groups(emp)
    assert len(groups) == 2 and all(len({j.prompt for j in g}) == 1 for g in groups)  # empirical: per prompt
    shared = plan_jobs(["a red cube", "a blue torus", "a green cone"], ["sjc", "sds"], [0], tmp_path, "empirical",
                       [*TINY, f"model.name={tiny_pipeline}"])
    assert [len(g) for g in batch_groups(shared, max_batch=4)] == [4, 2]


def test_set_for_overrides_one_method_after_the_shared_sets(tmp_path):
    jobs = plan_jobs(["a red cube"], ["sjc", "sds"], [0], tmp_path, "empirical", [*TINY, "guidance.weight=3"],
                     ["sds:guidance.weight=1.5", "sds:emptiness.lambda2=128000", "sjc:steps=7"])
    cfg = {j.method: j.config for j in jobs}
    assert cfg["sjc"]["guidance"]["weight"] == 3 and cfg["sjc"]["steps"] == 7
    assert cfg["sds"]["guidance"]["weight"] == 1.5 and cfg["sds"]["emptiness"]["lambda2"] == 128000
    assert cfg["sds"]["steps"] == 5 and cfg["sjc"]["emptiness"]["lambda2"] != 128000
    for bad in ("csd:guidance.weight=2", "sds", "sds:guidance.weight"):
        with pytest.raises(ConfigError, match="set-for"):
            plan_jobs(["a red cube"], ["sjc", "sds"], [0], tmp_path, "empirical", TINY, [bad])
    with pytest.raises(ConfigError, match="guidance.weight"):
        plan_jobs(["a red cube"], ["sjc", "sds"], [0], tmp_path, "empirical", TINY, ["sds:guidance.weight=-1"])


def test_bad_methods_seeds_and_config(tmp_path):
    with pytest.raises(ConfigError, match="methods"):
        parse_methods("sjc,dreamfusion")
    with pytest.raises(ConfigError, match="seeds"):
        parse_seeds("0,x")
    with pytest.raises(ConfigError, match="seeds"):
        parse_seeds("-1")
    assert parse_methods("sds, sjc,sds") == ["sds", "sjc"] and parse_seeds("2,0,2") == [2, 0]
    with pytest.raises(ConfigError, match="guidance.weight"):
        plan_jobs(["a red cube"], ["sjc"], [0], tmp_path, "empirical", ["guidance.weight=-1"])


def test_prompt_sets(tmp_path):
    assert len(load_prompts("toy")) == 25 and load_prompts("toy")[0] == "a red sphere"
    coco = load_prompts("coco153")
    assert len(coco) == 153 and all(p.endswith(".") for p in coco)
    f = tmp_path / "p.txt"
    f.write_text("# my prompts\na red cube\n\n  a blue torus  \na red cube\n")
    assert load_prompts(str(f)) == ["a red cube", "a blue torus"]
    with pytest.raises(ConfigError, match="prompt file"):
        load_prompts(str(tmp_path / "missing.txt"))


def test_cli_stops_before_computing(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["bench", "toy", "--methods", "sjc,xyz", "--out", str(out)]) == 2
    assert "methods" in capsys.readouterr().err
    assert main(["bench", "toy", "--config", "empirical", "--judges", f"ViT-B-32:{tmp_path}/none.pt",
                 "--executor", "local", "--out", str(out)]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert not (out / "runs").exists()
    assert main(["evaluate", str(tmp_path), "--out", str(out)]) == 2
    assert "RUN_DIR" in capsys.readouterr().err


def test_a_failing_group_is_reported_not_raised(tmp_path, tiny_pipeline):
    import shutil

    from sjc_dist.distributed.bench import failure_notes, generate_group

    model = shutil.copytree(tiny_pipeline, tmp_path / "model")
    jobs = plan_jobs(["a red cube"], ["sjc", "sds"], [0], tmp_path / "out", "empirical",
                     [*TINY, f"model.name={model}"])
    shutil.rmtree(model / "unet")  # the model breaks after planning (e.g. a worker without the files)
    outcomes = generate_group(jobs)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert all("unet" in n or "Model" in n for n in failure_notes(outcomes))
