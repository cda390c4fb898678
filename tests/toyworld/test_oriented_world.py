"""The oriented objects of the toy world (issue 16): captions beside the unchanged 25, geometry in the box with
the front facing azimuth 0, the front feature alone in INK, and the shipped model knowing every new word."""
import json

import pytest
import torch

from sjc_dist.diffusion.load import TOY_WEIGHTS
from sjc_dist.evaluation.prompts import EVAL_PROMPTS, read_prompt_file
from sjc_dist.toyworld.shapes import (
    COLORS,
    INK,
    ORIENTED_SHAPES,
    SHAPES,
    captions,
    feature_occupancy,
    front_feature,
    grid_points,
    is_oriented,
    occupancy,
    oriented_captions,
    parse,
    volumes,
    world_captions,
)
from sjc_dist.toyworld.tokenizer import word_tokenizer


def shipped_vocabulary() -> set[str]:
    path = TOY_WEIGHTS / "tokenizer" / "tokenizer.json"
    return set(json.loads(path.read_text())["model"]["vocab"]) if path.is_file() else set()


WORLD_WORDS = {w for c in world_captions() for w in c.split()}
needs_world_weights = pytest.mark.skipif(
    not WORLD_WORDS <= shipped_vocabulary(),
    reason="the shipped toy weights predate the oriented objects (their tokenizer lacks "
           f"{sorted(WORLD_WORDS - shipped_vocabulary())}): train them with sjc_dist.toyworld.train_unet")


def test_the_25_captions_are_unchanged_and_the_world_adds_the_oriented_ones():
    assert captions() == read_prompt_file(EVAL_PROMPTS / "toy_captions.txt")  # the committed list, in order
    assert world_captions() == captions() + oriented_captions()
    assert len(oriented_captions()) == len(ORIENTED_SHAPES) * len(COLORS)
    assert len(set(world_captions())) == len(world_captions())
    assert not set(SHAPES) & set(ORIENTED_SHAPES)


def test_every_world_caption_parses_also_with_a_view_prefix():
    for cap in world_captions():
        shape, color = parse(cap)
        assert cap == f"a {color} {shape}" and is_oriented(shape) == (cap in oriented_captions())
        assert parse(f"backside view of {cap}") == (shape, color)


def test_oriented_file_lists_the_oriented_captions():
    assert read_prompt_file(EVAL_PROMPTS / "toy_oriented_captions.txt") == oriented_captions()


@pytest.mark.parametrize("shape", ORIENTED_SHAPES)
def test_oriented_shape_is_in_the_box_centred_on_z_and_mirror_symmetric(shape):
    occ = occupancy(shape, 48)
    assert 0.02 < occ.float().mean() < 0.5
    assert not (occ[0].any() or occ[-1].any() or occ[:, 0].any() or occ[:, -1].any() or occ[..., 0].any()
                or occ[..., -1].any()), "touches the box"
    assert torch.equal(occ, occ.flip(1)), "mirror-symmetric in y (mirrored views keep their view labels)"
    centre = grid_points(48)[occ].mean(0)
    assert float(centre[:2].abs().max()) < 2 / 47, "centroid on the z axis, within a voxel"


@pytest.mark.parametrize("shape", ORIENTED_SHAPES)
def test_front_feature_is_on_the_front_surface_only(shape):
    feat = feature_occupancy(shape, 48)
    p = grid_points(48)[feat]
    assert len(p) > 20, "big enough to see"
    assert float(p[:, 0].min()) > 0, "the feature lies on the +x side, facing the azimuth-0 camera"
    assert not (feature_occupancy(shape, 48).flip(-1) & feat).any(), "the back has none of it"
    for sym in SHAPES:
        assert not front_feature(sym, grid_points(8)).any()


def test_only_the_front_feature_is_ink_and_the_featureless_twin_has_none():
    cap = "a blue owl"
    n = 32
    _, rgb = volumes(cap, n)
    _, plain = volumes(cap, n, with_front=False)
    feat = front_feature("owl", grid_points(n))
    dark = ((rgb + 1) / 2).amax(0) <= max(INK) + 1e-6
    assert torch.equal(dark, feat)
    assert not (((plain + 1) / 2).amax(0) <= max(INK) + 1e-6).any()
    assert torch.equal(rgb[:, ~feat], plain[:, ~feat])


def test_the_project_tokenizer_reads_every_world_caption_and_view_prefix():
    tok = word_tokenizer()
    for cap in world_captions():
        ids = tok(f"backside view of {cap}").input_ids
        assert tok.unk_token_id not in ids and len(ids) <= tok.model_max_length


@needs_world_weights
def test_shipped_model_reads_every_world_caption():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(TOY_WEIGHTS / "tokenizer")
    for cap in world_captions():
        assert tok.unk_token_id not in tok(f"overhead view of {cap}").input_ids, cap


@needs_world_weights
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sjc_run_on_an_oriented_caption_works_on_a_cpu(tmp_path):
    from sjc_dist.cli import main

    out = tmp_path / "run"
    args = ["run", "--prompt", "a red house", "--out", str(out), "--steps", "40", "--device", "cpu",
            "--set", "field.grid_size=24", "--set", "output.turntable_frames=0", "--set", "output.progress=false",
            "--set", "prompt.view_dependent=true"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "views.png").is_file() and (out / "field.safetensors").is_file()
    assert summary["steps"] == 40
    assert 0.0 <= summary["eval"]["scores"]["iou"] <= 1.0, "the truth metrics know the oriented object"
