"""Load a diffusion model by name: the embedded toy world, the empirical oracle, a local diffusers folder,
or a Hugging Face repo id already in the local cache (never downloaded). All diffusers models, the toy world
and Stable Diffusion alike, go through `load_diffusers`: unet/, scheduler/, and optional text_encoder/ +
tokenizer/ and vae/ subfolders.
"""
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..configtools import opt
from ..errors import ModelNotFoundError
from .cfg import CFGDenoiser
from .denoiser import Denoiser
from .text import TextConditioner
from .vp_adapter import VPDenoiser

TOY_WEIGHTS = Path(__file__).resolve().parent.parent / "toyworld" / "weights"
# Shipped models by name: the toy world's guiding model and its independent judge (another seed and width,
# trained on the same world; the evaluation's `judge_fit` uses it: it never guides an optimisation).
SHIPPED = {"toy": TOY_WEIGHTS, "toy-judge": TOY_WEIGHTS / "judge"}
JUDGE_MODELS = {"toy": "toy-judge"}  # the default judge model of a guiding model (evaluation.judge_model auto)
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelConfig:
    """The diffusion model and where it runs."""

    name: str = opt("toy", "'toy' (the embedded toy world), 'toy-judge' (the toy world's independent judge model), "
                           "'empirical' (exact denoiser of toy renders), a local diffusers folder, or a Hugging "
                           "Face repo id in the local cache")
    device: str = opt("auto", "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'")
    dtype: str = opt("auto", "UNet precision; auto = float16 on GPU, float32 on CPU",
                     choices=("auto", "float32", "float16", "bfloat16"))
    sigma_to_t: str = opt("nearest", "timestep of a continuous sigma: nearest tick in log-sigma, interpolated in "
                                     "log-sigma (both keep the continuous sigma in the scalings), or snap (the "
                                     "official code: nearest tick in linear sigma, used in the scalings too)",
                          choices=("nearest", "interp", "snap"))
    fast: bool = opt(True, "on a GPU, call the UNet through FastDenoiser (half precision, channels-last, one "
                           "CUDA graph per padded batch size); ignored on a CPU")
    compile: str = opt("auto", "with model.fast on a GPU: torch.compile mode of the UNet, under the CUDA graphs. "
                               "'auto': SD-class UNets (>= 100 M parameters) compile each padded batch size once "
                               "it has served a few calls (one dynamic-batch graph, kept in Inductor's on-disk "
                               "cache: about 40 s the first time on a machine, seconds after); 'default': at the "
                               "first call; 'none': CUDA graphs of the eager UNet only",
                       choices=("auto", "none", "default", "max-autotune-no-cudagraphs"))


@dataclass
class Model:
    """A loaded model: the (CFG-wrapped) denoiser, its text conditioner and VAE, if any."""

    denoiser: Denoiser
    text: TextConditioner | None
    vae: Any | None
    name: str
    device: torch.device
    load_s: dict[str, float] = field(default_factory=dict)  # seconds of each phase of the load, in order

    @property
    def latent_scale(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215)) if self.vae is not None else 1.0

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        """Model space [B, C, h, w] -> RGB [B, 3, H, W] in [-1, 1] (identity for pixel models)."""
        if self.vae is None:
            return x.clamp(-1, 1)
        out = self.vae.decode((x / self.latent_scale).to(self.vae.dtype)).sample
        return out.float().clamp(-1, 1)

    def encode(self, rgb: Tensor) -> Tensor:
        """RGB [B, 3, H, W] in [-1, 1] -> latents [B, 4, H/8, W/8], differentiable (for SDS on RGB)."""
        if self.vae is None:
            raise ValueError(f"model '{self.name}' has no VAE to encode with")
        return self.vae.encode(rgb.to(self.vae.dtype)).latent_dist.mean.float() * self.latent_scale


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def model_path(name: str) -> Path | None:
    """Where a diffusers model lives (None for 'empirical'); raises ModelNotFoundError if nowhere."""
    if name == "empirical":
        return None
    if name in SHIPPED:
        if not is_installed(name):
            raise ModelNotFoundError(name, f"the shipped weights are missing from {SHIPPED[name]}")
        from ..toyworld.packed import shipped

        return shipped(SHIPPED[name])  # the xz-packed weights, unpacked once into a cache folder
    p = Path(os.path.expanduser(name))
    if p.is_dir():
        if not (p / "unet").is_dir() or not (p / "scheduler").is_dir():
            raise ModelNotFoundError(name, "the folder has no unet/ and scheduler/ subfolders")
        return p
    if "/" in name and not name.startswith((".", "/", "~")):
        from huggingface_hub import snapshot_download
        try:  # the cache only, whatever HF_HUB_OFFLINE says: nothing is downloaded
            return Path(snapshot_download(name, local_files_only=True))
        except Exception as err:  # noqa: BLE001 - any miss is "not found" to the user
            raise ModelNotFoundError(name, f"not in the Hugging Face cache: {type(err).__name__}") from None
    raise ModelNotFoundError(name, "no such folder")


