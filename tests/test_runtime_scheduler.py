"""The in-flight batching scheduler on its own (no model)."""

from __future__ import annotations

import pytest

from trt_neg.runtime import Request, SchedulerConfig, Scheduler
from trt_neg.runtime.sequence import Sequence, SequenceStatus


def seq(n_prompt: int, rid: str) -> Sequence:
    return Sequence(Request([1] * n_prompt), rid, neg_mode=0, sample_seed=None, neg_seed=0,
                    stop_token_ids=frozenset(), max_new_tokens=8, arrival_time=0.0)


@pytest.mark.parametrize("kwargs, field", [
    ({"max_slots": 0, "max_tokens_per_step": 8, "max_seq_len": 8}, "max_slots"),
    ({"max_slots": 4, "max_tokens_per_step": 3, "max_seq_len": 8}, "max_tokens_per_step"),
    ({"max_slots": 1, "max_tokens_per_step": 8, "max_seq_len": 1}, "max_seq_len"),
    ({"max_slots": 1, "max_tokens_per_step": True, "max_seq_len": 8}, "max_tokens_per_step"),
])
def test_config_errors(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        SchedulerConfig(**kwargs)


def test_slots_budget_and_fcfs():
    s = Scheduler(SchedulerConfig(max_slots=3, max_tokens_per_step=10, max_seq_len=64))
    a, b, c, d, e = seq(4, "a"), seq(5, "b"), seq(2, "c"), seq(1, "d"), seq(1, "e")
    for x in (a, b, c, d, e):
        s.add(x)
    batch = s.schedule()  # a(4) + b(5) = 9 <= 10; c(2) would exceed -> waits (FCFS: d waits behind c)
    assert [x.request_id for x in batch.prefill] == ["a", "b"] and batch.decode == []
    assert (a.slot, b.slot) == (0, 1) and batch.num_tokens == 9
    for x in batch.prefill:
        x.prefilled = True
    batch = s.schedule()  # 2 decodes + c(2) = 4; slots now full (3), d and e wait
    assert [x.request_id for x in batch.decode] == ["a", "b"]
    assert [x.request_id for x in batch.prefill] == ["c"] and c.slot == 2
    c.prefilled = True
    assert s.num_free_slots == 0 and [x.request_id for x in s.waiting] == ["d", "e"]
    # a finishes: its slot (0) is reused by the next waiting sequence at the next step.
    assert s.finish(a) == 0 and a.status is SequenceStatus.FINISHED and a.slot is None
    batch = s.schedule()
    assert [x.request_id for x in batch.decode] == ["b", "c"]
    assert [x.request_id for x in batch.prefill] == ["d"] and d.slot == 0


def test_decodes_reserve_budget_before_prefills():
    s = Scheduler(SchedulerConfig(max_slots=4, max_tokens_per_step=6, max_seq_len=64))
    running = [seq(1, f"r{i}") for i in range(3)]
    for x in running:
        s.add(x)
    for x in s.schedule().prefill:
        x.prefilled = True
    big = seq(4, "big")
    s.add(big)
    batch = s.schedule()  # 3 decodes leave 3 tokens: the 4-token prompt waits
    assert len(batch.decode) == 3 and batch.prefill == []
    s.finish(running[0])
    batch = s.schedule()  # 2 decodes leave 4
    assert [x.request_id for x in batch.prefill] == ["big"]


def test_finish_waiting_and_empty_schedule():
    s = Scheduler(SchedulerConfig(max_slots=1, max_tokens_per_step=8, max_seq_len=64))
    a, b = seq(2, "a"), seq(2, "b")
    s.add(a)
    s.add(b)
    assert s.finish(b) is None and list(s.waiting) == [a]
    assert s.schedule().prefill == [a]
    s.finish(a)
    assert not s.schedule() and not s.has_work()


def test_remove_waiting_says_whether_the_sequence_was_waiting():
    s = Scheduler(SchedulerConfig(max_slots=1, max_tokens_per_step=8, max_seq_len=64))
    a, b = seq(2, "a"), seq(2, "b")
    s.add(a)
    s.add(b)
    s.schedule()  # a runs, b waits
    assert s.remove_waiting(b) is True and list(s.waiting) == []
    assert s.remove_waiting(b) is False and s.remove_waiting(a) is False  # gone / running, not waiting
    assert s.running == [a]


def test_smallest_limits_are_accepted():
    # max_seq_len 2 (one prompt token, one generated) and a budget equal to the slots are allowed.
    config = SchedulerConfig(max_slots=3, max_tokens_per_step=3, max_seq_len=2)
    s = Scheduler(config)
    for i in range(3):
        s.add(seq(1, f"r{i}"))
    assert [x.slot for x in s.schedule().prefill] == [0, 1, 2]
