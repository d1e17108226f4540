"""Tokenizer loading and prompt encoding (the checkpoint's tokenizer and chat template)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The files that hold a vocabulary (fast tokenizers, sentencepiece, BPE, WordPiece).
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")
TOKENIZER_FILES = ("tokenizer_config.json", *VOCABULARY_FILES)


def load_tokenizer(path: str | Path) -> Any | None:
    """``transformers.AutoTokenizer`` from a checkpoint directory, or None if it has no tokenizer."""
    path = Path(path)
    if not any((path / f).exists() for f in TOKENIZER_FILES):
        return None
    if not any((path / f).is_file() for f in VOCABULARY_FILES):
        # transformers would build a tokenizer of tokenizer_config.json's special tokens alone and
        # encode every prompt as a few wrong ids, without a word.
        raise ValueError(f"tokenizer_config.json without a vocabulary file ({', '.join(VOCABULARY_FILES)}): "
                         "copy the checkpoint's tokenizer.json, or give prompts as --token-ids")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def encode_prompt(tokenizer: Any, prompt: str | list[dict], chat_template: bool = True) -> list[int]:
    """Token ids of a text prompt (or a list of chat messages).

    With ``chat_template`` (and a template in the tokenizer) the prompt becomes one user
    message and the generation prompt is appended; otherwise the text is encoded as is.
    """
    if isinstance(prompt, list):
        messages = prompt
    elif chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
    else:
        return list(tokenizer.encode(prompt, add_special_tokens=False))
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("messages: the tokenizer has no chat template; pass a text prompt instead")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(text, add_special_tokens=False))
