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

Validation, admission and the user-facing calls (``add_request``, ``submit``, ``generate``,
``stream``, ...) are the shared :class:`~trt_neg.runtime.frontend.EngineFrontend`'s; this
module adds the scheduler, the step and the background thread.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from typing import Any, Callable

from .backend import Backend, BackendRow
from .frontend import EngineFrontend, Listener, Output, RequestHandle, limit_arg
from .request import FinishReason, RequestResult
from .scheduler import Scheduler, SchedulerConfig
from .sequence import Sequence

log = logging.getLogger(__name__)


class LLMEngine(EngineFrontend):
    """A :class:`Backend` driven step by step through the in-flight batching :class:`Scheduler`."""

    def __init__(self, backend: Backend, *, tokenizer: Any = None, max_batch_size: int | None = None,
                 max_tokens_per_step: int | None = None, max_seq_len: int | None = None,
                 clock: Callable[[], float] = time.perf_counter, seed_source: random.Random | None = None):
        self.backend = backend
        slots = limit_arg("max_batch_size", max_batch_size, 1, backend.max_slots, "the backend's slots")
        seq_len = limit_arg("max_seq_len", max_seq_len, 2, backend.max_seq_len, "the backend's limit")
        budget = max(seq_len, slots) if max_tokens_per_step is None else max_tokens_per_step
        self.config = SchedulerConfig(max_slots=slots, max_tokens_per_step=budget, max_seq_len=seq_len)
        super().__init__(max_slots=slots, max_seq_len=seq_len, max_tokens_per_step=budget,
                         vocab_size=backend.vocab_size, eos_token_ids=backend.eos_token_ids,
                         neg_enabled=backend.neg_enabled, neg_seed=backend.neg_seed, tokenizer=tokenizer, clock=clock,
                         seed_source=seed_source)
        self.scheduler = Scheduler(self.config)
        self._wakeup = threading.Condition(self._lock)
        self._step_lock = threading.Lock()
        self._inbox: deque[Sequence] = deque()
        # Cancellations target the Sequence, not its id: an id freed by a step can be reused
        # at once, and a cancel queued for the old request must not reach the new one.
        self._aborts: list[Sequence] = []
        # Keyed by the Sequence, not its id: an id freed by a step can be reused before that
        # step's outputs are dispatched, and they must still reach the old request's listener.
        self._listeners: dict[Sequence, Listener] = {}
        self._thread: threading.Thread | None = None
        # The current thread's stop flag. Each start() makes a new one: a thread that shutdown()
        # is stopping may still be finishing a step when start() has to run a new thread.
        self._stop = threading.Event()
        self._stepping_thread: int | None = None  # ident of the thread inside step(), if any
        self.stats = {"steps": 0, "prefill_tokens": 0, "decode_tokens": 0}

    # ------------------------------------------------------------------ submission
    def _enqueue(self, seq: Sequence, listener: Listener | None) -> None:
        """Into the inbox: the sequence joins the batch at the next step."""
        if listener is not None:
            self._listeners[seq] = listener
        self._inbox.append(seq)
        self._wakeup.notify_all()

    def abort_request(self, request_id: str) -> bool:
        """Cancel the unfinished request that holds ``request_id`` now (thread-safe): it leaves
        the batch at the next step. False if unknown, done or already cancelled."""
        with self._lock:
            seq = self._seqs.get(request_id)
            return seq is not None and self._abort_sequence(seq)

    def _abort_sequence(self, seq: Sequence) -> bool:
        """Cancel this very request (thread-safe); False once it is done, whatever holds its id now."""
        with self._lock:
            if seq.cancel_requested or seq.finished or self._seqs.get(seq.request_id) is not seq:
                return False
            seq.cancel_requested = True
            self._aborts.append(seq)
            self._wakeup.notify_all()
            return True

    # ------------------------------------------------------------------------- step
    def step(self) -> list[Output]:
        """Admit new requests, run one batched backend step, emit outputs, retire finished ones."""
        with self._step_lock:
            self._stepping_thread = threading.get_ident()
            try:
                return self._step()
            finally:
                self._stepping_thread = None

    def _step(self) -> list[Output]:
        outputs: list[tuple[Sequence, Output]] = []  # each output with the request that produced it
        with self._lock:
            while self._inbox:
                self.scheduler.add(self._inbox.popleft())
            aborts, self._aborts = self._aborts, []
        for seq in aborts:
            # A request that finished on its own after the cancel was asked for stays finished.
            if not seq.finished:
                self._retire(seq, FinishReason.CANCELLED, outputs)
        batch = self.scheduler.schedule()
        if batch:
            self._run(batch, outputs)
        self._dispatch(outputs)
        return [item for _, item in outputs]

    def _row(self, seq: Sequence, prefill: bool) -> BackendRow:
        return BackendRow(
            slot=seq.slot, token_ids=seq.prompt if prefill else (seq.last_token,), position=seq.position,
            sampling=seq.sampling, sample_seed=seq.sample_seed, neg_mode=seq.neg_mode, neg_seed=seq.neg_seed,
        )

    def _run(self, batch, outputs: list[tuple[Sequence, Output]]) -> None:
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
            try:
                output = seq.append(int(sample.token), float(sample.entropy), bool(sample.fired), now)
            except Exception as exc:  # e.g. the tokenizer failed on this token: fail this request only
                log.exception("request %s: recording its token failed", seq.request_id)
                seq.error = f"{type(exc).__name__}: {exc}"
                self._retire(seq, FinishReason.ERROR, outputs)
                continue
            outputs.append((seq, output))
            if seq.finish_reason is not None:
                self._retire(seq, seq.finish_reason, outputs)

    def _retire(self, seq: Sequence, reason: FinishReason, outputs: list[tuple[Sequence, Output]]) -> None:
        seq.finish_reason = reason
        seq.finish_time = self.clock()
        slot = self.scheduler.finish(seq)
        if slot is not None:
            try:
                self.backend.release(slot)
            except Exception:
                if seq.prefilled:  # the backend held this slot: a failed release is a real problem
                    log.exception("backend.release(%d) failed", slot)
                else:  # its prefill failed: the backend may never have filled the slot (nothing to free)
                    log.debug("backend.release(%d) of a never-prefilled sequence failed", slot, exc_info=True)
        with self._lock:
            self._seqs.pop(seq.request_id, None)
        outputs.append((seq, seq.result()))

    def _dispatch(self, outputs: list[tuple[Sequence, Output]]) -> None:
        for seq, item in outputs:
            with self._lock:
                listener = self._listeners.get(seq)
                if isinstance(item, RequestResult):
                    self._listeners.pop(seq, None)
            if listener is not None:
                try:
                    listener(item)
                except Exception:  # a consumer's failure never stops the engine
                    log.exception("output listener for %s failed", item.request_id)

    # ------------------------------------------------------------- background thread
    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "LLMEngine":
        with self._lock:
            if self.is_running and not self._stop.is_set():
                return self
            # A thread being shut down would exit without serving what is submitted next.
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, args=(self._stop,), name="trt-neg-engine", daemon=True)
            self._thread.start()
        return self

    def _loop(self, stop: threading.Event) -> None:
        while True:
            with self._lock:
                while not stop.is_set() and not (self._inbox or self._aborts or self.scheduler.has_work()):
                    self._wakeup.wait()
                # After shutdown() from a listener, one more step retires the cancelled requests.
                last = stop.is_set()
                if last and not self._aborts:
                    return
            try:
                self.step()
            except Exception:  # pragma: no cover - step already contains backend failures
                log.exception("engine step failed")
                time.sleep(0.01)
            if last:
                return

    def shutdown(self, cancel: bool = True) -> None:
        """Stop the background thread; with ``cancel`` every unfinished request ends cancelled.

        From an output listener (that is, inside a step) it only asks: the step under way
        finishes, and the cancellations are applied by the next step, which the background
        thread runs before it exits (step by step, the caller's next ``step()``).
        """
        with self._lock:
            self._stop.set()
            self._wakeup.notify_all()
            thread = self._thread
            seqs = list(self._seqs.values()) if cancel else []
        for seq in seqs:
            self._abort_sequence(seq)
        if self._stepping_thread == threading.get_ident():
            return
        if thread is not None:
            thread.join()
        with self._lock:
            if self._thread is thread:  # not a thread that a concurrent start() began since
                self._thread = None
        if cancel:
            self.step()

    def _progress(self) -> None:
        self.step()  # no background thread: the waiting caller runs the step


__all__ = ["LLMEngine", "RequestHandle"]
