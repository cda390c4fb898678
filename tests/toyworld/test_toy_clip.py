"""The toy CLIP: its open_clip config builds and loads from a saved checkpoint as a real one does, its tokenizer
and embeddings behave, the training pieces do what they say, and (when shipped) it recognises the world."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from sjc_dist.errors import ModelNotFoundError
from sjc_dist.toyworld import clip_model
from sjc_dist.toyworld.data import sample_views
from sjc_dist.toyworld.shapes import captions
from sjc_dist.toyworld.train_clip import ClipTrainConfig, augment, loss_floor, save_checkpoint, soft_bank_loss, train

EMBED_DIM = 64


@pytest.fixture(scope="module")
def random_clip():
    torch.manual_seed(0)  # open_clip initialises from the global RNG
    model, _, _ = clip_model.create_toy_clip("cpu")
    return model.eval()


@pytest.fixture(scope="module")
def saved_checkpoint(random_clip, tmp_path_factory):
    return save_checkpoint(random_clip, tmp_path_factory.mktemp("toy_clip"))


def test_checkpoint_loads_through_open_clip_with_the_saved_weights(random_clip, saved_checkpoint):
    import open_clip

    model, preprocess, tokenizer = clip_model.load_toy_clip("cpu", saved_checkpoint)
    assert clip_model.TOY_CLIP_NAME in open_clip.list_models()
    assert saved_checkpoint.stat().st_size <= 8e6
    assert (saved_checkpoint.parent / clip_model.CONFIG_FILE).is_file()
    for (name, a), (_, b) in zip(random_clip.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a.half().float(), b.float()), name  # fp16 on disk, loaded strictly by open_clip
    assert open_clip.get_model_preprocess_cfg(model)["size"] == (32, 32)
    # and the plain open_clip call works too, once registered
    again, _, _ = open_clip.create_model_and_transforms(clip_model.TOY_CLIP_NAME, pretrained=str(saved_checkpoint))
    assert torch.equal(again.visual.proj, model.visual.proj)


def test_missing_checkpoint_is_a_model_not_found_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="toy-clip"):
        clip_model.load_toy_clip("cpu", tmp_path / "absent.safetensors")


def test_tokenizer_is_open_clips_bpe_with_short_context():
    import open_clip

    clip_model.register_toy_clip()
    tokens = open_clip.get_tokenizer(clip_model.TOY_CLIP_NAME)(["a red cube", "a blue cube", "a photo of a red cube"])
    assert tokens.shape == (3, 16)
    assert (tokens[:, 0] == 49406).all()  # start of text
    assert (tokens == 49407).sum(1).tolist() == [1, 1, 1]  # one end of text each, not truncated
    assert not torch.equal(tokens[0], tokens[1])


def test_embeddings_are_unit_norm_with_the_joint_dimension(random_clip, saved_checkpoint):
    _, _, tokenizer = clip_model.load_toy_clip("cpu", saved_checkpoint)
    with torch.no_grad():
        for size in (32, 64):
            img = clip_model.encode_renders(random_clip, torch.rand(3, 3, size, size) * 2 - 1)
            assert img.shape == (3, EMBED_DIM)
            assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
        txt = clip_model.encode_texts(random_clip, tokenizer, captions())
    assert txt.shape == (25, EMBED_DIM)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(25), atol=1e-5)


def test_tensor_path_matches_open_clips_pil_preprocess(random_clip, saved_checkpoint):
    _, preprocess, _ = clip_model.load_toy_clip("cpu", saved_checkpoint)
    views = sample_views("a green torus", 2, resolution=32, seed=5)
    u8 = ((views + 1) / 2 * 255).round().byte()
    pil = torch.stack([preprocess(_png_roundtrip(im)) for im in u8])
    tensor = clip_model.image_input(random_clip, u8.float() / 255 * 2 - 1)
    assert torch.allclose(pil, tensor, atol=1e-5)


def _png_roundtrip(image_u8: torch.Tensor) -> Image.Image:
    buf = io.BytesIO()
    Image.fromarray(image_u8.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return Image.open(io.BytesIO(buf.getvalue()))


def test_soft_bank_loss_is_cross_entropy_to_the_targets_and_its_floor_their_entropy():
    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(3, 8, generator=gen), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(5, 8, generator=gen), dim=-1)
    hard = torch.eye(5)[[0, 2, 4]]
    ce = torch.nn.functional.cross_entropy(10 * img @ txt.T, torch.tensor([0, 2, 4]))
    assert torch.allclose(soft_bank_loss(img, txt, hard, torch.tensor(10.0)), ce)
    # soft targets: the loss is smallest when the softmax equals them, and that minimum is their entropy
    texts = torch.eye(2)
    t = torch.tensor([[0.75, 0.25]])
    at = [float(soft_bank_loss(torch.nn.functional.normalize(torch.tensor([[float(c), 1 - float(c)]]), dim=-1), texts, t,
                               torch.tensor(5.0))) for c in np.linspace(0.3, 1.0, 71)]
    assert min(at) == pytest.approx(loss_floor(t), abs=2e-3)
    assert loss_floor(hard) == pytest.approx(0.0, abs=1e-6)


def test_augment_keeps_range_and_a_white_background():
    views = sample_views("a blue sphere", 4, resolution=32, seed=1)
    out = augment(views, torch.Generator().manual_seed(0))
    assert out.shape == views.shape and out.min() >= -1 and out.max() <= 1
    assert out[..., 0, :].mean() > 0.8  # the top row stays (nearly) white background
    blue = out[:, 2] - out[:, 0]  # the object keeps its colour
    assert blue.amax(dim=(-1, -2)).min() > 0.5


@pytest.mark.slow  # about a minute of CPU (world fields at 64^3, the held-out sets and the calibration)
def test_a_few_seconds_of_training_save_a_loadable_checkpoint_and_a_log(tmp_path):
    cfg = ClipTrainConfig(seconds=2.0, batch=16, buffer=16, fresh=8, render_step=0.08, eval_per_caption=1,
                          monitor_per_caption=1, log_every=1, render_chunk=25, calibration_objects=1)
    log = train(cfg, tmp_path, "cpu")
    assert log["training"]["steps"] >= 1 and np.isfinite(log["training"]["final_loss_mean_last_10_logs"])
    assert log["held_out"]["views"] == 25 and 0.0 <= log["held_out"]["accuracy"] <= 1.0
    assert 0.0 <= log["held_out"]["world_accuracy"] <= 1.0 and log["data"]["samples"] >= 1
    assert set(log["held_out"]["calibration"]) == {"dilate", "erode", "cut", "fog", "floaters", "faint"}
    for name in ("open_clip_model.safetensors", "toy-clip.json", "loss.png", "training_log.json", "training_log.md"):
        assert (tmp_path / name).is_file(), name
    clip_model.load_toy_clip("cpu", tmp_path / "open_clip_model.safetensors")


@pytest.mark.skipif(not clip_model.default_checkpoint().is_file(), reason="the toy CLIP checkpoint is not shipped yet")
def test_shipped_toy_clip_recognises_fresh_renders():
    model, _, tokenizer = clip_model.load_toy_clip("cpu")
    caps = captions()
    views = torch.cat([sample_views(c, 3, resolution=32, seed=7_000 + k) for k, c in enumerate(caps)])
    labels = torch.arange(len(caps)).repeat_interleave(3)
    pred = clip_model.zero_shot_predict(model, tokenizer, views, caps)
    assert (pred == labels).float().mean() >= 0.9
