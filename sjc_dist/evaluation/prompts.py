"""Prompt sets of a benchmark: a text file (one prompt a line; blank lines and '#' comments skipped) or a
shipped set: `toy` (the toy world's 25 captions) or `coco153` (the 153 object-centric COCO captions of Dream
Fields and DreamFusion, in the repository's eval/prompts/ with their attribution).
"""
from pathlib import Path

from ..errors import ConfigError
from ..toyworld.shapes import captions

EVAL_PROMPTS = Path(__file__).resolve().parents[2] / "eval" / "prompts"
SHIPPED_FILES = {"coco153": "coco_object_centric_val_153.txt"}
SHIPPED = ("toy", *SHIPPED_FILES)


def read_prompt_file(path: Path) -> list[str]:
    """Prompts of a file, in order, without duplicates."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def load_prompts(source: str) -> list[str]:
    """A shipped set name or a prompt file -> its prompts (at least one)."""
    if source == "toy":
        return captions()
    if source in SHIPPED_FILES:
        path = EVAL_PROMPTS / SHIPPED_FILES[source]
        if not path.is_file():
            raise ConfigError("prompts", source, f"the shipped file {path} (it comes with a source checkout)")
        return read_prompt_file(path)
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError("prompts", source, f"a prompt file (one prompt a line) or a shipped set: {SHIPPED}")
    prompts = read_prompt_file(path)
    if not prompts:
        raise ConfigError("prompts", source, "a file with at least one prompt")
    return prompts
