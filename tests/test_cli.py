"""`sjc run`: bad input is exit code 2 with one line 'sjc: error: ...' naming the field on stderr (no
traceback), range errors worded 'must be ...'; a device the machine lacks and words the model does not know are
refused before anything is written; `--help` lists every config field with the values of the config that will
run; `--dry-run` prints the resolved config; `sjc captions` and `sjc presets` list what is known; a
closed stdout (`sjc captions | head -3`) ends any command quietly."""
import json
import os
import subprocess
import sys

import pytest

from sjc_dist.cli import main
from sjc_dist.config import RunConfig, load_config
from sjc_dist.configtools import flatten, help_lines, to_dict

BASE = ["run", "--config", "empirical", "--prompt", "a red cube"]

BAD = [  # (extra argv, the start of the error line)
    (["--set", "sigma.min=5", "--set", "sigma.max=1"], "sjc: error: config field 'sigma.min'"),
    (["--set", "guidance.weight=-1"], "sjc: error: config field 'guidance.weight'"),
    (["--set", "emptiness.lambda1=nan"], "sjc: error: config field 'emptiness.lambda1'"),
    (["--set", "field.grid_size=1"], "sjc: error: config field 'field.grid_size'"),
    (["--prompt", ""], "sjc: error: config field 'prompt.text'"),
    (["--steps", "-3"], "sjc: error: config field 'steps'"),
    (["--set", "guidance.wieght=3"], "sjc: error: config field 'guidance.wieght'"),
    (["--set", "nonsense"], "sjc: error: config field 'nonsense'"),
    (["--model", "/no/such/model/folder"], "sjc: error: model '/no/such/model/folder' was not found"),
    (["--config", "/no/such/config.yaml"], "sjc: error: config field 'config'"),
    (["--set", "optim.lr=1e39"], "sjc: error: config field 'optim.lr' = 1e+39 is not allowed: must be > 0.0 and <="),
    (["--set", "optim.lr_background=1e38"], "sjc: error: config field 'optim.lr_background'"),
    (["--device", "gpu"], "sjc: error: config field 'model.device' = 'gpu' is not allowed: must be 'auto', 'cpu'"),
    (["--judge", "nonsense"], "sjc: error: config field 'judges' = 'nonsense'"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[m.split("'")[1] for _, m in BAD])
def test_bad_input_is_exit_2_with_one_error_line(extra, message, capsys, tmp_path):
    code = main([*BASE, "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # rejected before anything was written


def test_range_errors_say_must_be(capsys):
    assert main([*BASE, "--set", "sigma.min=5", "--set", "sigma.max=1"]) == 2
    assert "'sigma.min' = 5.0 is not allowed: must be less than sigma.max = 1.0" in capsys.readouterr().err
    assert main([*BASE, "--steps", "0"]) == 2
    assert "'steps' = 0 is not allowed: must be >= 1" in capsys.readouterr().err
    assert main([*BASE, "--set", "guidance.kind=dds"]) == 2
    assert "is not allowed: must be one of 'paas'" in capsys.readouterr().err


def test_cuda_on_a_machine_without_gpu_is_refused_before_the_folder_exists(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr("torch.cuda.device_count", lambda: 0)
    assert main([*BASE, "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sjc: error: config field 'model.device' = 'cuda'") and "no CUDA GPU" in err
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr("torch.cuda.device_count", lambda: 2)
    assert main([*BASE, "--device", "cuda:2", "--dry-run"]) == 2
    assert "must be 'cuda:0' to 'cuda:1'" in capsys.readouterr().err
    assert main([*BASE, "--device", "cuda:1", "--dry-run"]) == 0


@pytest.mark.parametrize("prompt,unknown", [("a purple teapot", "'teapot'"), ("a hamburger", "'hamburger'")])
def test_words_the_toy_model_does_not_know_are_named(prompt, unknown, capsys, tmp_path):
    assert main(["run", "--prompt", prompt, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sjc: error: config field 'prompt.text'") and f"unknown words {unknown}" in err
    assert "sjc captions" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    assert main(["run", "--prompt", prompt, "--force", "--dry-run"]) == 0
    out = capsys.readouterr()
    assert out.err.startswith("sjc: warning: model 'toy' will not read all of prompt") and unknown in out.err
    assert json.loads(out.out)["prompt"]["text"] == prompt


def test_a_toy_caption_passes_the_word_check(capsys):
    assert main(["run", "--prompt", "a green cone", "--dry-run"]) == 0
    assert capsys.readouterr().err == ""


def test_captions_lists_every_captions_function_of_the_toy_world(monkeypatch, capsys):
    from sjc_dist.toyworld import shapes

    assert main(["captions"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert set(shapes.captions()) <= set(listed) and len(listed) == len(set(listed))
    monkeypatch.setattr(shapes, "teapot_captions", lambda: ["a red teapot"], raising=False)
    assert main(["captions"]) == 0
    assert capsys.readouterr().out.splitlines() == listed + ["a red teapot"]


def test_presets_are_listed(capsys):
    from sjc_dist.config import PRESETS

    assert main(["presets"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == sorted(p.stem for p in PRESETS.glob("*.yaml")) and {"toy", "sd", "empirical"} <= set(names)


def help_text(argv, capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_shows_the_values_of_the_config_that_will_run(capsys, tmp_path):
    toy, default = load_config("toy", validate=False), RunConfig()
    out = help_text(["run", "--help"], capsys)  # the toy preset runs by default
    assert "config fields of config toy" in out
    assert f"  steps = {toy.steps} (default {default.steps}) " in out
    assert f"  guidance.weight = {toy.guidance.weight} (default {default.guidance.weight}) " in out
    assert f"  field.grid_size = {toy.field.grid_size} (default {default.field.grid_size}) " in out
    out = help_text(["run", "--config", "sd", "--help"], capsys)
    assert f"  steps = {default.steps} (default {default.steps}) " in out
    (tmp_path / "config.json").write_text(json.dumps({"steps": 123, "model": {"name": "empirical"}}))
    out = help_text(["run", "--resume", str(tmp_path), "--help"], capsys)
    assert f"config fields of run {tmp_path}" in out and "  steps = 123 (default " in out


def test_bench_help_states_its_defaults_and_the_mesh_level(capsys):
    from sjc_dist.config import OutputConfig
    from sjc_dist.evaluation.evaluate import EvalConfig

    out = " ".join(help_text(["bench", "--help"], capsys).split())
    assert "sds (default sjc,sds)" in out and "0,1,2 (default 0)" in out
    assert f"output.mesh_level is {OutputConfig().mesh_level}" in out and "mesh's 0.5" not in out
    assert EvalConfig().iou_level == OutputConfig().mesh_level


def test_did_you_mean(capsys):
    assert main([*BASE, "--set", "guidance.wieght=3"]) == 2
    assert "did you mean 'guidance.weight'" in capsys.readouterr().err


def test_exponent_accepted_as_a_number(capsys):
    assert main([*BASE, "--steps", "1e4", "--set", "emptiness.lambda1=1e4", "--dry-run"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["steps"] == 10000 and resolved["emptiness"]["lambda1"] == 10000.0
    assert resolved["prompt"]["text"] == "a red cube" and resolved["model"]["name"] == "empirical"


def test_help_lists_every_config_field(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    keys = list(flatten(to_dict(RunConfig())))
    assert len(keys) == len(help_lines(RunConfig)) > 50
    missing = [k for k in keys if f"  {k} = " not in out]
    assert not missing, missing
    for flag in ("--config", "--set", "--prompt", "--model", "--steps", "--seed", "--out", "--resume", "--dry-run"):
        assert flag in out


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sjc_dist.cli", *BASE, "--set", "sigma.min=5", "--set", "sigma.max=1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("sjc: error: config field 'sigma.min'") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", [["captions"], ["presets"]])
def test_closed_stdout_ends_quietly(tmp_path, command):
    """`sjc captions | head -3`: the reader has gone (here before the first write, so every write fails): exit
    141 (128 + SIGPIPE, as Unix tools) with nothing on stderr. Handled in cli.main, so it holds for every command."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "sjc_dist.cli", *command], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120, cwd=tmp_path)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (141, "")
