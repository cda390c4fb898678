"""One owner per sweep folder (issue 15 item 2) and one-line refusals (item 5), all before Ray starts: a second
process holding the folder's lock, a lock left by a killed owner (taken over, said so), a folder that already
holds a sweep, `--resume` of a folder that does not exist, a YAML syntax error; and the environment a local
sweep gives Ray. No Ray here: `connect` is replaced by a tripwire, so any test that reaches Ray fails."""
import os
import signal
import subprocess
import sys
import textwrap
import types

import pytest
import yaml

from sjc_dist.cli import main
from sjc_dist.distributed import sweep
from sjc_dist.distributed.sweep_lock import LOCK_FILE, SweepBusy, SweepLock

HOLD = textwrap.dedent("""
    import sys, time
    from sjc_dist.distributed.sweep_lock import SweepLock
    SweepLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(120)
""")


class RayStarted(Exception):
    pass


@pytest.fixture
def no_ray(monkeypatch):
    def tripwire(*args, **kwargs):
        raise RayStarted("the sweep got as far as starting Ray")

    monkeypatch.setattr(sweep, "connect", tripwire)


@pytest.fixture
def spec_file(tmp_path, tiny_sweep):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep("folder", {"seed": {"grid": [0]}})))
    return path


def hold_lock(folder):
    """A process that takes the folder's lock and keeps it; returns it once it holds the lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_sweep_into_a_folder_in_use_is_refused(no_ray, spec_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    owner = hold_lock(out)
    try:
        assert main(["sweep", str(spec_file), "--out", str(out)]) == 2
    finally:
        owner.kill()
        owner.wait()
    err = capsys.readouterr().err
    assert f"is in use by pid {owner.pid} on" in err and "another --out" in err and "Traceback" not in err
    assert not (out / "sweep.yaml").exists()  # refused before anything was written


def test_a_dead_owners_lock_is_taken_over(no_ray, spec_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    owner = hold_lock(out)
    os.kill(owner.pid, signal.SIGKILL)  # as a killed driver leaves it: the file still names its owner
    owner.wait()
    assert f'"pid": {owner.pid}' in (out / LOCK_FILE).read_text()
    with pytest.raises(RayStarted):
        main(["sweep", str(spec_file), "--out", str(out)])
    assert f"took over the lock of pid {owner.pid}" in capsys.readouterr().err
    assert (out / "sweep.yaml").is_file()  # it went on
    assert (out / LOCK_FILE).read_text() == ""  # and released the lock on its way out


def test_the_lock_is_exclusive_within_one_machine(tmp_path):
    with SweepLock(tmp_path) as first:
        assert first.note == ""
        with pytest.raises(SweepBusy, match=f"pid {os.getpid()}"):
            SweepLock(tmp_path).acquire()
    SweepLock(tmp_path).acquire().release()  # free again once released


def test_a_folder_that_holds_a_sweep_is_only_resumed(no_ray, spec_file, tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.yaml").write_text("name: earlier\n")
    assert main(["sweep", str(spec_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"sjc sweep --resume {out}" in err and "Traceback" not in err


def test_resume_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["sweep", "--resume", str(tmp_path / "no_such_sweep")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a sweep folder written by `sjc sweep`" in err


def test_a_yaml_syntax_error_is_one_line(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nspace:\n  seed: {grid: [0, 1]\n")
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "valid YAML" in err and "line 4" in err, err


def test_the_ray_token_file_is_made_private(tmp_path, monkeypatch):
    """Ray writes ~/.ray/auth_token readable by every user (issue 15 item 6); a local sweep narrows it to 0600."""
    token = tmp_path / "auth_token"
    token.write_text("secret")
    token.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    sweep.private_token()
    assert token.stat().st_mode & 0o777 == 0o600


def test_where_tracking_goes(tmp_path, monkeypatch):
    from sjc_dist.distributed import mlflow_uri
    from sjc_dist.errors import ConfigError

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_uri.resolve_uri("none", tmp_path) == ("", "")
    assert mlflow_uri.resolve_uri(None, tmp_path) == (f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}", "")
    monkeypatch.setattr(mlflow_uri, "mlflow_available", lambda: False)
    uri, note = mlflow_uri.resolve_uri(None, tmp_path)
    assert uri == "" and "tracking is off" in note
    with pytest.raises(ConfigError, match="'none' on a machine without mlflow"):
        mlflow_uri.resolve_uri("http://127.0.0.1:5000", tmp_path)


ENV_KEYS = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS",
            "RAY_COLOR_PREFIX", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def test_a_local_sweep_asks_ray_for_quiet_loopback_services(monkeypatch, tmp_path):
    """What `sjc sweep` sets before Ray is imported (issue 15 item 6, issue 17's log noise): loopback only, token
    mode said explicitly (else Ray prints 'Token authentication is enabled ... Set RAY_AUTH_MODE=disabled to opt
    out'), no progress bars in worker logs, no colour codes in a log file; a cluster keeps its own addresses and
    gets token mode only with a token at hand; a value the user set stays."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # as in `sjc sweep`: nothing imported Ray yet
    sweep.prepare_env(None)
    assert {k: os.environ.get(k) for k in ENV_KEYS[:5]} == {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "TQDM_DISABLE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "RAY_COLOR_PREFIX": "0"}
    # Ray already imported (it read its auth mode then): token mode set now would reach its GCS alone, which on
    # a machine without ~/.ray/auth_token aborts ('Check failed: has_token'); the mode is left to Ray's default
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setitem(sys.modules, "ray", sys.modules.get("ray") or types.ModuleType("ray"))
    sweep.prepare_env(None)
    assert "RAY_AUTH_MODE" not in os.environ and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token: no token at hand
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    sweep.prepare_env("ray://head:10001")
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    assert os.environ["TQDM_DISABLE"] == "1"
