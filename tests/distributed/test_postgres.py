"""MLflow on PostgreSQL (issue 18), the cluster setup beside the default SQLite file: the test starts Debian's
server on 127.0.0.1 (scripts/postgres.sh: a fresh data folder, trust authentication, the psycopg driver of the
`postgres` extra), runs `sjc sweep --mlflow-uri postgresql://...` end to end, checks the store against the
results table (one child run per row, FINISHED, its metrics and artifacts), and stops the server.
Skipped, with the reason, where no server can be had (scripts/postgres.sh exits 3).
Slow (a server start and a sweep): `pytest -m slow tests/distributed/test_postgres.py`."""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_cluster_address import free_port

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "postgres.sh"


@pytest.fixture
def postgres():
    """The MLflow URI of a throwaway server (its folder under /tmp, open to the postgres user), stopped after."""
    folder = Path(tempfile.mkdtemp(prefix="sjc-pg-"))
    folder.chmod(0o755)
    env = {"PYTHON": sys.executable, "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}
    done = subprocess.run(["bash", str(SCRIPT), "start", str(folder / "pg"), str(free_port())], env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode == 3:
        pytest.skip(done.stderr.strip()[-500:])
    assert done.returncode == 0, done.stderr[-2000:]
    try:
        yield done.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(folder / "pg")], env=env, timeout=120, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_sweep_tracks_into_postgresql(postgres, tmp_path, tiny_sweep):
    from mlflow.tracking import MlflowClient

    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_sweep("pg", {"seed": {"grid": [0, 1, 2]}}, evaluate=False,
                                              max_concurrent=3, base_overrides={"steps": 10})))
    out = tmp_path / "sweep"
    cmd = [str(BIN / "sjc"), "sweep", str(spec), "--out", str(out), "--mlflow-uri", postgres, "--num-cpus", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info.get("mlflow_uri", postgres) == postgres and not (out / "mlflow.db").exists()

    frame = pd.read_parquet(out / "results.parquet")
    client = MlflowClient(postgres)
    exp = client.get_experiment_by_name("sjc/pg")
    assert exp.artifact_location == (out / "mlartifacts").resolve().as_uri()  # not ./mlruns of the cwd
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sjc.role") == "sweep"]
    children = {r.data.tags["sjc.trial_id"]: r for r in runs if r.data.tags.get("sjc.role") == "trial"}
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(children) == sorted(frame["trial_id"]) and len(frame) == 3
    for row in frame.itertuples():
        run = children[row.trial_id]
        assert run.info.status == "FINISHED" and run.data.tags["sjc.status"] == row.status == "ok"
        history = client.get_metric_history(run.info.run_id, "score")
        assert [m.step for m in history] == [5, 10]
        assert "views.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
