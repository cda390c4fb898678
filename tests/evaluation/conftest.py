"""Fixtures of the evaluation tests: a tiny randomly initialised open_clip model saved as a local-dir judge
(open_clip_config.json with a custom model config + open_clip_model.safetensors), loaded exactly as a real
checkpoint folder is; and Chromium for opening reports headless.
"""
import json
import shutil
from pathlib import Path

import pytest
import torch

TINY_CLIP_CONFIG = {
    "model_cfg": {"embed_dim": 16,
                  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
                  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}},
    "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
}
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_APT = "apt-get update && apt-get install -y chromium"


def write_tiny_clip(folder: Path, seed: int = 0) -> Path:
    """A random tiny CLIP (about 0.8 M parameters, mostly the 49408-token table) as an open_clip folder."""
    import open_clip
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    torch.manual_seed(seed)  # open_clip initialises from the global RNG; fixed for reproducible tests
    model = open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_judge(tiny_clip_dir):
    from sjc_dist.evaluation.judges import load_judge

    return load_judge(f"local-dir:{tiny_clip_dir}", "cpu")


@pytest.fixture(scope="session")
def other_judge(tmp_path_factory):
    """A second tiny judge (other random weights), labelled 'other'."""
    from sjc_dist.evaluation.judges import load_judge

    folder = write_tiny_clip(tmp_path_factory.mktemp("clip") / "other", seed=1)
    return load_judge(f"local-dir:{folder}", "cpu")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary, or skip naming the package CI needs."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(f"Chromium is not installed; CI needs: {CHROMIUM_APT}")
