"""Faults of whole `sjc sweep` processes (slow: each starts its own Ray): a worker and then the driver killed
with SIGKILL mid-sweep and the sweep resumed, with nothing lost or duplicated (Parquet rows = trials = MLflow
children = run folders, one metrics.jsonl line per report, every worker incarnation counted); a local sweep
listens on loopback only; a machine without mlflow runs sweeps and `sjc bench` with tracking off, and the
sweep's log holds no colour codes, progress bars, TensorBoard hint or Ray token warning.
`pytest -m slow tests/distributed/test_sweep_faults.py`."""
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

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
LOOPBACK = ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]")
BLOCK_MLFLOW = """import sys


class BlockMlflow:
    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" or name.startswith("mlflow."):
            raise ModuleNotFoundError(f"No module named '{name}' (blocked by the test)", name=name)


sys.meta_path.insert(0, BlockMlflow())
"""


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Ray's GCS, raylet and workers of a local sweep), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a sweep and the Ray processes it started (by their ids), as a killed machine would leave them."""
    tree = descendants(proc.pid)
    for pid in [proc.pid, *tree]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(predicate, timeout: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"the sweep ended before {what}"
        time.sleep(0.2)
    raise TimeoutError(f"no {what} after {timeout:.0f} s")


def sweep_cmd(*args: str) -> list[str]:
    return [str(BIN / "sjc"), "sweep", *args]


def spec_file(tmp_path: Path, tiny_sweep, name: str, space: dict, **settings) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_sweep(name, space, **settings)))
    return path


def kill_mid_sweep(first: subprocess.Popen, out: Path) -> None:
    """SIGKILL the sweep's worker once a trial has checkpointed; once its replacement has checkpointed too,
    SIGKILL the driver (and its Ray) before every trial has ended."""
    try:
        wait_for(lambda: list(out.glob("tune/*/checkpoint_*/scene.pt")), 300, first, "trial checkpoint")
        workers = [p for p in descendants(first.pid) if "SceneWorker" in cmdline(p)]
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)  # the worker dies (as under the OOM killer)
        wait_for(lambda: len(list((out / "workers").glob("*.json"))) >= 2, 300, first, "recreated worker")
        mark = time.time()
        wait_for(lambda: any(p.stat().st_mtime > mark for p in out.glob("tune/*/checkpoint_*/scene.pt")), 300,
                 first, "checkpoint after the recreation")
        ended = out / "ended.jsonl"
        assert not ended.is_file() or len(ended.read_text().splitlines()) < 4, "finished before the driver kill"
    finally:
        kill_tree(first)  # then the driver dies too, and with it this Ray instance


