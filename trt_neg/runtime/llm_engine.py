"""The engine: validation, scheduling and one backend step at a time.

Three ways to drive it:

* step by step: ``add_request`` then ``step()`` until ``has_unfinished()`` is False; each
  step returns the :class:`TokenOutput` s it produced and the :class:`RequestResult` of
  every request that ended;
* a background thread (``start()`` / ``shutdown()``): ``submit`` from any thread returns a
  :class:`RequestHandle` (``stream()``, ``result()``, ``cancel()``);
* asyncio: ``async for item in engine.stream(request)`` yields the TokenOutputs and then
  the RequestResult; leaving the loop early cancels the request.

Submissions and cancellations from other threads go through a locked inbox that the step
drains at its start, so requests join and leave only between steps.  An invalid request
raises ``ValueError`` in the submitting thread and never reaches the scheduler.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import random
import threading
import time
from collections import deque
from typing import Any, AsyncIterator, Callable, Iterable, Iterator, Union

from .backend import Backend, BackendRow
from .request import FinishReason, Request, RequestResult, TokenOutput
from .scheduler import Scheduler, SchedulerConfig
from .sequence import Sequence

log = logging.getLogger(__name__)

Output = Union[TokenOutput, RequestResult]
Listener = Callable[[Output], None]


class LLMEngine:
    def __init__(self, backend: Backend, *, tokenizer: Any = None, max_batch_size: int | None = None,
                 max_tokens_per_step: int | None = None, max_seq_len: int | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.backend = backend
        self.tokenizer = tokenizer
        slots = backend.max_slots if max_batch_size is None else max_batch_size
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= backend.max_slots:
            raise ValueError(f"max_batch_size: must be an integer in [1, {backend.max_slots}] (the backend's slots), got {slots!r}")
        seq_len = backend.max_seq_len if max_seq_len is None else max_seq_len
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 2 <= seq_len <= backend.max_seq_len:
            raise ValueError(f"max_seq_len: must be an integer in [2, {backend.max_seq_len}] (the backend's limit), got {seq_len!r}")
        budget = max(seq_len, slots) if max_tokens_per_step is None else max_tokens_per_step
        self.config = SchedulerConfig(max_slots=slots, max_tokens_per_step=budget, max_seq_len=seq_len)
        self.scheduler = Scheduler(self.config)
        self.clock = clock
        self.default_neg_mode = 1 if backend.neg_enabled else 0
        self._lock = threading.RLock()
        self._wakeup = threading.Condition(self._lock)
        self._step_lock = threading.Lock()
        self._inbox: deque[Sequence] = deque()
        self._aborts: list[str] = []
        self._seqs: dict[str, Sequence] = {}  # every unfinished request
        self._listeners: dict[str, Listener] = {}
        self._ids = itertools.count()
        self._seed_source = random.SystemRandom()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.stats = {"steps": 0, "prefill_tokens": 0, "decode_tokens": 0}

    # ----------------------------------------------------------------- validation
    def validate(self, request: Request) -> None:
        """Model- and limit-dependent checks (``Request`` checks the rest); ValueError names the field."""
        if not isinstance(request, Request):
            raise ValueError(f"request: must be a trt_neg.runtime.Request, got {type(request).__name__}")
        cfg, vocab = self.config, self.backend.vocab_size
        n = len(request.prompt_token_ids)
        if n > cfg.max_seq_len - 1:
            raise ValueError(
                f"prompt_token_ids: the prompt has {n} tokens; the sequence-length limit "
                f"(max_seq_len={cfg.max_seq_len}) leaves room for at most {cfg.max_seq_len - 1}"
            )
        if n > cfg.max_tokens_per_step:
            raise ValueError(
                f"prompt_token_ids: the prompt has {n} tokens, more than the per-step token budget "
                f"(max_tokens_per_step={cfg.max_tokens_per_step})"
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

    # ------------------------------------------------------------------ submission
    def add_request(self, request: Request, listener: Listener | None = None) -> str:
        """Validate and enqueue (thread-safe); the request joins the batch at the next step."""
        self.validate(request)
        now = self.clock()
        sp = request.sampling
        # The request's effective seed (given, or drawn here for an unseeded sampling
        # request) keys both its own sampling and its NEG draws, so RequestResult.seed
        # reproduces the run; greedy requests without a seed use the model's NEG seed.
        sample_seed = sp.seed if sp.seed is not None or sp.is_greedy else self._seed_source.getrandbits(63)
        neg_seed = self.backend.neg_seed if sample_seed is None else sample_seed
        stop_ids = set(request.stop_token_ids)
        if not request.ignore_eos:
            stop_ids.update(self.backend.eos_token_ids)
        n = len(request.prompt_token_ids)
        with self._lock:
            rid = request.request_id
            if rid is None:
                rid = f"req-{next(self._ids)}"
                while rid in self._seqs:
                    rid = f"req-{next(self._ids)}"
            elif rid in self._seqs:
                raise ValueError(f"request_id: {rid!r} is already in use by an unfinished request")
            seq = Sequence(
                request, rid,
                neg_mode=self.default_neg_mode if request.neg_mode is None else request.neg_mode,
                sample_seed=sample_seed, neg_seed=neg_seed, stop_token_ids=frozenset(stop_ids),
                max_new_tokens=min(request.max_new_tokens, self.config.max_seq_len - n),
                arrival_time=now, tokenizer=self.tokenizer,
            )
            self._seqs[rid] = seq
            if listener is not None:
                self._listeners[rid] = listener
            self._inbox.append(seq)
            self._wakeup.notify_all()
        return rid

    def abort_request(self, request_id: str) -> bool:
        """Cancel (thread-safe): it leaves the batch at the next step. False if unknown or done."""
        with self._lock:
            seq = self._seqs.get(request_id)
            if seq is None or seq.cancel_requested:
                return False
            seq.cancel_requested = True
            self._aborts.append(request_id)
            self._wakeup.notify_all()
            return True

    def has_unfinished(self) -> bool:
        with self._lock:
            return bool(self._seqs)

    @property
    def num_unfinished(self) -> int:
        with self._lock:
            return len(self._seqs)

    # ------------------------------------------------------------------------- step
    def step(self) -> list[Output]:
        """Admit new requests, run one batched backend step, emit outputs, retire finished ones."""
        with self._step_lock:
            outputs: list[Output] = []
            with self._lock:
                while self._inbox:
                    self.scheduler.add(self._inbox.popleft())
                aborts, self._aborts = self._aborts, []
            for rid in aborts:
                seq = self._seqs.get(rid)
                if seq is not None and not seq.finished:
                    self._retire(seq, FinishReason.CANCELLED, outputs)
            batch = self.scheduler.schedule()
            if batch:
                self._run(batch, outputs)
            self._dispatch(outputs)
            return outputs

    def _row(self, seq: Sequence, prefill: bool) -> BackendRow:
        return BackendRow(
            slot=seq.slot, token_ids=seq.prompt if prefill else (seq.last_token,), position=seq.position,
            sampling=seq.request.sampling, sample_seed=seq.sample_seed, neg_mode=seq.neg_mode, neg_seed=seq.neg_seed,
        )

    def _run(self, batch, outputs: list[Output]) -> None:
        seqs = batch.prefill + batch.decode
        try:
            samples = self.backend.step([self._row(s, True) for s in batch.prefill],
                                        [self._row(s, False) for s in batch.decode])
            if len(samples) != len(seqs):
                raise RuntimeError(f"backend returned {len(samples)} samples for {len(seqs)} rows")
        except Exception as exc:  # fail this step's requests, keep the engine alive
            log.exception("backend step failed")
            for seq in seqs:
                seq.error = f"{type(exc).__name__}: {exc}"
                self._retire(seq, FinishReason.ERROR, outputs)
            return
        now = self.clock()
        self.stats["steps"] += 1
        self.stats["prefill_tokens"] += sum(s.num_prompt_tokens for s in batch.prefill)
        self.stats["decode_tokens"] += len(batch.decode)
        for seq, sample in zip(seqs, samples):
            seq.prefilled = True
            outputs.append(seq.append(int(sample.token), float(sample.entropy), bool(sample.fired), now))
            if seq.finish_reason is not None:
                self._retire(seq, seq.finish_reason, outputs)

    def _retire(self, seq: Sequence, reason: FinishReason, outputs: list[Output]) -> None:
        seq.finish_reason = reason
        seq.finish_time = self.clock()
        slot = self.scheduler.finish(seq)
        if slot is not None:
            try:
                self.backend.release(slot)
            except Exception:
                log.exception("backend.release(%d) failed", slot)
        with self._lock:
            self._seqs.pop(seq.request_id, None)
        outputs.append(seq.result())

    def _dispatch(self, outputs: list[Output]) -> None:
        for item in outputs:
            with self._lock:
                listener = self._listeners.get(item.request_id)
                if isinstance(item, RequestResult):
                    self._listeners.pop(item.request_id, None)
            if listener is not None:
                try:
                    listener(item)
                except Exception:  # a consumer's failure never stops the engine
                    log.exception("output listener for %s failed", item.request_id)

    # ------------------------------------------------------------ synchronous helpers
    def submit(self, request: Request, on_output: Listener | None = None) -> "RequestHandle":
        """Thread-safe submission; returns a handle to stream, wait for or cancel the request."""
        handle = RequestHandle(self, on_output)
        handle.request_id = self.add_request(request, listener=handle._push)
        return handle

    def generate(self, requests: Iterable[Request], on_output: Listener | None = None) -> list[RequestResult]:
        """Run requests to completion (in the background thread if started, else here)."""
        handles = [self.submit(r, on_output) for r in requests]
        return [h.result() for h in handles]

    # ------------------------------------------------------------- background thread
    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "LLMEngine":
        with self._lock:
            if self.is_running:
                return self
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="trt-neg-engine", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not (self._inbox or self._aborts or self.scheduler.has_work()):
                    self._wakeup.wait()
                if self._stopping:
                    return
            try:
                self.step()
            except Exception:  # pragma: no cover - step already contains backend failures
                log.exception("engine step failed")
                time.sleep(0.01)

    def shutdown(self, cancel: bool = True) -> None:
        """Stop the background thread; with ``cancel`` every unfinished request ends cancelled."""
        with self._lock:
            self._stopping = True
            self._wakeup.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()
        self._thread = None
        if cancel:
            with self._lock:
                ids = list(self._seqs)
            for rid in ids:
                self.abort_request(rid)
            self.step()

    def __enter__(self) -> "LLMEngine":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # ---------------------------------------------------------------------- asyncio
    async def stream(self, request: Request) -> AsyncIterator[Output]:
        """Yield the request's TokenOutputs as they are decoded, then its RequestResult.

        Starts the background thread if needed.  Closing the generator early (``break``,
        task cancellation) cancels the request.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()

        def listener(item: Output) -> None:
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the event loop is closed: nobody is listening any more
                self.abort_request(item.request_id)

        self.start()
        rid = self.add_request(request, listener=listener)
        done = False
        try:
            while not done:
                item = await items.get()
                done = isinstance(item, RequestResult)
                yield item
        finally:
            if not done:
                self.abort_request(rid)


