"""CLIP judges: any open_clip model with its own preprocessing, loaded offline (nothing is ever downloaded).

A judge spec names one model:
  toy                      the toy world's CLIP (sjc_dist.toyworld.clip_model), the default
  ARCH:/path/to/ckpt.pt    an open_clip architecture and a local checkpoint file
  ARCH:TAG                 an open_clip pretrained tag, taken from the Hugging Face cache only
  local-dir:/folder        a folder with open_clip_config.json and a checkpoint
  hf-hub:org/repo          an open_clip repo already in the Hugging Face cache
Images are preprocessed on tensors with the model's own config (size, mean, std, interpolation, resize
mode), as open_clip's PIL transform would, minus the 8-bit rounding. Embeddings are L2-normalised.
This module does not compute metrics (clip_score.py) and does not render (saved.py).
"""
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, SJCError

SPEC_HELP = ("'toy', 'ARCH:/path/checkpoint.pt', 'ARCH:TAG' (in the Hugging Face cache), "
             "'local-dir:/folder' or 'hf-hub:org/repo' (cached)")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class JudgeNotFoundError(SJCError, FileNotFoundError):
    """A judge's weights are not on this machine (nothing is downloaded)."""

    def __init__(self, spec: str, detail: str):
        self.spec = spec
        super().__init__(f"judge '{spec}' is not available offline: {detail}")


class JudgeWarning(UserWarning):
    """The judge shares the guidance model's text tower, so its scores favour the guidance."""


@dataclass(frozen=True)
class JudgeSpec:
    """A parsed judge spec: kind is toy | file | tag | local-dir | hf-hub."""

    text: str
    kind: str
    arch: str = ""
    source: str = ""

    @property
    def label(self) -> str:
        """A short name safe for table columns and MLflow keys: 'toy', 'ViT-B-32.openai', ..."""
        if self.kind == "toy":
            return "toy"
        if self.kind in ("local-dir", "hf-hub"):
            tail = Path(self.source.rstrip("/")).name
        else:
            tail = Path(self.source).stem if self.kind == "file" else self.source
        name = f"{self.arch}.{tail}" if self.arch else tail
        return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def parse_judge(text: str) -> JudgeSpec:
    """'toy' | 'ARCH:/ckpt' | 'ARCH:tag' | 'local-dir:/folder' | 'hf-hub:org/repo' -> JudgeSpec."""
    t = text.strip()
    if t == "toy":
        return JudgeSpec(t, "toy")
    for schema in ("local-dir", "hf-hub"):
        if t.startswith(schema + ":"):
            return JudgeSpec(t, schema, source=t[len(schema) + 1:])
    arch, sep, weights = t.partition(":")
    if not sep or not arch or not weights:
        raise ConfigError("judges", text, SPEC_HELP)
    is_file = "/" in weights or weights.endswith(CHECKPOINT_SUFFIXES) or Path(weights).expanduser().is_file()
    return JudgeSpec(t, "file" if is_file else "tag", arch, weights)


def parse_judges(text: str) -> list[JudgeSpec]:
    """A comma-separated list of specs (duplicates kept out)."""
    specs = [parse_judge(p) for p in text.split(",") if p.strip()]
    if not specs:
        raise ConfigError("judges", text, "at least one judge: " + SPEC_HELP)
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError("judges", text, "judges with distinct labels (each judge once)")
    return specs


# --- the guidance model's own text tower ------------------------------------------------------------------
def guidance_text_tower(model_name: str) -> str | None:
    """'ViT-L-14/openai' for SD 1.x, 'ViT-H-14/laion2b' for SD 2.x, None when unknown (toy, empirical)."""
    cfg_file = Path(model_name).expanduser() / "text_encoder" / "config.json"
    if cfg_file.is_file():
        cfg = json.loads(cfg_file.read_text())
        width, layers = cfg.get("hidden_size"), cfg.get("num_hidden_layers")
        if "CLIPTextModel" in str(cfg.get("architectures")) and (width, layers) == (768, 12):
            return "ViT-L-14/openai"
        if (width, layers) in ((1024, 23), (1024, 24)):
            return "ViT-H-14/laion2b"
    name = model_name.lower()
    if re.search(r"stable-diffusion-v1|sd-v1|stable-diffusion-1|compvis|runwayml", name):
        return "ViT-L-14/openai"
    if re.search(r"stable-diffusion-2|sd-?2", name):
        return "ViT-H-14/laion2b"
    return None


