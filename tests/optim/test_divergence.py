"""A NaN from the denoiser stops `optimize` with a DivergenceError naming the first bad step, and the checkpoint
left on disk is the last good one (finite, from before that step), with its config beside it. A field that
explodes while staying finite (max |theta| > MAX_FIELD_ABS) is divergence too."""
import pytest
import torch

from sjc_dist.config import RunConfig, load_config
from sjc_dist.configtools import to_json
from sjc_dist.diffusion.denoiser import Denoiser
from sjc_dist.diffusion.load import Model
from sjc_dist.errors import DivergenceError
from sjc_dist.optim.checkpoint import load_checkpoint
from sjc_dist.optim.loop import optimize
from sjc_dist.optim.optimizer import MAX_FIELD_ABS
from sjc_dist.optim.run import SJCRun


class NaNFrom(Denoiser):
    """The inner denoiser until its `start`-th call (0-based), NaN from then on."""

    def __init__(self, inner: Denoiser, start: int):
        self.inner, self.start, self.calls = inner, start, 0
        for name in ("sigma_min", "sigma_max", "channels", "size", "is_latent", "sigmas"):
            setattr(self, name, getattr(inner, name))

    def __call__(self, x, sigma, cond=None):
        self.calls += 1
        out = self.inner(x, sigma, cond)
        return out if self.calls <= self.start else torch.full_like(out, float("nan"))


def nan_model(model: Model, start: int) -> Model:
    return Model(NaNFrom(model.denoiser, start), model.text, model.vae, model.name, model.device)


def test_nan_names_the_step_and_keeps_last_good_checkpoint(make_config, empirical_model, tmp_path):
    cfg = make_config("steps=12")
    run = SJCRun(cfg, nan_model(empirical_model, start=5))
    with pytest.raises(DivergenceError) as info:
        optimize(run, cfg.steps, tmp_path, log_every=3, checkpoint_every=2, progress=False)
    err = info.value
    assert err.step == 5 and "step 5" in str(err)
    ckpt = tmp_path / "checkpoint.pt"
    assert err.checkpoint == str(ckpt)
    state = load_checkpoint(ckpt)
    assert state["step"] == 4  # the last one written before step 5 (checkpoints every 2 steps)
    assert all(torch.isfinite(t).all() for t in state["scene"].values())
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and '"step": 3' in lines[0]  # no metrics line of a diverged step


def test_nan_before_any_checkpoint(make_config, empirical_model, tmp_path):
    cfg = make_config("steps=4")
    run = SJCRun(cfg, nan_model(empirical_model, start=0))
    with pytest.raises(DivergenceError, match="step 0.*no checkpoint was written yet"):
        optimize(run, cfg.steps, tmp_path, log_every=2, checkpoint_every=2, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_the_config_beside_the_last_good_checkpoint_is_the_one_that_made_it(make_config, empirical_model, tmp_path):
    good = make_config("steps=12")
    optimize(SJCRun(good, empirical_model), good.steps, tmp_path, stop_after=4, log_every=2, checkpoint_every=2,
             progress=False)
    assert (tmp_path / "config.json").read_text() == to_json(good)
    bad = make_config("steps=12", "guidance.weight=7")  # resumed with other settings, diverging at once
    run = SJCRun(bad, nan_model(empirical_model, start=0))
    run.load_state_dict(load_checkpoint(tmp_path / "checkpoint.pt"))
    with pytest.raises(DivergenceError, match="its config.json kept"):
        optimize(run, bad.steps, tmp_path, log_every=2, checkpoint_every=2, progress=False)
    assert (tmp_path / "config.json").read_text() == to_json(good)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4


@pytest.mark.parametrize("name", ["field.grid", "field.d_scale", "background.texture"])
def test_a_field_that_explodes_while_finite_is_divergence(name, make_config, empirical_model):
    run = SJCRun(make_config("steps=4"), empirical_model)
    for _ in range(2):
        run.step()
    run.check_finite()  # healthy
    with torch.no_grad():
        dict(run.scene.named_parameters())[name].view(-1)[0] = -2 * MAX_FIELD_ABS  # finite, past the bound
    with pytest.raises(DivergenceError, match=rf"step 1: parameter '{name}' reached \|x\| = 2e\+04, past the bound"):
        run.check_finite()


def test_the_bound_is_far_past_what_the_official_and_toy_settings_can_reach():
    """Adamax moves a value by at most about lr per step: the official settings reach at most lr x steps = 500
    from an N(0, 1) start (toy preset runs on the GPU stayed within |theta| < 10: eval/bench/field_magnitudes.py)."""
    for cfg in (RunConfig(), load_config("toy", validate=False)):
        assert MAX_FIELD_ABS >= 20 * cfg.optim.lr * cfg.steps
