"""The reference side of the model-based engine test (test_runtime_model_based.py).

* :class:`ByteTokenizer`: a toy tokenizer whose tokens include half a UTF-8 character and a
  special token, so stop strings and streamed text meet incomplete characters;
* :class:`CheckingBackend`: a :class:`ScriptedBackend` that checks, on every step, the limits
  and the scheduler's first-come-first-served rule, and can fail its next step on demand;
* :class:`EngineSetup`: one drawn engine configuration, which builds fresh engines (the solo
  re-runs need a new engine of the same configuration);
* :func:`check_result`: everything a finished request must satisfy on its own;
* :func:`check_matches_solo_run`: a request's result equals its run alone in a fresh engine.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

from trt_neg.runtime import FinishReason, LLMEngine, Request, RequestHandle, RequestResult, TokenOutput
from trt_neg.runtime.testing import ScriptedBackend

STOP_STRINGS = ("a", "b", "cd", "xy", "é", "eab", "dd", "ca", "bxy")
INJECTED_FAILURE = "injected backend failure"


class ByteTokenizer:
    """Token t decodes to bytes chosen by t % 13: a UTF-8 lead byte, a continuation byte, the
    special "<s>" (dropped with skip_special_tokens), "xy", or one of the letters a..e."""

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    @staticmethod
    def piece(token: int) -> tuple[bytes, bool]:
        """(bytes, is_special)"""
        r = token % 13
        if r == 0:
            return b"\xc3", False  # the lead byte of "é" ...
        if r == 1:
            return b"\xa9", False  # ... and its continuation byte
        if r == 2:
            return b"<s>", True
        if r == 3:
            return b"xy", False
        return bytes([ord("a") + token % 5]), False

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        out = b""
        for t in ids:
            piece, special = self.piece(int(t))
            if not (special and skip_special_tokens):
                out += piece
        return out.decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return self.vocab_size


class CheckingBackend(ScriptedBackend):
    """Records, on every step, each breach of the engine's limits and of FCFS admission in
    ``violations`` (the state machine asserts it stays empty); ``fail_next`` fails the next step."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.engine: LLMEngine | None = None  # set once the engine exists: its limits and scheduler
        self.fail_next = False
        self.violations: list[str] = []
        self._last_admitted = float("-inf")  # arrival time of the last request prefilled

    def step(self, prefill, decode):
        if self.engine is not None:
            self._check_limits(prefill, decode)
            self._check_first_come_first_served(prefill, decode)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError(INJECTED_FAILURE)
        return super().step(prefill, decode)

    def _check_limits(self, prefill, decode) -> None:
        e = self.engine
        rows = list(prefill) + list(decode)
        slots = [r.slot for r in rows]
        if len(rows) > e.max_slots:
            self.violations.append(f"{len(rows)} rows > max_batch_size {e.max_slots}")
        if len(set(slots)) != len(slots):
            self.violations.append(f"a slot used twice in one step: {slots}")
        if any(not 0 <= s < e.max_slots for s in slots):
            self.violations.append(f"a slot outside [0, {e.max_slots}): {slots}")
        tokens = len(decode) + sum(len(r.token_ids) for r in prefill)
        if tokens > e.max_tokens_per_step:
            self.violations.append(f"{tokens} tokens > max_tokens_per_step {e.max_tokens_per_step}")
        self.violations += [f"a row at position {r.position} >= max_seq_len {e.max_seq_len}"
                            for r in rows if r.position >= e.max_seq_len]

    def _check_first_come_first_served(self, prefill, decode) -> None:
        # The scheduler has just admitted this step's prefills: its queue (waiting, running) is
        # public, and a row's slot finds its Sequence, whose arrival time orders admission.
        sched = self.engine.scheduler
        budget_left = self.engine.max_tokens_per_step - len(decode) - sum(len(r.token_ids) for r in prefill)
        head = sched.waiting[0] if sched.waiting else None
        if head is not None and sched.num_free_slots and head.num_prompt_tokens <= budget_left:
            self.violations.append(f"the head of the queue ({head.request_id}) fits but was not admitted")
        by_slot = {seq.slot: seq for seq in sched.running}
        arrivals = [by_slot[r.slot].arrival_time for r in prefill]
        if arrivals != sorted(arrivals) or (arrivals and arrivals[0] < self._last_admitted):
            self.violations.append(f"prefills not in arrival order: {arrivals} after {self._last_admitted}")
        if arrivals and head is not None and head.arrival_time < arrivals[-1]:
            self.violations.append(f"a later request overtook the head of the queue ({head.request_id})")
        if arrivals:
            self._last_admitted = arrivals[-1]


