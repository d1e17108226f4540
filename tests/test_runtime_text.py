"""The text path: incremental detokenization and stop strings against the tokenizer's own
full decode (streamed text == final text == decode of the generated ids, cut at a stop; for a
tokenizer that strips a leading space, the continuation of the prompt's text)."""

from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from trt_neg.runtime import FinishReason, Request
from trt_neg.runtime.detokenizer import IncrementalDetokenizer
from trt_neg.runtime.sequence import Sequence

FRAGMENTS = ("ab", "中文", "xy ", "😀", "👍🏽", " café", " e\u0301", "日本語", "のテキスト", " 한국어", "∑∫", " ", "ab中")


def byte_level_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]] = ()) -> PreTrainedTokenizerFast:
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=bpe)


@pytest.fixture(scope="module")
def straddling_tokenizer():
    """A byte-level BPE trained without the regex split: many tokens straddle UTF-8 characters."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, show_progress=False, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["".join(FRAGMENTS) * 3] * 5, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")


def sequence(tokenizer, prompt, max_new_tokens, stop=()) -> Sequence:
    return Sequence(Request(prompt, max_new_tokens=max_new_tokens, stop=list(stop)), "r", neg_mode=0,
                    sample_seed=None, neg_seed=0, stop_token_ids=frozenset(), max_new_tokens=max_new_tokens,
                    arrival_time=0.0, tokenizer=tokenizer)


def generate(seq: Sequence, tokens) -> str:
    streamed = ""
    for t in tokens:
        streamed += seq.append(t, 0.0, False, 0.0).text
        if seq.finish_reason is not None:
            break
    return streamed


def test_output_completing_a_prompts_partial_character_decodes_as_its_own_ids(tiny_checkpoint):
    from trt_neg.runtime.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_checkpoint)
    ids = tok.encode("中a", add_special_tokens=False)
    assert len(ids) == 4  # three byte tokens for 中, then "a"
    prompt, generated = ids[:1], ids[1:]  # the prompt ends inside 中
    detok = IncrementalDetokenizer(tok, tuple(prompt))
    streamed = "".join(detok.add(t) for t in generated) + detok.flush()
    assert streamed == detok.text == tok.decode(generated, skip_special_tokens=True) == "\ufffd\ufffda"


def test_stop_string_before_a_partial_character_stops_at_its_token():
    """A token holding the stop string's end and the first byte of the next character."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["ab"], vocab["abä"] = len(vocab), len(vocab) + 1  # "ä" is byte 0xE4, the lead byte of 中
    tok = byte_level_tokenizer(vocab, [("a", "b"), ("ab", "ä")])
    generated = tok.encode("xab中yz", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(generated)[:2] == ["x", "abä"]
    for max_new_tokens in (2, 10):
        seq = sequence(tok, [vocab["x"]], max_new_tokens, stop=["ab"])
        streamed = generate(seq, generated)
        assert seq.finish_reason is FinishReason.STOP
        assert seq.tokens == generated[:2] and seq.text == streamed == "x"


@pytest.mark.parametrize("seed", [0, 1])
def test_streamed_text_is_the_full_decode_cut_at_the_first_stop(straddling_tokenizer, seed):
    tok, rng = straddling_tokenizer, random.Random(seed)
    source = tok.encode("".join(rng.choice(FRAGMENTS) for _ in range(80)), add_special_tokens=False)
    for _ in range(150):
        start = rng.randrange(len(source) - 30)
        ids = source[start:start + rng.randrange(2, 30)]
        cut = rng.randrange(1, len(ids))
        prompt, generated = ids[:cut], ids[cut:]
        full = tok.decode(generated, skip_special_tokens=True)
        stops = [full[i:i + rng.randrange(1, 4)] for i in rng.sample(range(len(full)), min(len(full), 2))]
        stops = [s for s in stops if "\ufffd" not in s][:rng.randrange(0, 3)]
        seq = sequence(tok, prompt, len(generated), stops)
        streamed = generate(seq, generated)
        # Reference: the first token whose full decode (less a pending character) shows a stop.
        expected = (generated, full, FinishReason.LENGTH)
        for k in range(len(generated)):
            text = tok.decode(generated[:k + 1], skip_special_tokens=True).rstrip("\ufffd")
            hits = [text.index(s) for s in stops if s in text]
            if hits:
                expected = (generated[:k + 1], text[:min(hits)], FinishReason.STOP)
                break
        assert (seq.tokens, seq.text, seq.finish_reason) == expected, (prompt, generated, stops)
        assert streamed == seq.text


class LetterTokenizer:
    """Token i decodes to one letter (i % 26); 26 is a special token ("<eos>" unless skipped)."""

    def decode(self, ids, skip_special_tokens=False):  # False: transformers' default
        return "".join("" if skip_special_tokens and i == 26 else "<eos>" if i == 26 else chr(ord("a") + i % 26)
                       for i in ids)


def letters(text: str) -> list[int]:
    return [ord(c) - ord("a") for c in text]


@pytest.mark.parametrize("stop, deltas", [
    ((), ["h", "e", "l", "l", "o"]),  # nothing to hold back: each token's text at once
    (["zz"], ["", "h", "e", "l", "lo"]),  # longest stop 2: one character held back
    (["zzz", "q"], ["", "", "h", "e", "llo"]),  # longest stop 3: two held back
])
def test_streamed_text_is_held_back_exactly_the_longest_stop_string_less_one(stop, deltas):
    # docs/runtime.md: streamed text is held back by len(longest stop) - 1 characters, no more:
    # a larger hold-back delays every token's text (and without stop strings nothing is held back).
    seq = sequence(LetterTokenizer(), [0], 5, stop)
    assert [seq.append(t, 0.0, False, 0.0).text for t in letters("hello")] == deltas
    assert seq.finish_reason is FinishReason.LENGTH and seq.text == "hello"


def test_special_tokens_are_left_out_of_the_text():
    # text is decoded with skip_special_tokens=True (docs/runtime.md), whatever the tokenizer's
    # own default: a special token the model emits mid-way (here with no stop ids) shows nothing.
    seq = sequence(LetterTokenizer(), [0], 4)
    streamed = generate(seq, [letters("a")[0], 26, letters("b")[0], 26])
    assert seq.text == streamed == "ab"
    detok = IncrementalDetokenizer(LetterTokenizer())
    assert "".join(detok.add(t) for t in [0, 26, 1]) + detok.flush() == "ab"


def metaspace_tokenizer() -> PreTrainedTokenizerFast:
    """A SentencePiece-style tokenizer: a word's leading space is its "▁", and decode drops the
    "▁" of the first token it is given."""
    vocab = {"<unk>": 0, "▁Hello": 1, "▁world": 2, "!": 3, "▁the": 4}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    words.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>")


def test_text_continues_the_prompt_for_a_tokenizer_that_strips_a_leading_space():
    # The decision (docs/runtime.md): text is the continuation of the prompt's text, as vLLM's is,
    # so prompt text + text = decode(prompt + generated). decode(generated) alone would lose the
    # first word's space ("world! the") for such tokenizers; byte-level BPE (Qwen) has no such
    # difference. Without a prompt there is nothing to continue: text = decode(generated).
    tok, generated = metaspace_tokenizer(), [2, 3, 4]
    seq = sequence(tok, [1], 3)
    assert generate(seq, generated) == seq.text == " world! the" != tok.decode(generated)
    assert tok.decode([1]) + seq.text == tok.decode([1, *generated]) == "Hello world! the"
    detok = IncrementalDetokenizer(tok)
    assert "".join(detok.add(t) for t in generated) + detok.flush() == tok.decode(generated) == "world! the"


@pytest.mark.parametrize("last", [False, True])
def test_a_stop_string_completed_by_the_final_flush_is_a_stop(last):
    # The last token's incomplete UTF-8 byte decodes as U+FFFD only when the end flushes it; a stop
    # string it completes cuts the text there and ends the request with "stop", as a stop string
    # completed by any other token does (before the fix: "length", with the text cut all the same).
    tok = ByteLevelTokenizer()
    max_new = 5 if last else 2  # last: an executor's final response before the cap
    seq = sequence(tok, [ord("a")], max_new, stop=["\ufffd"])
    outs = [seq.append(ord("e"), 0.0, False, 0.0), seq.append(0xC3, 0.0, False, 0.0, last=last)]
    assert seq.finish_reason is FinishReason.STOP and seq.tokens == [ord("e"), 0xC3]
    assert seq.text == "".join(o.text for o in outs) == "e"


class ByteLevelTokenizer:
    """Token t is the byte t (t < 256): tokens can end inside a UTF-8 character."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")
