"""The one config tree of a run, its presets, and its validation (all before any model loads).

Defaults are the official SJC code's (shared sjc-reference.md). A YAML file is a *partial* RunConfig; `--set
section.key=value` overrides follow it. The shipped presets are `toy` (the embedded default: small grid, 32x32
pixels, a few minutes on a CPU) and `sd` (the official Stable Diffusion settings, unchanged).
"""
import copy
from dataclasses import dataclass
from pathlib import Path

from .configtools import flatten, from_dict, load_yaml, merge, opt, set_dotted, sub, to_dict
from .diffusion.load import ModelConfig, model_path
from .errors import ConfigError
from .diffusion.sigmas import SigmaConfig
from .guidance.base import GuidanceConfig, validate_guidance
from .optim.losses import DepthConfig, EmptinessConfig, TVConfig
from .optim.optimizer import OptimConfig
from .scene.background import BackgroundConfig
from .scene.cameras import CameraConfig
from .scene.field import FieldConfig
from .scene.render import RenderConfig

PRESETS = Path(__file__).resolve().parent / "presets"


@dataclass(frozen=True)
class PromptConfig:
    """The text prompt and its view-dependent variants."""

    text: str = opt("", "the prompt (required by text-conditioned models)")
    negative: str = opt("", "negative prompt: the unconditional half of classifier-free guidance")
    view_dependent: bool = opt(True, "prepend the view (front/side/backside/overhead) to the prompt (official)")
    view_template: str = opt("{view} view of {prompt}", "how a view label and the prompt are joined")


@dataclass(frozen=True)
class OutputConfig:
    """Where results go and how often progress is recorded."""

    dir: str | None = opt(None, "run folder; null = runs/<time>-<prompt>")
    log_every: int = opt(100, "steps between metric lines (and callbacks, and the NaN check)", ge=1)
    checkpoint_every: int = opt(1000, "steps between checkpoints (0 = only at the end)", ge=0)
    eval_views: int = opt(8, "views in the multi-view grid (evenly spaced azimuths)", ge=1, le=64)
    turntable_frames: int = opt(60, "frames of the turntable GIF (0 = none; official 100)", ge=0, le=720)
    mesh_level: float = opt(0.1, "voxel opacity 1 - exp(-tau * voxel) at which the mesh is cut and a voxel counts "
                                 "as occupied (SJC fields are soft: 0.5 leaves most results empty)",
                            gt=0.0, lt=1.0)
    progress: bool = opt(True, "show a progress bar")


@dataclass(frozen=True)
class RunConfig:
    """One SJC (or SDS) optimisation of one prompt."""

    model: ModelConfig = sub(ModelConfig)
    prompt: PromptConfig = sub(PromptConfig)
    seed: int = opt(0, "seed of every random draw of the run (official: 0, hard-coded there)", ge=0)
    steps: int = opt(10000, "optimisation steps (official 10000)", ge=1)
    guidance: GuidanceConfig = sub(GuidanceConfig)
    sigma: SigmaConfig = sub(SigmaConfig)
    field: FieldConfig = sub(FieldConfig)
    background: BackgroundConfig = sub(BackgroundConfig)
    render: RenderConfig = sub(RenderConfig)
    camera: CameraConfig = sub(CameraConfig)
    emptiness: EmptinessConfig = sub(EmptinessConfig)
    depth: DepthConfig = sub(DepthConfig)
    tv: TVConfig = sub(TVConfig)
    optim: OptimConfig = sub(OptimConfig)
    output: OutputConfig = sub(OutputConfig)

    def validate(self) -> "RunConfig":
        """Cross-field checks; raises ConfigError naming the field. Returns self."""
        s, c = self.sigma, self.camera
        if s.min is not None and s.max is not None and s.min >= s.max:
            raise ConfigError("sigma.min", s.min, f"must be less than sigma.max = {s.max}")
        for lo, hi in (("radius_min", "radius_max"), ("fov_min", "fov_max"), ("elevation_min", "elevation_max")):
            if getattr(c, lo) > getattr(c, hi):
                raise ConfigError(f"camera.{lo}", getattr(c, lo), f"must be at most camera.{hi} = {getattr(c, hi)}")
        if self.guidance.through_vae and self.guidance.kind != "sds":
            raise ConfigError("guidance.through_vae", True, "must be false unless guidance.kind is 'sds'")
        path = model_path(self.model.name)  # raises ModelNotFoundError
        text_model = path is None or (path / "text_encoder").is_dir()
        if text_model and not self.prompt.text.strip():
            raise ConfigError("prompt.text", self.prompt.text,
                              "must be a non-empty prompt (the model is text-conditioned)")
        if path is None:  # the empirical model is made of one toy object's renders
            from .toyworld.shapes import captions, parse
            try:
                parse(self.prompt.text)
            except ValueError:
                raise ConfigError("prompt.text", self.prompt.text,
                                  "must be a toy-world caption for model 'empirical': "
                                  + ", ".join(captions())) from None
        validate_guidance(self.guidance, self.prompt.view_dependent, text_model and path is not None)
        if "{prompt}" not in self.prompt.view_template or "{view}" not in self.prompt.view_template:
            raise ConfigError("prompt.view_template", self.prompt.view_template,
                              "must be a string with {view} and {prompt}")
        return self


def preset_path(name_or_path: str) -> Path:
    """A shipped preset name ('toy', 'sd', ...) or a YAML file path."""
    p = PRESETS / f"{name_or_path}.yaml"
    if p.is_file():
        return p
    if Path(name_or_path).is_file():
        return Path(name_or_path)
    names = ", ".join(sorted(q.stem for q in PRESETS.glob("*.yaml")))
    raise ConfigError("config", name_or_path, f"a preset ({names}) or an existing YAML file")


def load_config(config: str | dict | None = "toy", overrides: list[str] | tuple = (),
                validate: bool = True) -> RunConfig:
    """Preset or YAML (or a dict), then `a.b=c` overrides, into a validated RunConfig."""
    if isinstance(config, dict):
        data = copy.deepcopy(config)  # overrides must not write into the caller's dict
    else:
        data = load_yaml(preset_path(config)) if config else {}
    for item in overrides:
        data = set_dotted(merge({}, data), item)
    cfg = from_dict(RunConfig, data)
    return cfg.validate() if validate else cfg


def replace_in(cfg: RunConfig, **dotted) -> RunConfig:
    """A copy of cfg with dotted keys replaced (`replace_in(c, **{'guidance.weight': 7.5})`), re-checked."""
    data = to_dict(cfg)
    for key, value in dotted.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        if leaf not in node:
            raise ConfigError(key, value, "a known config key")
        node[leaf] = value
    return from_dict(RunConfig, data)


__all__ = ["RunConfig", "PromptConfig", "OutputConfig", "load_config", "preset_path", "replace_in",
           "flatten", "to_dict"]
