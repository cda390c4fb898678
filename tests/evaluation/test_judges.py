"""Judges: spec parsing, offline loading of an open_clip folder, preprocessing as open_clip's own, the toy CLIP,
and the warning when the judge is the guidance model's own text tower."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from sjc_dist.errors import ConfigError
from sjc_dist.evaluation.judges import (JudgeNotFoundError, JudgeWarning, guidance_text_tower, load_judge,
                                        parse_judge, parse_judges, preprocess_views, same_tower_warning)


def test_parse_specs_and_labels():
    assert parse_judge("toy").kind == "toy" and parse_judge("toy").label == "toy"
    f = parse_judge("ViT-B-32:/ckpt/openai_b32.pt")
    assert (f.kind, f.arch, f.source, f.label) == ("file", "ViT-B-32", "/ckpt/openai_b32.pt", "ViT-B-32.openai_b32")
    t = parse_judge("ViT-H-14:laion2b_s32b_b79k")
    assert (t.kind, t.label) == ("tag", "ViT-H-14.laion2b_s32b_b79k")
    assert parse_judge("local-dir:/models/clip-x").label == "clip-x"
    assert parse_judge("hf-hub:laion/CLIP-ViT-B-32").kind == "hf-hub"
    assert [s.label for s in parse_judges("toy, ViT-B-32:openai")] == ["toy", "ViT-B-32.openai"]


@pytest.mark.parametrize("bad", ["ViT-B-32", ":x", "", "toy,toy"])
def test_bad_specs_are_config_errors(bad):
    with pytest.raises(ConfigError, match="judges"):
        parse_judges(bad)


def test_missing_weights_are_named_never_downloaded(tmp_path):
    with pytest.raises(JudgeNotFoundError, match="no checkpoint file"):
        load_judge(f"ViT-B-32:{tmp_path}/missing.pt")
    with pytest.raises(JudgeNotFoundError, match="Hugging Face cache"):
        load_judge("ViT-B-32:openai")  # local_files_only: fails fast instead of downloading
    with pytest.raises(JudgeNotFoundError, match="open_clip_config.json"):
        load_judge(f"local-dir:{tmp_path}")
    with pytest.raises(ConfigError, match="open_clip architecture"):
        load_judge(f"NoSuchArch:{tmp_path}/x.pt")


def test_local_dir_judge_embeds_unit_vectors(tiny_judge):
    gen = torch.Generator().manual_seed(0)
    views = torch.rand(5, 3, 24, 24, generator=gen) * 2 - 1
    img = tiny_judge.embed_images(views)
    txt = tiny_judge.embed_texts(["a red cube", "a blue sphere", "a red cube"])
    assert img.shape == (5, 16) and txt.shape == (3, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.equal(txt[0], txt[2]) and not torch.allclose(txt[0], txt[1])
    # batching does not change embeddings
    tiny_judge.batch_size, full = 2, img
    try:
        assert torch.allclose(tiny_judge.embed_images(views), full, atol=1e-5)
    finally:
        tiny_judge.batch_size = 64


def test_preprocessing_matches_open_clips_own_transform(tiny_clip_dir, tiny_judge):
    """The tensor preprocessing follows the model's config as open_clip's PIL transform does (bicubic kernels
    differ slightly between PIL and torch, hence the tolerance in normalised units)."""
    import open_clip

    _, _, pil_transform = open_clip.create_model_and_transforms(f"local-dir:{tiny_clip_dir}")
    arr = (np.random.default_rng(0).random((24, 24, 3)) * 255).round().astype(np.uint8)
    expected = pil_transform(Image.fromarray(arr))
    views = torch.from_numpy(arr).permute(2, 0, 1).float()[None] / 127.5 - 1
    got = preprocess_views(views, tiny_judge.preprocess_cfg)[0]
    assert got.shape == expected.shape == (3, 32, 32)
    assert (got - expected).abs().mean() < 0.02 and (got - expected).abs().max() < 0.15


def test_toy_judge_without_weights_is_a_clear_error(monkeypatch, tmp_path):
    from sjc_dist.toyworld import clip_model

    monkeypatch.setattr(clip_model, "default_checkpoint", lambda: tmp_path / "absent.safetensors")
    with pytest.raises(JudgeNotFoundError, match="toy CLIP"):
        load_judge("toy")


def test_toy_judge_recognises_true_renders():
    from sjc_dist.toyworld import clip_model
    from sjc_dist.toyworld.data import sample_views
    from sjc_dist.toyworld.shapes import captions

    if not clip_model.default_checkpoint().is_file():
        pytest.skip("the toy CLIP checkpoint is not trained yet (sjc_dist/toyworld/weights/clip/)")
    judge = load_judge("toy")
    views = sample_views("a red cube", 8, seed=3)
    sims = judge.embed_images(views) @ judge.embed_texts(captions()).T
    assert (sims.argmax(-1) == captions().index("a red cube")).float().mean() >= 0.5


def test_same_text_tower_warning(tmp_path):
    assert guidance_text_tower("runwayml/stable-diffusion-v1-5") == "ViT-L-14/openai"
    assert guidance_text_tower("stabilityai/stable-diffusion-2-1-base") == "ViT-H-14/laion2b"
    assert guidance_text_tower("toy") is None
    sd_like = tmp_path / "my-sd" / "text_encoder"
    sd_like.mkdir(parents=True)
    (sd_like / "config.json").write_text(json.dumps({"architectures": ["CLIPTextModel"], "hidden_size": 768,
                                                     "num_hidden_layers": 12}))
    assert guidance_text_tower(str(tmp_path / "my-sd")) == "ViT-L-14/openai"
    with pytest.warns(JudgeWarning, match="rank with one CLIP and report with another|Rank with one CLIP"):
        msg = same_tower_warning(parse_judge("ViT-L-14:openai"), str(tmp_path / "my-sd"))
    assert "text tower" in msg
    assert same_tower_warning(parse_judge("ViT-B-32:openai"), "runwayml/stable-diffusion-v1-5") is None
    assert same_tower_warning(parse_judge("toy"), "runwayml/stable-diffusion-v1-5") is None
