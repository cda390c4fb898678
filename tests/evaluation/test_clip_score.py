"""CLIP score and R-Precision on hand-built embeddings: perfect, random and adversarial retrieval."""
import math

import pytest
import torch

from sjc_dist.evaluation.clip_score import (clip_score, clip_scores, prompt_ranks, r_precision,
                                            r_precision_per_object)


def one_hot(idx: list[int], dim: int) -> torch.Tensor:
    return torch.eye(dim)[idx]


def test_perfect_retrieval_is_one():
    p, v = 6, 4
    text = one_hot(list(range(p)), p)
    images = text[:, None, :].repeat(1, v, 1) + 0.01 * torch.randn(p, v, p, generator=torch.Generator().manual_seed(0))
    assert r_precision(images, text, torch.arange(p)) == 1.0


def test_adversarial_retrieval_is_zero():
    """Every view looks exactly like the next object's prompt."""
    p, v = 5, 3
    text = one_hot(list(range(p)), p)
    images = text[(torch.arange(p) + 1) % p][:, None, :].repeat(1, v, 1)
    assert r_precision(images, text, torch.arange(p)) == 0.0
    assert (prompt_ranks(images, text, torch.arange(p)) >= 1).all()


def test_random_retrieval_is_one_over_p_on_average():
    gen = torch.Generator().manual_seed(0)
    p, v, n_obj, d = 10, 8, 400, 32
    text = torch.randn(p, d, generator=gen)
    images = torch.randn(n_obj, v, d, generator=gen)
    true = torch.randint(p, (n_obj,), generator=gen)
    r = r_precision(images, text, true)
    # 3200 Bernoulli(0.1) views: sd of the mean is about 0.0053
    assert abs(r - 1 / p) < 0.02


def test_r_precision_averages_views_then_objects():
    """Object 0: 2 of 4 views right; object 1: 4 of 4 -> per object (0.5, 1.0), overall 0.75."""
    text = one_hot([0, 1], 2)
    views0 = one_hot([0, 0, 1, 1], 2)
    views1 = one_hot([1, 1, 1, 1], 2)
    images = torch.stack([views0, views1])
    per = r_precision_per_object(images, text, torch.tensor([0, 1]))
    assert per.tolist() == [0.5, 1.0]
    assert r_precision(images, text, torch.tensor([0, 1])) == 0.75


def test_ties_do_not_count_as_retrieval():
    text = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # two identical prompts
    images = torch.tensor([[[1.0, 0.0]]])
    assert r_precision(images, text, torch.tensor([0])) == 0.0


def test_r_at_k_and_bad_k():
    text = one_hot([0, 1, 2], 3)
    images = torch.tensor([[[0.1, 0.9, 0.5]]])  # true prompt 2 ranks second
    assert r_precision(images, text, torch.tensor([2]), k=1) == 0.0
    assert r_precision(images, text, torch.tensor([2]), k=2) == 1.0
    with pytest.raises(ValueError, match="k = 4"):
        r_precision(images, text, torch.tensor([2]), k=4)


def test_clip_score_is_mean_cosine_and_scale_free():
    prompt = torch.tensor([1.0, 0.0])
    views = torch.tensor([[1.0, 0.0], [0.0, 3.0], [-2.0, 0.0], [1.0, 1.0]])
    expected = (1 + 0 - 1 + math.sqrt(0.5)) / 4
    assert clip_score(views, prompt) == pytest.approx(expected, abs=1e-6)
    many = clip_scores(views[None].repeat(2, 1, 1), torch.stack([prompt, -prompt]), torch.tensor([0, 1]))
    assert many.tolist() == pytest.approx([expected, -expected], abs=1e-6)
