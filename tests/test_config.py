"""The strict config: every bad value is a ConfigError naming its field (or ModelNotFoundError for a missing
model), before any model loads; numbers such as "1e4" are numbers; nothing is clamped."""
import json

import pytest

from sjc_dist.config import PRESETS, RunConfig, load_config, replace_in
from sjc_dist.configtools import flatten, to_dict, to_json
from sjc_dist.errors import ConfigError, ModelNotFoundError

BASE = {"model": {"name": "empirical"}, "prompt": {"text": "a red cube"}}

BAD = [  # (overrides, the field the error must name)
    (["sigma.min=5", "sigma.max=1"], "sigma.min"),
    (["sigma.min=2", "sigma.max=2"], "sigma.min"),
    (["sigma.min=-1"], "sigma.min"),
    (["guidance.weight=-1"], "guidance.weight"),
    (["emptiness.lambda1=nan"], "emptiness.lambda1"),
    (["emptiness.lambda2=inf"], "emptiness.lambda2"),
    (["depth.weight=-0.5"], "depth.weight"),
    (["field.grid_size=1"], "field.grid_size"),
    (["prompt.text="], "prompt.text"),
    (["prompt.text=   "], "prompt.text"),
    (["steps=0"], "steps"),
    (["steps=2.5"], "steps"),
    (["guidance.kind=dds"], "guidance.kind"),
    (["guidance.through_vae=maybe"], "guidance.through_vae"),
    (["guidance.through_vae=true"], "guidance.through_vae"),  # only with kind sds
    (["camera.radius_min=3", "camera.radius_max=2"], "camera.radius_min"),
    (["camera.fov_max=180"], "camera.fov_max"),
    (["prompt.view_template={prompt} only"], "prompt.view_template"),
    (["model.dtype=float8"], "model.dtype"),
    (["guidance.wieght=3"], "guidance.wieght"),
    (["stpes=3"], "stpes"),
    (["guidance=3"], "guidance"),
]


@pytest.mark.parametrize("overrides,field", BAD, ids=[f for _, f in BAD])
def test_bad_value_names_its_field(overrides, field):
    with pytest.raises(ConfigError) as info:
        load_config(BASE, overrides)
    assert info.value.field == field
    assert str(info.value).startswith(f"config field '{field}'")


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(ConfigError, match="did you mean 'guidance.weight'"):
        load_config(BASE, ["guidance.wieght=3"])
    with pytest.raises(ConfigError, match="did you mean 'steps'"):
        load_config({**BASE, "stpes": 3})


def test_empty_prompt_for_a_diffusers_text_model(tiny_pipeline):
    with pytest.raises(ConfigError, match="prompt.text"):
        load_config({"model": {"name": str(tiny_pipeline)}})
    assert load_config({"model": {"name": str(tiny_pipeline)}, "prompt": {"text": "a red cube"}}).steps == 10000


def test_missing_model_is_model_not_found(tmp_path):
    for name in [str(tmp_path / "nope"), "no-such-model"]:
        with pytest.raises(ModelNotFoundError, match="was not found"):
            load_config(BASE, [f"model.name={name}"])
    (tmp_path / "half").mkdir()  # a folder without unet/ and scheduler/
    with pytest.raises(ModelNotFoundError, match="unet/ and scheduler/"):
        load_config(BASE, [f"model.name={tmp_path / 'half'}"])


def test_exponent_strings_are_numbers(tmp_path):
    cfg = load_config(BASE, ["emptiness.lambda1=1e4", "steps=1e4", "optim.lr=5e-2"])
    assert cfg.emptiness.lambda1 == 10000.0 and cfg.steps == 10000 and isinstance(cfg.steps, int)
    assert cfg.optim.lr == 0.05
    assert load_config({**BASE, "emptiness": {"lambda2": "2e5"}}).emptiness.lambda2 == 200000.0
    yaml_file = tmp_path / "run.yaml"  # YAML 1.1 reads 1e4 as a string; it is still a number here
    yaml_file.write_text("model:\n  name: empirical\nprompt:\n  text: a red cube\nemptiness:\n  lambda1: 1e4\n")
    assert load_config(str(yaml_file)).emptiness.lambda1 == 10000.0


def test_strings_that_are_not_yaml_stay_strings():
    cfg = load_config(BASE, ["prompt.view_template={prompt}, seen from the {view}", "prompt.negative=blurry: ugly"])
    assert cfg.prompt.view_template == "{prompt}, seen from the {view}"
    assert cfg.prompt.negative == "blurry: ugly"


