"""A finished run read back from its folder (config.json + field.safetensors), re-rendered at fixed views.

Evaluation never needs the optimiser state: the voxel grid, its density scale and the background are enough.
Pixel-space runs decode by clamping to [-1, 1]; latent runs need the model's VAE, so their model is loaded
through `load_model` (once per model name, via `ModelCache`). Does not score anything (evaluate.py does).
"""
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from ..artifacts import render_eval
from ..config import RunConfig, load_config
from ..diffusion.load import JUDGE_MODELS, Model, ModelConfig, is_installed, load_model, model_path
from ..errors import ConfigError
from ..scene.scenes import VoxelScene

EMPIRICAL_SIZE = 32  # the render size of the 'empirical' model's data (toyworld.data.sample_views' default)


@dataclass
class SavedRun:
    """A run folder loaded for evaluation: its config, its scene (field + background) and its summary."""

    run_dir: Path
    cfg: RunConfig
    scene: VoxelScene
    summary: dict = field(default_factory=dict)

    @property
    def is_latent(self) -> bool:
        return self.scene.field.channels != 3

    @property
    def method(self) -> str:
        from .benchmark import METHODS

        return {kind: name for name, kind in METHODS.items()}[self.cfg.guidance.kind]


@dataclass(frozen=True)
class _RGBSpace:
    channels: int = 3


class PixelDecoder:
    """Stands in for a Model when rendering an RGB field: decode is a clamp to [-1, 1] (no weights needed)."""

    denoiser = _RGBSpace()

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        return x.clamp(-1, 1)


class ModelCache:
    """Models an evaluation needs, loaded once each: to decode latent runs, the guiding model of each run (for
    its denoiser fit) and the independent judge model. Keyed by model name (plus the prompt for 'empirical',
    whose data is the prompt's object); prompt-independent use only."""

    def __init__(self, device: torch.device, preloaded: dict[str, Model] | None = None):
        self.device, self.models = device, dict(preloaded or {})

    def load(self, cfg: ModelConfig, prompt: str = "") -> Model:
        key = cfg.name if cfg.name != "empirical" else f"empirical:{prompt}"
        if key not in self.models:
            self.models[key] = load_model(replace(cfg, device=str(self.device)), prompt)
        return self.models[key]

    def decoder(self, run: "SavedRun") -> Model | PixelDecoder:
        if not run.is_latent:
            return PixelDecoder()
        return self.load(run.cfg.model, run.cfg.prompt.text)

    def guiding(self, run: "SavedRun") -> Model:
        """The model the run was optimised against."""
        return self.load(run.cfg.model, run.cfg.prompt.text)

    def judge(self, run: "SavedRun", name: str) -> Model | None:
        """The independent judge model: `name`, or for 'auto' the toy world's 'toy-judge' for toy runs (None
        for other models, or when its weights are not installed); never the run's own model."""
        if name == "auto":
            name = JUDGE_MODELS.get(run.cfg.model.name, "none")
            if name != "none" and not is_installed(name):
                return None
        if name in ("none", "", run.cfg.model.name):
            return None
        return self.load(ModelConfig(name=name), run.cfg.prompt.text)

    @staticmethod
    def model_space(model: Model, image: Tensor) -> Tensor | None:
        """Renders [V, C, H, W] in the model's space: as they are, or an RGB field's VAE encoding for a latent
        model; None when the model cannot see them (other channels or size)."""
        den = model.denoiser
        if image.shape[1] == 3 and den.channels != 3 and model.vae is not None:
            image = model.encode(image.to(model.device))
        if image.shape[1] != den.channels or image.shape[-1] != den.size:
            return None
        return image.to(model.device)


def native_size(cfg: RunConfig) -> int:
    """The rendered side the run trained at: render.resolution, else the model's UNet sample size (x8 for
    SDS through the VAE, whose field is RGB at the decoded size)."""
    if cfg.render.resolution:
        return cfg.render.resolution
    path = model_path(cfg.model.name)
    if path is None:
        return EMPIRICAL_SIZE
    unet_cfg = json.loads((path / "unet" / "config.json").read_text())
    size = unet_cfg.get("sample_size", 64)
    size = size if isinstance(size, int) else size[0]
    return size * 8 if cfg.guidance.through_vae else size


def read_run_config(run_dir: str | Path) -> RunConfig:
    """The resolved config of a finished run folder; ConfigError naming the folder if it is not one."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "field.safetensors").is_file():
        raise ConfigError("run_dir", str(run_dir), "a finished 3D run folder (config.json and field.safetensors)")
    return load_config(json.loads((run_dir / "config.json").read_text()), validate=False)


def load_saved_run(run_dir: str | Path, device: torch.device | str = "cpu", resolution: int | None = None,
                   render_step: float | None = None) -> SavedRun:
    """Read a run folder; raises ConfigError naming the folder if it is not a finished 3D run."""
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    tensors = load_file(str(run_dir / "field.safetensors"))
    grid = tensors["grid"]
    channels = grid.shape[1] - 1
    res = resolution or native_size(cfg)
    scene = VoxelScene(cfg.field, cfg.background, cfg.camera, channels, res, render_step or cfg.render.step)
    with torch.no_grad():
        scene.field.grid.copy_(grid)
        scene.field.d_scale.copy_(tensors["d_scale"].reshape(()))
        scene.background.texture.copy_(tensors["background"])
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    return SavedRun(run_dir, cfg, scene.to(device).requires_grad_(False), summary)


def render_saved(run: SavedRun, decoder: Model | PixelDecoder, views: int, elevation: float | None) -> Tensor:
    """RGB views [V, 3, H, W] in [-1, 1] at evenly spaced azimuths (front first) and the given elevation."""
    rgb, _, _ = render_eval(run.scene, decoder, views, elevation)
    return rgb
