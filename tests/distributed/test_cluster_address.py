"""`sjc sweep --address` against a separately started Ray cluster (`ray start --head --block` on 127.0.0.1,
token authentication on, as Ray 2.60 sets it up), with Tune state on a separate `--storage` path.
Slow (a cluster start plus a CLI process): `pytest -m slow tests/distributed`."""
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """A one-node Ray cluster in its own process group; SIGTERM to `ray start --block` stops all it started."""
    port = free_port()
    cmd = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
           "--include-dashboard", "false", "--disable-usage-stats"]
    with open(tmp_path / "cluster.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(port, proc, 120)
            yield f"127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            forget_cluster(port)


def forget_cluster(port: int) -> None:
    """`ray start` records its address in /tmp/ray/ray_current_cluster, and a later plain `ray.init()` anywhere on
    the machine would try to join it; a stopped `--block` head leaves the file behind, so remove our record."""
    record = Path("/tmp/ray/ray_current_cluster")
    if record.is_file() and record.read_text().strip().endswith(f":{port}"):
        record.unlink()


def wait_for_port(port: int, proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "ray start exited early"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                time.sleep(3)  # the head's other services come up just after the GCS port opens
                return
        time.sleep(0.5)
    raise TimeoutError(f"no Ray head on port {port} after {timeout:.0f} s")


def test_sweep_on_a_cluster_address(cluster, tmp_path, tiny_sweep):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_sweep("cluster", {"seed": {"grid": [0, 1]}}, evaluate=False,
                                              max_concurrent=2, base_overrides={"steps": 10})))
    out, storage = tmp_path / "sweep", tmp_path / "storage"
    cmd = [str(BIN / "sjc"), "sweep", str(spec), "--address", cluster, "--out", str(out), "--storage", str(storage)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    info = json.loads(done.stdout.strip().splitlines()[-1])
    frame = pd.read_parquet(info["results"])
    assert len(frame) == 2 and set(frame["status"]) == {"ok"}
    assert list(storage.glob("cluster-*/experiment_state-*.json"))  # Tune's state went to --storage
    assert not (out / "tune").exists()
