"""The toy CLIP's training world: soft targets are distributions that move weight off the caption as a
degradation grows, never off it for nuisances; degraded volumes differ from the truth the way their kind says;
samples are reproducible from their seed."""
import pytest
import torch

from sjc_dist.toyworld import clip_world as w
from sjc_dist.toyworld.shapes import volumes as true_volumes

N = 32


def test_targets_are_distributions_that_fall_with_the_amount():
    names = w.bank()
    k = names.index("a red cube")
    for kind, (slope, rest) in w.QUALITY.items():
        weights = [float(w.target(w.Sample("a red cube", ((kind, a, ""),)), names)[k]) for a in (0.1, 0.5, 1.0)]
        assert weights == sorted(weights, reverse=True) and weights[-1] == pytest.approx(1 - slope), kind
        t = w.target(w.Sample("a red cube", ((kind, 0.5, ""),)), names)
        assert t.sum() == pytest.approx(1.0) and t[names.index(rest)] == pytest.approx(slope * 0.5)
    morph = w.target(w.Sample("a red cube", (("morph", 0.25, "a red sphere"),)), names)
    assert morph[k] == pytest.approx(0.75) and morph[names.index("a red sphere")] == pytest.approx(0.25)
    clean = w.target(w.Sample("a red cube", flat=True, light=(0.0, 0.0, 1.0)), names)
    assert clean[k] == 1.0  # nuisances keep the full target
    assert w.target(w.Sample("a red cube", (("empty", 1.0, ""),)), names)[names.index(w.EMPTY)] == 1.0


def test_clean_sample_is_the_truth_and_degradations_change_what_they_say():
    occ0, rgb0 = w.volumes(w.Sample("a blue torus", light=(0.45, 0.3, 0.84)), N)
    occ_t, rgb_t = true_volumes("a blue torus", N)
    assert torch.allclose(occ0, occ_t, atol=1e-5) and torch.allclose(rgb0, rgb_t, atol=1e-5)
    fat = w.volumes(w.Sample("a blue torus", (("dilate", 1.0, ""),)), N)[0]
    thin = w.volumes(w.Sample("a blue torus", (("erode", 1.0, ""),)), N)[0]
    faint = w.volumes(w.Sample("a blue torus", (("faint", 1.0, ""),)), N)[0]
    foggy = w.volumes(w.Sample("a blue torus", (("fog", 1.0, ""),)), N)[0]
    assert fat.sum() > 1.5 * occ0.sum() and thin.sum() < 0.8 * occ0.sum()
    assert faint.max() <= 0.021 and foggy.sum() > occ0.sum()
    assert w.volumes(w.Sample("a blue torus", (("empty", 1.0, ""),)), N)[0].sum() == 0
    flat = w.volumes(w.Sample("a blue torus", flat=True), N)[1]
    assert flat[:, occ0 > 0.5].std(dim=1).max() < 1e-5  # one colour, no shading


def test_draws_are_reproducible_and_cover_the_world():
    a = [w.draw(torch.Generator().manual_seed(3)) for _ in range(2)]
    assert a[0] == a[1]
    gen = torch.Generator().manual_seed(0)
    samples = [w.draw(gen) for _ in range(300)]
    kinds = {k for s in samples for k, _, _ in s.changes}
    assert kinds >= set(w.QUALITY) | set(w.IDENTITY)
    assert sum(not s.changes for s in samples) > 40  # clean objects stay common
    assert len({s.caption for s in samples}) > 30
    cut = [s for s in samples if any(k == "cut" for k, _, _ in s.changes)][0]
    assert torch.equal(w.volumes(cut, N)[0], w.volumes(cut, N)[0])  # the cut plane comes from the sample's seed
