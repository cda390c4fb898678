"""`sjc run`: bad input is exit code 2 with one line 'sjc: error: ...' naming the field on stderr (no
traceback); `--help` lists every config field; `--dry-run` prints the resolved config."""
import json
import subprocess
import sys

import pytest

from sjc_dist.cli import main
from sjc_dist.config import RunConfig
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
]


@pytest.mark.parametrize("extra,message", BAD, ids=[m.split("'")[1] for _, m in BAD])
def test_bad_input_is_exit_2_with_one_error_line(extra, message, capsys, tmp_path):
    code = main([*BASE, "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # rejected before anything was written


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
    missing = [k for k in keys if f"  {k} (default " not in out]
    assert not missing, missing
    for flag in ("--config", "--set", "--prompt", "--model", "--steps", "--seed", "--out", "--resume", "--dry-run"):
        assert flag in out


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sjc_dist.cli", *BASE, "--set", "sigma.min=5", "--set", "sigma.max=1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("sjc: error: config field 'sigma.min'") and "Traceback" not in proc.stderr
