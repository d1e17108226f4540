"""A small byte-level BPE tokenizer for the built-in tiny model, trained offline.

Trained with the ``tokenizers`` library on the built-in text below, so text prompts work
end to end without downloading anything. Qwen-style special tokens sit at the end of the
vocabulary (as in Qwen's own), and the chat template is Qwen's ChatML.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
EOS_TOKEN, PAD_TOKEN = "<|im_end|>", "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TRAINING_TEXT = """\
Darwin-9B-NEG is a Qwen3.5 model with a small entropy gating head. The head reads the last
hidden state and predicts the entropy of the next token distribution. When the predicted
entropy is above a learned threshold, the gate fires and the model samples among its top
candidates; otherwise it commits to the most likely token.
TensorRT-LLM compiles the backbone into an engine. A plugin fuses the head, the gate and the
gated top-k sampling into one kernel. The runner decodes many requests at once with in-flight
batching: requests join the running batch between decode steps and leave as soon as they finish.
The Gated DeltaNet layers keep a recurrent state per sequence, and the full attention layers keep
a key and value cache. The state is updated token by token during decoding and chunk by chunk
during the prefill of a prompt.
What is the capital of France? The capital of France is Paris. What is two plus two? Two plus two
is four. Solve for x: if x plus three equals seven, then x equals four. The derivative of x squared
is two x. A critical point of a function is a point where its derivative is zero.
The quick brown fox jumps over the lazy dog. Hello, world! How are you today? I am fine, thank you.
Please explain the answer step by step, then give the final answer on its own line.
Physics, chemistry, biology and mathematics questions test reasoning. Which of the following options
is correct? Option A, option B, option C or option D. The answer is B because the energy is conserved.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 100 1000 3.14 2.718 42. Code: def main(): return 0
for i in range(10): print(i) if x > 0 and y < 1: return x * y + z
Inference engineers measure latency, throughput, time to first token and time per output token.
The benchmark reports the median, the ninetieth, the ninety-fifth and the ninety-ninth percentiles.
"""


def train_tokenizer(vocab_size: int) -> Tokenizer:
    """Byte-level BPE over the built-in text: ``vocab_size`` ids, specials last."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL_TOKENS),
        min_frequency=1,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    lines = TRAINING_TEXT.splitlines() * 4
    tokenizer.train_from_iterator(lines, trainer=trainer)
    base = tokenizer.get_vocab_size()
    if base != vocab_size - len(SPECIAL_TOKENS):
        raise RuntimeError(f"tiny tokenizer trained to {base} tokens, expected {vocab_size - len(SPECIAL_TOKENS)}; "
                           "add built-in text")
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    return tokenizer


def write_tokenizer(directory: Path, vocab_size: int) -> None:
    tokenizer = train_tokenizer(vocab_size)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS_TOKEN,
        "pad_token": PAD_TOKEN,
        "bos_token": None,
        "unk_token": None,
        "model_max_length": 2048,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(tokenizer.token_to_id(t)): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                            "normalized": False, "single_word": False}
            for t in SPECIAL_TOKENS
        },
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (directory / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN}, indent=2, sort_keys=True) + "\n")
