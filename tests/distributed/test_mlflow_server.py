"""A sweep tracked by a real `mlflow server` on 127.0.0.1 (free port, SQLite backend, proxied artifacts): runs
read back with MlflowClient, and headless Chromium shows the sweep's runs and a trial's views.png in the UI.

Slow (the MLflow server alone takes 10-60 s to start on 2 cores): `pytest -m slow tests/distributed`.
The browser test needs Debian's Chromium: `apt-get update && apt-get install -y chromium`; it is skipped with
that message when no Chromium is on PATH.
"""
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sjc_dist.distributed.spec import load_sweep
from sjc_dist.distributed.sweep import SweepOptions, run_sweep

pytestmark = pytest.mark.slow
CHROMIUM_APT = "apt-get update && apt-get install -y chromium"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1:<free port>, stopped (by its pid) after the module."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art")]
    url = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(url, proc, timeout=240)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_healthy(url: str, proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "mlflow server exited early"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"mlflow server at {url} did not answer /health in {timeout:.0f} s")


@pytest.fixture(scope="module")
def served_sweep(ray_session, mlflow_server, tmp_path_factory, tiny_sweep):
    spec = load_sweep(tiny_sweep("served", {"guidance.weight": {"grid": [1.0, 2.0]}}, max_concurrent=2,
                                 base_overrides={"steps": 10}))
    out = tmp_path_factory.mktemp("served") / "sweep"
    opts = SweepOptions(out=str(out), mlflow_uri=mlflow_server, pool="pytest-shared", keep_workers=True)
    return run_sweep(spec, opts)


def test_sweep_logs_to_a_real_server(served_sweep, mlflow_server, tmp_path):
    assert served_sweep.mlflow_uri == mlflow_server
    assert not (served_sweep.sweep_dir / "mlflow.db").exists()  # nothing written to a local store
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("sjc/served")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == served_sweep.parent_run_id]
    assert len(runs) == 3 and len(children) == 2
    for child in children:
        assert child.data.params["steps"] == "10" and child.data.tags["sjc.status"] == "ok"
        assert [m.step for m in client.get_metric_history(child.info.run_id, "score")] == [5, 10]
        local = client.download_artifacts(child.info.run_id, "views.png", str(tmp_path))
        assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)


def dump_dom(browser: str, url: str, profile: Path) -> str:
    """The DOM after the page's scripts ran (virtual time lets the single-page app fetch and render)."""
    cmd = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False).stdout


def visible_text(html: str) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.DOTALL)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_mlflow_ui_shows_runs_and_an_image(served_sweep, mlflow_server, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip(f"no Chromium on PATH; install it with: {CHROMIUM_APT}")
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("sjc/served")
    runs_page = visible_text(dump_dom(browser, f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs",
                                      tmp_path / "p1"))
    assert "served" in runs_page and "3 matching runs" in runs_page  # the parent, its 2 children nested
    child = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sjc.role") == "trial")
    url = f"{mlflow_server}/#/experiments/{exp.experiment_id}/runs/{child.info.run_id}/artifacts/views.png"
    html = dump_dom(browser, url, tmp_path / "p2")
    assert re.search(r'<img[^>]*alt="views.png"[^>]*src="blob:', html), visible_text(html)[:2000]
    assert "field.safetensors" in visible_text(html) and "turntable.gif" in visible_text(html)


def test_the_printed_address_opens_the_trials(served_sweep, mlflow_server, tmp_path):
    """Issue 15 item 8: the address `sjc sweep` prints opens the runs page (not the GenAI overview, MLflow 3.17's
    default) on the shared view of the trials: every child listed flat, none collapsed under the parent."""
    browser = chromium()
    if browser is None:
        pytest.skip(f"no Chromium on PATH; install it with: {CHROMIUM_APT}")
    assert served_sweep.runs_url.startswith(mlflow_server)
    page = visible_text(dump_dom(browser, served_sweep.runs_url, tmp_path / "p3"))
    assert "viewing a shared view" in page and "2 matching runs" in page, page[:2000]
    assert "Observability" not in page  # the GenAI side bar
