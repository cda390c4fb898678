"""SJCRun: view-dependent conditioning, checks of the resolved sigma window against the model, and a step's
bookkeeping (metrics, step index, theta moves, the denoiser stays frozen)."""
import math

import pytest
import torch

from sjc_dist.errors import ConfigError
from sjc_dist.optim.run import SJCRun


def test_view_dependent_prompts(make_config, tiny_pipeline, tiny_model):
    cfg = make_config(f"model.name={tiny_pipeline}", "prompt.view_dependent=true", "sigma.min=null",
                      "sigma.max=null", "guidance.weight=7.5", "prompt.negative=blurry")
    run = SJCRun(cfg, tiny_model)
    got = run.cond_for(["front", "overhead"], 2)
    want = tiny_model.text.cond(["front view of a red cube", "overhead view of a red cube"], "blurry", 7.5)
    for a, b in [(got.context, want.context), (got.uncond, want.uncond), (got.weight, want.weight)]:
        torch.testing.assert_close(a, b)
    flat = SJCRun(make_config(f"model.name={tiny_pipeline}", "sigma.min=null", "sigma.max=null"), tiny_model)
    torch.testing.assert_close(flat.cond_for(["front"], 1).context, tiny_model.text.cond(["a red cube"]).context)


def test_textless_model_gets_only_the_weight(make_config, empirical_model):
    cond = SJCRun(make_config("guidance.weight=3"), empirical_model).cond_for(["side"], 2)
    assert cond.context is None and cond.uncond is None
    torch.testing.assert_close(cond.weight, torch.full((2,), 3.0))


@pytest.mark.parametrize("overrides", [["sigma.max=100"], ["sigma.min=0.0001", "sigma.max=1"]])
def test_sigma_window_outside_the_model_is_refused(make_config, empirical_model, overrides):
    with pytest.raises(ConfigError, match="sigma.min/sigma.max"):
        SJCRun(make_config(*overrides), empirical_model)  # the empirical model spans [0.002, 80]


def test_through_vae_needs_a_vae(make_config, empirical_model):
    with pytest.raises(ConfigError, match="guidance.through_vae"):
        SJCRun(make_config("guidance.kind=sds", "guidance.through_vae=true"), empirical_model)


def test_step_moves_theta_and_reports_metrics(make_config, tiny_pipeline, tiny_model):
    cfg = make_config(f"model.name={tiny_pipeline}", "sigma.min=null", "sigma.max=null", "render.views_per_step=2")
    run = SJCRun(cfg, tiny_model)
    before = run.scene.field.grid.detach().clone()
    loss = run.step()
    assert run.step_index == 1 and loss.shape == () and not loss.requires_grad
    assert not torch.equal(before, run.scene.field.grid)
    m = run.metrics()
    assert m.step == 1 and m.emptiness_lambda == cfg.emptiness.lambda1
    assert m.loss == pytest.approx(m.guidance + m.emptiness + m.depth, rel=1e-5, abs=1e-5)
    assert all(math.isfinite(v) for v in vars(m).values())
    assert 0.0983 - 1e-4 <= m.sigma <= 12.23  # the official SJC window of the model's ticks
    assert all(p.grad is None for p in tiny_model.denoiser.inner.unet.parameters())
    run.check_finite()  # no error on a healthy run
