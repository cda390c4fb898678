"""Sweep YAMLs are validated before Ray starts, with ConfigErrors that name the field; sampled configs always
satisfy sigma.min < sigma.max (grid filtering, random and Optuna conditional draws); the shipped
tune_configs validate. No Ray here."""
from pathlib import Path

import optuna
import pytest
import yaml

from sjc_dist.cli import main
from sjc_dist.distributed.space import OptunaSpace
from sjc_dist.distributed.spec import load_sweep
from sjc_dist.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
BASE = {"preset": "empirical", "prompt": {"text": "a red cube"}, "model": {"device": "cpu"}, "steps": 20}


def spec(**kw) -> dict:
    return {"name": "t", "base": BASE, "space": {"guidance.weight": {"uniform": [1.0, 10.0]}}, **kw}


@pytest.mark.parametrize("data, field, words", [
    (spec(spaces={}), "spaces", "did you mean 'space'"),
    (spec(space={"guidance.wieght": {"uniform": [1, 2]}}), "space.guidance.wieght", "did you mean 'guidance.weight'"),
    (spec(space={"guidance.weight": {"uniform": [5, 5]}}), "space.guidance.weight", "low < high"),
    (spec(space={"guidance.weight": {"uniform": ["a", 2]}}), "space.guidance.weight", "two numbers"),
    (spec(space={"guidance.weight": {"choice": []}}), "space.guidance.weight", "non-empty list"),
    (spec(space={"guidance.weight": {"unifrom": [1, 2]}}), "space.guidance.weight", "did you mean 'uniform'"),
    (spec(space={"guidance.weight": {"uniform": [-1, 2]}}), "space.guidance.weight", ">= 0.0"),
    (spec(space={"optim.lr": {"loguniform": [0, 1]}}), "space.optim.lr", "low > 0"),
    (spec(space={"seed": {"randint": [0.5, 3]}}), "space.seed", "two integers"),
    (spec(space={"guidance.kind": {"choice": ["paas", "sjc"]}}), "space.guidance.kind", "one of 'paas', 'sds'"),
    (spec(space={"sigma.min": {"uniform": [2, 3]}, "sigma.max": {"uniform": [1, 5]}}), "space.sigma.min",
     "lowest sigma.min must be < 1.0"),
    (spec(space={"sigma.min": {"uniform": [20, 30]}}), "space.sigma.min", "must be < 10.0"),
    (spec(search={"kind": "grid"}), "space.guidance.weight", "grid or choice values"),
    (spec(search={"kind": "bayes"}), "search.kind", "'grid', 'random', 'optuna'"),
    (spec(max_concurrent=9, resources={"workers": 2, "slots_per_worker": 4}), "max_concurrent", "at most"),
    (spec(scheduler={"kind": "asha", "metric": "scroe"}), "scheduler.metric", "did you mean 'score'"),
    (spec(scheduler={"metric": "score/fit"}), "scheduler.metric", "scorer 'auto' reports"),
    (spec(num_samples=0), "num_samples", ">= 1"),
    (spec(scheduler={"kind": "asha", "grace_period": 50}), "scheduler.grace_period", "at most the trials' steps (20)"),
    (spec(report_every="often"), "report_every", "a int"),
    (spec(constraints=["sigma.min > sigma.max"]), "constraints", "a.b < c.d"),
    (spec(constraints=["field.grid < field.grid_size"]), "constraints", "'field.grid' is not"),
    (spec(search={"kind": "optuna"}, space={"sigma.min": {"choice": [0.1, 0.2]}}), "space.sigma.min",
     "uniform, loguniform or randint under optuna"),
    (spec(base={**BASE, "prompt": {"text": "a hamburger"}}), "prompt.text", "toy-world caption"),
    (spec(base={**BASE, "steps": 0}), "steps", ">= 1"),
    (spec(base="no_such_preset"), "config", "a preset"),
    (spec(space={"optim.lr": {"grid": [0.05, 1e39]}}, search={"kind": "grid"}), "space.optim.lr", "<= 1000"),
])
def test_bad_sweeps_name_the_field(data, field, words):
    with pytest.raises(ConfigError) as err:
        load_sweep(data)
    assert err.value.field == field, str(err.value)
    assert words in str(err.value)


def test_bad_yaml_through_the_cli(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec(space={"guidance.weight": {"uniform": [3, 1]}})))
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "space.guidance.weight" in err and "low < high" in err and "Traceback" not in err


SIGMA_SPACE = {"sigma.min": {"loguniform": [0.02, 2.0]}, "sigma.max": {"loguniform": [0.5, 15.0]},
               "guidance.weight": {"uniform": [1, 10]}}


def test_random_draws_keep_sigma_ordered():
    s = load_sweep(spec(space=SIGMA_SPACE, num_samples=300, search={"kind": "random", "seed": 3}))
    points = s.points()
    assert len(points) == 300
    assert all(p["sigma.min"] < p["sigma.max"] for p in points)
    assert any(p["sigma.min"] > 0.5 for p in points)  # the truncation still reaches high sigma.min values
    assert points == load_sweep(spec(space=SIGMA_SPACE, num_samples=300, search={"kind": "random", "seed": 3})).points()


def test_grid_drops_combinations_that_break_a_constraint():
    s = load_sweep(spec(space={"sigma.min": {"grid": [0.1, 1.0, 5.0]}, "sigma.max": {"grid": [0.5, 8.0]}},
                        search={"kind": "grid"}, num_samples=2))
    pairs = [(p["sigma.min"], p["sigma.max"]) for p in s.points()]
    assert pairs == [(0.1, 0.5), (0.1, 8.0), (1.0, 8.0), (5.0, 8.0)] * 2


def test_optuna_space_keeps_sigma_ordered():
    s = load_sweep(spec(space=SIGMA_SPACE, search={"kind": "optuna"}, num_samples=4))
    space = OptunaSpace(s.space, list(s.constraints), s.constants)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5), direction="maximize")
    for _ in range(40):
        trial = study.ask()
        space(trial)
        assert trial.params["sigma.min"] < trial.params["sigma.max"]
        study.tell(trial, -abs(trial.params["guidance.weight"] - 3))


def test_custom_constraint_and_base_mapping(tmp_path):
    s = load_sweep(spec(space={"camera.radius_min": {"uniform": [0.5, 1.5]}, "camera.radius_max": {"uniform": [1.6, 3]}},
                        constraints=["camera.radius_min < camera.radius_max"], num_samples=50))
    assert all(p["camera.radius_min"] < p["camera.radius_max"] for p in s.points())
    assert s.base["model"]["name"] == "empirical" and s.base["steps"] == 20  # preset + overrides merged


@pytest.mark.parametrize("name", ["toy_quick", "sd_paper", "large"])
def test_shipped_sweeps_validate(name):
    path = REPO / "tune_configs" / f"{name}.yaml"
    s = load_sweep(path, ["model.name=empirical", "prompt.text=a red cube", "sigma.min=0.05", "sigma.max=10",
                          "guidance.through_vae=false"])
    assert s.settings.name == name and s.space
    assert s.settings.scheduler.metric in ("score", "score/soft_iou", "score/iou", "score/fit")


def test_toy_quick_is_small():
    s = load_sweep(REPO / "tune_configs" / "toy_quick.yaml", ["model.name=empirical"])
    assert len(s.points()) == 4 and s.base["steps"] <= 200
    assert s.base["field"]["grid_size"] <= 32
