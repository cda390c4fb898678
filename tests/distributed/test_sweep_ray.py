"""Sweeps on a local Ray (2 CPUs) at tiny budgets: a 4-trial sweep end to end (Parquet rows, MLflow parent and
children, ranking, `sjc results`), model loads == actors (not trials; each begun by the driver's preload before
a trial asked), ASHA stopping a poor trial (its folder written), a diverging trial failing alone, tracking off
without mlflow, and a killed worker's trial finishing from its checkpoint (both worker incarnations counted)."""
import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from sjc_dist.cli import main
from sjc_dist.distributed.spec import load_sweep
from sjc_dist.distributed.sweep import SweepOptions, run_sweep


@pytest.fixture(scope="module")
def e2e(ray_session, tmp_path_factory, tiny_sweep):
    """4 trials (2 CFG weights x 2 seeds) on 2 dedicated workers, 4 at once."""
    spec = load_sweep(tiny_sweep("e2e", {"guidance.weight": {"grid": [1.0, 3.0]}, "seed": {"grid": [0, 1]}},
                                 max_concurrent=4, resources={"workers": 2, "slots_per_worker": 2}))
    out = tmp_path_factory.mktemp("e2e") / "sweep"
    return run_sweep(spec, SweepOptions(out=str(out))), spec


def test_four_trials_end_to_end(e2e, capsys):
    outcome, _ = e2e
    frame = pd.read_parquet(outcome.table)
    assert len(frame) == 4 and set(frame["status"]) == {"ok"}
    assert sorted(zip(frame["param.guidance.weight"], frame["seed"])) == [(1, 0), (1, 1), (3, 0), (3, 1)]
    assert (frame["prompt"] == "a red cube").all() and (frame["steps"] == 20).all()
    assert frame["param.field.grid_size"].eq(12).all() and "param.emptiness.beta" in frame  # whole config
    assert (frame["wall_seconds"] > 0).all() and (frame["device_seconds"] > 0).all()
    assert (frame["gpu_seconds"] == 0).all()  # CPU workers
    assert frame["final.score"].lt(0).all() and frame["best_metric"].notna().all()
    for col in ("artifact.views", "artifact.turntable", "artifact.field"):
        assert frame[col].map(lambda p: Path(p).is_file()).all(), col
    # ranking: best score first, and the summary agrees
    ranked = frame.sort_values("final.score", ascending=False)
    summary = json.loads((outcome.sweep_dir / "summary.json").read_text())
    assert summary["best_trial"] == ranked["trial_id"].iloc[0]
    assert outcome.ranking.splitlines()[1].split()[1] == ranked["trial_id"].iloc[0]
    # `sjc results` prints the ranking and writes one plot per swept key
    assert main(["results", str(outcome.sweep_dir), "--top", "3"]) == 0
    text = capsys.readouterr().out
    assert "4 trials ranked by score" in text and ranked["trial_id"].iloc[0] in text
    assert sorted(p.name for p in (outcome.sweep_dir / "plots").glob("*.png")) == [
        "score_vs_guidance.weight.png", "score_vs_seed.png"]


def test_mlflow_parent_and_children(e2e):
    outcome, _ = e2e
    assert outcome.mlflow_uri == f"sqlite:///{outcome.sweep_dir / 'mlflow.db'}"
    client = MlflowClient(outcome.mlflow_uri)
    exp = client.get_experiment_by_name("sjc/e2e")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == outcome.parent_run_id]
    assert len(runs) == 5 and len(children) == 4
    parent = client.get_run(outcome.parent_run_id)
    assert parent.info.status == "FINISHED" and "best/score" in parent.data.metrics
    assert "results.parquet" in [a.path for a in client.list_artifacts(outcome.parent_run_id)]
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["sjc.status"] == "ok"
        assert child.data.params["model.name"] == "empirical" and len(child.data.params) > 50
        history = client.get_metric_history(child.info.run_id, "score")
        assert [m.step for m in history] == [5, 10, 15, 20]
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"views.png", "turntable.gif", "field.safetensors", "config.json"} <= names


def test_model_loads_equal_actors_not_trials(e2e):
    outcome, _ = e2e
    assert len(outcome.rows) == 4 and len(outcome.workers) == 2
    assert outcome.model_loads == 2 == sum(w["opened"] > 0 for w in outcome.workers)
    assert sum(w["opened"] for w in outcome.workers) == 4
    assert sum(w["scene_steps"] for w in outcome.workers) == 4 * 20
    assert sum(w["rounds"] for w in outcome.workers) < 4 * 20  # scenes of one worker shared forwards
    for w in outcome.workers:  # issue 14: each worker's load came from the driver's preload, begun before a trial
        assert w["preload"] == "loaded" and w["loads"] == 1 and w["load_started_at"] < w["first_open_at"]  # asked


