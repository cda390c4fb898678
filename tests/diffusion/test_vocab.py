"""The prompt's words a model will not read, named from its tokenizer alone: unknown words of a word-level
tokenizer (the toy world's), none for a byte-level BPE (Stable Diffusion's kind), and words past the context."""
from transformers import PreTrainedTokenizerFast

from sjc_dist.diffusion.load import TOY_WEIGHTS
from sjc_dist.diffusion.text import VIEWS
from sjc_dist.diffusion.vocab import cut_words, load_tokenizer, model_texts, unknown_words, word_problems
from sjc_dist.toyworld.tokenizer import word_tokenizer


def byte_level_bpe() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<unk>"])
    tok.train_from_iterator(["a red cube", "a blue torus", "front view of a green cone"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", model_max_length=77)


def test_word_level_tokenizer_names_unknown_words():
    tok = word_tokenizer()
    assert unknown_words(tok, ["a purple teapot"]) == ["teapot"]
    assert unknown_words(tok, ["a Hamburger", "a hamburger with cheese"]) == ["Hamburger", "hamburger", "with",
                                                                             "cheese"]
    assert unknown_words(tok, model_texts("a red cube", "", "{view} view of {prompt}")) == []


def test_byte_level_bpe_has_no_unknown_words():
    assert unknown_words(byte_level_bpe(), ["a purple teapot", "ein Hamburger, bitte!"]) == []


def test_words_past_the_context_are_named():
    tok = word_tokenizer(max_length=6)  # [BOS] + 4 words + [EOS]
    assert cut_words(tok, ["a red cube"]) == []
    assert cut_words(tok, ["front view of a red cube"]) == ["red", "cube"]
    assert word_problems(tok, ["front view of a red cube"]) == ["words past its 6-token context 'red cube' (cut off)"]


def test_model_texts_are_every_view_prompt_and_the_negative():
    texts = model_texts("a red cube", "blurry", "{view} view of {prompt}")
    assert texts == [f"{v} view of a red cube" for v in VIEWS] + ["blurry"]
    assert model_texts("a red cube", " ", None) == ["a red cube"]


def test_the_shipped_toy_tokenizer_loads_alone():
    tok = load_tokenizer(TOY_WEIGHTS)
    assert word_problems(tok, ["a purple teapot"]) == ["unknown words 'teapot' (read as '[UNK]')"]
    assert load_tokenizer(None) is None and load_tokenizer(TOY_WEIGHTS / "unet") is None
