"""The driver's MLflow writer (mlflow_writer.py) and the tracker on top of it (tracking.py): posts return while
the store is busy, each run's pending writes coalesce into the fewest calls MLflow's limits allow, failed writes
are retried and then kept as errors, and on a real SQLite store a resumed tracker finds its runs, skips repeated
reports and reconciles runs the driver left unfinished with the results rows; the SQLite file is in WAL mode."""
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow.entities import Metric, Param, RunTag

from sjc_dist.distributed import mlflow_writer
from sjc_dist.distributed.mlflow_writer import RunWriter, batches, one_call


class FakeClient:
    """Records every call; `gate` (an Event) holds create_run until set; `fail` counts log_batch failures left."""

    def __init__(self, gate=None, fail=0):
        self.calls, self.gate, self.fail, self.n = [], gate, fail, 0

    def create_run(self, experiment_id, run_name, tags):
        if self.gate is not None:
            self.gate.wait(30)
        self.n += 1
        self.calls.append(("create_run", run_name))
        return SimpleNamespace(info=SimpleNamespace(run_id=f"r{self.n}"))

    def log_batch(self, run_id, metrics, params, tags):
        if self.fail:
            self.fail -= 1
            raise RuntimeError("database is locked")
        self.calls.append(("log_batch", run_id, len(params), len(metrics), len(tags)))

    def log_artifacts(self, run_id, path):
        self.calls.append(("log_artifacts", run_id, Path(path).name))

    def log_artifact(self, run_id, path):
        self.calls.append(("log_artifact", run_id, Path(path).name))

    def set_terminated(self, run_id, status):
        self.calls.append(("set_terminated", run_id, status))


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(mlflow_writer, "LINGER_S", 0.0)
    monkeypatch.setattr(mlflow_writer.time, "sleep", lambda s: None)  # the writer's linger and retry back-off


def test_batches_keep_within_mlflow_limits():
    chunks = batches(list(range(250)), list(range(1500)), list(range(30)))
    assert [(len(p), len(m), len(t)) for p, m, t in chunks] == [(100, 870, 30), (100, 630, 0), (50, 0, 0)]
    assert all(len(p) + len(m) + len(t) <= 1000 for p, m, t in chunks)
    assert batches([], [], []) == []


def test_artifacts_go_in_one_call_unless_their_names_clash(tmp_path):
    a, b = tmp_path / "run", tmp_path / "other"
    for folder in (a, b):
        folder.mkdir()
        (folder / "views.png").write_bytes(b"x")
        (folder / "field.safetensors").write_bytes(b"x")
    assert one_call([str(a / "views.png"), str(b / "field.safetensors"), str(a / "missing")]) == (
        [a / "views.png", b / "field.safetensors"], True)
    assert one_call([str(a / "views.png"), str(b / "views.png")])[1] is False  # one name twice
    assert one_call([str(a / "views.png")])[1] is False


def test_posts_return_while_the_store_is_busy_and_coalesce_per_run(tmp_path):
    """create_run is held: 60 posts for 3 runs return anyway; released, each run costs create + the batches its
    150 params need + one artifacts call + one end, whatever the number of posts."""
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    gate = threading.Event()
    client = FakeClient(gate)
    writer = RunWriter(client, "0")
    for key in ("t1", "t2", "t3"):
        writer.create(key, key, {})
        writer.log(key, params=[Param(f"p{i}", "1") for i in range(150)])
        for step in range(15):
            writer.log(key, metrics=[Metric("score", 1.0, 0, step)])
        writer.artifacts(key, [str(tmp_path / "a.png"), str(tmp_path / "b.png")])
        writer.end(key, "FINISHED")
    assert client.calls == []  # everything posted, nothing written yet
    gate.set()
    writer.close()
    per_run = [[c[0] for c in client.calls if len(c) > 1 and c[1] == rid] for rid in ("r1", "r2", "r3")]
    assert ("log_artifacts", "r1") in [c[:2] for c in client.calls]
    assert per_run == [["log_batch", "log_batch", "log_artifacts", "set_terminated"]] * 3
    assert [c for c in client.calls if c[0] == "log_batch"][:2] == [("log_batch", "r1", 100, 15, 0),
                                                                    ("log_batch", "r1", 50, 0, 0)]
    assert writer.runs == {"t1": "r1", "t2": "r2", "t3": "r3"} and not writer.errors


