"""What a caller submits (:class:`Request`) and what comes back: one :class:`TokenOutput`
per decoded token (streamed) and one :class:`RequestResult` when the request ends.

Checks that need no model (types, ranges) run here; checks against the model and the
engine limits (vocabulary, sequence length, tokens per step, tokenizer for stop strings)
run in :meth:`LLMEngine.validate`.  Every error is a ``ValueError`` naming the field.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from .sampling_params import SamplingParams, _is_int

NEG_MODES = (0, 1)


class FinishReason(str, enum.Enum):
    STOP = "stop"  # a stop token id (EOS included) or a stop string
    LENGTH = "length"  # max_new_tokens reached, or the sequence-length limit
    CANCELLED = "cancelled"  # abort_request / handle.cancel() / async consumer went away
    ERROR = "error"  # the backend failed on a step this request was in


def _token_list(value, name: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not hasattr(value, "tolist"):
        raise ValueError(f"{name}: must be a sequence of token ids, got {type(value).__name__}")
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays
        value = value.tolist()
        if not isinstance(value, list):  # a 0-d tensor or array holds one number, not a sequence
            raise ValueError(f"{name}: must be a sequence of token ids, got a scalar ({value!r}); wrap it in a list")
    out = []
    for i, t in enumerate(value):
        if not _is_int(t) or t < 0:
            raise ValueError(f"{name}: entry {i} must be a non-negative integer token id, got {t!r}")
        out.append(int(t))
    return tuple(out)


@dataclass
class Request:
    prompt_token_ids: Sequence[int]
    max_new_tokens: int = 16
    stop_token_ids: Sequence[int] = ()
    stop: Sequence[str] = ()  # stop strings (need a tokenizer)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    neg_mode: int | None = None  # 0 = NEG off, 1 = NEG on; None = engine default
    ignore_eos: bool = False  # True: the model's EOS ids do not stop generation
    request_id: str | None = None  # assigned by the engine when None

    def __post_init__(self) -> None:
        self.prompt_token_ids = _token_list(self.prompt_token_ids, "prompt_token_ids")
        if not self.prompt_token_ids:
            raise ValueError("prompt_token_ids: the prompt is empty; at least one token is required")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be an integer >= 1, got {self.max_new_tokens!r}")
        self.stop_token_ids = _token_list(self.stop_token_ids, "stop_token_ids")
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        if isinstance(self.stop, (bytes, dict)) or not isinstance(self.stop, Iterable):
            raise ValueError(f"stop: must be a str or a list of str, got {self.stop!r}")
        stop = tuple(self.stop)
        for s in stop:
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop: every stop string must be a non-empty str, got {s!r}")
        self.stop = stop
        if not isinstance(self.sampling, SamplingParams):
            raise ValueError(f"sampling: must be a SamplingParams, got {type(self.sampling).__name__}")
        if self.neg_mode is not None and (not _is_int(self.neg_mode) or self.neg_mode not in NEG_MODES):
            raise ValueError(
                f"neg_mode: must be 0 (NEG off) or 1 (NEG on) for a single request, got {self.neg_mode!r} "
                "(modes 2 and 3 combine several requests and are built on top of the runtime)"
            )
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos: must be true or false, got {self.ignore_eos!r}")
        if self.request_id is not None and not isinstance(self.request_id, str):
            raise ValueError(f"request_id: must be a str or None, got {self.request_id!r}")


@dataclass(frozen=True)
class TokenOutput:
    """One decoded token of one request, streamed as soon as its step ends."""

    request_id: str
    index: int  # 0-based index among the generated tokens
    token: int
    entropy: float  # NEG-Head's predicted entropy H_hat (nats); computed in modes 0 and 1
    fired: bool  # the NEG gate fired and NEG chose this token (always False in mode 0)
    text: str  # text delta this token completes ("" without a tokenizer or while held back)
    time: float  # time.perf_counter() when the step that produced it ended


@dataclass
class RequestResult:
    request_id: str
    prompt_token_ids: tuple[int, ...]
    tokens: list[int]
    text: str | None  # None without a tokenizer
    finish_reason: FinishReason
    entropies: list[float]
    fired: list[bool]
    neg_mode: int
    seed: int | None  # the seed the request's sampling used (drawn by the engine if not given)
    arrival_time: float
    first_token_time: float | None
    finish_time: float
    token_times: list[float]
    error: str | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def gate_activation_rate(self) -> float:
        """Fired steps / decoded steps (0.0 when nothing was decoded)."""
        return sum(self.fired) / len(self.fired) if self.fired else 0.0

    @property
    def ttft(self) -> float | None:
        """Seconds from submission to the first generated token."""
        return None if self.first_token_time is None else self.first_token_time - self.arrival_time

    @property
    def token_latencies(self) -> list[float]:
        """Seconds between consecutive generated tokens (len = tokens - 1; the first token is TTFT)."""
        t = self.token_times
        return [b - a for a, b in zip(t, t[1:])]

    @property
    def mean_token_latency(self) -> float | None:
        lat = self.token_latencies
        return sum(lat) / len(lat) if lat else None

    @property
    def e2e_latency(self) -> float:
        return self.finish_time - self.arrival_time

    def to_dict(self) -> dict:
        return {
            "request_id": self.request_id,
            "prompt_token_ids": list(self.prompt_token_ids),
            "tokens": list(self.tokens),
            "text": self.text,
            "finish_reason": self.finish_reason.value,
            "neg_mode": self.neg_mode,
            "gate_activation_rate": self.gate_activation_rate,
            "entropies": list(self.entropies),
            "fired": list(self.fired),
            "seed": self.seed,
            "ttft_s": self.ttft,
            "per_token_latency_s": self.token_latencies,
            "mean_per_token_latency_s": self.mean_token_latency,
            "e2e_latency_s": self.e2e_latency,
            "error": self.error,
        }
