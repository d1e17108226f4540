"""The text path: incremental detokenization and stop strings against the tokenizer's own
full decode (streamed text == final text == decode of the generated ids, cut at a stop)."""

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