def test_asha_stops_the_poor_trial(ray_session, shared_options, tiny_sweep):
    """Three trials learn (lr 0.05), the last cannot (lr 1e-6, its fit score stays flat): ASHA stops it at the
    first rung, after the good ones recorded theirs (2 at a time, the poor one last)."""
    spec = load_sweep(tiny_sweep("asha", {"optim.lr": {"grid": [0.05, 0.05, 0.05, 1e-6]}, "seed": {"grid": [0]}},
                                 max_concurrent=2, evaluate=False, base_overrides={"steps": 30},
                                 scheduler={"kind": "asha", "metric": "score", "mode": "max", "grace_period": 10,
                                            "reduction_factor": 2}))
    outcome = run_sweep(spec, shared_options)
    frame = pd.read_parquet(outcome.table).sort_values("param.optim.lr")
    poor, good = frame.iloc[0], frame.iloc[1:]
    assert poor["param.optim.lr"] == 1e-6 and poor["status"] == "stopped" and poor["steps"] < 30
    assert (good["final.score"] > poor["final.score"]).all()
    assert good["steps"].max() == 30
    # the stopped trial's folder holds the run as it stood at the stop, and MLflow has its files (issue 15)
    folder = Path(poor["run_dir"])
    for name in ("views.png", "field.safetensors", "checkpoint.pt", "config.json", "summary.json"):
        assert (folder / name).is_file(), name
    steps = [json.loads(ln)["step"] for ln in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, poor["steps"] + 1, 5))
    assert poor["artifact.views"] == str(folder / "views.png")
    client = MlflowClient(outcome.mlflow_uri)
    child = client.search_runs([client.get_experiment_by_name("sjc/asha").experiment_id],
                               f"tags.`sjc.trial_id` = '{poor['trial_id']}'")[0]
    assert child.data.tags["sjc.status"] == "stopped" and "not evaluated" in child.data.tags["sjc.eval_note"]
    assert "views.png" in {a.path for a in client.list_artifacts(child.info.run_id)}


def test_diverging_trial_fails_and_others_finish(ray_session, shared_options, tiny_sweep):
    spec = load_sweep(tiny_sweep("diverge", {"emptiness.lambda1": {"grid": [1.0, 1e39]}}, evaluate=False,
                                 max_concurrent=2, base_overrides={"steps": 10}))
    outcome = run_sweep(spec, shared_options)
    frame = pd.read_parquet(outcome.table).set_index("param.emptiness.lambda1")
    assert frame.loc[1.0, "status"] == "ok" and frame.loc[1.0, "steps"] == 10
    assert frame.loc[1e39, "status"] == "failed"
    assert "DivergenceError" in frame.loc[1e39, "failure"] and "NaN or Inf" in frame.loc[1e39, "failure"]
    assert "at step 1 of 10" in frame.loc[1e39, "failure"]  # steps count from 1, as sjc_step does
    assert outcome.ranking.splitlines()[-1].split()[2] == "failed"  # ranked last


def test_tracking_off_without_mlflow(ray_session, shared_options, tiny_sweep, monkeypatch):
    """Issue 15 item 9: where mlflow cannot be imported the sweep runs with tracking off and says so; Parquet,
    ranking, summary and run folders are as usual (the subprocess version, Ray workers included, is slow)."""
    import sys

    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.setitem(sys.modules, name, None)  # `import mlflow...` now raises ImportError
    spec = load_sweep(tiny_sweep("offline", {"seed": {"grid": [0, 1]}}, evaluate=False, max_concurrent=2,
                                 base_overrides={"steps": 10}))
    outcome = run_sweep(spec, shared_options)
    assert outcome.mlflow_uri == "" and any("tracking is off" in n for n in outcome.notes)
    assert not (outcome.sweep_dir / "mlflow.db").exists()
    frame = pd.read_parquet(outcome.table)
    assert len(frame) == 2 and set(frame["status"]) == {"ok"} and frame["run_dir"].map(
        lambda d: (Path(d) / "views.png").is_file()).all()
    assert json.loads((outcome.sweep_dir / "summary.json").read_text())["trials"] == 2