class RequestHandle:
    """A submitted request: iterate its tokens, wait for its result, or cancel it.

    Works whether or not the engine's background thread runs: without it, waiting drives
    ``engine.step()`` in the calling thread.
    """

    def __init__(self, engine: LLMEngine, on_output: Listener | None = None):
        self.engine = engine
        self.request_id: str = ""
        self._on_output = on_output
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._done = threading.Event()
        self._result: RequestResult | None = None

    def _push(self, item: Output) -> None:
        if self._on_output is not None:
            try:
                self._on_output(item)
            except Exception:
                log.exception("on_output callback for %s failed", item.request_id)
        if isinstance(item, RequestResult):
            self._result = item
        self._queue.put(item)
        if isinstance(item, RequestResult):
            self._done.set()

    def _next(self, timeout: float | None) -> Output:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                pass
            if self.engine.is_running:
                wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
                try:
                    return self._queue.get(timeout=wait)
                except queue.Empty:
                    pass
            else:
                self.engine.step()
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"request {self.request_id}: no output within {timeout} s")

    def __iter__(self) -> Iterator[TokenOutput]:
        return self.stream()

    def stream(self, timeout: float | None = None) -> Iterator[TokenOutput]:
        """The request's tokens as they are decoded (the final result via ``result()``)."""
        while True:
            item = self._next(timeout)
            if isinstance(item, RequestResult):
                return
            yield item

    def result(self, timeout: float | None = None) -> RequestResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.is_set():
            if self.engine.is_running:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"request {self.request_id}: not finished within {timeout} s")
                self._done.wait(0.05 if left is None else min(0.05, left))
            else:
                self.engine.step()
                if deadline is not None and time.monotonic() >= deadline and not self._done.is_set():
                    raise TimeoutError(f"request {self.request_id}: not finished within {timeout} s")
        return self._result

    def cancel(self) -> bool:
        return self.engine.abort_request(self.request_id)

    @property
    def done(self) -> bool:
        return self._done.is_set()
