"""EmpiricalDenoiser, the exact posterior mean of a finite data set, against a float64 direct sum."""
import pytest
import torch

from sjc_dist.diffusion.empirical import EmpiricalDenoiser


def brute_force(x: torch.Tensor, sigma: torch.Tensor, data: torch.Tensor) -> torch.Tensor:
    """sum_i N(x; y_i, sigma^2) y_i / sum_i N(x; y_i, sigma^2), term by term in float64."""
    out = torch.zeros(x.shape, dtype=torch.float64)
    for b in range(x.shape[0]):
        num, den = torch.zeros(data.shape[1:], dtype=torch.float64), 0.0
        for y in data.double():
            w = torch.exp(-((x[b].double() - y) ** 2).sum() / (2 * float(sigma[b]) ** 2))
            num, den = num + w * y, den + w
        out[b] = num / den
    return out


@pytest.fixture
def data(generator):
    return torch.rand(5, 1, 2, 2, generator=generator) * 2 - 1


def test_matches_direct_sum(data, generator):
    den = EmpiricalDenoiser(data)
    x = torch.randn(4, 1, 2, 2, generator=generator)
    sigma = torch.tensor([0.3, 0.7, 1.5, 4.0])
    torch.testing.assert_close(den(x, sigma).double(), brute_force(x, sigma, data), rtol=1e-6, atol=1e-6)


def test_small_sigma_returns_nearest_point(data, generator):
    den = EmpiricalDenoiser(data)
    x = torch.randn(6, 1, 2, 2, generator=generator)
    nearest = data[torch.cdist(x.flatten(1), data.flatten(1)).argmin(1)]
    out = den(x, torch.full((6,), 1e-3))
    assert torch.isfinite(out).all()  # log-sum-exp: no 0/0 at tiny sigma
    torch.testing.assert_close(out, nearest, rtol=0, atol=1e-6)


def test_large_sigma_returns_mean(data, generator):
    den = EmpiricalDenoiser(data)
    x = torch.randn(3, 1, 2, 2, generator=generator)
    out = den(x, torch.full((3,), 1e4))
    torch.testing.assert_close(out, data.mean(0, keepdim=True).expand_as(out), rtol=0, atol=1e-6)


def test_posterior_weights_sum_to_one_and_bad_data_is_refused(data, generator):
    den = EmpiricalDenoiser(data)
    lw = den.log_weights(torch.randn(3, 1, 2, 2, generator=generator), torch.tensor([0.01, 1.0, 100.0]))
    torch.testing.assert_close(lw.exp().sum(1), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="N, C, H, W"):
        EmpiricalDenoiser(torch.zeros(3, 4))