def kill_after_first_checkpoint(sweep_dir: Path, actor_name: str, done: dict, timeout: float = 240) -> None:
    """Wait for a trial checkpoint on disk, then ray.kill the worker holding the trial."""
    import ray

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(sweep_dir.glob("tune/*/checkpoint_*/scene.pt")):
            ray.kill(ray.get_actor(actor_name, namespace="sjc"))
            done["killed"] = time.monotonic()
            return
        time.sleep(0.05)


def test_killed_worker_trial_resumes_from_its_checkpoint(ray_session, tmp_path, tiny_sweep):
    from sjc_dist.distributed.sweep import build_pool

    spec = load_sweep(tiny_sweep("kill", {"seed": {"grid": [0]}}, evaluate=False, checkpoint_every=1,
                                 max_failures=2, base_overrides={"steps": 60}))
    opts = SweepOptions(out=str(tmp_path / "sweep"))
    name = build_pool(spec, Path(opts.out).resolve()).names("empirical")[0]
    done: dict = {}
    killer = threading.Thread(target=kill_after_first_checkpoint, args=(Path(opts.out), name, done))
    killer.start()
    outcome = run_sweep(spec, opts)
    killer.join()
    assert "killed" in done
    row = pd.read_parquet(outcome.table).iloc[0]
    assert row["status"] == "ok" and row["steps"] == 60
    # restored from a checkpoint, not restarted: fewer iterations since the restore than in all
    assert row["final.iterations_since_restore"] < 60 / 5
    live = [w for w in outcome.workers if not w.get("dead")]
    assert live[0]["opened"] == 1  # the replacement worker opened the trial once: its restore
    assert outcome.model_loads == 2 and len(outcome.workers) == 2  # the dead worker's load is counted too
    assert outcome.summary["scene_steps"] > live[0]["scene_steps"]
    steps = [json.loads(ln)["step"] for ln in (Path(row["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 61, 5))  # the reports replayed after the restore are not logged twice


def interrupt_after_checkpoint(sweep_dir: Path, done: dict, timeout: float = 240) -> None:
    """SIGINT this process (as Ctrl+C would) once a trial has checkpointed: Tune saves its state and returns."""
    import os
    import signal

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(sweep_dir.glob("tune/*/checkpoint_*/scene.pt")):
            os.kill(os.getpid(), signal.SIGINT)
            done["interrupted"] = True
            return
        time.sleep(0.05)


def test_interrupted_sweep_resumes(ray_session, shared_options, tiny_sweep):
    spec = load_sweep(tiny_sweep("resume", {"seed": {"grid": [0, 1]}}, evaluate=False, max_concurrent=2,
                                 checkpoint_every=1, base_overrides={"steps": 80}))
    done: dict = {}
    thread = threading.Thread(target=interrupt_after_checkpoint, args=(Path(shared_options.out), done))
    thread.start()
    first = run_sweep(spec, shared_options)
    thread.join()
    assert done and first.interrupted, [(r.status, r.steps) for r in first.rows]
    assert {r.status for r in first.rows} <= {"interrupted", "ok"} and min(r.steps for r in first.rows) < 80
    again = run_sweep(spec, shared_options, resume=True)
    frame = pd.read_parquet(again.table)
    assert len(frame) == 2 and set(frame["status"]) == {"ok"} and (frame["steps"] == 80).all()
    assert again.parent_run_id == first.parent_run_id  # the same MLflow parent run, continued
    resumed = frame[frame["trial_id"].isin([r.trial_id for r in first.rows if r.status == "interrupted"])]
    # the trial that had checkpointed went on from its checkpoint (one without a checkpoint starts over)
    assert (resumed["final.iterations_since_restore"] < 80 / 5).any()


def test_optuna_sweep_draws_valid_sigma_windows(ray_session, shared_options, tiny_sweep):
    """Optuna TPE with ASHA: every drawn trial keeps sigma.min < sigma.max and runs through load_config."""
    spec = load_sweep(tiny_sweep("optuna", {"sigma.min": {"loguniform": [0.02, 1.0]},
                                            "sigma.max": {"loguniform": [0.5, 15.0]}},
                                 search={"kind": "optuna", "seed": 1}, num_samples=3, max_concurrent=3,
                                 evaluate=False, base_overrides={"steps": 10},
                                 scheduler={"kind": "asha", "metric": "score", "mode": "max", "grace_period": 5}))
    outcome = run_sweep(spec, shared_options)
    frame = pd.read_parquet(outcome.table)
    assert len(frame) == 3 and set(frame["status"]) <= {"ok", "stopped"}
    assert (frame["param.sigma.min"] < frame["param.sigma.max"]).all()
    assert frame["param.sigma.min"].nunique() == 3  # three different draws
