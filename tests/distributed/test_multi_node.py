"""A Ray cluster of several nodes on this one machine (issue 18): a head with no CPUs (the driver's node) and three
worker nodes, each its own `ray start --block` with two logical CPUs and its own custom resource, all on
127.0.0.1 with Ray's token authentication. `sjc sweep --address` spreads six trials and two SceneWorkers over
them (so some trials step on a worker of another node, their checkpoints travelling as bytes: export_state /
import_state); once trials have checkpointed, the busiest worker node is SIGKILLed (its raylet and every
process on it, as a lost machine), and its trials and workers finish elsewhere from their checkpoints: nothing
lost (Parquet rows = trials = MLflow children = run folders, one metrics line per report).
Slow (four Ray nodes and a sweep, ~3 min on 2 cores): `pytest -m slow tests/distributed/test_multi_node.py`."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_cluster_address import forget_cluster, free_port, wait_for_port
from test_sweep_faults import cmdline, descendants, wait_for

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
NODES = 3
# conftest sets Ray's single-machine mode (=0), which refuses worker nodes; a joining node sends the token
# (~/.ray/auth_token, written by the head) only in token mode
MULTI_NODE = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1", "RAY_AUTH_MODE": "token"}
JOIN = {"RAY_raylet_start_wait_time_s": "120"}  # default 30 s, short on a loaded machine
FAST_DEATH = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def ray_start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    cmd = [str(BIN / "ray"), "start", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats", *args]
    with open(log, "w") as f:
        env = {**os.environ, **MULTI_NODE, **(env or {})}
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)


def stop(proc: subprocess.Popen, hard: bool = False) -> None:
    """Stop a `ray start --block` and every process it started (SIGKILL by id when `hard`: a lost node)."""
    if proc.poll() is not None:
        return
    if hard:
        for pid in [proc.pid, *descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    else:
        proc.terminate()
    proc.wait(timeout=60)


@pytest.fixture
def cluster(tmp_path):
    """(address, {node name: its `ray start` process}): a CPU-less head and NODES two-CPU worker nodes."""
    port = free_port()
    head = ray_start(["--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false"],
                     tmp_path / "head.log", FAST_DEATH)
    nodes = {}
    try:
        wait_for_port(port, head, 120)
        for i in range(NODES):  # one at a time: on a loaded machine, raylets starting together time out
            log = tmp_path / f"node{i}.log"
            nodes[f"node{i}"] = ray_start(["--address", f"127.0.0.1:{port}", "--num-cpus", "2",
                                           "--resources", json.dumps({f"node{i}": 1})], log, JOIN)
            wait_for(lambda log=log: "block forever" in log.read_text(), 180, nodes[f"node{i}"], f"node{i} up")
        time.sleep(3)
        assert all(p.poll() is None for p in nodes.values()), [(tmp_path / f"{n}.log").read_text()[-1000:]
                                                               for n, p in nodes.items() if p.poll() is not None]
        yield f"127.0.0.1:{port}", nodes
    finally:
        for proc in [*nodes.values(), head]:
            stop(proc)
        forget_cluster(port)


def census(nodes: dict) -> dict[str, dict[str, int]]:
    """Per node: its SceneWorker and trial (Tune Trainable) processes, from the titles Ray gives its workers."""
    out = {}
    for name, proc in nodes.items():
        titles = [cmdline(p) for p in descendants(proc.pid)]
        out[name] = {"workers": sum("SceneWorker" in t for t in titles),
                     "trials": sum("Trainable" in t for t in titles)}  # ray::ResourceTrainable.*
    return out


def test_sweep_over_three_nodes_survives_losing_one(cluster, tmp_path, tiny_sweep):
    from mlflow.tracking import MlflowClient

    address, nodes = cluster
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_sweep(
        "nodes", {"seed": {"grid": list(range(6))}}, max_concurrent=6, checkpoint_every=1, evaluate=False,
        max_failures=4, base_overrides={"steps": 120},
        resources={"workers": 2, "slots_per_worker": 6, "cpus_per_worker": 0.25, "cpus_per_trial": 0.25})))
    out = tmp_path / "sweep"
    with open(tmp_path / "sweep.log", "w") as log:
        sweep = subprocess.Popen([str(BIN / "sjc"), "sweep", str(spec), "--address", address, "--out", str(out)],
                                 stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: len(list(out.glob("tune/*/checkpoint_*/scene.pt"))) >= 6, 400, sweep, "checkpoints")
            before = census(nodes)
            victim = max(before, key=lambda n: (before[n]["workers"], before[n]["trials"]))
            stop(nodes[victim], hard=True)
            sweep.wait(timeout=900)
        finally:
            stop(sweep)
    text = (tmp_path / "sweep.log").read_text()
    assert sweep.returncode == 0, text[-4000:]
    assert sum(1 for n in before.values() if n["workers"] + n["trials"]) >= 2, before  # spread over nodes
    assert before[victim]["workers"] + before[victim]["trials"] >= 1, before

    frame = pd.read_parquet(out / "results.parquet")
    ids = set(frame["trial_id"])
    assert len(frame) == len(ids) == 6 and set(frame["status"]) == {"ok"}, frame[["trial_id", "status"]]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sjc/nodes").experiment_id])
    children = [r for r in runs if r.data.tags.get("sjc.role") == "trial"]
    assert sorted(r.data.tags["sjc.trial_id"] for r in children) == sorted(ids)
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {p.name for p in (out / "trials").iterdir()} == ids
    for row in frame.itertuples():
        steps = [json.loads(ln)["step"] for ln in (Path(row.run_dir) / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(5, 121, 5)), (row.trial_id, steps)  # no report lost or repeated
    summary = json.loads((out / "summary.json").read_text())
    if before[victim]["workers"]:
        assert sum(w.get("dead", False) for w in summary["workers"]) >= 1  # the lost node's worker
    (tmp_path / "census.json").write_text(json.dumps({"before": before, "victim": victim}))
    print(json.dumps({"census": before, "killed": victim, "steps": int(frame["steps"].sum()),
                      "scene_steps": summary["scene_steps"]}))