def judge_tower(spec: JudgeSpec) -> str | None:
    """The same 'ARCH/weights' notation for a judge, when it is one of the known guidance towers."""
    arch = spec.arch.lower()
    weights = spec.source.lower()
    if arch.startswith("vit-l-14") and "openai" in (weights + spec.text.lower()):
        return "ViT-L-14/openai"
    if arch.startswith("vit-h-14") and "laion2b" in (weights + spec.text.lower()):
        return "ViT-H-14/laion2b"
    return None


def same_tower_warning(spec: JudgeSpec, model_name: str) -> str | None:
    """A warning text when the judge is the guidance model's own text tower (and emit it), else None."""
    tower = guidance_text_tower(model_name)
    if tower is None or judge_tower(spec) != tower:
        return None
    msg = (f"judge '{spec.text}' is the text tower of the guidance model '{model_name}' ({tower}): its scores "
           f"reward what the guidance optimised. Rank with one CLIP and report with another (e.g. ViT-B-32 "
           f"or ViT-H-14 for SD 1.x).")
    warnings.warn(msg, JudgeWarning, stacklevel=2)
    return msg


# --- preprocessing on tensors -----------------------------------------------------------------------------
def preprocess_views(views: Tensor, cfg: dict) -> Tensor:
    """Views [V, 3, H, W] in [-1, 1] -> the model's input [V, 3, S, S] (resize, centre crop, normalise)."""
    size = cfg.get("size", 224)
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    x = ((views.float() + 1) / 2).clamp(0, 1)
    h, w = x.shape[-2:]
    mode = cfg.get("interpolation", "bicubic")
    mode = "bicubic" if mode not in ("bilinear", "nearest") else mode
    if cfg.get("resize_mode", "shortest") == "squash":
        new_h, new_w = out_h, out_w
    else:
        scale = max(out_h / h, out_w / w)
        new_h, new_w = round(h * scale), round(w * scale)
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode=mode, antialias=mode != "nearest",
                          align_corners=False if mode != "nearest" else None).clamp(0, 1)
    top, left = (new_h - out_h) // 2, (new_w - out_w) // 2
    x = x[..., top:top + out_h, left:left + out_w]
    mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=x.device)
    std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=x.device)
    return (x - mean[:, None, None]) / std[:, None, None]


class Judge:
    """An open_clip model, its tokenizer and its preprocessing config; embeds views and prompts."""

    def __init__(self, model: torch.nn.Module, tokenizer, preprocess_cfg: dict, spec: JudgeSpec,
                 device: torch.device, batch_size: int = 64):
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer, self.preprocess_cfg, self.spec = tokenizer, dict(preprocess_cfg), spec
        self.device, self.batch_size = device, batch_size
        self._text_cache: dict[str, Tensor] = {}

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def logit_scale(self) -> float:
        """The learnt inverse temperature s of the judge's softmax over texts (CLIP's 100 if it has none)."""
        scale = getattr(self.model, "logit_scale", None)
        return float(scale.exp()) if isinstance(scale, torch.Tensor) else 100.0

    @torch.no_grad()
    def embed_images(self, views: Tensor) -> Tensor:
        """Views [V, 3, H, W] in [-1, 1] -> unit embeddings [V, D] (float32, CPU)."""
        out = []
        for i in range(0, len(views), self.batch_size):
            x = preprocess_views(views[i:i + self.batch_size].to(self.device), self.preprocess_cfg)
            out.append(self.model.encode_image(x).float().cpu())
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def embed_texts(self, prompts: list[str]) -> Tensor:
        """Prompts (P strings) -> unit embeddings [P, D] (float32, CPU), cached per string."""
        missing = list(dict.fromkeys(p for p in prompts if p not in self._text_cache))
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i:i + self.batch_size]
            tokens = self.tokenizer(chunk).to(self.device)
            emb = F.normalize(self.model.encode_text(tokens).float().cpu(), dim=-1)
            self._text_cache.update(zip(chunk, emb))
        return torch.stack([self._text_cache[p] for p in prompts])