def test_null_restores_optional_defaults():
    cfg = load_config(BASE, ["sigma.min=0.1", "sigma.max=5", "sigma.min=null"])
    assert cfg.sigma.min is None and cfg.sigma.max == 5.0


def test_overrides_do_not_write_into_the_callers_dict():
    data = {"model": {"name": "empirical"}, "prompt": {"text": "a red cube"}}
    load_config(data, ["prompt.text=a blue cube", "field.grid_size=8"])
    assert data == {"model": {"name": "empirical"}, "prompt": {"text": "a red cube"}}


def test_resolved_json_round_trips():
    cfg = load_config(BASE, ["guidance.weight=7.5", "sigma.min=0.1", "field.grid_size=16"])
    assert load_config(json.loads(to_json(cfg))) == cfg


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_presets_parse(preset):
    cfg = load_config(preset, validate=False)
    assert isinstance(cfg, RunConfig)


def test_sd_preset_is_the_official_settings():
    cfg = load_config("sd", validate=False)
    assert (cfg.guidance.weight, cfg.optim.lr, cfg.steps, cfg.field.grid_size) == (100.0, 0.05, 10000, 100)
    assert (cfg.emptiness.lambda1, cfg.emptiness.lambda2, cfg.emptiness.k, cfg.emptiness.beta) == (1e4, 2e5, 0.5, 10)
    assert (cfg.camera.radius_min, cfg.camera.fov_min, cfg.camera.fov_max, cfg.camera.elevation_min) == (
        1.5, 40.0, 70.0, -6.4)
    assert cfg.guidance.estimator == "var_red" and cfg.guidance.n_noise == 1 and cfg.seed == 0


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="empirical"):
        load_config("no_such_preset")


def test_replace_in_rechecks():
    cfg = load_config(BASE)
    assert replace_in(cfg, **{"guidance.weight": 7.5}).guidance.weight == 7.5
    with pytest.raises(ConfigError, match="guidance.weight"):
        replace_in(cfg, **{"guidance.weight": -2.0})
    with pytest.raises(ConfigError, match="guidance.nope"):
        replace_in(cfg, **{"guidance.nope": 1})


def test_every_leaf_has_help_and_a_default():
    from sjc_dist.configtools import help_lines

    keys = flatten(to_dict(RunConfig()))
    lines = help_lines(RunConfig)
    assert len(lines) == len(keys)
    for key, line in zip(keys, lines):
        assert line.strip().startswith(f"{key} (default ")
        assert len(line.split(": ", 1)[-1].strip()) > 5  # a real sentence of help


@pytest.mark.parametrize("overrides,rule", [
    (["sigma.min=5", "sigma.max=1"], "must be less than sigma.max = 1.0"),
    (["camera.radius_min=3", "camera.radius_max=2"], "must be at most camera.radius_max = 2.0"),
    (["steps=0"], "must be >= 1"),
    (["guidance.weight=-1"], "must be >= 0.0"),
    (["emptiness.lambda1=nan"], "must be a finite number"),
    (["model.dtype=float8"], "must be one of 'auto'"),
    (["optim.lr=1e39"], "must be > 0.0 and <= 1000.0"),
])
def test_range_errors_say_what_the_value_must_be(overrides, rule):
    with pytest.raises(ConfigError) as info:
        load_config(BASE, overrides)
    assert f"is not allowed: {rule}" in str(info.value)


def test_learning_rates_are_bounded_where_adamax_stays_representable():
    """Adamax's first step multiplies lr by 1 / (1 - beta1) = 10: lr 1e38 overflows float32 inside torch (a raw
    RuntimeError), so the edge stops far below, at MAX_LR."""
    from sjc_dist.optim.optimizer import MAX_FIELD_ABS, MAX_LR

    assert load_config(BASE, [f"optim.lr={MAX_LR}", f"optim.lr_background={MAX_LR}"]).optim.lr == MAX_LR
    for key in ("optim.lr", "optim.lr_background"):
        with pytest.raises(ConfigError, match=key):
            load_config(BASE, [f"{key}={MAX_LR * 10}"])
    assert MAX_LR < MAX_FIELD_ABS  # one step of the largest lr cannot pass the divergence bound by itself


def test_help_lines_show_given_values_beside_the_defaults():
    from sjc_dist.configtools import help_lines

    values = flatten(to_dict(load_config("toy", validate=False)))
    lines = help_lines(RunConfig, values=values)
    assert len(lines) == len(values)
    steps = next(line for line in lines if line.startswith("  steps "))
    assert steps.startswith(f"  steps = {values['steps']} (default {RunConfig().steps}) [>= 1]: ")
