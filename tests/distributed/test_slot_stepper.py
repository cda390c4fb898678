"""SlotStepper, the SceneWorker's engine, without Ray: batched rounds equal solo runs, the slot bound, model
loads once per key, save/restore continues the same trajectory, divergence is reported (not raised), and the
finished run folder is written. The model is the conftest's tiny empirical one (injected loader, counted)."""
import json
import threading

import pytest
import torch

from sjc_dist.configtools import to_dict
from sjc_dist.distributed.scoring import fit_score, make_scorer
from sjc_dist.distributed.slot_errors import SlotError, WorkerFull
from sjc_dist.distributed.stepper import SlotStepper
from sjc_dist.optim.run import SJCRun


@pytest.fixture
def stepper(empirical_model):
    loads = []

    def loader(model_cfg, prompt, weight):
        loads.append(prompt)
        return empirical_model

    st = SlotStepper("empirical", max_slots=3, loader=loader)
    st.test_loads = loads
    yield st
    st.shutdown()


def config(make_config, *overrides):
    return to_dict(make_config("steps=8", "output.turntable_frames=0", *overrides))


def advance_together(st, slots, n):
    """Advance every slot from its own thread, as concurrent trials do."""
    out = {}
    threads = [threading.Thread(target=lambda s=s: out.__setitem__(s, st.advance(s, n))) for s in slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


def test_batched_slots_match_solo_runs(stepper, make_config, empirical_model):
    cfgs = [config(make_config, "seed=0"), config(make_config, "seed=1", "optim.lr=0.2")]
    slots = [stepper.open(c, "fit") for c in cfgs]
    batched = advance_together(stepper, slots, 6)
    assert stepper.stats.rounds < stepper.stats.scene_steps == 12  # some rounds stepped both scenes at once

    solo = SlotStepper("empirical", max_slots=1, loader=lambda *a: empirical_model)
    for cfg, slot in zip(cfgs, slots):
        s = solo.open(cfg, "fit")
        alone = solo.advance(s, 6)
        assert alone["sjc_step"] == batched[slot]["sjc_step"] == 6
        assert alone["loss"] == pytest.approx(batched[slot]["loss"], rel=1e-5, abs=1e-5)
        torch.testing.assert_close(solo.slots[s].run.scene.field.grid, stepper.slots[slot].run.scene.field.grid,
                                   rtol=0, atol=1e-5)
        solo.close(s)
    solo.shutdown()
    assert stepper.test_loads == ["a red cube"]  # one load for both scenes


def test_slot_bound_and_model_key(stepper, make_config):
    for seed in range(3):
        stepper.open(config(make_config, f"seed={seed}"))
    with pytest.raises(WorkerFull):
        stepper.open(config(make_config))
    stepper.close(0)
    stepper.open(config(make_config, "prompt.text=a blue sphere"))  # empirical: the prompt is the model
    assert stepper.stats.loads == 2 and stepper.test_loads == ["a red cube", "a blue sphere"]
    with pytest.raises(SlotError, match="serves model 'empirical'"):
        stepper.close(1)
        stepper.open(config(make_config, "model.name=toy"))


def test_invalid_config_is_a_slot_error(stepper, make_config):
    bad = config(make_config)
    bad["sigma"] = {"kind": "uniform", "min": 5.0, "max": 1.0}
    with pytest.raises(SlotError, match="sigma.min"):
        stepper.open(bad)
    outside = config(make_config, "sigma.max=100")  # a valid config beyond the model's sigma range (80)
    with pytest.raises(SlotError, match="inside the model's range"):
        stepper.open(outside)
    assert stepper.load() == 0  # the reserved slots were released


def test_save_restore_continues_the_trajectory(stepper, make_config, tmp_path):
    a = stepper.open(config(make_config))
    stepper.advance(a, 3)
    path = stepper.save(a, str(tmp_path / "scene.pt"))
    b = stepper.restore(path)
    c = stepper.import_state(stepper.export_state(a))
    results = [stepper.advance(s, 4) for s in (a, b, c)]
    assert [r["sjc_step"] for r in results] == [7, 7, 7]
    assert results[1]["loss"] == pytest.approx(results[0]["loss"], rel=1e-6)
    assert results[2]["loss"] == pytest.approx(results[0]["loss"], rel=1e-6)
    assert results[1]["device_seconds"] >= results[0]["device_seconds"] - results[0]["device_seconds"]


def test_divergence_is_reported_as_failed(stepper, make_config):
    bad = stepper.open(config(make_config, "emptiness.lambda1=1e39"))
    good = stepper.open(config(make_config))
    out = advance_together(stepper, [bad, good], 3)
    assert out[bad]["sjc_status"] == "failed" and "DivergenceError" in out[bad]["failure"]
    assert "NaN or Inf" in out[bad]["failure"]
    assert out[good]["sjc_status"] == "running" and out[good]["sjc_step"] == 3


def test_advance_stops_at_the_last_step_and_finish_writes_the_folder(stepper, make_config, tmp_path):
    s = stepper.open(config(make_config))
    assert stepper.advance(s, 100)["sjc_step"] == 8  # never past cfg.steps
    out = stepper.finish(s, str(tmp_path / "run"))
    for name in ("field", "views", "config"):
        assert (tmp_path / "run").joinpath(out["files"][name]).is_file()
    assert out["eval_note"] == "evaluation off"


def test_scorers(stepper, make_config):
    s = stepper.open(config(make_config))
    run = stepper.slots[s].run
    truth, name = make_scorer("auto", run)
    assert name == "truth"
    scores = truth(run)
    assert 0.0 <= scores["score/iou"] <= 1.0 and 0.0 < scores["score/soft_iou"] <= 1.0
    fit = fit_score(run)
    assert fit["score"] == fit["score/fit"] < 0
    assert fit_score(run) == fit  # fixed views and noise: the same state scores the same
    flat = SJCRun(make_config(), run.model, dims=2)  # the 2D check has no 3D truth
    assert make_scorer("auto", flat)[1] == "fit (auto: not a 3D run)"
    with pytest.raises(ValueError, match="not a 3D run"):
        make_scorer("truth", flat)


def test_an_error_fails_only_the_scene_that_raised_it(stepper, make_config, empirical_model):
    """Issue 15: one scene's exception inside a batched round (here its losses raise from step 3 on) fails that
    scene alone, with its step; its batch-mate goes on exactly as if it had been stepped alone."""
    good_cfg, bad_cfg = config(make_config, "seed=0"), config(make_config, "seed=1")
    good, bad = stepper.open(good_cfg, "fit"), stepper.open(bad_cfg, "fit")
    run, calls = stepper.slots[bad].run, []
    real_record = run.record

    def record(*args):  # where a step's losses are kept: batched or alone
        calls.append(1)
        if len(calls) >= 3:
            raise RuntimeError("value cannot be converted to type float without overflow")
        return real_record(*args)

    run.record = record
    out = advance_together(stepper, [good, bad], 5)
    assert out[bad]["sjc_status"] == "failed" and out[bad]["sjc_step"] == 2
    assert out[bad]["failure"] == ("RuntimeError at step 3 of 8: value cannot be converted to type float without "
                                   "overflow")
    assert out[good]["sjc_status"] == "running" and out[good]["sjc_step"] == 5
    solo = SlotStepper("empirical", max_slots=1, loader=lambda *a: empirical_model)
    alone = solo.open(good_cfg, "fit")
    solo.advance(alone, 5)
    torch.testing.assert_close(solo.slots[alone].run.scene.field.grid, stepper.slots[good].run.scene.field.grid,
                               rtol=0, atol=1e-5)
    solo.shutdown()


def test_divergence_counts_steps_from_one(stepper, make_config):
    s = stepper.open(config(make_config, "emptiness.lambda1=1e39"))
    failure = stepper.advance(s, 2)["failure"]
    assert failure.startswith("DivergenceError: run diverged at step 1 of 8: the loss"), failure
    assert "checkpoint" not in failure  # the engine's checkpoint note is not a trial's


def test_run_folder_has_config_metrics_and_checkpoint(stepper, make_config, tmp_path):
    """A slot's folder is a run folder: config.json from the start, one metrics.jsonl line per report (a slot
    restored from a checkpoint cuts the lines past it, so no step is logged twice), checkpoint.pt at the end."""
    from sjc_dist.optim.checkpoint import load_checkpoint

    folder = tmp_path / "trial"
    a = stepper.open(config(make_config, f"output.dir={folder}"))
    assert (folder / "config.json").is_file()
    stepper.advance(a, 3)
    saved = stepper.save(a, str(tmp_path / "scene.pt"))
    stepper.advance(a, 3)
    stepper.close(a)  # as if its worker died after step 6; the trial resumes from its checkpoint at 3
    b = stepper.restore(saved)
    stepper.advance(b, 3)
    steps = [json.loads(ln)["step"] for ln in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps == [3, 6]
    again = stepper.open(config(make_config, f"output.dir={folder}"))  # a retry from scratch starts over
    assert not (folder / "metrics.jsonl").read_text()
    stepper.close(again)
    files = stepper.finish(b, str(folder))["files"]
    assert files["metrics"] == str(folder / "metrics.jsonl") and load_checkpoint(folder / "checkpoint.pt")["step"] == 6
    assert json.loads((folder / "summary.json").read_text())["steps"] == 6


def test_stats_file_follows_the_counters(empirical_model, make_config, tmp_path):
    path = tmp_path / "worker.json"
    st = SlotStepper("empirical", max_slots=2, loader=lambda *a: empirical_model, stats_path=str(path))
    st.advance(st.open(config(make_config)), 4)
    saved = json.loads(path.read_text())
    assert saved["loads"] == 1 and saved["scene_steps"] == 4 and saved["stats_path"] == str(path)
    st.shutdown()
