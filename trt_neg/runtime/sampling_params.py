"""Per-request sampling parameters (the request's own decoding, applied where NEG does not fire).

``temperature == 0`` means greedy (argmax, ties to the lowest id); ``top_k == 0`` and
``top_p == 1`` switch those filters off.  ``seed`` keys the request's counter-based random
stream (Philox, counter = absolute position of the generated token), see ``sampler.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SEED_LIMIT = 2**64


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    """An int or float (not a bool) that is finite as a float: an int too large for a float is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # math.isfinite converts an int to a float first
        return False


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = no top-k filter
    top_p: float = 1.0  # 1 = no nucleus filter
    seed: int | None = None  # None: NEG uses its config seed; sampling gets an engine-drawn seed

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def greedy(cls) -> "SamplingParams":
        return cls()

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0

    def validate(self) -> None:
        t = self.temperature
        if not _is_finite_number(t) or t < 0:
            raise ValueError(f"temperature: must be a finite number >= 0 (0 = greedy), got {t!r}")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k: must be an integer >= 0 (0 = off), got {self.top_k!r}")
        p = self.top_p
        if not _is_finite_number(p) or not 0 < p <= 1:
            raise ValueError(f"top_p: must be a number in (0, 1], got {p!r}")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed < SEED_LIMIT):
            raise ValueError(f"seed: must be an integer in [0, 2**64) or None, got {self.seed!r}")
