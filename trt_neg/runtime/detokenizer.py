"""Incremental detokenization for streaming and stop strings.

Text is emitted only once it is stable: a delta that ends in U+FFFD (an incomplete UTF-8
sequence of a byte-level BPE) is held back until the next token completes it.  Each step
decodes only a short window (vLLM's prefix/read offsets), not the whole output.
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, prompt_token_ids: tuple[int, ...] = (), skip_special_tokens: bool = True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.tokens: list[int] = []
        self.text = ""
        # The window starts a few prompt tokens back so the first generated token decodes
        # with its left context (leading-space handling of some tokenizers).
        context = list(prompt_token_ids[-5:])
        self._ids: list[int] = context
        self._prefix = 0
        self._read = len(context)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def add(self, token: int) -> str:
        """Append one token; return the newly stable text (maybe "")."""
        self.tokens.append(token)
        self._ids.append(token)
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        new_text = self._decode(self._ids[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            delta = new_text[len(prefix_text):]
            self._prefix, self._read = self._read, len(self._ids)
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """The held-back remainder at the end of the request (may contain U+FFFD)."""
        rest = self._decode(self._ids[self._prefix:])
        prefix_text = self._decode(self._ids[self._prefix:self._read])
        delta = rest[len(prefix_text):] if len(rest) > len(prefix_text) else ""
        self._prefix = self._read = len(self._ids)
        self.text += delta
        return delta
