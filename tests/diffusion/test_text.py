"""Prompts to conditioning: view-dependent prompts in the official form, cached embeddings, CFG halves."""
import torch

from sjc_dist.diffusion.text import view_prompt


def test_view_prompt_template():
    assert view_prompt("a red cube", "front", "{view} view of {prompt}") == "front view of a red cube"
    assert view_prompt("a red cube", "overhead", "{prompt}, {view} view") == "a red cube, overhead view"


def test_cond_shapes_weights_and_cache(tiny_model):
    text = tiny_model.text
    cond = text.cond(["front view of a red cube", "side view of a red cube", "a blue sphere"], "", 7.5)
    assert cond.context.shape == cond.uncond.shape == (3, text.max_length, 16)
    torch.testing.assert_close(cond.weight, torch.full((3,), 7.5))
    assert not torch.allclose(cond.context[0], cond.context[1])  # the view word matters
    torch.testing.assert_close(cond.uncond[0], cond.uncond[2])
    again = text.embed(["a blue sphere"])
    torch.testing.assert_close(again[0], cond.context[2])
    assert text.cond(["a red cube"]).weight is None
    sub = cond.select(slice(1, 3))
    assert sub.context.shape[0] == sub.uncond.shape[0] == sub.weight.shape[0] == 2


def test_extra_negative_prompt(tiny_model):
    text = tiny_model.text
    cond = text.cond(["a red cube"] * 2, "", 7.5, extra_negative="blurry")
    torch.testing.assert_close(cond.negative, text.embed(["blurry", "blurry"]))
    assert text.cond(["a red cube"]).negative is None


def test_perp_neg_views_follow_stable_dreamfusion():
    """At the front the positive prompt is 'front' and the side view is subtracted with weight -2; a view between
    front and side mixes them, both negatives decaying away from the positive; the back subtracts the front."""
    import math

    from sjc_dist.diffusion.text import perp_neg_views

    assert perp_neg_views(0.0) == (("front", "side"), 1.0, ("front", "side"), (0.0, -2.0))
    assert perp_neg_views(45.0) == (("front", "side"), 0.5, ("front", "side"),
                                    (-2 * math.exp(-1.0), -2 * math.exp(-5.0)))
    assert perp_neg_views(-90.0)[1:] == (1.0, ("side", "front"), (0.0, -2.0))
    assert perp_neg_views(180.0) == (("side", "backside"), 0.0, ("side", "front"), (-1.0, -2.0))
    assert perp_neg_views(-45.0) == perp_neg_views(45.0) and perp_neg_views(360.0) == perp_neg_views(0.0)


def test_perp_neg_cond_interpolates_view_embeddings(tiny_model):
    text = tiny_model.text
    cond = text.perp_neg("a red cube", [45.0, 180.0], "{view} view of {prompt}", "", 7.5)
    front, side, back = text.embed([f"{v} view of a red cube" for v in ("front", "side", "backside")])
    torch.testing.assert_close(cond.context[0], 0.5 * front + 0.5 * side)
    torch.testing.assert_close(cond.context[1], back)
    torch.testing.assert_close(cond.views[1], torch.stack([side, front]))
    assert cond.views.shape == (2, 2, text.max_length, 16) and cond.view_weight.shape == (2, 2)
    torch.testing.assert_close(cond.weight, torch.full((2,), 7.5))
