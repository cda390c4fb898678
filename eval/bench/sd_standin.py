"""A Stable-Diffusion-1.5-sized stand-in for the GPU bench: the SD 1.5 UNet architecture with random weights,
SD's DDPM schedule, fixed random text embeddings [77, 768], and the official SJC run settings. No download,
no text encoder, no VAE. `tiny` is the same thing shrunk for CPU checks (8x8 latents, a 16^3 grid).

Note: diffusers' `UNet2DConditionModel()` default is *not* SD 1.5 (cross_attention_dim 1280, no sample_size);
SD 1.5 is that default with `cross_attention_dim=768, sample_size=64` (859.5M parameters, 803.3 GFLOP per
64x64 forward, counted by FlopCounterMode).
"""
import zlib
from dataclasses import dataclass

import torch
from torch import Tensor

from sjc_dist.config import RunConfig
from sjc_dist.configtools import from_dict
from sjc_dist.diffusion.cfg import CFGDenoiser
from sjc_dist.diffusion.fast import DTYPES, FastConfig, FastDenoiser
from sjc_dist.diffusion.load import Model
from sjc_dist.diffusion.text import TextConditioner
from sjc_dist.diffusion.vp_adapter import VPDenoiser

SD_BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
PROMPT = "a hamburger"


@dataclass(frozen=True)
class Size:
    """One problem size: the UNet's config overrides, the text shape and the run settings."""

    name: str
    unet: dict
    context_len: int
    context_dim: int
    run: dict


SD15 = Size("sd15", {"sample_size": 64, "cross_attention_dim": 768}, 77, 768,
            {"field": {"grid_size": 100}, "render": {"step": 0.01}})  # the official SJC values (defaults)
TINY = Size("tiny", {"sample_size": 8, "cross_attention_dim": 32, "block_out_channels": (32, 64),
                     "layers_per_block": 1, "attention_head_dim": 4, "norm_num_groups": 8,
                     "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                     "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D")}, 8, 32,
            {"field": {"grid_size": 16}, "render": {"step": 0.1}})
SIZES = {"sd15": SD15, "tiny": TINY}


def build_unet(size: Size, device: torch.device, seed: int = 0) -> torch.nn.Module:
    """The UNet of `size` with random weights, built directly on `device` in float32 (eval, frozen)."""
    from diffusers import UNet2DConditionModel

    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed)  # diffusers initialises from the global RNG: scoped here by fork_rng
        unet = UNet2DConditionModel(**size.unet)
    return unet.eval().requires_grad_(False)


def unet_flops(unet: torch.nn.Module) -> float:
    """FLOPs of one forward of one image (2 x multiply-adds), counted on a meta-device copy."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    cfg = unet.config
    with torch.device("meta"):
        meta = UNet2DConditionModel.from_config(cfg)
        x = torch.zeros(1, cfg.in_channels, cfg.sample_size, cfg.sample_size)
        ctx = torch.zeros(1, 77, cfg.cross_attention_dim)
        t = torch.zeros(1)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(x, t, encoder_hidden_states=ctx, return_dict=False)
    return float(counter.get_total_flops())


def sd_alphas_cumprod() -> Tensor:
    """abar_t [1000] of SD's scaled-linear DDPM schedule."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, **SD_BETAS).alphas_cumprod


class RandomText(TextConditioner):
    """TextConditioner whose 'encoder' is a fixed random embedding [L, D] per prompt string (seeded by the
    string's CRC32), so the engine's real conditioning path (`cond`, its cache and weight transfer) runs."""

    def __init__(self, length: int, dim: int, device: torch.device, seed: int = 0):
        self.length, self.dim, self._device, self.seed = length, dim, device, seed
        self.max_length = length
        self._cache: dict[str, Tensor] = {}

    @property
    def device(self) -> torch.device:
        return self._device

    def embed(self, prompts: list[str]) -> Tensor:
        """[P, L, D] float32 on the device, the same tensor for the same string."""
        for p in prompts:
            if p not in self._cache:
                gen = torch.Generator().manual_seed(self.seed + zlib.crc32(p.encode()))
                self._cache[p] = torch.randn(self.length, self.dim, generator=gen).to(self._device)
        return torch.stack([self._cache[p] for p in prompts])


def make_denoiser(unet: torch.nn.Module, dtype: str, fast: FastConfig | None, cpu_fallback: bool = True):
    """VPDenoiser (eager, with autocast when half) or FastDenoiser around `unet` (converted in place)."""
    if fast is None:
        unet.to(DTYPES[dtype])
        return VPDenoiser(unet, sd_alphas_cumprod(), "epsilon", "nearest", DTYPES[dtype], is_latent=True)
    inner = VPDenoiser(unet, sd_alphas_cumprod(), "epsilon", "nearest", torch.float32, is_latent=True)
    return FastDenoiser(inner, fast, cpu_fallback=cpu_fallback)


def make_model(denoiser, size: Size, device: torch.device, weight: float = 100.0) -> Model:
    """A Model as load_model returns it (CFG-wrapped), with RandomText as its text conditioner."""
    text = RandomText(size.context_len, size.context_dim, device)
    return Model(CFGDenoiser(denoiser, weight), text, None, f"{size.name}-random", device)


