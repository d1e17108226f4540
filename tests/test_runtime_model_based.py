"""Model-based test of LLMEngine: a hypothesis state machine drives one engine step by step, in
one thread, over a backend that checks every step (the reference side is tests/_engine_model.py).

Each run draws an engine (backend slots and length, max_batch_size, max_seq_len and
max_tokens_per_step below them, EOS ids, NEG on or off, a byte tokenizer or none) and then a
sequence of calls: valid submissions (add_request, submit, generate), invalid ones (also through
validate), steps, cancels (a handle's, abort_request, each twice), iterating a handle, a failing
backend step, shutdown. Checked all along:

* slots: each running request holds one slot, no slot is used twice or leaked, and the backend
  holds exactly the running requests' slots;
* limits: no step exceeds max_batch_size, max_tokens_per_step or max_seq_len;
* admission is first come first served: the head of the queue is admitted as soon as a slot and
  the token budget allow, and no later request overtakes it;
* every request gets exactly one result, delivered last, with the right finish reason (cancelled
  when a cancel returned True, error when its step failed, LENGTH only at its cap, STOP only at a
  stop token or string), and its stream agrees with it;
* an invalid submission, whichever call makes it and a field set after construction included, is
  refused with a ValueError naming the field and leaves the engine unchanged;
* cancels return True exactly once, and only for an unfinished request;
* at the end, every request equals its run alone in a fresh engine (a prefix of it if cut short).

Every run of the same test selection (CI's included) tries the same examples: derandomized, no
example database (Hypothesis also mixes in literal constants of the trt_neg modules imported so
far, so another selection may try others). Nothing is written into the working tree. About 15 s
on 2 cores; on a defect, shrinking the failing example to a short one takes a few minutes.
``pytest --hypothesis-show-statistics`` shows what the examples covered (the event() labels).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os

import pytest
from _engine_model import (INJECTED_FAILURE, STOP_STRINGS, EngineSetup, TrackedRequest, check_matches_solo_run,
                           check_result)

from trt_neg.cache import cache_dir
from trt_neg.runtime import FinishReason, Request, RequestResult, SamplingParams
from trt_neg.runtime.sequence import SequenceStatus

# Only the test extra installs Hypothesis; where pytest alone is installed (docker/'s image, the GPU
# check's machine: they run the marked tests) this module is a skip, not a collection error.
pytest.importorskip("hypothesis")

import hypothesis.strategies as st  # noqa: E402
from hypothesis import event, settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule  # noqa: E402

# database=None writes no example database, but Hypothesis still caches the literal constants of
# the code under test (read at collection, after this import) in .hypothesis/ under the working
# directory: keep them with trt-neg's other caches unless the user chose a place.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    set_hypothesis_home_dir(cache_dir() / "hypothesis")

# Few ids, so that they are reused and collide; "req-N" is also what the engine assigns itself.
REQUEST_IDS = ("a", "b", "c", "req-0", "req-1")

# Invalid values set on a Request after construction, which its own checks never saw: every call
# must check them again (validate() and generate() did not before 9be5610).
CHANGED_FIELDS = {
    "prompt_token_ids": [[-1], [], ["x"], 5],
    "max_new_tokens": [0, -1, 1.5, True, "3"],
    "stop_token_ids": [[None], [-2]],
    "stop": [[""]],
    "sampling": [None],
    "neg_mode": [2, 3, -1, True, "1"],
    "ignore_eos": ["yes"],
    "request_id": [5],
}


def _engine_setup(vocab_size, backend_slots, backend_seq_len, batch_fraction, seq_len_fraction, budget, eos,
                  neg_enabled, neg_seed, tau, with_tokenizer) -> EngineSetup:
    max_batch_size = max(1, round(backend_slots * batch_fraction))
    return EngineSetup(
        vocab_size=vocab_size, backend_slots=backend_slots, backend_seq_len=backend_seq_len,
        max_batch_size=max_batch_size, max_seq_len=max(2, round(backend_seq_len * seq_len_fraction)),
        # None: the engine's default budget; a drawn one is raised to max_batch_size (the engine's minimum)
        max_tokens_per_step=None if budget is None else max(max_batch_size, budget),
        eos_token_ids=tuple(e % vocab_size for e in eos), neg_enabled=neg_enabled, neg_seed=neg_seed, tau=tau,
        with_tokenizer=with_tokenizer)


engine_setups = st.builds(
    _engine_setup,
    vocab_size=st.sampled_from([13, 26, 97]), backend_slots=st.integers(1, 6), backend_seq_len=st.integers(2, 24),
    batch_fraction=st.sampled_from([1.0, 1.0, 0.5, 0.3]), seq_len_fraction=st.floats(0.1, 1.0),
    budget=st.one_of(st.none(), st.integers(1, 30)), eos=st.lists(st.integers(0, 200), max_size=2),
    neg_enabled=st.booleans(), neg_seed=st.integers(0, 2**64 - 1), tau=st.sampled_from([0.3, 0.8, 1.1]),
    with_tokenizer=st.booleans(),
)

samplings = st.one_of(
    st.just(SamplingParams()),
    st.builds(SamplingParams, temperature=st.sampled_from([0.0, 0.5, 1.0]), top_k=st.integers(0, 5),
              top_p=st.sampled_from([1.0, 0.9]), seed=st.one_of(st.none(), st.integers(0, 2**64 - 1))),
)


class ErrorRecords(logging.Handler):
    """Keeps the runtime's error records for the state machine to check."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class EngineStateMachine(RuleBasedStateMachine):
    @initialize(setup=engine_setups, data=st.data(), count=st.integers(0, 4))
    def make_engine(self, setup, data, count):
        # The runtime logs every failed step; hundreds of examples of injected failures would bury
        # a failure's report, so its records stop here (teardown restores the logger) and are checked.
        self.errors = ErrorRecords()
        self.runtime_log = logging.getLogger("trt_neg.runtime")
        self.runtime_log.addHandler(self.errors)
        self.runtime_log_propagated, self.runtime_log.propagate = self.runtime_log.propagate, False
        self.setup = setup
        self.engine, self.backend = setup.make()
        # What a blocking call (generate, a handle's result or iteration) runs without a background
        # thread: checked too, so a stuck engine fails the test instead of hanging it.
        self.engine._progress = self._step
        self.tracked: list[TrackedRequest] = []
        # A first burst: the rules are a random subset per example (swarm testing), and one
        # without submissions would otherwise only ever see an empty engine.
        self.submit(data, count)

    # ------------------------------------------------------------------ helpers
    def _live(self) -> list[TrackedRequest]:
        return [t for t in self.tracked if not t.finished]

    def _live_ids(self) -> set[str]:
        return {t.request_id for t in self._live()}

    def _draw_request(self, data) -> Request:
        """A valid request for this engine; its id, if any, is not held by an unfinished request."""
        e = self.engine
        n = data.draw(st.integers(1, min(e.max_seq_len - 1, e.max_tokens_per_step)), label="prompt length")
        stop = st.one_of(st.just([]), st.lists(st.sampled_from(STOP_STRINGS), min_size=1, max_size=3))
        request_id = data.draw(st.one_of(st.none(), st.sampled_from(REQUEST_IDS)), label="request_id")
        return Request(
            data.draw(st.lists(st.integers(0, e.vocab_size - 1), min_size=n, max_size=n), label="prompt"),
            max_new_tokens=data.draw(st.integers(1, e.max_seq_len + 2), label="max_new_tokens"),
            stop_token_ids=data.draw(st.lists(st.integers(0, e.vocab_size - 1), max_size=2), label="stop_token_ids"),
            stop=data.draw(stop, label="stop") if e.tokenizer is not None else [],
            sampling=data.draw(samplings, label="sampling"),
            neg_mode=data.draw(st.sampled_from([None, 0, 1]), label="neg_mode"),
            ignore_eos=data.draw(st.booleans(), label="ignore_eos"),
            request_id=None if request_id in self._live_ids() else request_id,
        )

    def _snapshot(self):
        """What a refused submission must leave as it was. Besides the public counters it reads the
        engine's table of unfinished requests, its inbox, listeners and free slots: no public call
        lists them, and a half-admitted request would show only there."""
        e = self.engine
        return (e.num_unfinished, dict(e.stats), dict(e._seqs), list(e._inbox), dict(e._listeners),
                list(e.scheduler.waiting), list(e.scheduler.running), sorted(e.scheduler._free),
                copy.deepcopy(self.backend.history), len(self.backend.steps))

    # -------------------------------------------------------------------- rules
    @rule(data=st.data(), count=st.integers(1, 4))
    def submit(self, data, count):
        for _ in range(count):
            request = self._draw_request(data)
            via = data.draw(st.sampled_from(["add_request", "submit"]), label="via")
            tracked = TrackedRequest(dataclasses.replace(request), via)
            if tracked.via == "add_request":
                tracked.request_id = self.engine.add_request(request, listener=tracked.outputs.append)
            else:
                tracked.handle = self.engine.submit(request, on_output=tracked.outputs.append)
                tracked.request_id = tracked.handle.request_id
            assert request.request_id in (None, tracked.request_id)
            self.tracked.append(tracked)
            # The caller reuses its object (docs/runtime.md, "Admission fixes the request"): the
            # solo re-run, from the copy, shows that nothing in flight changed.
            request.max_new_tokens = 1
            request.prompt_token_ids = (0,)

    @rule(data=st.data(), call=st.sampled_from(["add_request", "submit", "generate", "validate"]))
    def submit_invalid(self, data, call):
        e = self.engine
        request = self._draw_request(data)
        kinds = ["changed after construction", "prompt past max_seq_len", "prompt over the token budget",
                 "prompt token outside the vocabulary", "stop token outside the vocabulary", "not a Request"]
        if e.tokenizer is None:
            kinds.append("stop string without a tokenizer")
        if self._live_ids():
            kinds.append("request_id in use")
        kind = data.draw(st.sampled_from(kinds), label="invalid")
        if kind == "changed after construction":
            field = data.draw(st.sampled_from(sorted(CHANGED_FIELDS)), label="field")
            setattr(request, field, data.draw(st.sampled_from(CHANGED_FIELDS[field]), label="value"))
        elif kind == "prompt past max_seq_len":
            field, request.prompt_token_ids = "prompt_token_ids", (1,) * e.max_seq_len
        elif kind == "prompt over the token budget":
            field, request.prompt_token_ids = "prompt_token_ids", (1,) * (e.max_tokens_per_step + 1)
        elif kind == "prompt token outside the vocabulary":
            field, request.prompt_token_ids = "prompt_token_ids", request.prompt_token_ids[:-1] + (e.vocab_size,)
        elif kind == "stop token outside the vocabulary":
            field, request.stop_token_ids = "stop_token_ids", (e.vocab_size + 3,)
        elif kind == "stop string without a tokenizer":
            field, request.stop = "stop", ("a",)
        elif kind == "request_id in use":
            field, request.request_id = "request_id", data.draw(st.sampled_from(sorted(self._live_ids())))
        else:
            field, request = "request", {"prompt_token_ids": [1]}
        before = self._snapshot()
        delivered = []
        try:
            if call == "add_request":
                e.add_request(request, listener=delivered.append)
            elif call == "submit":
                e.submit(request, on_output=delivered.append)
            elif call == "validate":
                e.validate(request)
            else:
                e.generate([Request([0], max_new_tokens=2), request], on_output=delivered.append)
        except ValueError as exc:
            assert str(exc).startswith(f"{field}:"), f"{kind}, via {call}: {exc}"
            if call == "generate":  # docs/runtime.md: generate validates all before it submits any
                assert exc.__notes__ == ["generate(): request 1 of 2 is invalid; none was submitted"], exc.__notes__
        else:
            raise AssertionError(f"{kind}, via {call}: accepted")
        assert self._snapshot() == before, f"{kind}, via {call}: the engine changed"
        assert delivered == [], f"{kind}, via {call}: outputs {delivered}"

    def _step(self) -> list:
        """engine.step(), which must make progress: a step that starts with unfinished requests
        always yields an output (a prefill or decode token, a cancelled or failed result)."""
        unfinished = self.engine.num_unfinished
        outputs = self.engine.step()
        assert outputs or not unfinished, f"a step with {unfinished} unfinished requests did nothing: it is stuck"
        return outputs

    @rule()
    def step(self):
        for output in self._step():
            receivers = [t for t in self.tracked if any(o is output for o in t.outputs)]
            assert len(receivers) == 1, f"{output} was delivered to {len(receivers)} requests"

    @rule(count=st.integers(2, 8))
    def steps(self, count):
        for _ in range(count):
            self.step()

    @precondition(lambda self: any(t.handle is not None for t in self.tracked))
    @rule(data=st.data(), twice=st.booleans())
    def cancel_handle(self, data, twice):
        tracked = data.draw(st.sampled_from([t for t in self.tracked if t.handle is not None]), label="request")
        expected = not tracked.finished and not tracked.cancel_accepted
        self._check_cancel(tracked.handle.cancel, tracked if expected else None, twice)

    @precondition(lambda self: self.tracked)
    @rule(data=st.data(), twice=st.booleans())
    def abort_request(self, data, twice):
        # Cancels whichever unfinished request holds the id now, if any (the ids are reused).
        request_id = data.draw(st.sampled_from(sorted({t.request_id for t in self.tracked})), label="request_id")
        holders = [t for t in self._live() if t.request_id == request_id]
        assert len(holders) <= 1
        expected = holders[0] if holders and not holders[0].cancel_accepted else None
        self._check_cancel(lambda: self.engine.abort_request(request_id), expected, twice)

    @staticmethod
    def _check_cancel(cancel, expected: TrackedRequest | None, twice: bool) -> None:
        """``cancel()`` returns True exactly when ``expected`` (the request it must cancel) is given."""
        accepted = cancel()
        assert accepted == (expected is not None), f"cancel returned {accepted}"
        if accepted:
            expected.cancel_accepted = True
        if twice:
            assert cancel() is False, "a second cancel was accepted"

    @precondition(lambda self: any(t.handle is not None for t in self.tracked))
    @rule(data=st.data())
    def iterate_handle(self, data):
        tracked = data.draw(st.sampled_from([t for t in self.tracked if t.handle is not None]), label="request")
        streamed = list(tracked.handle)  # drives the engine until the request ends
        result = tracked.handle.result()
        assert [t.token for t in streamed] == result.tokens
        assert tracked.results == [result] and tracked.results[0] is result

    @rule(data=st.data(), count=st.integers(1, 3))
    def generate(self, data, count):
        requests = [self._draw_request(data) for _ in range(count)]
        ids = [r.request_id for r in requests if r.request_id is not None]
        delivered = []  # on_output: the outputs of this call's requests only (the others' go to their listeners)
        if len(ids) != len(set(ids)):
            # Valid one by one, but the same id twice: only admission sees it. generate() then
            # cancels (before any step) the requests it submitted, and waits for them.
            first_repeat = next(i for i, r in enumerate(requests)
                                if r.request_id is not None and r.request_id in [q.request_id for q in requests[:i]])
            try:
                self.engine.generate(requests, on_output=delivered.append)
            except ValueError as exc:
                assert str(exc).startswith("request_id:"), exc
            else:
                raise AssertionError("generate() accepted one request_id twice")
            assert len(delivered) == first_repeat
            assert all(isinstance(o, RequestResult) and o.finish_reason is FinishReason.CANCELLED and not o.tokens
                       for o in delivered), delivered
            return
        tracked = [TrackedRequest(dataclasses.replace(r), "generate") for r in requests]
        results = self.engine.generate(requests, on_output=delivered.append)
        for t, result in zip(tracked, results):
            t.request_id = result.request_id
            t.outputs = [o for o in delivered if o.request_id == t.request_id]
            assert t.results == [result] and t.results[0] is result
            # Nothing can cancel them while generate() runs them to completion.
            assert result.finish_reason is not FinishReason.CANCELLED, result
        assert len({t.request_id for t in tracked}) == len(tracked)
        self.tracked += tracked

    @rule(arm=st.integers(0, 4))
    def fail_next_step(self, arm):
        # Armed one time in five: a failed step ends every request in it, so it should stay rare.
        self.backend.fail_next = arm == 0

    @rule(cancel=st.booleans())
    def shutdown(self, cancel):
        live = self._live()
        self.engine.shutdown(cancel=cancel)  # no background thread: with cancel, one step retires them all
        if cancel:
            assert not self.engine.has_unfinished()
            for t in live:
                assert t.results and t.results[0].finish_reason is FinishReason.CANCELLED, t.results
                t.cancel_accepted = True

    # ---------------------------------------------------------------- invariants
    @invariant()
    def slots_and_limits(self):
        e, sched = self.engine, self.engine.scheduler
        assert not self.backend.violations, self.backend.violations
        used = [seq.slot for seq in sched.running]
        assert None not in used and len(set(used)) == len(used), used
        # The free list itself, not only num_free_slots: a slot both free and in use (released
        # early, or twice) is seen here, before a later step would hand it out again.
        assert sorted(used + list(sched._free)) == list(range(e.max_slots)), \
            f"slots in use {sorted(used)} and free {sorted(sched._free)}: not each of the {e.max_slots} once"
        assert sched.num_free_slots == e.max_slots - len(used)
        assert all(seq.slot is None and seq.status is SequenceStatus.WAITING for seq in sched.waiting)
        assert all(seq.status is SequenceStatus.RUNNING and seq.prefilled for seq in sched.running)
        # The backend holds the running requests' slots and nothing else, each as long as its sequence.
        assert set(self.backend.history) == set(used), (sorted(self.backend.history), used)
        for seq in sched.running:
            assert len(self.backend.history[seq.slot]) == seq.position - 1 and seq.position <= e.max_seq_len

    @invariant()
    def one_result_per_request(self):
        e = self.engine
        live = self._live()
        assert e.num_unfinished == len(live)
        # The ids too: there is no public list of the unfinished requests' ids.
        assert set(e._seqs) == {t.request_id for t in live}, (sorted(e._seqs), sorted(t.request_id for t in live))
        # Each unfinished request is in exactly one place: the inbox (submitted since the last
        # step), the scheduler's queue, or the running batch.
        queued = list(e._inbox) + list(e.scheduler.waiting) + list(e.scheduler.running)
        assert len(queued) == len({id(seq) for seq in queued}) == len(live)
        assert {seq.request_id for seq in queued} == set(e._seqs)
        # A finished request's listener is dropped (it would keep the consumer alive).
        assert set(e._listeners) <= set(queued), "a listener kept for a finished request"
        for t in self.tracked:
            assert len(t.results) <= 1, f"{t.request_id}: {len(t.results)} results"
            if t.finished and not t.checked:
                check_result(e, t)
                t.checked = True
            if t.handle is not None and t.finished:
                assert t.handle.done and t.handle.result() is t.results[0]

    @invariant()
    def only_injected_failures_logged(self):
        # Anything else (a failed release, a listener or token that raised) is a defect.
        for record in self.errors.records:
            exc = record.exc_info[1] if record.exc_info else None
            assert record.getMessage() == "backend step failed" and INJECTED_FAILURE in str(exc), \
                f"logged: {record.getMessage()} ({exc!r})"
        self.errors.records.clear()

    def teardown(self):
        if not hasattr(self, "errors"):  # the initialize rule failed before it touched the logger
            return
        try:
            self._drain_and_check()
        finally:
            self.runtime_log.removeHandler(self.errors)
            self.runtime_log.propagate = self.runtime_log_propagated

    def _drain_and_check(self):
        e = self.engine
        while e.has_unfinished():  # ends: every step makes progress and every request is bounded
            self.step()
        self.slots_and_limits()
        self.one_result_per_request()
        self.only_injected_failures_logged()
        assert not self.backend.history, "a slot not released"
        for t in self.tracked:
            assert len(t.results) == 1, f"{t.request_id}: {len(t.results)} results"
            check_result(e, t)
            check_matches_solo_run(self.setup, t)
            result = t.results[0]
            event(f"finish {result.finish_reason.value}")
            if t.cancel_accepted and result.tokens:
                event("cancelled while running")
            if any(result.fired):
                event("NEG fired")
        event(f"requests: {min(len(self.tracked), 10)}{'+' if len(self.tracked) >= 10 else ''}")
        event(f"largest batch: {max((len(p) + len(d) for p, d in self.backend.steps), default=0)}")


EngineStateMachine.TestCase.settings = settings(
    derandomize=True, database=None, max_examples=300, stateful_step_count=40,
    deadline=None,  # an example's time grows with its requests and steps; slowness is not a defect here
    # Stop at the first failure: shrinking each distinct one (every example ends with solo re-runs)
    # would take many minutes.
    report_multiple_bugs=False,
)
TestEngineStateMachine = EngineStateMachine.TestCase
