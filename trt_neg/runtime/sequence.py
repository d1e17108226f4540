"""The engine's per-request state: slot, generated tokens, NEG trace, timings, text."""

from __future__ import annotations

import enum
from typing import Any

from .detokenizer import IncrementalDetokenizer
from .request import FinishReason, Request, RequestResult, TokenOutput


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    def __init__(self, request: Request, request_id: str, *, neg_mode: int, sample_seed: int | None,
                 neg_seed: int, stop_token_ids: frozenset[int], max_new_tokens: int, arrival_time: float,
                 tokenizer: Any = None):
        # What the engine uses of the request is taken here, at admission; nothing reads the
        # Request afterwards (docs/runtime.md, "Admission fixes the request").
        self.request_id = request_id
        self.prompt = tuple(request.prompt_token_ids)
        self.sampling = request.sampling  # frozen SamplingParams
        self.neg_mode = neg_mode
        self.sample_seed = sample_seed  # None for greedy requests without a seed
        self.neg_seed = neg_seed
        self.stop_token_ids = stop_token_ids
        self.max_new_tokens = max_new_tokens  # already capped by the sequence-length limit
        self.arrival_time = arrival_time
        self.status = SequenceStatus.WAITING
        self.slot: int | None = None
        self.prefilled = False
        self.tokens: list[int] = []
        self.entropies: list[float] = []
        self.fired: list[bool] = []
        self.token_times: list[float] = []
        self.finish_reason: FinishReason | None = None
        self.finish_time: float | None = None
        self.error: str | None = None
        self.cancel_requested = False
        self.stop_strings = tuple(request.stop)
        self.detok = IncrementalDetokenizer(tokenizer, self.prompt) if tokenizer is not None else None
        self._emitted = 0  # chars of detok.text already streamed
        self._holdback = max((len(s) for s in self.stop_strings), default=1) - 1
        self._text_end: int | None = None  # text cut at a stop string

    @property
    def position(self) -> int:
        """Absolute position of the next token to generate (prompt length + generated)."""
        return len(self.prompt) + len(self.tokens)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt)

    @property
    def last_token(self) -> int:
        return self.tokens[-1]

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append(self, token: int, entropy: float, fired: bool, now: float, last: bool = False) -> TokenOutput:
        """Record one generated token, decide whether the sequence ends, return its output.

        ``last``: the engine ends the sequence after this token whatever is decided here (an
        executor's final response): the held-back text is flushed into this token's output, cut
        at a stop string it completes (which makes the finish reason STOP)."""
        self.tokens.append(token)
        self.entropies.append(entropy)
        self.fired.append(fired)
        self.token_times.append(now)
        reason = None
        if token in self.stop_token_ids:
            reason = FinishReason.STOP
        text = ""
        if self.detok is not None:
            # A stop token's own text is not part of the output text.
            if reason is None:
                self.detok.add(token)
                if self.stop_strings and self._find_stop():
                    reason = FinishReason.STOP
            if reason is None and len(self.tokens) >= self.max_new_tokens:
                reason = FinishReason.LENGTH
            if (reason is not None or last) and self.finish_text():
                reason = FinishReason.STOP  # also at the length limit
            text = self._take_text(final=reason is not None or last)
        elif reason is None and len(self.tokens) >= self.max_new_tokens:
            reason = FinishReason.LENGTH
        if reason is not None:
            self.finish_reason = reason
        return TokenOutput(self.request_id, len(self.tokens) - 1, token, entropy, fired, text, now)

    def finish_text(self) -> bool:
        """Flush the held-back text as the request ends (at its last token, or without a new token:
        an executor's final response that brings none); True if the flushed end completes a stop
        string (it holds the U+FFFD of an incomplete last character), which cuts the text there
        like any other stop string (the request then ends with STOP)."""
        if self.detok is None or self._text_end is not None:
            return False
        self.detok.flush()
        return bool(self.stop_strings) and self._find_stop()

    def _find_stop(self) -> bool:
        text = self.detok.text
        start = max(0, self._emitted - self._holdback - 1)
        best = None
        for s in self.stop_strings:
            i = text.find(s, start)
            if i >= 0 and (best is None or i < best):
                best = i
        if best is not None:
            self._text_end = best
            return True
        return False

    def _take_text(self, final: bool) -> str:
        text = self.detok.text if self._text_end is None else self.detok.text[:self._text_end]
        end = len(text) if final or self._text_end is not None else max(self._emitted, len(text) - self._holdback)
        delta = text[self._emitted:end]
        self._emitted = max(self._emitted, end)
        return delta

    @property
    def text(self) -> str | None:
        if self.detok is None:
            return None
        return self.detok.text if self._text_end is None else self.detok.text[:self._text_end]

    def result(self) -> RequestResult:
        return RequestResult(
            request_id=self.request_id,
            prompt_token_ids=self.prompt,
            tokens=list(self.tokens),
            text=self.text,
            finish_reason=self.finish_reason,
            entropies=list(self.entropies),
            fired=list(self.fired),
            neg_mode=self.neg_mode,
            seed=self.sample_seed,
            arrival_time=self.arrival_time,
            first_token_time=self.token_times[0] if self.token_times else None,
            finish_time=self.finish_time,
            token_times=list(self.token_times),
            error=self.error,
        )