def run_config(size: Size, seed: int, **render) -> RunConfig:
    """The official SJC settings (dataclass defaults) at this size, for scene number `seed`; `render` overrides
    RenderConfig fields (samples, fuse)."""
    data = {"model": {"name": f"{size.name}-random"}, "prompt": {"text": PROMPT}, "seed": seed,
            "output": {"progress": False}, **size.run}
    data["render"] = {**data.get("render", {}), **render}
    return from_dict(RunConfig, data)


def sphere_field(field, radius: float = 0.5, inside: float = 5.0, outside: float = -10.0) -> None:
    """Set a VoxelField's raw density to a solid sphere (a converged run's field: empty space at raw -10 has
    weights ~1e-7, below the official 1e-4 colour threshold); features stay as they are."""
    n, half = field.grid.shape[-1], field.bbox_len
    axis = torch.linspace(-half, half, n, device=field.grid.device)
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    with torch.no_grad():
        field.grid[0, 0] = torch.where((x * x + y * y + z * z).sqrt() < radius, inside, outside)


def _vae_config(size: Size) -> dict:
    """AutoencoderKL config: Stable Diffusion's (4 latent channels, 8x down-sampling in 4 blocks of
    (128, 256, 512, 512), 2 layers each, 512 px) for SD15; the same shape shrunk to 8 channels for other sizes."""
    blocks = {"down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}
    if size.name == "sd15":
        return {**blocks, "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
                "block_out_channels": (128, 256, 512, 512), "norm_num_groups": 32, "sample_size": 512,
                "scaling_factor": 0.18215}
    latent = size.unet.get("sample_size", 64)
    return {**blocks, "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 1,
            "block_out_channels": (8, 8, 8, 8), "norm_num_groups": 4, "sample_size": latent * 8,
            "scaling_factor": 0.18215}


def _copy_tokenizer(folder, max_length: int):
    """Copy the toy world's word tokenizer to `folder` with model_max_length = max_length (77 for SD: the
    text embedding is [77, 768] as Stable Diffusion's) and load it back."""
    import json
    import shutil

    from transformers import AutoTokenizer

    from sjc_dist.diffusion.load import TOY_WEIGHTS

    shutil.copytree(TOY_WEIGHTS / "tokenizer", folder, dirs_exist_ok=True)
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_max_length"] = max_length
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return AutoTokenizer.from_pretrained(folder)


def save_standin_folder(path, size: Size = SD15, seed: int = 0, device: torch.device | str | None = None):
    """Write a diffusers-format model folder of `size` with random weights that `load_model` loads unchanged
    (ModelConfig.name = the folder path); returns the folder as a Path. Subfolders:
      unet/          the UNet of `size` (build_unet; SD 1.5's architecture for SD15), saved in float16
      scheduler/     DDPMScheduler, SD's scaled-linear betas (SD_BETAS), epsilon prediction, 1000 steps
      tokenizer/     the toy world's word tokenizer, model_max_length = size.context_len (77 for SD15)
      text_encoder/  a 1-layer random CLIPTextModel with hidden size size.context_dim (768 for SD15: the
                     UNet's cross-attention width), vocabulary = the tokenizer's
      vae/           a random AutoencoderKL (_vae_config: SD's for SD15, 4 latent channels, x8), float16
    The weights are built on `device` (default: cuda if available, else cpu) from the global RNG, scoped with
    fork_rng and seeded from `seed`. A folder whose standin.json names the same size and seed is reused as is."""
    import json
    from pathlib import Path

    from diffusers import AutoencoderKL, DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(path)
    marker = folder / "standin.json"
    stamp = {"size": size.name, "seed": seed, "unet": {k: list(v) if isinstance(v, tuple) else v
                                                       for k, v in size.unet.items()}}
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return folder
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    unet = build_unet(size, device, seed).half()
    unet.save_pretrained(folder / "unet")
    del unet
    DDPMScheduler(num_train_timesteps=1000, prediction_type="epsilon", clip_sample=False,
                  **SD_BETAS).save_pretrained(folder / "scheduler")
    tok = _copy_tokenizer(folder / "tokenizer", size.context_len)
    dim = size.context_dim
    text_cfg = CLIPTextConfig(vocab_size=len(tok), hidden_size=dim, intermediate_size=2 * dim,
                              num_hidden_layers=1, num_attention_heads=dim // 64 if dim >= 64 else 4,
                              max_position_embeddings=size.context_len, pad_token_id=tok.pad_token_id,
                              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.device(device):
        torch.manual_seed(seed + 1)
        CLIPTextModel(text_cfg).save_pretrained(folder / "text_encoder")
        torch.manual_seed(seed + 2)
        AutoencoderKL(**_vae_config(size)).half().save_pretrained(folder / "vae")
    if device.type == "cuda":
        torch.cuda.empty_cache()
    marker.write_text(json.dumps(stamp, indent=2) + "\n")
    return folder