def test_worker_then_driver_killed_nothing_lost_or_duplicated(tmp_path, tiny_sweep):
    from mlflow.tracking import MlflowClient

    spec = spec_file(tmp_path, tiny_sweep, "faults", {"seed": {"grid": [0, 1, 2, 3]}}, max_concurrent=2,
                     checkpoint_every=1, evaluate=False, base_overrides={"steps": 150},
                     scheduler={"kind": "asha", "metric": "score", "mode": "max", "grace_period": 50})
    out = tmp_path / "sweep"
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(sweep_cmd(str(spec), "--out", str(out), "--num-cpus", "2"), stdout=log,
                                 stderr=subprocess.STDOUT)
        kill_mid_sweep(first, out)
    done = subprocess.run(sweep_cmd("--resume", str(out), "--num-cpus", "2"), capture_output=True, text=True,
                          check=False, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    frame = pd.read_parquet(out / "results.parquet")
    ids = set(frame["trial_id"])
    assert len(frame) == len(ids) == 4 and set(frame["status"]) <= {"ok", "stopped"}
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("sjc/faults").experiment_id])
    parents = [r for r in runs if r.data.tags.get("sjc.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("sjc.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(r.data.tags["sjc.trial_id"] for r in children) == sorted(ids)
    assert {p.name for p in (out / "trials").iterdir()} == ids
    for row in frame.itertuples():
        folder = Path(row.run_dir)
        assert (folder / "views.png").is_file() and (folder / "checkpoint.pt").is_file(), row.trial_id
        steps = [json.loads(ln)["step"] for ln in (folder / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(5, row.steps + 1, 5)), (row.trial_id, steps)  # no report lost or repeated
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == 4 and len(summary["sessions"]) == 1  # the killed session wrote none
    assert summary["model_loads"] >= 3  # first worker, its replacement, the resumed session's worker
    assert sum(w.get("dead", False) for w in summary["workers"]) >= 2
    assert summary["scene_steps"] >= frame["steps"].sum()  # the steps redone after each kill are counted too


def listeners(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets these processes listen on (`ss -ltnp`)."""
    text = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    out = []
    for line in text.splitlines():
        owners = {int(p.split("=")[1]) for p in line.split("users:")[-1].split(",") if p.startswith("pid=")}
        if owners & pids:
            out.append(line.split()[3])
    return out


def test_a_local_sweep_listens_on_loopback_only(tmp_path, tiny_sweep):
    if subprocess.run(["which", "ss"], capture_output=True, check=False).returncode != 0:
        pytest.skip("no `ss` here (iproute2)")
    spec = spec_file(tmp_path, tiny_sweep, "loopback", {"seed": {"grid": [0]}}, evaluate=False,
                     base_overrides={"steps": 60})
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # the sweep's own
    proc = subprocess.Popen(sweep_cmd(str(spec), "--out", str(tmp_path / "sweep"), "--mlflow-uri", "none"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    seen: set[str] = set()
    try:
        wait_for(lambda: any("SceneWorker" in cmdline(p) for p in descendants(proc.pid)), 300, proc, "worker")
        seen |= set(listeners({proc.pid, *descendants(proc.pid)}))
    finally:
        kill_tree(proc)
    assert len(seen) >= 4, seen  # GCS, raylet, driver, worker at least
    assert all(a.rsplit(":", 1)[0] in LOOPBACK for a in seen), sorted(seen)  # by default: '*' (every interface)


def test_sweep_and_bench_without_mlflow(tmp_path, tiny_sweep):
    """mlflow cannot be imported at all (a meta-path blocker in every process, Ray's workers included): the
    sweep and the benchmark run to the end with tracking off, say so, and write everything else."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCK_MLFLOW)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    check = subprocess.run([sys.executable, "-c", "import mlflow"], env=env, capture_output=True, text=True,
                           check=False)
    assert check.returncode != 0 and "blocked by the test" in check.stderr
    spec = spec_file(tmp_path, tiny_sweep, "nomlflow", {"seed": {"grid": [0, 1]}}, max_concurrent=2,
                     base_overrides={"steps": 10})
    out = tmp_path / "sweep"
    done = subprocess.run(sweep_cmd(str(spec), "--out", str(out)), capture_output=True, text=True, check=False,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "mlflow is not installed: tracking is off" in done.stdout + done.stderr
    log = done.stdout + done.stderr  # the driver's and (log_to_driver) the workers' output, as a log file gets it
    for noise in ("\x1b[", "\r", "tensorboard", "Token authentication is enabled"):  # issue 17's log noise
        assert noise not in log, noise
    frame = pd.read_parquet(out / "results.parquet")
    assert len(frame) == 2 and set(frame["status"]) == {"ok"} and not (out / "mlflow.db").exists()
    assert (out / "ranking.txt").is_file() and all((Path(d) / "views.png").is_file() for d in frame["run_dir"])
    asked = subprocess.run(sweep_cmd(str(spec), "--out", str(tmp_path / "b"), "--mlflow-uri", "http://x:5000"),
                           capture_output=True, text=True, check=False, env=env, timeout=120)
    assert asked.returncode == 2 and "'none' on a machine without mlflow" in asked.stderr
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n")
    bench = subprocess.run([str(BIN / "sjc"), "bench", str(prompts), "--methods", "sjc", "--config", "empirical",
                            "--set", "steps=10", "--set", "field.grid_size=12", "--set", "render.step=0.2",
                            "--set", "output.turntable_frames=0", "--set", "model.device=cpu", "--executor",
                            "local", "--eval", "views=2", "--mlflow-uri", "none", "--out", str(tmp_path / "bench")],
                           capture_output=True, text=True, check=False, env=env, timeout=600)
    assert bench.returncode == 0, bench.stdout[-3000:] + bench.stderr[-3000:]
    info = json.loads(bench.stdout.strip().splitlines()[-1])
    assert info["mlflow_run_id"] == "" and Path(info["parquet"]).is_file() and Path(info["report"]).is_file()