def is_installed(name: str) -> bool:
    """Whether a shipped model's weights ('toy', 'toy-judge') are in this installation."""
    return (SHIPPED[name] / "unet").is_dir()


def load_model(cfg: ModelConfig, prompt: str = "", guidance_weight: float = 1.0) -> Model:
    """Load the model `cfg.name` onto its device, wrapped for classifier-free guidance."""
    device = resolve_device(cfg.device)
    path = model_path(cfg.name)
    if path is None:
        from ..toyworld.data import empirical_denoiser
        return Model(empirical_denoiser(prompt, device), None, None, "empirical", device)
    return load_diffusers(path, device, resolve_dtype(cfg.dtype, device), cfg.sigma_to_t, guidance_weight,
                          name=cfg.name, fast=cfg.fast, compile=cfg.compile)


_IMPORTS = threading.Lock()  # diffusers' and transformers' lazy modules fail when two threads import them at once


def import_backend(name: str) -> None:
    """Import the libraries `load_model` loads the model `name` with (diffusers, transformers; none for
    'empirical'), one thread at a time, so that a worker can pay for them before the trials start beside it
    (pool.start) while its preload's load waits here."""
    if name == "empirical":
        return
    with _IMPORTS:  # every name load_diffusers takes: each from-import loads one of the lazy submodules
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UNet2DModel  # noqa: F401
        from transformers import AutoModel, AutoTokenizer  # noqa: F401


class Laps:
    """Seconds between successive `lap(name)` calls, in order (the first from the clock's creation)."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._last, 3)
        self._last = now


def load_diffusers(path: Path, device: torch.device, dtype: torch.dtype, sigma_to_t: str = "nearest",
                   guidance_weight: float = 1.0, name: str = "", fast: bool = False, compile: str = "auto") -> Model:
    """UNet + scheduler (+ text encoder, tokenizer, VAE) from a diffusers-format folder; `Model.load_s` times the
    phases (imports, unet read, unet to the device, vae, text, wrap)."""
    clock = Laps()
    import_backend(str(path))
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UNet2DModel
    from transformers import AutoModel, AutoTokenizer
    clock.lap("imports")
    unet_cfg = UNet2DConditionModel.load_config(path / "unet")
    unet_cls = UNet2DConditionModel if unet_cfg.get("cross_attention_dim") else UNet2DModel
    unet = unet_cls.from_pretrained(path / "unet", torch_dtype=dtype)
    sched = DDPMScheduler.from_pretrained(path / "scheduler")
    clock.lap("unet")
    unet = unet.to(device).eval().requires_grad_(False)
    clock.lap("unet_to_device")
    vae = None
    if (path / "vae").is_dir():
        vae = AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype).to(device).eval()
        vae.requires_grad_(False)
        clock.lap("vae")
    text = None
    if (path / "text_encoder").is_dir():
        tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
        encoder = AutoModel.from_pretrained(path / "text_encoder", dtype=torch.float32).to(device)
        text = TextConditioner(tokenizer, encoder)
        clock.lap("text")
    inner = VPDenoiser(unet, sched.alphas_cumprod, sched.config.prediction_type, sigma_to_t, dtype,
                       is_latent=vae is not None)
    if fast and device.type == "cuda":
        from .fast import FastDenoiser, fast_config
        name_of = {v: k for k, v in DTYPES.items()}
        inner = FastDenoiser(inner, fast_config(name_of[dtype], compile, unet))
    clock.lap("wrap")
    return Model(CFGDenoiser(inner, guidance_weight), text, vae, name or str(path), device, clock.laps)