@dataclasses.dataclass(frozen=True)
class EngineSetup:
    """A backend and the engine limits over it; ``make`` builds a fresh pair."""

    vocab_size: int
    backend_slots: int
    backend_seq_len: int
    max_batch_size: int
    max_seq_len: int
    max_tokens_per_step: int | None
    eos_token_ids: tuple[int, ...]
    neg_enabled: bool
    neg_seed: int
    tau: float
    with_tokenizer: bool

    def make(self) -> tuple[LLMEngine, CheckingBackend]:
        backend = CheckingBackend(vocab_size=self.vocab_size, max_slots=self.backend_slots,
                                  max_seq_len=self.backend_seq_len, eos_token_ids=self.eos_token_ids,
                                  neg_enabled=self.neg_enabled, neg_seed=self.neg_seed, tau=self.tau)
        ticks = itertools.count()
        # A clock that ticks once per reading: arrival times are distinct (they order FCFS) and
        # every run is reproducible; a seeded seed source makes the drawn sampling seeds so too.
        engine = LLMEngine(backend, tokenizer=ByteTokenizer(self.vocab_size) if self.with_tokenizer else None,
                           max_batch_size=self.max_batch_size, max_tokens_per_step=self.max_tokens_per_step,
                           max_seq_len=self.max_seq_len, clock=lambda: float(next(ticks)),
                           seed_source=random.Random(0))
        backend.engine = engine
        return engine, backend


@dataclasses.dataclass
class TrackedRequest:
    """One valid submission and everything delivered for it."""

    request: Request  # a copy of what was submitted, before the caller changed its object
    via: str  # add_request, submit or generate
    request_id: str = ""
    handle: RequestHandle | None = None  # submit only
    outputs: list = dataclasses.field(default_factory=list)  # in delivery order
    cancel_accepted: bool = False  # a cancel (handle, abort_request, shutdown) returned True
    checked: bool = False  # check_result passed once its result arrived

    @property
    def results(self) -> list[RequestResult]:
        return [o for o in self.outputs if isinstance(o, RequestResult)]

    @property
    def finished(self) -> bool:
        return bool(self.results)

    @property
    def tokens(self) -> list[TokenOutput]:
        return [o for o in self.outputs if isinstance(o, TokenOutput)]


def stop_token_set(engine: LLMEngine, request: Request) -> set[int]:
    stops = set(request.stop_token_ids)
    if not request.ignore_eos:
        stops |= set(engine.eos_token_ids)
    return stops


def check_result(engine: LLMEngine, tracked: TrackedRequest) -> None:
    """Everything that can be said of a finished request without re-running it."""
    (res,) = tracked.results
    req, rid, streamed = tracked.request, tracked.request_id, tracked.tokens
    assert res.request_id == rid and all(o.request_id == rid for o in tracked.outputs)
    assert tracked.outputs[-1] is res, f"{rid}: an output after the result"
    assert res.prompt_token_ids == tuple(req.prompt_token_ids)
    # The stream and the result agree token by token.
    assert [o.index for o in streamed] == list(range(len(streamed))), f"{rid}: indices {[o.index for o in streamed]}"
    assert [o.token for o in streamed] == res.tokens
    assert [o.fired for o in streamed] == res.fired
    assert [o.entropy for o in streamed] == res.entropies
    assert len(res.tokens) == len(res.fired) == len(res.entropies) == len(res.token_times)
    assert res.gate_activation_rate == (sum(res.fired) / len(res.fired) if res.fired else 0.0)
    mode = engine.default_neg_mode if req.neg_mode is None else req.neg_mode
    assert res.neg_mode == mode and (mode == 1 or not any(res.fired))
    # docs/runtime.md, "Seeds and randomness": a given seed is kept, greedy has none, else one is drawn.
    sp = req.sampling
    if sp.seed is not None:
        assert res.seed == sp.seed
    elif sp.is_greedy:
        assert res.seed is None
    else:
        assert isinstance(res.seed, int) and 0 <= res.seed < 2**63
    cap = min(req.max_new_tokens, engine.max_seq_len - len(req.prompt_token_ids))
    stops = stop_token_set(engine, req)
    assert len(res.tokens) <= cap
    assert not any(t in stops for t in res.tokens[:-1]), f"{rid}: ran past a stop token"
    assert all(0 <= t < engine.vocab_size for t in res.tokens)
    if res.tokens:
        assert res.first_token_time == res.token_times[0] and res.ttft > 0
        assert all(b > a for a, b in zip(res.token_times, res.token_times[1:]))
        assert len(res.token_latencies) == len(res.tokens) - 1
    else:
        assert res.ttft is None
    timeline = [res.arrival_time, *res.token_times, res.finish_time]  # events in the order they happened
    assert timeline == sorted(timeline), f"{rid}: arrival, token and finish times out of order {timeline}"
    if tracked.cancel_accepted:
        assert res.finish_reason is FinishReason.CANCELLED, f"{rid}: a cancel returned True, yet {res.finish_reason}"
    if res.finish_reason is FinishReason.ERROR:
        assert res.error and INJECTED_FAILURE in res.error
    else:
        assert res.error is None
    cut_at_stop_string = _check_text(engine, tracked, stops) if engine.tokenizer is not None else False
    if engine.tokenizer is None:
        assert res.text is None
    if res.finish_reason is FinishReason.STOP:
        assert (res.tokens and res.tokens[-1] in stops) or cut_at_stop_string, f"{rid}: STOP without a stop"
    if res.finish_reason is FinishReason.LENGTH:
        assert len(res.tokens) == cap, f"{rid}: LENGTH after {len(res.tokens)} of {cap} tokens"
        assert not res.tokens or res.tokens[-1] not in stops


