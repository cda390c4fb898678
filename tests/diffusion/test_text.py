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
