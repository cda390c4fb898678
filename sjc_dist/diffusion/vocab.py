"""Words of a prompt that a model's tokenizer does not know, named before anything runs.

Only the model's `tokenizer/` folder is read (a few kB, no weights). A word-level tokenizer (the toy world's)
encodes a word outside its vocabulary as its unknown token, which the text encoder reads as one fixed embedding:
"a purple teapot" reaches the toy model as "a purple [UNK]", and the run optimises fog. Byte-level BPE tokenizers
(Stable Diffusion's CLIP) spell any word out of sub-words, so they have no unknown words and the check is silent.
A prompt longer than the tokenizer's context is cut, and the words past the cut are reported too.
"""
from pathlib import Path

from .text import VIEWS, view_prompt


def load_tokenizer(model_dir: Path | None):
    """The tokenizer of a diffusers model folder, or None (no folder, no text encoder)."""
    if model_dir is None or not (model_dir / "tokenizer").is_dir():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir / "tokenizer")


def model_texts(prompt: str, negative: str, template: str | None) -> list[str]:
    """Every text the model reads: the prompt (each view's variant when `template` is given) and the negative."""
    texts = [view_prompt(prompt, v, template) for v in VIEWS] if template else [prompt]
    return texts + ([negative] if negative.strip() else [])


def unknown_words(tokenizer, texts: list[str]) -> list[str]:
    """Whitespace-separated words of `texts` that contain the tokenizer's unknown token (once each, in order)."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return []
    words = dict.fromkeys(w for t in texts for w in t.split())
    return [w for w in words if unk in tokenizer(w, add_special_tokens=False).input_ids]


def cut_words(tokenizer, texts: list[str]) -> list[str]:
    """The words past the tokenizer's context (`model_max_length` tokens, specials included) of the longest text."""
    limit = getattr(tokenizer, "model_max_length", None)
    if not limit or limit > 10**6:  # transformers' "no limit" sentinel is a huge integer
        return []
    longest = max(texts, key=lambda t: len(tokenizer(t, verbose=False).input_ids))
    words = longest.split()
    kept = [i for i in range(len(words) + 1) if len(tokenizer(" ".join(words[:i]), verbose=False).input_ids) <= limit]
    return words[max(kept):]


def word_problems(tokenizer, texts: list[str]) -> list[str]:
    """Sentences naming what the model will not read of `texts` (empty when it reads all of them)."""
    problems = []
    unknown = unknown_words(tokenizer, texts)
    if unknown:
        problems.append(f"unknown words {', '.join(map(repr, unknown))} (read as {tokenizer.unk_token!r})")
    cut = cut_words(tokenizer, texts)
    if cut:
        problems.append(f"words past its {tokenizer.model_max_length}-token context {' '.join(cut)!r} (cut off)")
    return problems
