"""LLMEngine under races: shutdown() against async streams and submissions.

Each test forces its interleaving with Events (a backend whose step waits for a gate), never
with sleeps; the timeouts are only reached when the engine hangs.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from trt_neg.runtime import FinishReason, LLMEngine, Request, RequestResult
from trt_neg.runtime.testing import ScriptedBackend

WAIT = 5.0  # seconds; reached only when the engine is broken


class GatedBackend(ScriptedBackend):
    """A ScriptedBackend whose every step sets ``entered`` and then waits for ``gate``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.entered = threading.Event()
        self.gate = threading.Event()

    def step(self, prefill, decode):
        self.entered.set()
        self.gate.wait(WAIT)
        return super().step(prefill, decode)


def _signal_cancels(engine: LLMEngine) -> threading.Event:
    """An Event set each time a request is cancelled. shutdown() cancels after telling the
    background thread to stop and before waiting for it, so the Event marks that moment."""
    cancelled = threading.Event()
    abort = engine._abort_sequence

    def abort_and_signal(seq):
        accepted = abort(seq)
        cancelled.set()
        return accepted

    engine._abort_sequence = abort_and_signal
    return cancelled


def _stream_all(engine: LLMEngine, request: Request) -> list:
    async def consume():
        return [item async for item in engine.stream(request)]

    try:
        return asyncio.run(asyncio.wait_for(consume(), WAIT))
    except asyncio.TimeoutError:
        pytest.fail(f"the async stream got no result within {WAIT} s: its request was stranded "
                    f"(is_running={engine.is_running}, unfinished={engine.num_unfinished})")


def test_a_stream_started_while_shutdown_waits_for_the_last_step_is_served():
    backend = GatedBackend(max_slots=2)
    engine = LLMEngine(backend)
    cancelling = _signal_cancels(engine)
    engine.start()
    first = engine.submit(Request([1], max_new_tokens=3))
    assert backend.entered.wait(WAIT)  # the background thread is inside a step
    stopper = threading.Thread(target=engine.shutdown)
    stopper.start()
    try:
        assert cancelling.wait(WAIT)  # shutdown() now waits for that step
        start = engine.start

        def start_then_finish_the_step():
            start()  # the old thread still looks alive here
            backend.gate.set()
            return engine

        engine.start = start_then_finish_the_step
        items = _stream_all(engine, Request([2], max_new_tokens=3))
    finally:
        backend.gate.set()
        stopper.join(WAIT)
    result = items[-1]
    assert isinstance(result, RequestResult) and result.finish_reason is FinishReason.LENGTH
    assert [o.token for o in items[:-1]] == result.tokens == ScriptedBackend.expected([2], 3)
    assert first.result(timeout=WAIT).finish_reason is FinishReason.CANCELLED
    engine.shutdown()
    assert not engine.has_unfinished() and not engine.is_running and not backend.history


def test_a_shutdown_landing_inside_stream_admission_never_strands_the_request():
    backend = GatedBackend(max_slots=2)
    engine = LLMEngine(backend)
    backend.gate = _signal_cancels(engine)  # no step finishes before shutdown() has cancelled
    start = engine.start

    def start_while_another_thread_shuts_down():
        start()
        stopper = threading.Thread(target=engine.shutdown)
        stopper.start()
        stopper.join(WAIT)
        return engine

    engine.start = start_while_another_thread_shuts_down
    items = _stream_all(engine, Request([2], max_new_tokens=3))
    result = items[-1]
    assert isinstance(result, RequestResult) and result.finish_reason is FinishReason.CANCELLED
    # Cancelled before its first step or after it, never run to its end.
    assert len(result.tokens) <= 1 and result.tokens == ScriptedBackend.expected([2], 3)[:len(result.tokens)]
    assert [o.token for o in items[:-1]] == result.tokens
    assert not engine.has_unfinished() and not backend.history

