"""Shared fixtures of the test suite: tiny models built in-process, tiny configs, seeded generators.

Every fixture here is CPU-only, deterministic and fast, and usable from any test folder (tests/diffusion,
tests/optim, tests/distributed, tests/evaluation, ...): pytest finds this rootdir conftest for all of them.
The test folders have no __init__.py, so test file basenames must be unique across the whole tree.

Models
  tiny_pipeline     (session) Path of a tiny random Stable-Diffusion-shaped diffusers folder: unet/ (4x8x8
                    latents, cross-attention dim 16), text_encoder/ (CLIP, 1 layer), tokenizer/ (the project's
                    word tokenizer), scheduler/ (DDPM with SD's scaled-linear betas, eps) and vae/ (x8). Load it
                    with `load_model(ModelConfig(name=str(tiny_pipeline), device="cpu"))`, as real users do.
  tiny_model        (session) that folder loaded through `sjc_dist.diffusion.load.load_model` (CFG weight 7.5).
  toy_model         (session) the embedded toy-world model, loaded on the CPU (skips the test if not shipped).
  tiny_pipeline_builder (session) the builder itself, `build(folder, prediction_type="epsilon", with_vae=True,
                    seed=0) -> folder`, for other variants (v-prediction, no VAE, another seed).
  tiny_unet         (session) a random UNet2DConditionModel (4 channels, 8x8, cross-attention dim 16).
  tiny_pixel_unet   (session) a random unconditional UNet2DModel (3 channels, 8x8).
  empirical_data    (session) 6 random 'images' [6, 3, 8, 8] in [-1, 1].
  empirical_model   (session) a Model around EmpiricalDenoiser(empirical_data): no text, no VAE.
Configs
  make_config(*overrides, base=None) -> RunConfig: a validated tiny run (empirical model, grid 8, 8x8 renders,
                    coarse ray steps, no progress bar), then `section.key=value` overrides; `base` may be a preset
                    name or a dict.
Randomness
  generator         a fresh torch.Generator seeded with 0 (tests pass RNG explicitly; nothing global).
Instruments
  counting          `counting(denoiser)`: the denoiser, forwarding, with the batch size of every call in `.batches`.
"""
import copy
from pathlib import Path

import pytest
import torch

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
TINY_CONTEXT_DIM = 16
TINY_PROMPT = "a red cube"

TINY_RUN = {
    "model": {"name": "empirical", "device": "cpu"},
    "prompt": {"text": TINY_PROMPT, "view_dependent": False},
    "steps": 6,
    "guidance": {"weight": 1.0},
    "sigma": {"kind": "uniform", "min": 0.05, "max": 10.0},
    "field": {"grid_size": 8, "feature_activation": "tanh"},
    "background": {"kind": "solid", "value": 1.0},
    "render": {"step": 0.25, "views_per_step": 1},
    "emptiness": {"lambda1": 1.0, "lambda2": 20.0},
    "output": {"log_every": 2, "checkpoint_every": 2, "eval_views": 2, "turntable_frames": 3, "progress": False},
}


def tiny_unet_model(seed: int = 0, conditional: bool = True):
    """A random diffusers UNet of a few thousand parameters: 4x8x8 latents with cross-attention, or 3x8x8
    pixels unconditional. Frozen (no grad), eval mode."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    torch.manual_seed(seed)  # diffusers initialises from the global RNG; fixed so the tests are reproducible
    if conditional:
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=TINY_CONTEXT_DIM,
            attention_head_dim=2, norm_num_groups=4)
    else:
        unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                           down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                           norm_num_groups=4)
    return unet.eval().requires_grad_(False)


def build_tiny_pipeline(folder: Path, prediction_type: str = "epsilon", with_vae: bool = True, seed: int = 0) -> Path:
    """Write a tiny random SD-shaped diffusers pipeline into `folder` (unet, text_encoder, tokenizer, scheduler,
    and vae when `with_vae`); returns the folder."""
    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from sjc_dist.toyworld.tokenizer import word_tokenizer

    folder = Path(folder)
    tok = word_tokenizer()
    tiny_unet_model(seed).save_pretrained(folder / "unet")
    torch.manual_seed(seed + 1)
    text_cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=TINY_CONTEXT_DIM, intermediate_size=32,
                              num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=tok.model_max_length,
                              pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id)
    CLIPTextModel(text_cfg).save_pretrained(folder / "text_encoder")
    tok.save_pretrained(folder / "tokenizer")
    DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False,
                  **SD_BETAS).save_pretrained(folder / "scheduler")
    if with_vae:  # four blocks: the same x8 down-sampling as SD's VAE, with 8 channels
        torch.manual_seed(seed + 2)
        AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                      layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 4,
                      up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=4,
                      sample_size=64).save_pretrained(folder / "vae")
    return folder


class CountingDenoiser:
    """Forwards to a denoiser (its sigma range, channels, size, latency and ticks too) and records the batch size of
    every call."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []
        for name in ("sigma_min", "sigma_max", "channels", "size", "is_latent", "sigmas"):
            setattr(self, name, getattr(inner, name))

    def __call__(self, x, sigma, cond=None):
        self.batches.append(x.shape[0])
        return self.inner(x, sigma, cond)


@pytest.fixture
def counting():
    """CountingDenoiser: `counting(denoiser)` wraps one."""
    return CountingDenoiser


@pytest.fixture(scope="session")
def tiny_pipeline_builder():
    return build_tiny_pipeline


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_model(tiny_pipeline):
    from sjc_dist.diffusion.load import ModelConfig, load_model

    return load_model(ModelConfig(name=str(tiny_pipeline), device="cpu"), TINY_PROMPT, 7.5)


@pytest.fixture(scope="session")
def toy_model():
    """The embedded toy-world model (CFG weight 3) through the real loader; skips while its weights are absent."""
    from sjc_dist.diffusion.load import TOY_WEIGHTS, ModelConfig, load_model

    if not (TOY_WEIGHTS / "unet").is_dir():
        pytest.skip("the toy-world weights are not in sjc_dist/toyworld/weights yet")
    return load_model(ModelConfig(name="toy", device="cpu"), TINY_PROMPT, 3.0)


@pytest.fixture(scope="session")
def tiny_unet():
    return tiny_unet_model(0)


@pytest.fixture(scope="session")
def tiny_pixel_unet():
    return tiny_unet_model(0, conditional=False)


@pytest.fixture(scope="session")
def empirical_data() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1234)
    return torch.rand(6, 3, 8, 8, generator=gen) * 2 - 1


@pytest.fixture(scope="session")
def empirical_model(empirical_data):
    from sjc_dist.diffusion.empirical import EmpiricalDenoiser
    from sjc_dist.diffusion.load import Model

    return Model(EmpiricalDenoiser(empirical_data), None, None, "empirical", torch.device("cpu"))


@pytest.fixture
def make_config():
    """make_config(*overrides, base=None) -> a validated tiny RunConfig (see the module docstring)."""
    from sjc_dist.config import load_config
    from sjc_dist.configtools import merge

    def make(*overrides: str, base: str | dict | None = None):
        if isinstance(base, str):
            return load_config(base, list(overrides))
        return load_config(copy.deepcopy(merge(TINY_RUN, base or {})), list(overrides))

    return make


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)
