"""A word-level tokenizer for small vocabularies (the toy world, tests), saved in transformers' format so that
`AutoTokenizer.from_pretrained(folder)` loads it exactly as it loads Stable Diffusion's CLIP tokenizer."""
from transformers import PreTrainedTokenizerFast

from .shapes import COLORS, ORIENTED_SHAPES, SHAPES

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
EXTRA_WORDS = ("a", "an", "the", "view", "of", "front", "side", "backside", "overhead", "object", "shape")


def toy_vocabulary() -> list[str]:
    """Every word of the world's captions and view prefixes; new words go at the end (old ids stay)."""
    return list(SPECIALS) + list(EXTRA_WORDS) + list(COLORS) + list(SHAPES) + list(ORIENTED_SHAPES)


def word_tokenizer(words: list[str] | None = None, max_length: int = 10) -> PreTrainedTokenizerFast:
    """Lower-cased whitespace/punctuation split, unknown words -> [UNK], wrapped as [BOS] ... [EOS]."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    vocab_list = list(dict.fromkeys(list(SPECIALS) + list(words or toy_vocabulary())))
    vocab = {w: i for i, w in enumerate(vocab_list)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", vocab["[BOS]"]), ("[EOS]", vocab["[EOS]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   bos_token="[BOS]", eos_token="[EOS]", model_max_length=max_length)
