"""Backend-neutral in-flight batching scheduler.

Each step runs one batch made of

* a decode row for every running sequence that has been prefilled (running sequences are
  never preempted), and
* prefills of waiting sequences, first come first served, while a slot is free and the
  step's token budget (``max_tokens_per_step``: decode rows count 1, a prefill counts its
  prompt length) allows.  The queue is strictly FCFS: a prompt that does not fit waits at
  the head until it does, so long prompts are never starved by short ones.

Sequences join between steps and leave as soon as they finish, which frees their slot
for the next step.  ``max_tokens_per_step >= max_slots`` (so every running sequence can
always decode) and every prompt fits the budget (the engine checks this on submission),
so each waiting request is admitted in finite time.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

from .sequence import Sequence, SequenceStatus


@dataclass(frozen=True)
class SchedulerConfig:
    max_slots: int
    max_tokens_per_step: int
    max_seq_len: int

    def __post_init__(self) -> None:
        for name in ("max_slots", "max_tokens_per_step", "max_seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        if self.max_tokens_per_step < self.max_slots:
            raise ValueError(
                f"max_tokens_per_step: must be >= max_slots ({self.max_slots}) so every running sequence "
                f"can decode each step, got {self.max_tokens_per_step}"
            )
        if self.max_seq_len < 2:
            raise ValueError(f"max_seq_len: must be >= 2 (one prompt token and one generated), got {self.max_seq_len}")


@dataclass
class ScheduledBatch:
    prefill: list[Sequence] = field(default_factory=list)
    decode: list[Sequence] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return len(self.decode) + sum(s.num_prompt_tokens for s in self.prefill)

    def __bool__(self) -> bool:
        return bool(self.prefill or self.decode)


class Scheduler:
    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        self._free: list[int] = list(range(config.max_slots))  # min-heap: lowest slot first

    # -- queue management ------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def remove_waiting(self, seq: Sequence) -> bool:
        try:
            self.waiting.remove(seq)
        except ValueError:
            return False
        return True

    def finish(self, seq: Sequence) -> int | None:
        """Take a running (or waiting) sequence out; return the slot it freed, if any."""
        seq.status = SequenceStatus.FINISHED
        if seq in self.running:
            self.running.remove(seq)
        else:
            self.remove_waiting(seq)
        slot, seq.slot = seq.slot, None
        if slot is not None:
            heapq.heappush(self._free, slot)
        return slot

    @property
    def num_free_slots(self) -> int:
        return len(self._free)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # -- one step ------------------------------------------------------------------------
    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch(decode=[s for s in self.running if s.prefilled])
        budget = self.config.max_tokens_per_step - len(batch.decode)
        while self.waiting and self._free:
            seq = self.waiting[0]
            if seq.num_prompt_tokens > budget:
                break
            self.waiting.popleft()
            seq.slot = heapq.heappop(self._free)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            batch.prefill.append(seq)
            budget -= seq.num_prompt_tokens
        return batch
