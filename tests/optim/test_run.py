"""SJCRun: view-dependent conditioning (prefixes and Perp-Neg), an estimator's negative prompt, checks of the
resolved sigma window and the guidance against the model, a step's bookkeeping (metrics, evaluations, step index,
theta moves, the denoiser stays frozen), the TV term, and coarse-to-fine growth of the grid, resumed across it."""
import math

import pytest
import torch

from sjc_dist.errors import ConfigError
from sjc_dist.optim.joint import tv_term
from sjc_dist.optim.losses import total_variation
from sjc_dist.optim.run import SJCRun
from sjc_dist.scene.cameras import orbit


def cameras(azimuth: list[float], elevation: list[float]):
    n = len(azimuth)
    return orbit(torch.tensor(azimuth), torch.tensor(elevation), torch.full((n,), 1.5), torch.full((n,), 60.0), 8, 8)


def test_view_dependent_prompts(make_config, tiny_pipeline, tiny_model):
    cfg = make_config(f"model.name={tiny_pipeline}", "prompt.view_dependent=true", "sigma.min=null",
                      "sigma.max=null", "guidance.weight=7.5", "prompt.negative=blurry")
    run = SJCRun(cfg, tiny_model)
    got = run.cond_for(cameras([0.0, 100.0], [10.0, 60.0]), 2)
    want = tiny_model.text.cond(["front view of a red cube", "overhead view of a red cube"], "blurry", 7.5)
    for a, b in [(got.context, want.context), (got.uncond, want.uncond), (got.weight, want.weight)]:
        torch.testing.assert_close(a, b)
    flat = SJCRun(make_config(f"model.name={tiny_pipeline}", "sigma.min=null", "sigma.max=null"), tiny_model)
    torch.testing.assert_close(flat.cond_for(cameras([0.0], [0.0]), 1).context,
                               tiny_model.text.cond(["a red cube"]).context)


def test_textless_model_gets_only_the_weight(make_config, empirical_model):
    cond = SJCRun(make_config("guidance.weight=3"), empirical_model).cond_for(cameras([90.0, 90.0], [0.0, 0.0]), 2)
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
    assert m.loss == pytest.approx(m.guidance + m.emptiness + m.depth + m.tv, rel=1e-5, abs=1e-5)
    assert m.evals == 2 * 2 and m.tv == 0  # 2 views x the CFG pair; TV off by default
    assert all(math.isfinite(v) for v in vars(m).values())
    assert 0.0983 - 1e-4 <= m.sigma <= 12.23  # the official SJC window of the model's ticks
    assert all(p.grad is None for p in tiny_model.denoiser.inner.unet.parameters())
    run.check_finite()  # no error on a healthy run


def test_perp_neg_and_negative_prompt_conditioning(make_config, tiny_pipeline, tiny_model):
    base = (f"model.name={tiny_pipeline}", "prompt.view_dependent=true", "sigma.min=null", "sigma.max=null")
    run = SJCRun(make_config(*base, "guidance.kind=nfsd", "guidance.cfg=perp_neg", "guidance.weight=7.5"), tiny_model)
    got = run.cond_for(cameras([0.0, 135.0], [10.0, 10.0]), 2)
    want = tiny_model.text.perp_neg("a red cube", [0.0, 135.0], "{view} view of {prompt}", "", 7.5,
                                    "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
                                    "low-resolution, gloomy")
    for name in ("context", "uncond", "weight", "negative", "views", "view_weight"):
        torch.testing.assert_close(getattr(got, name), getattr(want, name), msg=name)
    plain = SJCRun(make_config(*base, "guidance.kind=csd"), tiny_model)  # csd_negative 0: no negative prompt
    assert plain.cond_for(cameras([0.0], [0.0]), 1).negative is None


def test_guidance_needing_text_or_views_is_refused(make_config, empirical_model, tiny_pipeline):
    with pytest.raises(ConfigError, match="guidance.kind"):
        make_config("guidance.kind=nfsd")  # the empirical model has no text
    with pytest.raises(ConfigError, match="guidance.cfg"):
        make_config(f"model.name={tiny_pipeline}", "sigma.min=null", "sigma.max=null", "guidance.cfg=perp_neg")


def diffs(x: torch.Tensor) -> torch.Tensor:
    """Mean squared neighbour differences of x [C, N, N, N] along z, y and x, averaged."""
    dz, dy, dx = x[:, 1:] - x[:, :-1], x[:, :, 1:] - x[:, :, :-1], x[..., 1:] - x[..., :-1]
    return (dz.pow(2).mean() + dy.pow(2).mean() + dx.pow(2).mean()) / 3


def test_tv_term_is_its_weighted_formula(make_config, empirical_model):
    run = SJCRun(make_config("tv.density=2", "tv.features=0.5"), empirical_model)
    with torch.no_grad():
        run.scene.field.grid.normal_(generator=torch.Generator().manual_seed(0))
    g = run.scene.field.grid[0].detach()
    torch.testing.assert_close(total_variation(g), diffs(g))
    torch.testing.assert_close(tv_term(run), 2 * diffs(g[:1]) + 0.5 * diffs(g[1:]))
    run.step()
    assert run.metrics().tv > 0


C2F = ("steps=6", "field.grid_size=9", "field.coarse_size=5", "field.upsample_at=[0.5]", "render.step=0.3")


def test_coarse_to_fine_grows_the_grid_and_its_moments(make_config, empirical_model):
    run = SJCRun(make_config(*C2F), empirical_model)
    assert run.scene.field.size == 5
    for _ in range(3):
        run.step()
    before = run.scene.field.grid.detach().clone()
    moments = {k: v.clone() for k, v in run.opt.state[run.scene.field.grid].items()}
    run.resize_field()  # step 3 = floor(0.5 * 6) starts the 9^3 stage
    field = run.scene.field
    assert field.size == 9 and field.cfg.grid_size == 9
    assert any(q is field.grid for q in run.opt.param_groups[0]["params"])
    # trilinear with align_corners: the coarse voxels are every other fine voxel, values kept
    torch.testing.assert_close(field.grid.detach()[..., ::2, ::2, ::2], before)
    state = run.opt.state[field.grid]
    torch.testing.assert_close(state["exp_avg"][..., ::2, ::2, ::2], moments["exp_avg"])
    assert state["step"] == moments["step"]
    run.step()
    assert run.step_index == 4 and torch.isfinite(field.grid).all()


@pytest.mark.parametrize("split", [3, 4])  # resumed at the upsampling step, and after it
def test_resume_across_an_upsampling_step(make_config, empirical_model, split):
    full = SJCRun(make_config(*C2F), empirical_model)
    for _ in range(6):
        full.step()
    first = SJCRun(make_config(*C2F), empirical_model)
    for _ in range(split):
        first.step()
    state = first.state_dict()
    resumed = SJCRun(make_config(*C2F), empirical_model)
    resumed.load_state_dict(state)
    while resumed.step_index < 6:
        resumed.step()
    for (name, p), q in zip(full.scene.named_parameters(), resumed.scene.parameters()):
        torch.testing.assert_close(q, p, msg=name)


def test_truth_scorer_follows_the_growing_grid(make_config, empirical_model):
    """A sweep's truth score of a coarse-to-fine run is taken at the field's side before and after it grows."""
    from sjc_dist.distributed.scoring import TruthScore

    run = SJCRun(make_config(*C2F), empirical_model)
    score = TruthScore(run)
    before = score(run)
    run.set_field_size(9)
    after = score(run)
    assert score.soft.shape[-1] == 9 and set(before) == set(after) and 0 <= after["score"] <= 1
