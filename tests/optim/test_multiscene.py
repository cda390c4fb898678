"""SceneBatch: K scenes share each denoiser pass, yet each scene's trajectory equals its solo run (own
generators, per-sample sigma, text embeddings and CFG weight), for every guidance kind mixed in one batch:
one-pass kinds (PAAS, SDS, CSD, NFSD), ISM's several passes, Perp-Neg's extra rows, and a coarse-to-fine scene
whose grid grows mid-run."""
import pytest
import torch

from sjc_dist.optim.multiscene import SceneBatch
from sjc_dist.optim.run import SJCRun

STEPS = 4


def assert_same_trajectory(got: torch.Tensor, want: torch.Tensor, name: str) -> None:
    """Equal up to float32 rounding of the batched GEMMs, as Adamax carries it: it divides by the running max of
    |g|, so a value whose gradient is at rounding level (CSD's eps_c - eps_u on the tiny random UNet) can move by
    a visible part of a step (3.6e-4 on 2 of 2,560 values with torch 2.14). So: 99% within 1e-4, all within 1e-3,
    i.e. 2% of one step of lr 0.05; another scene's gradient or a skipped step moves values by about lr."""
    diff = (got - want).detach().abs()
    assert float(diff.max()) <= 1e-3, f"{name}: max |diff| {float(diff.max()):.3g}"
    assert float((diff > 1e-4).float().mean()) <= 0.01, f"{name}: {int((diff > 1e-4).sum())} values off by > 1e-4"


@pytest.fixture
def configs(make_config, tiny_pipeline):
    base = (f"model.name={tiny_pipeline}", "prompt.view_dependent=true", "sigma.min=null", "sigma.max=null",
            "sigma.kind=ticks", f"steps={STEPS}")
    return [
        make_config(*base, "prompt.text=a red cube", "seed=0", "guidance.weight=1"),
        make_config(*base, "prompt.text=a blue sphere", "seed=1", "guidance.weight=7.5", "render.views_per_step=2"),
        make_config(*base, "prompt.text=a green torus", "seed=2", "guidance.weight=100", "guidance.kind=sds",
                    "guidance.n_noise=2", "emptiness.lambda1=5"),
        make_config(*base, "prompt.text=a red cone", "seed=3", "guidance.kind=csd", "guidance.csd_negative=1"),
        make_config(*base, "prompt.text=a red cone", "seed=4", "guidance.kind=nfsd", "sigma.kind=sqrt_anneal"),
        make_config(*base, "prompt.text=a blue cube", "seed=5", "guidance.kind=ism", "guidance.ism_steps=2",
                    "field.grid_size=9", "field.coarse_size=5", "field.upsample_at=[0.5]"),
        make_config(*base, "prompt.text=a blue cube", "seed=6", "guidance.kind=ism", "guidance.ism_steps=1",
                    "guidance.cfg=perp_neg", "tv.density=1", "tv.features=0.5"),
    ]


class CountingCalls:
    def __init__(self, fn):
        self.fn, self.batches = fn, []

    def __call__(self, z, sigma, cond):
        self.batches.append(z.shape[0])
        return self.fn(z, sigma, cond)


def test_batch_trajectories_equal_solo_runs(configs, tiny_model):
    solo = [SJCRun(cfg, tiny_model) for cfg in configs]
    solo_losses = [[float(run.step()) for _ in range(STEPS)] for run in solo]

    runs = [SJCRun(cfg, tiny_model) for cfg in configs]
    batch = SceneBatch(runs)
    counter = runs[0].guidance.denoise = CountingCalls(runs[0].guidance.denoise)
    batch_losses = [[float(x) for x in batch.step_all()] for _ in range(STEPS)]
    rounds = max(r.cfg.guidance.ism_steps + 2 if r.cfg.guidance.kind == "ism" else 1 for r in runs)
    assert len(counter.batches) == rounds * STEPS  # each pass: one denoiser call for every scene that needs it
    assert sum(counter.batches) == STEPS * sum(r.evals_per_step for r in runs)

    for a, b, la, lb in zip(solo, runs, solo_losses, zip(*batch_losses)):
        assert b.step_index == STEPS
        for (name, p), q in zip(a.scene.named_parameters(), b.scene.parameters()):
            assert_same_trajectory(q, p, name)
        assert list(lb) == pytest.approx(la, rel=1e-4, abs=1e-4)
    assert not torch.allclose(runs[0].scene.field.grid, runs[1].scene.field.grid)
    assert runs[5].scene.field.size == 9 and runs[5].cfg.field.size_at(0, STEPS) == 5  # grew mid-run


def test_first_pass_is_shared_by_every_kind(configs, tiny_model):
    runs = [SJCRun(cfg, tiny_model) for cfg in configs]
    counter = runs[0].guidance.denoise = CountingCalls(runs[0].guidance.denoise)
    SceneBatch(runs).step_all()
    views = [r.cfg.render.views_per_step * r.cfg.guidance.n_noise for r in runs]
    first = [1 if r.cfg.guidance.kind == "ism" else r.guidance.rows_per_sample() for r in runs]  # ISM: uncond first
    assert counter.batches[0] == sum(v * f for v, f in zip(views, first))

def test_batch_refuses_a_second_model(configs, tiny_model, empirical_model, make_config):
    batch = SceneBatch([SJCRun(configs[0], tiny_model)])
    with pytest.raises(ValueError, match="share one loaded Model"):
        batch.add(SJCRun(make_config(), empirical_model))
    assert batch.step_all([]) == []


def test_scenes_of_one_shape_render_in_one_pass(configs, tiny_model, monkeypatch):
    from sjc_dist.scene import scenes

    calls = []
    real = scenes.render_joined
    monkeypatch.setattr(scenes, "render_joined", lambda fields, *a: calls.append(len(fields)) or real(fields, *a))
    SceneBatch([SJCRun(cfg, tiny_model) for cfg in configs[:3]]).step_all()
    assert sorted(calls) == [1, 2]  # scenes 0 and 2 (one view each) together, scene 1 (two views) alone
