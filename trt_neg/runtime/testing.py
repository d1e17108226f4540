"""A model-free backend for unit tests and scheduler benchmarks.

Each slot's next token is a hash of that slot's whole history (so a mixed-up slot or a
lost token changes every later token), H_hat is a hash too, and the gate "fires" in mode 1
when H_hat exceeds ``tau``.  Sampling params are ignored: the scripted token is
deterministic.  Every call is recorded for assertions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from .backend import BackendRow, BackendSample


@dataclass
class ScriptedBackend:
    vocab_size: int = 97
    max_slots: int = 4
    max_seq_len: int = 64
    eos_token_ids: tuple[int, ...] = ()
    neg_enabled: bool = True
    neg_seed: int = 0
    tau: float = 0.8
    fail_when: Callable[[Sequence[BackendRow], Sequence[BackendRow]], bool] | None = None
    steps: list[tuple[list[BackendRow], list[BackendRow]]] = field(default_factory=list)
    released: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.history: dict[int, list[int]] = {}

    @staticmethod
    def next_token(history: Sequence[int], vocab_size: int) -> int:
        h = 1469598103934665603
        for t in history:
            h = ((h ^ (t + 1)) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
        return h % vocab_size

    @staticmethod
    def entropy(history: Sequence[int]) -> float:
        return (ScriptedBackend.next_token(list(history) + [7], 1000) / 1000.0)

    def step(self, prefill: Sequence[BackendRow], decode: Sequence[BackendRow]) -> list[BackendSample]:
        self.steps.append((list(prefill), list(decode)))
        if self.fail_when is not None and self.fail_when(prefill, decode):
            raise RuntimeError("scripted backend failure")
        for row in prefill:
            assert row.slot not in self.history, f"prefill into busy slot {row.slot}"
            assert 0 <= row.slot < self.max_slots
            self.history[row.slot] = list(row.token_ids)
        for row in decode:
            assert row.slot in self.history, f"decode of free slot {row.slot}"
            self.history[row.slot].extend(row.token_ids)
        out = []
        for row in list(prefill) + list(decode):
            hist = self.history[row.slot]
            assert len(hist) <= self.max_seq_len, "sequence longer than max_seq_len"
            assert row.position == len(hist), "position must be the absolute position of the generated token"
            e = self.entropy(hist)
            fired = row.neg_mode == 1 and e > self.tau
            token = self.next_token(hist + ([row.neg_seed] if fired else []), self.vocab_size)
            out.append(BackendSample(token, e, fired))
        return out

    def release(self, slot: int) -> None:
        assert slot in self.history, f"release of free slot {slot}"
        del self.history[slot]
        self.released.append(slot)

    @classmethod
    def expected(cls, prompt: Sequence[int], n: int, vocab_size: int = 97, neg_mode: int = 1, tau: float = 0.8,
                 neg_seed: int = 0, stop: Sequence[int] = ()) -> list[int]:
        """The tokens a request gets alone (for checks)."""
        hist, out = list(prompt), []
        for _ in range(n):
            fired = neg_mode == 1 and cls.entropy(hist) > tau
            t = cls.next_token(hist + ([neg_seed] if fired else []), vocab_size)
            out.append(t)
            hist.append(t)
            if t in stop:
                break
        return out