# --- loading ----------------------------------------------------------------------------------------------
def load_judge(spec: JudgeSpec | str, device: str | torch.device = "cpu") -> Judge:
    """Load a judge offline; raises JudgeNotFoundError naming what is missing."""
    spec = parse_judge(spec) if isinstance(spec, str) else spec
    device = torch.device(device)
    if spec.kind == "toy":
        model, tokenizer = _load_toy(device)
    else:
        model, tokenizer = _load_open_clip(spec, device)
    import open_clip

    return Judge(model, tokenizer, open_clip.get_model_preprocess_cfg(model), spec, device)


def _toy_module():
    try:
        from ..toyworld import clip_model
    except ModuleNotFoundError as err:
        if err.name != "sjc_dist.toyworld.clip_model":
            raise
        raise JudgeNotFoundError("toy", "the toy CLIP (sjc_dist/toyworld/clip_model.py) is not in this "
                                        "installation; pass another judge with --judges") from None
    if not clip_model.default_checkpoint().is_file():
        raise JudgeNotFoundError("toy", f"the toy CLIP checkpoint {clip_model.default_checkpoint()} is missing "
                                        "(train it: python -m sjc_dist.toyworld.train_clip); pass another judge "
                                        "with --judges, e.g. local-dir:/folder or ViT-B-32:/path/open_clip.pt")
    return clip_model


def _load_toy(device: torch.device):
    model, _preprocess, tokenizer = _toy_module().load_toy_clip(device)
    return model, tokenizer


def check_available(spec: JudgeSpec) -> None:
    """Raise JudgeNotFoundError (or ConfigError) now if the judge's weights are not on this machine, without
    loading them: a benchmark checks its judges before it spends any compute."""
    if spec.kind == "toy":
        _toy_module()
    else:
        _resolve_weights(spec)


def _load_open_clip(spec: JudgeSpec, device: torch.device):
    import open_clip

    name, pretrained = _resolve_weights(spec)
    try:
        model = open_clip.create_model(name, pretrained=pretrained, device=device, require_pretrained=True)
    except RuntimeError as err:
        raise JudgeNotFoundError(spec.text, f"open_clip could not load the weights ({err})") from None
    return model, open_clip.get_tokenizer(name)


def _resolve_weights(spec: JudgeSpec) -> tuple[str, str | None]:
    """(open_clip model name, local checkpoint path or None) without touching the network."""
    import open_clip

    if spec.kind == "local-dir":
        folder = Path(spec.source).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise JudgeNotFoundError(spec.text, f"{folder} has no open_clip_config.json")
        return f"local-dir:{folder}", None
    if spec.kind == "hf-hub":
        return f"local-dir:{_cached_snapshot(spec)}", None
    if spec.arch not in open_clip.list_models():
        raise ConfigError("judges", spec.text, "an open_clip architecture (open_clip.list_models()) before ':'")
    if spec.kind == "file":
        path = Path(spec.source).expanduser()
        if not path.is_file():
            raise JudgeNotFoundError(spec.text, f"no checkpoint file at {path}")
        return spec.arch, str(path)
    return spec.arch, _cached_tag(spec)


def _cached_snapshot(spec: JudgeSpec) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec.source, local_files_only=True))
    except Exception as err:  # noqa: BLE001 - any miss is "not cached" to the user
        raise JudgeNotFoundError(spec.text, f"not in the Hugging Face cache ({type(err).__name__})") from None


def _cached_tag(spec: JudgeSpec) -> str:
    """The cached checkpoint file of an open_clip pretrained tag."""
    import open_clip
    from huggingface_hub import hf_hub_download

    cfg = open_clip.get_pretrained_cfg(spec.arch, spec.source)
    if not cfg:
        tags = ", ".join(t for a, t in open_clip.list_pretrained() if a == spec.arch) or "none"
        raise ConfigError("judges", spec.text, f"a pretrained tag of {spec.arch}: {tags}")
    parts = cfg.get("hf_hub", "").strip("/").split("/")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        try:
            return hf_hub_download(repo, f"{sub}/{filename}" if sub else filename, local_files_only=True)
        except Exception:  # noqa: BLE001, S112 - try the next file name
            continue
    raise JudgeNotFoundError(spec.text, f"the weights of '{spec.arch}' tag '{spec.source}' are not in the "
                                        f"Hugging Face cache (repo {repo or cfg.get('url', '?')})")