def _check_text(engine: LLMEngine, tracked: TrackedRequest, stops: set[int]) -> bool:
    """The streamed and final text against a decode of the tokens; True if cut at a stop string."""
    (res,) = tracked.results
    req, rid = tracked.request, tracked.request_id
    streamed = "".join(o.text for o in tracked.tokens)
    assert res.text is not None and res.text.startswith(streamed), (rid, streamed, res.text)
    assert not any(s in res.text for s in req.stop), f"{rid}: a stop string in {res.text!r}"
    ends_on_stop_token = res.finish_reason is FinishReason.STOP and res.tokens and res.tokens[-1] in stops
    generated = res.tokens[:-1] if ends_on_stop_token else res.tokens  # a stop token's text is not output
    full = engine.tokenizer.decode(generated, skip_special_tokens=True)
    if res.finish_reason not in (FinishReason.STOP, FinishReason.LENGTH):
        # Cancelled or failed mid-way: the text may end with an incomplete character.
        assert full.startswith(res.text.rstrip("\ufffd")) or full.startswith(res.text), (rid, full, res.text)
        return False
    assert streamed == res.text, f"{rid}: a natural end streams all the text: {streamed!r} != {res.text!r}"
    assert full.startswith(res.text), (rid, full, res.text)
    if res.text == full:
        return False
    # Cut at a stop string that the last token completed, and at no earlier token.
    assert any(full[len(res.text):].startswith(s) for s in req.stop), (rid, full, res.text)
    before = engine.tokenizer.decode(generated[:-1], skip_special_tokens=True).rstrip("\ufffd")
    assert not any(s in before for s in req.stop), f"{rid}: the stop string was complete earlier: {before!r}"
    return True


def run_alone(setup: EngineSetup, request: Request, seed: int | None) -> RequestResult:
    """``request`` alone in a fresh engine, with the seed its batched run reported."""
    engine, backend = setup.make()
    sampling = request.sampling
    if seed is not None and sampling.seed is None:
        sampling = dataclasses.replace(sampling, seed=seed)
    result = engine.submit(dataclasses.replace(request, sampling=sampling, request_id=None)).result()
    assert not backend.violations, backend.violations
    return result


def check_matches_solo_run(setup: EngineSetup, tracked: TrackedRequest) -> None:
    """Batching changes nothing: a request that ended on its own equals its solo run; one cut
    short (cancelled, a failed step) is a prefix of it."""
    (res,) = tracked.results
    alone = run_alone(setup, tracked.request, res.seed)
    n, rid = len(res.tokens), tracked.request_id
    if res.finish_reason in (FinishReason.STOP, FinishReason.LENGTH):
        assert (res.finish_reason, res.tokens) == (alone.finish_reason, alone.tokens), (rid, res, alone)
        assert res.text == alone.text
    else:
        assert res.tokens == alone.tokens[:n], (rid, res.tokens, alone.tokens)
    assert res.fired == alone.fired[:n] and res.entropies == alone.entropies[:n]
