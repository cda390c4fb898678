"""The toy diffusion model's training script: view-prefixed captions by the SJC cameras' rule, the flags of the
judge model, the default = the shipped architecture, and (slow) a tiny end-to-end CPU run whose folder loads
through load_diffusers."""
import json

import pytest
import torch

from sjc_dist.diffusion.load import TOY_WEIGHTS
from sjc_dist.diffusion.text import VIEWS, view_prompt
from sjc_dist.errors import ConfigError
from sjc_dist.scene.cameras import CameraConfig, CameraSampler, view_labels
from sjc_dist.toyworld import train_unet as tu
from sjc_dist.toyworld.tokenizer import word_tokenizer


def test_caption_table_holds_plain_then_view_captions_then_empty():
    caps = ["a red house", "a blue cube"]
    table = tu.caption_table(caps)
    assert len(table) == len(caps) * tu.CAPTIONS_PER_OBJECT + 1 and table[-1] == ""
    for k, cap in enumerate(caps):
        assert table[k * tu.CAPTIONS_PER_OBJECT] == cap
        for j, v in enumerate(VIEWS):
            assert table[k * tu.CAPTIONS_PER_OBJECT + 1 + j] == view_prompt(cap, v, "{view} view of {prompt}")


def test_text_index_mixes_view_plain_and_empty_captions_at_the_configured_rates():
    n, objects = 20000, 3
    gen = torch.Generator().manual_seed(0)
    obj = torch.randint(objects, (n,), generator=gen)
    views = torch.randint(len(VIEWS), (n,), generator=gen)
    empty = objects * tu.CAPTIONS_PER_OBJECT
    idx = tu.text_index(obj, views, 0.5, 0.1, objects, gen)
    kept = idx != empty
    assert float((~kept).float().mean()) == pytest.approx(0.1, abs=0.01)
    assert torch.equal(idx[kept] // tu.CAPTIONS_PER_OBJECT, obj[kept])
    viewed = idx[kept] % tu.CAPTIONS_PER_OBJECT != 0
    assert float(viewed.float().mean()) == pytest.approx(0.5, abs=0.02)
    assert torch.equal(idx[kept][viewed] % tu.CAPTIONS_PER_OBJECT, 1 + views[kept][viewed])
    only_views = tu.text_index(obj, views, 1.0, 0.0, objects, gen)
    assert torch.equal(only_views, obj * tu.CAPTIONS_PER_OBJECT + 1 + views)
    assert torch.equal(tu.text_index(obj, views, 0.0, 0.0, objects, gen), obj * tu.CAPTIONS_PER_OBJECT)


def test_renders_carry_the_view_labels_of_their_cameras():
    data = tu.render_dataset(["a red house", "a green cone"], 5, 16, "cpu", seed=3, chunk=3)
    assert data.images.shape == (10, 3, 16, 16) and data.objects.tolist() == [0] * 5 + [1] * 5
    gen = torch.Generator().manual_seed(3)
    sampler = CameraSampler(CameraConfig(), 16)
    expected = [view_labels(sampler.sample(n, gen), CameraConfig().overhead_above) for n in (3, 2, 3, 2)]
    assert [VIEWS[v] for v in data.views.tolist()] == [v for part in expected for v in part]


def test_default_config_builds_the_shipped_architecture():
    cfg = tu.UNetTrainConfig()
    unet, text = tu.build_models(len(word_tokenizer()), cfg.size, cfg.text_width, cfg.block_channels())
    shipped = json.loads((TOY_WEIGHTS / "unet" / "config.json").read_text())
    for key in ("block_out_channels", "cross_attention_dim", "down_block_types", "up_block_types", "sample_size",
                "layers_per_block", "attention_head_dim"):
        got = unet.config[key]
        assert (list(got) if isinstance(got, tuple) else got) == shipped[key], key
    from safetensors.torch import load_file

    from sjc_dist.toyworld.packed import shipped

    weights = shipped(TOY_WEIGHTS / "unet") / "diffusion_pytorch_model.safetensors"
    shipped_params = sum(t.numel() for t in load_file(weights).values())
    assert tu.count(unet) == shipped_params
    assert text.config.hidden_size == cfg.text_width


def test_judge_flags_parse_and_bad_channels_are_refused(tmp_path):
    cfg, out, device = tu.parse_args(["--out", str(tmp_path), "--channels", "32,64,64", "--text-width", "32",
                                      "--seed", "1", "--seconds", "150", "--device", "cpu"])
    assert (cfg.block_channels(), cfg.text_width, cfg.seed, cfg.seconds, out, device) == (
        (32, 64, 64), 32, 1, 150.0, tmp_path, "cpu")
    for bad in ("32,64", "30,60,60", "a,b,c"):
        with pytest.raises(ConfigError, match="channels"):
            tu.UNetTrainConfig(channels=bad).check()
    with pytest.raises(ConfigError, match="text_width"):
        tu.UNetTrainConfig(text_width=30).check()
    with pytest.raises(SystemExit, match="view_fraction"):
        tu.main(["--out", str(tmp_path), "--view-fraction", "2"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_cpu_training_writes_a_folder_that_load_diffusers_loads(tmp_path):
    from sjc_dist.diffusion.load import load_diffusers

    cfg = tu.UNetTrainConfig(seconds=120, max_steps=3, per_caption=1, batch=4, channels="32,32,32",
                             text_width=16, log_every=1, seed=2)
    log = tu.train(cfg, tmp_path, "cpu")
    assert log["steps"] == 3 and len(log["losses"]) == 3 and log["objects"] == 40 and log["images"] == 40
    assert sum(log["view_labels"].values()) == 40
    assert json.loads((tmp_path / "train_unet_log.json").read_text())["config"]["channels"] == "32,32,32"
    assert (tmp_path / "train_unet_loss.png").stat().st_size > 0
    model = load_diffusers(tmp_path, torch.device("cpu"), torch.float32, guidance_weight=3.0, name="tiny")
    assert (model.denoiser.channels, model.denoiser.size) == (3, 32)
    cond = model.text.cond(["front view of a red house"], "", 3.0)
    x0 = model.denoiser(torch.randn(1, 3, 32, 32), torch.tensor([1.0]), cond)
    assert x0.shape == (1, 3, 32, 32) and torch.isfinite(x0).all()
    assert model.text.tokenizer.unk_token_id not in model.text.tokenizer("overhead view of a purple owl").input_ids
