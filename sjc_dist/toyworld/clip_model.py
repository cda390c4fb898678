"""The toy world's small CLIP: an open_clip model config ('toy-clip') loaded exactly as a real checkpoint is.

Architecture (weights/clip/toy-clip.json): a ViT vision tower on 32x32 images (4x4 patches, width 128, 4 layers)
and open_clip's causal text transformer (width 32, 3 layers, context 16) over open_clip's own BPE vocabulary
(SimpleTokenizer, shipped inside open_clip: nothing is downloaded), joint embedding 64; about 2.4 M parameters,
4.9 MB in fp16. The 49408 x 32 token table is most of it; a smaller vocabulary would need a custom tokenizer
folder and was not worth it.

Loading is open_clip's own path: `add_model_config(TOY_CLIP_DIR)` (done here at load time, not at import),
then `create_model_and_transforms('toy-clip', pretrained=<file>)` and `get_tokenizer('toy-clip')`.
The preprocess is open_clip's: size from the vision config (32), mean/std open_clip's defaults for a model
loaded from a file (OpenAI's), which training used too. For renders already in memory, `image_input` applies
the same preprocess to tensors in [-1, 1] [V, 3, H, W] (resize with antialias when H, W differ from 32).
This module does not train (train_clip.py does) nor score 3D results (the evaluation package does).
"""
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ModelNotFoundError

TOY_CLIP_NAME = "toy-clip"
TOY_CLIP_DIR = Path(__file__).parent / "weights" / "clip"
CHECKPOINT_FILE = "open_clip_model.safetensors"
CONFIG_FILE = f"{TOY_CLIP_NAME}.json"


def register_toy_clip() -> None:
    """Make 'toy-clip' known to open_clip (its model-config registry); idempotent."""
    import open_clip

    if TOY_CLIP_NAME not in open_clip.list_models():
        open_clip.add_model_config(TOY_CLIP_DIR / CONFIG_FILE)


def create_toy_clip(device: str | torch.device = "cpu", checkpoint: str | Path | None = None):
    """(model, train_preprocess, eval_preprocess) from open_clip; random weights when checkpoint is None."""
    import open_clip

    register_toy_clip()
    pretrained = str(checkpoint) if checkpoint is not None else None
    return open_clip.create_model_and_transforms(TOY_CLIP_NAME, pretrained=pretrained, device=device)


def default_checkpoint() -> Path:
    """Where the shipped checkpoint lives, unpacked (packed.py; it may be absent until trained)."""
    from .packed import shipped

    return shipped(TOY_CLIP_DIR) / CHECKPOINT_FILE


def load_toy_clip(device: str | torch.device = "cpu", checkpoint: str | Path | None = None):
    """(model in eval mode, PIL preprocess, tokenizer) of the trained toy CLIP; ModelNotFoundError if absent."""
    import open_clip

    path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    if not path.is_file():
        raise ModelNotFoundError(TOY_CLIP_NAME, f"no toy CLIP checkpoint at {path}; train one with "
                                                "`python -m sjc_dist.toyworld.train_clip --out DIR`")
    model, _, preprocess = create_toy_clip(device, path)
    return model.eval(), preprocess, open_clip.get_tokenizer(TOY_CLIP_NAME)


def image_input(model, images: Tensor) -> Tensor:
    """Renders in [-1, 1] [V, 3, H, W] -> the model's normalised input [V, 3, S, S] (open_clip's preprocess
    on tensors: bicubic resize of the short side with antialias, centre crop, mean/std of the model)."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    x = (images.float().clamp(-1, 1) + 1) / 2
    if x.shape[-2:] != (size, size):
        x = _resize_center(x, size, cfg.get("interpolation", "bicubic"))
    mean = torch.tensor(cfg["mean"], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _resize_center(x: Tensor, size: int, interpolation: str) -> Tensor:
    """Resize the short side to `size` and crop the centre square, [V, 3, H, W] -> [V, 3, size, size]."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    mode = "bilinear" if interpolation == "bilinear" else "bicubic"
    x = F.interpolate(x, size=(nh, nw), mode=mode, antialias=True, align_corners=False).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size]


def encode_renders(model, images: Tensor) -> Tensor:
    """Unit-norm image embeddings [V, D] of renders in [-1, 1] [V, 3, H, W]."""
    device = next(model.parameters()).device
    return model.encode_image(image_input(model, images.to(device)), normalize=True)


def encode_texts(model, tokenizer: Callable, texts: list[str]) -> Tensor:
    """Unit-norm text embeddings [P, D]."""
    device = next(model.parameters()).device
    return model.encode_text(tokenizer(texts).to(device), normalize=True)


@torch.no_grad()
def zero_shot_predict(model, tokenizer: Callable, images: Tensor, texts: list[str], chunk: int = 512) -> Tensor:
    """Index [V] of the best-matching text for each render in [-1, 1] [V, 3, H, W]."""
    txt = encode_texts(model, tokenizer, texts)
    preds = [(encode_renders(model, part) @ txt.T).argmax(-1) for part in images.split(chunk)]
    return torch.cat(preds)
