"""The paper's 2D check with the exact oracle: PAAS on an image (f = identity) against the empirical denoiser,
with sigma annealed from high to low, ends on one of the data points (SJC Sec. 3, Fig. 3)."""
import pytest
import torch

from sjc_dist.diffusion.denoiser import Cond
from sjc_dist.diffusion.empirical import EmpiricalDenoiser
from sjc_dist.guidance.base import GuidanceConfig, make_guidance
from sjc_dist.optim.loop import optimize
from sjc_dist.optim.run import SJCRun


def nearest_distance(image: torch.Tensor, data: torch.Tensor) -> float:
    return float((data - image).flatten(1).norm(dim=1).min())


def min_spread(data: torch.Tensor) -> float:
    d = torch.cdist(data.flatten(1), data.flatten(1))
    return float(d[d > 0].min())


@pytest.mark.parametrize("estimator,tol", [("var_red", 0.01), ("plain", 0.05)])
def test_sjc_run_2d_converges_to_a_data_point(make_config, empirical_model, empirical_data, estimator, tol):
    cfg = make_config("steps=200", "sigma.kind=annealed", "sigma.min=0.01", "sigma.max=10",
                      f"guidance.estimator={estimator}")
    run = SJCRun(cfg, empirical_model, dims=2)
    start = nearest_distance(run.scene.image.detach()[0], empirical_data)
    optimize(run, cfg.steps, progress=False)
    end = nearest_distance(run.scene.image.detach()[0], empirical_data)
    assert end < tol * min_spread(empirical_data) < start


def test_guidance_ascent_with_identity_render_converges(empirical_data):
    """The same without the optimiser: y <- y + sigma^2 * score-step along the PAAS update, sigma annealed."""
    den = EmpiricalDenoiser(empirical_data)
    g = make_guidance(den, GuidanceConfig(kind="paas", estimator="var_red"))
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(1, 3, 8, 8, generator=gen) * 2
    for sigma in torch.logspace(1, -2, 150):
        out = g(y, Cond(), sigma[None], gen)
        y = y + 0.5 * sigma * out.update  # (D - y) / 2 in expectation over n
    assert nearest_distance(y[0], empirical_data) < 0.01 * min_spread(empirical_data)
