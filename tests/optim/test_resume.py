"""Resuming after an interruption retraces the uninterrupted run exactly: theta, optimiser state, step and
both generators live in the checkpoint, and the schedules read the step, not a counter of their own."""
import json

import pytest
import torch
from safetensors.torch import load_file

from sjc_dist.jobs import run_job
from sjc_dist.optim.checkpoint import load_checkpoint
from sjc_dist.optim.loop import optimize
from sjc_dist.optim.run import SJCRun


@pytest.fixture(params=["empirical", "tiny"])
def model_and_config(request, make_config):
    """(model, cfg): the empirical oracle with annealed sigma, or the tiny diffusers pipeline (CFG, view-dependent
    prompts, sigma on the model's ticks). 6 steps; the emptiness weight switches at step 3."""
    if request.param == "empirical":
        return request.getfixturevalue("empirical_model"), make_config("sigma.kind=annealed")
    folder = request.getfixturevalue("tiny_pipeline")
    cfg = make_config(f"model.name={folder}", "prompt.view_dependent=true", "guidance.weight=7.5", "sigma.kind=ticks",
                      "sigma.min=null", "sigma.max=null")
    return request.getfixturevalue("tiny_model"), cfg


def assert_same_state(a: SJCRun, b: SJCRun) -> None:
    for (name, p), q in zip(a.scene.named_parameters(), b.scene.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=name)
    assert a.step_index == b.step_index
    assert torch.equal(a.cpu_gen.get_state(), b.cpu_gen.get_state())
    assert torch.equal(a.noise_gen.get_state(), b.noise_gen.get_state())


def test_resume_from_checkpoint_equals_straight_run(model_and_config, tmp_path):
    model, cfg = model_and_config
    straight = SJCRun(cfg, model)
    optimize(straight, cfg.steps, progress=False)

    first = SJCRun(cfg, model)
    optimize(first, cfg.steps, tmp_path, stop_after=3, log_every=2, progress=False)
    assert first.step_index == 3
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 3
    resumed = SJCRun(cfg, model)  # a fresh process would build exactly this
    resumed.load_state_dict(state)
    optimize(resumed, cfg.steps, tmp_path, log_every=2, progress=False)
    assert_same_state(straight, resumed)
    assert not torch.equal(straight.scene.field.grid, SJCRun(cfg, model).scene.field.grid)  # it did move


class Interrupt(Exception):
    pass


def interrupt_at(step: int):
    def callback(metrics):
        if metrics.step == step:
            raise Interrupt
    return callback


def test_run_job_resumes_after_interruption(make_config, empirical_model, tmp_path):
    cfg = make_config(f"output.dir={tmp_path / 'straight'}", "steps=8", "output.turntable_frames=0")
    run_job(cfg, model=empirical_model)
    broken = make_config(f"output.dir={tmp_path / 'broken'}", "steps=8", "output.turntable_frames=0")
    with pytest.raises(Interrupt):  # killed at step 6: the checkpoint of step 4 survives
        run_job(broken, model=empirical_model, callbacks=(interrupt_at(6),))
    assert load_checkpoint(tmp_path / "broken" / "checkpoint.pt")["step"] == 4
    run_job(broken, model=empirical_model)
    a, b = load_file(tmp_path / "straight" / "field.safetensors"), load_file(tmp_path / "broken" / "field.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)
    summary = json.loads((tmp_path / "broken" / "summary.json").read_text())
    assert summary["resumed_from"] == 4 and summary["steps"] == 8


def test_a_host_copy_of_the_state_saves_the_same_file(empirical_model, make_config, tmp_path):
    """RunFolder.gather hands `to_host(run.state_dict())` to a thread that writes it without the device: the
    state_dict's OrderedDicts and their _metadata survive, so checkpoint.pt holds what saving the run itself would."""
    from sjc_dist.optim.checkpoint import save_checkpoint, to_host

    run = SJCRun(make_config("steps=3"), empirical_model)
    for _ in range(3):
        run.step()
    state = run.state_dict()
    host = to_host(state)
    assert type(host["scene"]) is type(state["scene"]) and host["scene"]._metadata == state["scene"]._metadata
    a = save_checkpoint(state, tmp_path / "a" / "checkpoint.pt").read_bytes()  # the archive names its file
    b = save_checkpoint(host, tmp_path / "b" / "checkpoint.pt").read_bytes()
    assert a == b