def test_failed_writes_are_retried_then_kept_as_errors():
    client = FakeClient(fail=2)
    writer = RunWriter(client, "0")
    writer.create("t1", "t1", {})
    writer.log("t1", tags=[RunTag("sjc.status", "ok")])
    writer.flush()
    assert ("log_batch", "r1", 0, 0, 1) in client.calls and not writer.errors  # third try went through
    client.fail = 10
    writer.log("t1", tags=[RunTag("sjc.status", "failed")])
    writer.end("t1", "FAILED")
    writer.close()
    assert len(writer.errors) == 1 and "database is locked" in writer.errors[0]
    assert client.calls[-1] == ("set_terminated", "r1", "FAILED")  # the writer went on


def trial(tid: str, last: dict | None = None):
    return SimpleNamespace(trial_id=tid, config={"params": {"seed": 1}}, last_result=last or {})


def row(tid: str, status: str):
    return SimpleNamespace(trial_id=tid, status=status, failure="", steps=10, final={"score": 0.5},
                           params={"seed": 1, "steps": 10})


def test_tracker_on_sqlite_resumes_skips_repeats_and_reconciles(tmp_path):
    from mlflow.tracking import MlflowClient

    from sjc_dist.distributed.tracking import SweepTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = {"model": {"name": "empirical"}, "prompt": {"text": "a red cube"}}
    first = SweepTracker(uri, "sjc/t", str(tmp_path), base)
    first.start_parent("t", {"name": "t"})
    (tmp_path / "views.png").write_bytes(b"x")
    (tmp_path / "mesh.ply").write_bytes(b"x")
    first.on_trial_start(0, [], trial("a"))
    for step in (5, 10):
        first.on_trial_result(0, [], trial("a"), {"sjc_step": step, "score": step / 10})
    first.on_trial_complete(0, [], trial("a", {"sjc_status": "ok", "artifact/views": str(tmp_path / "views.png"),
                                               "artifact/mesh": str(tmp_path / "mesh.ply")}))
    first.on_trial_start(0, [], trial("b"))
    first.on_trial_result(0, [], trial("b"), {"sjc_step": 5, "score": 0.1})
    first.on_experiment_end([])  # the driver dies here: b's run stays RUNNING, c never got one

    again = SweepTracker(uri, "sjc/t", str(tmp_path), base)
    again.start_parent("t", {"name": "t"})
    again.on_trial_result(0, [], trial("b"), {"sjc_step": 5, "score": 0.1})  # replayed from its checkpoint
    again.on_trial_result(0, [], trial("b"), {"sjc_step": 10, "score": 0.2})
    again.finish([], {"best/score": 1.0}, "FINISHED", [row("a", "ok"), row("b", "ok"), row("c", "stopped")])

    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow.db") as conn:
        assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"  # tracking.sqlite_wal
    client = MlflowClient(uri)
    runs = again.trial_runs()
    assert sorted(runs) == ["a", "b", "c"]  # one run per row, none twice
    assert [m.step for m in client.get_metric_history(runs["a"].info.run_id, "score")] == [5, 10]
    assert [m.step for m in client.get_metric_history(runs["b"].info.run_id, "score")] == [5, 10]
    assert {a.path for a in client.list_artifacts(runs["a"].info.run_id)} == {"views.png", "mesh.ply"}
    assert runs["a"].data.params["model.name"] == "empirical" and runs["a"].data.tags["sjc.status"] == "ok"
    assert runs["b"].info.status == "FINISHED" and runs["b"].data.tags["sjc.status"] == "ok"
    assert runs["c"].data.tags["sjc.status"] == "stopped" and runs["c"].data.metrics["score"] == 0.5
    assert client.get_run(again.parent_id).info.status == "FINISHED" and again.parent_id == first.parent_id
