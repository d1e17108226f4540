"""What the engine needs from a model backend: one batched step over slots.

A backend owns per-slot sequence state (KV cache, recurrent state) and the sampling of
one token per row — the model forward, NEG and the request's own sampling — so an
engine-side implementation (TensorRT-LLM, where sampling happens in the engine) and the
torch reference fit the same shape.  The scheduler and engine never touch tensors.

Contract of :meth:`Backend.step`:

* ``prefill`` rows hold the whole prompt for a slot that is empty; ``decode`` rows hold
  the one token generated last step for a slot the backend already holds.
* Each row's token must depend only on that row (its slot's history, its parameters, its
  seeds and ``position``), never on the other rows: **batch invariance**.
* The result lists one :class:`BackendSample` per row: prefill rows first, then decode
  rows, each in the order given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from .sampling_params import SamplingParams


@dataclass(frozen=True)
class BackendRow:
    slot: int
    token_ids: tuple[int, ...]  # prefill: the prompt; decode: (last generated token,)
    position: int  # absolute position of the token this row generates (Philox counter)
    sampling: SamplingParams
    sample_seed: int | None  # the request's sampling seed (None only for greedy requests)
    neg_mode: int  # 0: NEG off (H_hat still reported, never fires); 1: NEG on
    neg_seed: int  # key of NEG's Philox draws for this request


@dataclass(frozen=True)
class BackendSample:
    token: int
    entropy: float  # NEG-Head's H_hat in nats
    fired: bool  # NEG chose this token


@runtime_checkable
class Backend(Protocol):
    max_slots: int
    max_seq_len: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    neg_enabled: bool  # the model's default NEG mode (neg_config.enabled)
    neg_seed: int  # the model's NEG seed (neg_config.seed)

    def step(self, prefill: Sequence[BackendRow], decode: Sequence[BackendRow]) -> list[BackendSample]:
        ...

    def release(self, slot: int) -> None:
        ...
