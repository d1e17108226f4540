"""The engines' shared front end: limits, validation, admission and the user-facing calls.

:class:`EngineFrontend` is everything a caller sees of an engine that does not depend on
what runs the model.  It owns

* the limits (``max_slots``, ``max_seq_len``, ``max_tokens_per_step``) and the model facts
  requests are checked against (``vocab_size``, ``eos_token_ids``, ``default_neg_mode``,
  ``neg_seed``, ``tokenizer``);
* ``validate(request)`` (every ``ValueError`` names the field; docs/runtime.md);
* admission, :meth:`EngineFrontend._admit`: a private copy of the request (what the engine
  uses is fixed there), request id, the effective seed, stop ids (plus EOS unless
  ``ignore_eos``), the :class:`Sequence`, ``max_new_tokens`` capped by ``max_seq_len``; then
  the engine's :meth:`~EngineFrontend._enqueue`;
* the lock and ``_seqs``, the table of unfinished requests (the engine removes a sequence
  when it retires it, under the lock);
* ``add_request``, ``submit`` -> :class:`RequestHandle`, ``generate``, asyncio ``stream``,
  ``has_unfinished``, ``num_unfinished`` and the context manager (``start`` ... ``shutdown``).

An engine subclasses it and implements the hooks: ``_enqueue(seq, listener)`` (hand an
admitted request to what runs it), ``abort_request``, ``start`` / ``is_running`` /
``shutdown``, and ``_progress()`` (what a waiting :class:`RequestHandle` does when no
background thread runs).  It may override ``_neg_mode`` (which NEG modes it can honour),
``seeds_neg_draws`` (whether a request's seed keys its NEG draws) and ``_abort_sequence``.

Cancellation through a :class:`RequestHandle` or an async ``stream`` targets the request
object (its :class:`Sequence`), never its id: once a request finishes its id is free for
reuse, and a stale handle, or a cancel that raced with the natural finish, must not reach the
newer request holding that id.  ``abort_request(request_id)`` cancels the live request that
holds the id at the time of the call.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import itertools
import logging
import random
import threading
import time
from typing import AsyncIterator, Any, Callable, Iterable, Iterator, Union

from .request import Request, RequestResult, TokenOutput
from .sequence import Sequence

log = logging.getLogger(__name__)

Output = Union[TokenOutput, RequestResult]
Listener = Callable[[Output], None]


def limit_arg(name: str, value: int | None, lo: int, hi: int, what: str) -> int:
    """A constructor limit: ``value`` (None = ``hi``) must be an integer in ``[lo, hi]``; ``what`` names ``hi``."""
    value = hi if value is None else value
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name}: must be an integer in [{lo}, {hi}] ({what}), got {value!r}")
    return value


class EngineFrontend(abc.ABC):
    """Validation, admission and the user-facing surface shared by the engines (module docstring)."""

    #: Whether a request's effective seed also keys its NEG draws (docs/runtime.md, "Seeds and
    #: randomness"). An engine whose NEG key is fixed (a TensorRT-LLM engine's plugin) sets False:
    #: its NEG draws always use ``neg_seed``.
    seeds_neg_draws = True

    def __init__(self, *, max_slots: int, max_seq_len: int, max_tokens_per_step: int, vocab_size: int,
                 eos_token_ids: Iterable[int], neg_enabled: bool, neg_seed: int, tokenizer: Any = None,
                 clock: Callable[[], float] = time.perf_counter, seed_source: random.Random | None = None):
        self.max_slots = max_slots
        self.max_seq_len = max_seq_len
        self.max_tokens_per_step = max_tokens_per_step
        self.vocab_size = vocab_size
        self.eos_token_ids = tuple(eos_token_ids)
        self.default_neg_mode = 1 if neg_enabled else 0
        self.neg_seed = neg_seed
        self.tokenizer = tokenizer
        self.clock = clock
        self._lock = threading.RLock()
        self._seqs: dict[str, Sequence] = {}  # every unfinished request
        self._ids = itertools.count()
        # The ids named by the requests of generate() calls still submitting (id -> number of calls):
        # no automatic id, of those calls or of any other submitter, takes one of them meanwhile.
        self._reserved_ids: dict[str, int] = {}
        # Draws the seed of unseeded sampling requests (reported in RequestResult.seed); a seeded
        # random.Random makes whole workloads reproducible (tests, benchmarks).
        self._seed_source = seed_source if seed_source is not None else random.SystemRandom()

    # ----------------------------------------------------------------- validation
    def validate(self, request: Request) -> None:
        """``Request``'s own checks (again: a field may have been set after construction), then the
        model- and limit-dependent ones; ValueError names the field."""
        self._checked_copy(request)

    def _checked_copy(self, request: Request) -> Request:
        """``validate``'s checks, made on a private copy that is returned: what a request runs with is
        fixed here, whatever the caller does with its Request object later (reusing it as a template,
        changing a field, even one set after construction)."""
        if not isinstance(request, Request):
            raise ValueError(f"request: must be a trt_neg.runtime.Request, got {type(request).__name__}")
        request = dataclasses.replace(request)  # runs Request.__post_init__'s checks on the current fields
        seq_len, budget, vocab = self.max_seq_len, self.max_tokens_per_step, self.vocab_size
        n = len(request.prompt_token_ids)
        if n > seq_len - 1:
            raise ValueError(
                f"prompt_token_ids: the prompt has {n} tokens; the sequence-length limit "
                f"(max_seq_len={seq_len}) leaves room for at most {seq_len - 1}"
            )
        if n > budget:
            raise ValueError(
                f"prompt_token_ids: the prompt has {n} tokens, more than the per-step token budget "
                f"(max_tokens_per_step={budget})"
            )
        for name, ids in (("prompt_token_ids", request.prompt_token_ids), ("stop_token_ids", request.stop_token_ids)):
            for i, t in enumerate(ids):
                if t >= vocab:
                    raise ValueError(f"{name}: token id {t} at index {i} is outside the vocabulary (vocab_size {vocab})")
        if request.stop and self.tokenizer is None:
            raise ValueError("stop: stop strings need a tokenizer; this engine has none (use stop_token_ids)")
        if request.request_id is not None:
            with self._lock:
                if request.request_id in self._seqs:
                    raise ValueError(f"request_id: {request.request_id!r} is already in use by an unfinished request")
        self._neg_mode(request)
        return request

    def _neg_mode(self, request: Request) -> int:
        """The request's NEG mode; an engine that cannot honour some mode raises ``ValueError("neg_mode: ...")``."""
        return self.default_neg_mode if request.neg_mode is None else request.neg_mode

    # ------------------------------------------------------------------ admission
    def _admit(self, request: Request, listener: Listener | None) -> Sequence:
        """Validate, build the request's :class:`Sequence` and hand it to the engine (``_enqueue``)."""
        request = self._checked_copy(request)
        mode = self._neg_mode(request)
        now = self.clock()
        sp = request.sampling
        # The request's effective seed (given, or drawn here for an unseeded sampling
        # request) keys both its own sampling and its NEG draws, so RequestResult.seed
        # reproduces the run; greedy requests without a seed use the model's NEG seed.
        sample_seed = sp.seed if sp.seed is not None or sp.is_greedy else self._seed_source.getrandbits(63)
        neg_seed = sample_seed if sample_seed is not None and self.seeds_neg_draws else self.neg_seed
        stop_ids = set(request.stop_token_ids)
        if not request.ignore_eos:
            stop_ids.update(self.eos_token_ids)
        n = len(request.prompt_token_ids)
        with self._lock:
            rid = request.request_id
            if rid is None:
                rid = f"req-{next(self._ids)}"
                while rid in self._seqs or rid in self._reserved_ids:
                    rid = f"req-{next(self._ids)}"
            elif rid in self._seqs:
                raise ValueError(f"request_id: {rid!r} is already in use by an unfinished request")
            seq = Sequence(
                request, rid, neg_mode=mode, sample_seed=sample_seed, neg_seed=neg_seed,
                stop_token_ids=frozenset(stop_ids), max_new_tokens=min(request.max_new_tokens, self.max_seq_len - n),
                arrival_time=now, tokenizer=self.tokenizer,
            )
            self._enqueue(seq, listener)  # under the lock: no output can reach a request not yet in _seqs
            self._seqs[rid] = seq
        return seq

    @abc.abstractmethod
    def _enqueue(self, seq: Sequence, listener: Listener | None) -> None:
        """Hand an admitted request to what runs it (called with the lock held); may raise to refuse it."""

    # ----------------------------------------------------------- the engine's side
    @abc.abstractmethod
    def abort_request(self, request_id: str) -> bool:
        """Cancel (thread-safe); the request ends with finish reason ``cancelled``. False if unknown or done."""

    def _abort_sequence(self, seq: Sequence) -> bool:
        """Cancel this very request (thread-safe): False once it is done, even if a newer request
        has taken its id since.  This default checks, under the lock, that ``seq`` still holds its id
        and cancels through ``abort_request``; an engine may override it to cancel the object directly."""
        with self._lock:
            if self._seqs.get(seq.request_id) is not seq:
                return False
            return self.abort_request(seq.request_id)

    @property
    @abc.abstractmethod
    def is_running(self) -> bool:
        """Whether a background thread delivers outputs (else waiting callers drive ``_progress``)."""

    @abc.abstractmethod
    def start(self) -> "EngineFrontend":
        """Make sure outputs are delivered without the caller's help; returns self."""

    @abc.abstractmethod
    def shutdown(self, cancel: bool = True) -> None:
        """Stop the background work; with ``cancel`` every unfinished request ends cancelled."""

    @abc.abstractmethod
    def _progress(self) -> None:
        """Called by a waiting :class:`RequestHandle` while ``is_running`` is False: advance or wait a little."""

    # --------------------------------------------------------------- user-facing
    def add_request(self, request: Request, listener: Listener | None = None) -> str:
        """Validate and enqueue (thread-safe); returns the request id. ``listener`` gets every output."""
        return self._admit(request, listener).request_id

    def has_unfinished(self) -> bool:
        with self._lock:
            return bool(self._seqs)

    @property
    def num_unfinished(self) -> int:
        with self._lock:
            return len(self._seqs)

    def submit(self, request: Request, on_output: Listener | None = None) -> "RequestHandle":
        """Thread-safe submission; returns a handle to stream, wait for or cancel the request."""
        handle = RequestHandle(self, on_output)
        handle._seq = self._admit(request, listener=handle._push)
        handle.request_id = handle._seq.request_id
        return handle

    def generate(self, requests: Iterable[Request], on_output: Listener | None = None) -> list[RequestResult]:
        """Run requests to completion (in the background thread if started, else here).

        Every request is validated before any is submitted, so an invalid one raises its
        ``ValueError`` with nothing queued.  Should a submission still fail (an error only
        admission sees, e.g. the same ``request_id`` twice in the call), the requests already
        submitted are cancelled and waited for before the error propagates.
        """
        requests = list(requests)
        for i, r in enumerate(requests):
            try:
                requests[i] = self._checked_copy(r)  # what is submitted is what was checked
            except ValueError as exc:
                exc.add_note(f"generate(): request {i} of {len(requests)} is invalid; none was submitted")
                raise
        handles: list[RequestHandle] = []
        named = {r.request_id for r in requests if r.request_id is not None}
        try:
            with self._lock:  # until every request is in: no automatic id (any submitter's) takes these
                for rid in named:
                    self._reserved_ids[rid] = self._reserved_ids.get(rid, 0) + 1
            try:
                for r in requests:
                    handles.append(self.submit(r, on_output))
            finally:
                with self._lock:
                    for rid in named:
                        left = self._reserved_ids.pop(rid) - 1
                        if left:
                            self._reserved_ids[rid] = left
        except Exception as exc:
            for h in handles:
                h.cancel()
            for h in handles:
                try:
                    h.result()
                except Exception:  # pragma: no cover - the original error matters more
                    log.exception("waiting for cancelled request %s failed", h.request_id)
            exc.add_note(f"generate(): submitting request {len(handles)} of {len(requests)} failed; "
                         f"the {len(handles)} already submitted were cancelled")
            raise
        return [h.result() for h in handles]

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    async def stream(self, request: Request) -> AsyncIterator[Output]:
        """Yield the request's TokenOutputs as they are decoded, then its RequestResult.

        Starts the background thread if needed.  Closing the generator early (``break``,
        task cancellation) cancels the request.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()

        admitted: list[Sequence] = []  # this request's Sequence: cancels target it, not its (reusable) id

        def listener(item: Output) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                if admitted:
                    self._abort_sequence(admitted[0])

        seq = self._admit(request, listener=listener)
        admitted.append(seq)
        # Started after admission: a shutdown() that lands in between then cancels the request
        # instead of leaving it queued with nothing left to run it.
        self.start()
        done = False
        try:
            while not done:
                item = await items.get()
                done = isinstance(item, RequestResult)
                yield item
        finally:
            if not done:  # False (a no-op) if the result is already on its way
                self._abort_sequence(seq)


class RequestHandle:
    """A submitted request: iterate its tokens, wait for its result, or cancel it.

    Works whether or not the engine's background thread runs: without it, waiting drives
    the engine (``engine._progress()``, e.g. ``LLMEngine.step()``) in the calling thread.
    The handle keeps the tokens it has received, so every iteration yields all of them from
    the first: one started after the request finished replays them and ends, and iterations
    in several threads each see every token.
    """

    def __init__(self, engine: EngineFrontend, on_output: Listener | None = None):
        self.engine = engine
        self.request_id: str = ""
        self._seq: Sequence | None = None  # the admitted request: cancel() targets it, not its id
        self._on_output = on_output
        self._tokens: list[TokenOutput] = []  # every token received, for every iteration
        self._arrived = threading.Condition()  # notified when a token or the result arrives
        self._done = threading.Event()
        self._result: RequestResult | None = None

    def _push(self, item: Output) -> None:
        if self._on_output is not None:
            try:
                self._on_output(item)
            except Exception:
                log.exception("on_output callback for %s failed", item.request_id)
        with self._arrived:
            if isinstance(item, RequestResult):
                self._result = item
                self._done.set()
            else:
                self._tokens.append(item)
            self._arrived.notify_all()

    def _token(self, index: int, timeout: float | None) -> TokenOutput | None:
        """Token ``index`` once it has arrived; None if the request ended without it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        driven = False
        while True:
            with self._arrived:
                if index < len(self._tokens):
                    return self._tokens[index]
                if self._done.is_set():
                    return None
                running = self.engine.is_running
                # Without the background thread, one step is driven before the deadline counts, so
                # polling with timeout=0 still makes progress.
                if deadline is not None and time.monotonic() >= deadline and (running or driven):
                    raise TimeoutError(f"request {self.request_id}: no output within {timeout} s")
                if running:  # woken by _push; waking every 0.05 s notices a stopped thread, then we drive
                    self._arrived.wait(0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic())))
            if not running:
                self.engine._progress()  # outside the lock: the step it runs delivers to _push
                driven = True

    def __iter__(self) -> Iterator[TokenOutput]:
        return self.stream()

    def stream(self, timeout: float | None = None) -> Iterator[TokenOutput]:
        """The request's tokens from the first, as they are decoded; ends when the request ends
        (the final result via ``result()``). ``timeout``: seconds to wait for each next token
        (``TimeoutError`` past it). Another iteration, even after the end, replays every token."""
        index = 0
        while (token := self._token(index, timeout)) is not None:
            yield token
            index += 1

    def result(self, timeout: float | None = None) -> RequestResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            if self.engine.is_running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"request {self.request_id}: not finished within {timeout} s")
                self._done.wait(0.05 if left is None else min(0.05, left))
            else:
                self.engine._progress()
                if deadline is not None and time.monotonic() >= deadline and not self._done.is_set():
                    raise TimeoutError(f"request {self.request_id}: not finished within {timeout} s")
        return self._result

    def cancel(self) -> bool:
        """Cancel this request (not whichever request holds its id later). False once it is done."""
        if self._done.is_set() or self._seq is None:
            return False
        return self.engine._abort_sequence(self._seq)

    @property
    def done(self) -> bool:
        return self._done.is_set()


__all__ = ["EngineFrontend", "Listener", "Output", "RequestHandle", "limit_arg"]
