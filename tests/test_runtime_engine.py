"""The engine with a model-free backend: validation, in-flight batching, stop conditions,
cancellation, timings, the background thread and asyncio streaming."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
import random
import threading
import time

import pytest

from trt_neg.runtime import FinishReason, LLMEngine, Request, RequestResult, SamplingParams, TokenOutput
from trt_neg.runtime.testing import ScriptedBackend


def make(**kw) -> tuple[LLMEngine, ScriptedBackend]:
    engine_kw = {k: kw.pop(k) for k in ("max_tokens_per_step", "max_batch_size", "tokenizer") if k in kw}
    backend = ScriptedBackend(**kw)
    return LLMEngine(backend, **engine_kw), backend


def run_all(engine: LLMEngine) -> dict[str, RequestResult]:
    results = {}
    while engine.has_unfinished():
        for item in engine.step():
            if isinstance(item, RequestResult):
                assert item.request_id not in results
                results[item.request_id] = item
    return results


@dataclass
class GatedBackend(ScriptedBackend):
    """A ScriptedBackend whose every step waits for ``gate`` (``entered`` is set as a step starts)."""

    entered: threading.Event = field(default_factory=threading.Event)
    gate: threading.Event = field(default_factory=threading.Event)

    def step(self, prefill, decode):
        self.entered.set()
        assert self.gate.wait(5)
        return super().step(prefill, decode)


def shutdown_in_background(engine: LLMEngine) -> threading.Thread:
    """``shutdown(cancel=False)`` from another thread, returned once it has asked the engine's
    thread to stop (the step under way then ends that thread)."""
    stopper = threading.Thread(target=engine.shutdown, kwargs={"cancel": False})
    stopper.start()
    deadline = time.monotonic() + 5
    while not engine._stop.is_set() and time.monotonic() < deadline:
        time.sleep(0.001)
    return stopper


def test_tokens_match_the_request_alone_and_slots_are_reused():
    engine, backend = make(max_slots=3, max_seq_len=64)
    rng = random.Random(0)
    reqs = [Request([rng.randrange(97) for _ in range(rng.randint(1, 9))], max_new_tokens=rng.randint(1, 12),
                    neg_mode=i % 2, request_id=f"r{i}") for i in range(10)]
    for r in reqs:
        engine.add_request(r)
    results = run_all(engine)
    assert set(results) == {r.request_id for r in reqs}
    for r in reqs:
        res = results[r.request_id]
        assert res.tokens == ScriptedBackend.expected(r.prompt_token_ids, r.max_new_tokens, neg_mode=r.neg_mode)
        assert res.finish_reason is FinishReason.LENGTH and len(res.fired) == len(res.tokens)
        if r.neg_mode == 0:
            assert not any(res.fired) and res.gate_activation_rate == 0.0
        assert res.gate_activation_rate == sum(res.fired) / len(res.tokens)
    assert max(len(p) + len(d) for p, d in backend.steps) == 3  # the batch never exceeded the slots
    assert len(backend.released) == 10 and set(backend.released) <= {0, 1, 2}
    assert backend.history == {}  # every slot released


def test_requests_join_and_leave_between_steps():
    engine, backend = make(max_slots=2)
    a = engine.add_request(Request([1, 2], max_new_tokens=2))
    b = engine.add_request(Request([3], max_new_tokens=5))
    engine.step()  # both prefill
    c = engine.add_request(Request([4, 5, 6], max_new_tokens=1))
    out = engine.step()  # a finishes (2 tokens) -> slot 0 free; c must wait (no slot this step)
    assert any(isinstance(o, RequestResult) and o.request_id == a for o in out)
    assert backend.steps[-1][0] == []
    engine.step()  # c joins in slot 0 and finishes after its first token
    prefill, decode = backend.steps[-1]
    assert [r.slot for r in prefill] == [0] and [r.slot for r in decode] == [1]
    res = run_all(engine)
    assert set(res) == {b} and engine.num_unfinished == 0 and c not in engine._seqs


@pytest.mark.parametrize("request_kw, field", [
    ({"prompt_token_ids": [1] * 64}, "prompt_token_ids"),  # max_seq_len 64 leaves 63
    ({"prompt_token_ids": [97]}, "prompt_token_ids"),  # outside the vocabulary
    ({"prompt_token_ids": [1], "stop_token_ids": [200]}, "stop_token_ids"),
    ({"prompt_token_ids": [1], "stop": ["x"]}, "stop"),  # no tokenizer
    ({"prompt_token_ids": [1], "request_id": "busy"}, "request_id"),
])
def test_invalid_requests_raise_and_do_not_disturb_the_batch(request_kw, field):
    engine, backend = make(max_slots=2, max_seq_len=64)
    engine.add_request(Request([5, 6], max_new_tokens=6, request_id="busy"))
    engine.step()
    with pytest.raises(ValueError, match=rf"^{field}:"):
        engine.add_request(Request(**request_kw))
    res = run_all(engine)
    assert list(res) == ["busy"] and res["busy"].tokens == ScriptedBackend.expected([5, 6], 6)
    assert len(backend.steps) == 6


@pytest.mark.parametrize("call", ["validate", "add_request", "submit", "generate"])
def test_a_submission_that_is_not_a_request_is_refused_naming_it(call):
    # A dict (or anything else) is a ValueError naming "request", like every other refused input,
    # not a TypeError from deep inside the copy that admission makes.
    engine, backend = make()
    bad = {"prompt_token_ids": [1, 2]}
    with pytest.raises(ValueError, match=r"^request: must be a trt_neg.runtime.Request, got dict"):
        getattr(engine, call)([bad] if call == "generate" else bad)
    assert not engine.has_unfinished() and backend.steps == []


def test_a_prompt_may_take_all_but_one_position_of_max_seq_len():
    # max_seq_len 16: a prompt of 15 tokens is accepted and gets exactly one token (finish "length");
    # 16 tokens are refused with the numbers the limit allows.
    engine, _ = make(max_seq_len=16)
    rid = engine.add_request(Request([1] * 15, max_new_tokens=5))
    res = run_all(engine)[rid]
    assert res.finish_reason is FinishReason.LENGTH and res.tokens == ScriptedBackend.expected([1] * 15, 1)
    with pytest.raises(ValueError, match=r"^prompt_token_ids: the prompt has 16 tokens; the sequence-length "
                                         r"limit \(max_seq_len=16\) leaves room for at most 15$"):
        engine.add_request(Request([1] * 16))


def test_prompt_over_the_token_budget_is_rejected():
    engine, _ = make(max_slots=2, max_tokens_per_step=4, max_seq_len=64)
    with pytest.raises(ValueError, match=r"^prompt_token_ids: .*max_tokens_per_step=4"):
        engine.add_request(Request([1] * 5))
    with pytest.raises(ValueError, match=r"^max_batch_size:"):
        LLMEngine(ScriptedBackend(max_slots=2), max_batch_size=3)
    with pytest.raises(ValueError, match=r"^max_seq_len:"):
        LLMEngine(ScriptedBackend(max_seq_len=16), max_seq_len=17)


def test_engine_limits_are_checked_naming_the_engines_arguments():
    # Each limit is refused under the name the caller passed, with its range, before the scheduler
    # sees it; the smallest values allowed work (max_seq_len 2: one prompt token, one generated;
    # a token budget equal to the batch size).
    with pytest.raises(ValueError,
                       match=r"^max_batch_size: must be an integer in \[1, 4\] \(the backend's slots\), got 0$"):
        LLMEngine(ScriptedBackend(max_slots=4), max_batch_size=0)
    with pytest.raises(ValueError,
                       match=r"^max_seq_len: must be an integer in \[2, 64\] \(the backend's limit\), got 1$"):
        LLMEngine(ScriptedBackend(max_seq_len=64), max_seq_len=1)
    engine = LLMEngine(ScriptedBackend(max_slots=3), max_seq_len=2, max_tokens_per_step=3)
    ids = [engine.add_request(Request([p], max_new_tokens=4)) for p in (1, 2, 3)]
    res = run_all(engine)
    assert [res[i].tokens for i in ids] == [ScriptedBackend.expected([p], 1) for p in (1, 2, 3)]
    assert all(res[i].finish_reason is FinishReason.LENGTH for i in ids) and engine.stats["steps"] == 1


def test_stats_count_steps_prefill_and_decode_tokens():
    engine, _ = make(max_slots=2)
    engine.add_request(Request([1, 2, 3], max_new_tokens=2))
    engine.add_request(Request([4], max_new_tokens=3))
    run_all(engine)
    # step 1: both prefills (3 + 1 tokens); step 2: two decodes; step 3: one decode
    assert engine.stats == {"steps": 3, "prefill_tokens": 4, "decode_tokens": 3}


def test_a_backend_returning_the_wrong_number_of_samples_fails_that_step():
    # One sample short: every request of the step ends with an error naming the mismatch (none is
    # left running without its token) and the engine goes on.
    class ShortBackend(ScriptedBackend):
        def step(self, prefill, decode):
            out = super().step(prefill, decode)
            return out[:-1] if len(out) == 2 else out

    engine = LLMEngine(ShortBackend(max_slots=2))
    a = engine.add_request(Request([1], max_new_tokens=3))
    b = engine.add_request(Request([2], max_new_tokens=3))
    res = {o.request_id: o for _ in range(5) for o in engine.step() if isinstance(o, RequestResult)}
    assert not engine.has_unfinished()
    for rid in (a, b):
        assert res[rid].finish_reason is FinishReason.ERROR
        assert res[rid].error == "RuntimeError: backend returned 1 samples for 2 rows"
    ok = engine.add_request(Request([3], max_new_tokens=2))
    assert run_all(engine)[ok].tokens == ScriptedBackend.expected([3], 2)


def test_stop_tokens_eos_and_ignore_eos():
    prompt = [3, 1, 4]
    full = ScriptedBackend.expected(prompt, 20)
    stop = full[4]
    first = full.index(stop)
    engine, _ = make(eos_token_ids=(stop,))
    a = engine.add_request(Request(prompt, max_new_tokens=20))
    b = engine.add_request(Request(prompt, max_new_tokens=20, ignore_eos=True))
    c = engine.add_request(Request(prompt, max_new_tokens=20, ignore_eos=True, stop_token_ids=[stop]))
    res = run_all(engine)
    assert res[a].tokens == full[:first + 1] and res[a].finish_reason is FinishReason.STOP
    assert res[b].tokens == full and res[b].finish_reason is FinishReason.LENGTH
    assert res[c].tokens == res[a].tokens and res[c].finish_reason is FinishReason.STOP


def test_sequence_length_limit_caps_generation():
    engine, backend = make(max_seq_len=10)
    rid = engine.add_request(Request([1] * 7, max_new_tokens=50))
    res = run_all(engine)[rid]
    assert len(res.tokens) == 3 and res.finish_reason is FinishReason.LENGTH  # 7 + 3 = max_seq_len


def test_cancel_waiting_and_running_requests():
    engine, backend = make(max_slots=1)
    a = engine.add_request(Request([1], max_new_tokens=30))
    b = engine.add_request(Request([2], max_new_tokens=30))
    engine.step()
    engine.step()
    assert engine.abort_request(b) and engine.abort_request(a)
    assert not engine.abort_request(a)  # already requested
    out = engine.step()
    res = {o.request_id: o for o in out if isinstance(o, RequestResult)}
    assert res[a].finish_reason is FinishReason.CANCELLED and len(res[a].tokens) == 2
    assert res[b].finish_reason is FinishReason.CANCELLED and res[b].tokens == [] and res[b].ttft is None
    assert res[a].tokens == ScriptedBackend.expected([1], 2)
    assert not engine.has_unfinished() and backend.history == {} and not engine.abort_request("nope")


def test_backend_failure_fails_only_that_step():
    engine, backend = make(max_slots=2, fail_when=lambda p, d: any(r.token_ids == (42,) for r in p))
    a = engine.add_request(Request([1, 2], max_new_tokens=4))
    engine.step()
    bad = engine.add_request(Request([42], max_new_tokens=4))
    res = run_all(engine)
    assert res[bad].finish_reason is FinishReason.ERROR and "scripted backend failure" in res[bad].error
    assert res[a].finish_reason is FinishReason.ERROR  # it shared the failed step
    ok = engine.add_request(Request([1, 2], max_new_tokens=4))
    assert run_all(engine)[ok].tokens == ScriptedBackend.expected([1, 2], 4)


def test_seeds_and_default_mode():
    engine, _ = make(neg_seed=77, neg_enabled=False)
    assert engine.default_neg_mode == 0
    engine.add_request(Request([1], request_id="g"))
    engine.add_request(Request([1], sampling=SamplingParams(temperature=1.0), request_id="s"))
    engine.add_request(Request([1], sampling=SamplingParams(temperature=1.0, seed=5), neg_mode=1, request_id="x"))
    seqs = dict(engine._seqs)
    assert (seqs["g"].sample_seed, seqs["g"].neg_seed, seqs["g"].neg_mode) == (None, 77, 0)
    assert seqs["s"].sample_seed is not None and seqs["s"].neg_seed == seqs["s"].sample_seed
    assert (seqs["x"].sample_seed, seqs["x"].neg_seed, seqs["x"].neg_mode) == (5, 5, 1)
    res = run_all(engine)
    assert res["s"].seed == seqs["s"].sample_seed and res["x"].seed == 5 and res["g"].seed is None


def test_unseeded_sampling_seeds_are_the_seed_sources_63_bit_draws():
    # docs/runtime.md: an unseeded sampling request gets a random 63-bit seed from the engine's
    # seed_source, so a seeded source makes the whole workload reproducible.
    engine = LLMEngine(ScriptedBackend(), seed_source=random.Random(3))
    hot = SamplingParams(temperature=1.0)
    seeds = [r.seed for r in engine.generate([Request([1], max_new_tokens=1, sampling=hot) for _ in range(8)])]
    expected = random.Random(3)
    assert seeds == [expected.getrandbits(63) for _ in range(8)]
    assert max(seeds) >= 2**62  # the draws use all 63 bits


def test_timings():
    ticks = iter(range(1000))
    backend = ScriptedBackend()
    engine = LLMEngine(backend, clock=lambda: float(next(ticks)))
    rid = engine.add_request(Request([1], max_new_tokens=3))  # arrival t=0
    res = run_all(engine)[rid]
    assert res.ttft is not None and res.ttft > 0
    assert len(res.token_latencies) == 2 and all(x > 0 for x in res.token_latencies)
    d = res.to_dict()
    assert d["finish_reason"] == "length" and d["tokens"] == res.tokens and d["ttft_s"] == res.ttft
    assert d["per_token_latency_s"] == res.token_latencies


def test_timings_are_the_exact_clock_differences():
    # The clock is read at submission, at the end of each step and at retirement; uneven ticks
    # make every timing distinct, so a sum for a difference or the wrong token's time shows.
    ticks = iter([100.0, 103.0, 107.0, 112.0, 120.0])
    engine = LLMEngine(ScriptedBackend(), clock=lambda: next(ticks))
    rid = engine.add_request(Request([1], max_new_tokens=3))
    res = run_all(engine)[rid]
    assert (res.arrival_time, res.token_times, res.finish_time) == (100.0, [103.0, 107.0, 112.0], 120.0)
    assert res.first_token_time == 103.0 and res.ttft == 3.0
    assert res.token_latencies == [4.0, 5.0] and res.mean_token_latency == 4.5 and res.e2e_latency == 20.0
    d = res.to_dict()
    assert (d["ttft_s"], d["per_token_latency_s"], d["mean_per_token_latency_s"], d["e2e_latency_s"]) == (
        3.0, [4.0, 5.0], 4.5, 20.0)
    assert res.num_tokens == 3


def test_stop_strings_truncate_text_and_never_stream_past_them(tiny_checkpoint):
    from trt_neg.runtime.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_checkpoint)
    vocab = len(tok)
    prompt = tok.encode("Numbers: 1 2", add_special_tokens=False)
    full = ScriptedBackend.expected(prompt, 20, vocab_size=vocab)
    text = tok.decode(full, skip_special_tokens=True)
    stop = next((text[i:i + 2] for i in range(3, len(text) - 1)
                 if "\ufffd" not in text[:i + 2] and text[i:i + 2].strip()), None)
    assert stop is not None, f"the scripted tokens decode to {text!r}: no two-character stop string after 3 chars"
    engine, _ = make(vocab_size=vocab, tokenizer=tok)
    streamed = []
    h = engine.submit(Request(prompt, max_new_tokens=20, stop=[stop]), on_output=streamed.append)
    res = h.result()
    assert res.finish_reason is FinishReason.STOP
    assert res.text == text[:text.index(stop)]
    assert "".join(o.text for o in streamed if isinstance(o, TokenOutput)) == res.text
    assert res.tokens == full[:len(res.tokens)]
    # Without stop strings the streamed deltas add up to the full text.
    h = engine.submit(Request(prompt, max_new_tokens=20))
    deltas = [o.text for o in h]
    assert "".join(deltas) == h.result().text == text


def test_background_thread_with_submitters_in_many_threads():
    engine, backend = make(max_slots=4)
    results, errors = {}, []
    prompts = {f"t{i}": [i % 97, (3 * i) % 97] for i in range(24)}

    def worker(names):
        for name in names:
            try:
                h = engine.submit(Request(prompts[name], max_new_tokens=5, request_id=name))
                toks = [o.token for o in h.stream(timeout=30)]
                res = h.result(timeout=30)
                assert toks == res.tokens
                results[name] = res
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

    with engine:
        threads = [threading.Thread(target=worker, args=(list(prompts)[i::4],)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(ValueError, match="^prompt_token_ids:"):
            engine.submit(Request([1000]))
    assert not errors and not engine.is_running
    for name, p in prompts.items():
        assert results[name].tokens == ScriptedBackend.expected(p, 5)


def test_start_reuses_its_thread_and_shutdown_stops_it():
    # start() is idempotent (it returns the engine; async streams call it each time) and runs one
    # background thread, which shutdown() stops; no per-request state outlives the requests.
    def engine_threads():
        return [t for t in threading.enumerate() if t.name == "trt-neg-engine"]

    before = len(engine_threads())
    engine, _ = make(max_slots=2)
    assert engine.start() is engine and engine.start() is engine and engine.is_running
    assert len(engine_threads()) == before + 1
    outputs = []
    results = engine.generate([Request([p], max_new_tokens=3) for p in (1, 2, 3)], on_output=outputs.append)
    assert [r.tokens for r in results] == [ScriptedBackend.expected([p], 3) for p in (1, 2, 3)]
    assert engine._listeners == {} and engine._seqs == {} and len(outputs) == 12
    engine.shutdown()
    assert not engine.is_running and len(engine_threads()) == before


def test_shutdown_without_cancel_returns_once_the_thread_has_stopped():
    # shutdown(cancel=False) waits for the step under way: no output arrives after it returns, and
    # the unfinished request stays queued for the next start() or step().
    backend = GatedBackend()
    engine = LLMEngine(backend)
    engine.start()
    outputs = []
    engine.add_request(Request([1, 2], max_new_tokens=3), listener=outputs.append)
    assert backend.entered.wait(5)
    stopper = shutdown_in_background(engine)  # asked before the step ends
    backend.gate.set()
    stopper.join(5)
    assert not stopper.is_alive()
    delivered = len(outputs)
    time.sleep(0.2)
    assert delivered == len(outputs) == 1 and engine.has_unfinished() and not engine.is_running
    res = run_all(engine)
    assert list(res.values())[0].tokens == ScriptedBackend.expected([1, 2], 3)


def test_shutdown_cancels_unfinished_requests():
    engine, _ = make(max_slots=1)
    h1 = engine.submit(Request([1], max_new_tokens=10))
    h2 = engine.submit(Request([2], max_new_tokens=10))
    engine.step()
    engine.shutdown()
    assert not engine.has_unfinished()  # cancelled by shutdown() itself, not by a later wait
    assert h1.result(timeout=1).finish_reason is FinishReason.CANCELLED
    assert h2.result(timeout=1).finish_reason is FinishReason.CANCELLED and h2.result().tokens == []


def test_asyncio_stream_and_early_exit_cancels():
    engine, backend = make(max_slots=2, max_seq_len=1000)

    async def main():
        items = [item async for item in engine.stream(Request([9, 8], max_new_tokens=6))]
        assert isinstance(items[-1], RequestResult) and [i.token for i in items[:-1]] == items[-1].tokens
        assert items[-1].tokens == ScriptedBackend.expected([9, 8], 6)

        async def consume(prompt):
            return [i async for i in engine.stream(Request(prompt, max_new_tokens=4))]

        many = await asyncio.gather(*(consume([k, k + 1]) for k in range(6)))
        for k, items in enumerate(many):
            assert items[-1].tokens == ScriptedBackend.expected([k, k + 1], 4)

        gen = engine.stream(Request([5], max_new_tokens=1000 - 2))
        first = await gen.__anext__()
        assert isinstance(first, TokenOutput)
        rid = first.request_id
        await gen.aclose()  # leaving early cancels the request
        for _ in range(200):
            if rid not in engine._seqs:
                break
            await asyncio.sleep(0.01)
        assert rid not in engine._seqs

        with pytest.raises(ValueError, match="^max_new_tokens:"):
            Request([1], max_new_tokens=0)
        with pytest.raises(ValueError, match="^prompt_token_ids:"):
            async for _ in engine.stream(Request([500])):
                pass

    try:
        asyncio.run(main())
    finally:
        engine.shutdown()


def test_frontend_contract_with_a_minimal_engine():
    """EngineFrontend is the whole front end: an engine supplies only the declared hooks."""
    from trt_neg.runtime.frontend import EngineFrontend

    assert issubclass(LLMEngine, EngineFrontend)
    assert EngineFrontend.__abstractmethods__ == {"_enqueue", "abort_request", "is_running", "start", "shutdown",
                                                  "_progress"}

    class EchoEngine(EngineFrontend):
        """Answers each request with its prompt's first token, then stops (length)."""

        seeds_neg_draws = False

        def __init__(self):
            super().__init__(max_slots=2, max_seq_len=8, max_tokens_per_step=4, vocab_size=10, eos_token_ids=[2],
                             neg_enabled=True, neg_seed=77)
            self.pending = []

        def _enqueue(self, seq, listener):
            self.pending.append((seq, listener))

        def abort_request(self, request_id):
            return False

        is_running = False

        def start(self):
            return self

        def shutdown(self, cancel=True):
            pass

        def _progress(self):
            seq, listener = self.pending.pop(0)
            outputs = [seq.append(seq.prompt[0], 0.0, False, self.clock())]
            seq.finish_reason = seq.finish_reason or FinishReason.LENGTH
            with self._lock:
                del self._seqs[seq.request_id]
            outputs.append(seq.result())
            for item in outputs if listener is not None else ():
                listener(item)

    engine = EchoEngine()
    with pytest.raises(ValueError, match=r"^prompt_token_ids: .*max_tokens_per_step=4"):
        engine.add_request(Request([1] * 5))
    with pytest.raises(ValueError, match="^stop: "):
        engine.add_request(Request([1], stop=["x"]))
    engine.add_request(Request([3] * 4, max_new_tokens=9, sampling=SamplingParams(temperature=1.0, seed=5)))
    (seq, _), = engine.pending
    assert seq.request_id == "req-0" and seq.max_new_tokens == 4 and seq.neg_mode == 1
    assert (seq.sample_seed, seq.neg_seed) == (5, 77) and seq.stop_token_ids == {2}
    assert engine.num_unfinished == 1
    with pytest.raises(ValueError, match="^request_id: 'req-0' is already in use"):
        engine.add_request(Request([1], request_id="req-0"))
    # the handle drives _progress (no background thread), which answers req-0 first, then "x"
    (res,) = engine.generate([Request([4], max_new_tokens=1, ignore_eos=True, request_id="x")])
    assert res.request_id == "x" and res.tokens == [4] and res.finish_reason is FinishReason.LENGTH
    assert res.seed is None and engine.pending == [] and not engine.has_unfinished()


class _FailingTokenizer:
    """Decodes ids as text, except that any window starting with token 96 raises (a broken tokenizer)."""

    def decode(self, ids, skip_special_tokens=True):
        if ids and ids[0] == 96:
            raise RuntimeError("decode failed")
        return "".join(chr(65 + t % 26) for t in ids)


def test_a_failing_detokenization_fails_that_request_only():
    """The backend has advanced every row of the step; one request's failure to record its token must not
    leave the others a token behind their slots (nor stop the step), and its slot must be released."""
    engine, backend = make(max_slots=2, tokenizer=_FailingTokenizer())
    good_prompt = [3, 4, 5]
    assert 96 not in ScriptedBackend.expected(good_prompt, 8)
    good = engine.add_request(Request(good_prompt, max_new_tokens=8))
    engine.step()
    bad = engine.add_request(Request([96, 1, 2], max_new_tokens=8))
    res = run_all(engine)
    assert res[bad].finish_reason is FinishReason.ERROR and "decode failed" in res[bad].error
    assert res[good].finish_reason is FinishReason.LENGTH
    assert res[good].tokens == ScriptedBackend.expected(good_prompt, 8)
    assert backend.history == {} and sorted(backend.released) == [0, 1]


def test_seed_source_makes_unseeded_requests_reproducible():
    """Unseeded sampling requests draw their seed from the engine's seed source."""
    def seeds(source):
        engine = LLMEngine(ScriptedBackend(), seed_source=source)
        reqs = [Request([1, 2, 3], max_new_tokens=2, sampling=SamplingParams(temperature=1.0)) for _ in range(3)]
        return [r.seed for r in engine.generate(reqs)]

    first, again = seeds(random.Random(5)), seeds(random.Random(5))
    assert first == again and len(set(first)) == 3
    assert seeds(random.Random(6)) != first


@pytest.mark.parametrize("background", [True, False])
def test_shutdown_from_a_listener_cancels_without_deadlock(background, caplog):
    """A listener runs inside a step (on the engine thread when there is one): shutting the
    engine down from it must neither join its own thread nor re-enter the step."""
    engine, _ = make(max_slots=2, max_seq_len=1000)
    first: list[TokenOutput] = []

    def stop_on_first(item):
        if isinstance(item, TokenOutput) and not first:
            first.append(item)
            engine.shutdown()

    if background:
        engine.start()
    h1 = engine.submit(Request([1], max_new_tokens=500), on_output=stop_on_first)
    h2 = engine.submit(Request([2], max_new_tokens=500))
    r1, r2 = h1.result(timeout=5), h2.result(timeout=5)
    assert first and r1.finish_reason is FinishReason.CANCELLED and r2.finish_reason is FinishReason.CANCELLED
    assert len(r1.tokens) < 500 and not engine.has_unfinished()
    if background:
        engine._thread.join(timeout=5)
    assert not engine.is_running
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_a_reused_request_id_never_receives_the_old_requests_outputs():
    """Request "A" retires inside a step, freeing its id before the step's outputs are
    dispatched; a new "A" submitted in that window (here from A's own last-token listener,
    in production from any thread) must get only its own outputs, and the old handle its result."""
    engine, _ = make(max_slots=2, max_seq_len=64)
    later = {}

    def resubmit_on_last_token(item):
        if isinstance(item, TokenOutput) and item.index == 1 and not later:
            later["h"] = engine.submit(Request([5, 6, 7, 8], max_new_tokens=5, request_id="A"))

    old = engine.submit(Request([1, 2, 3], max_new_tokens=2, request_id="A"), on_output=resubmit_on_last_token)
    while engine.has_unfinished():
        engine.step()
    r_old, r_new = old.result(timeout=1), later["h"].result(timeout=1)
    assert r_old.prompt_token_ids == (1, 2, 3) and r_old.tokens == ScriptedBackend.expected([1, 2, 3], 2)
    assert r_new.prompt_token_ids == (5, 6, 7, 8) and r_new.tokens == ScriptedBackend.expected([5, 6, 7, 8], 5)
    assert [o.token for o in later["h"].stream(timeout=1)] == r_new.tokens


def test_changing_a_submitted_request_changes_nothing_in_flight():
    """Admission fixes what the engine uses of a Request: reusing the object as a template for
    the next submission leaves the request in flight as it was submitted (its sampling used to
    be read again on every step)."""
    prompt = [5, 6, 7]
    full = ScriptedBackend.expected(prompt, 6, neg_mode=0)
    engine, backend = make(max_slots=2, eos_token_ids=(full[1],))
    sampled = SamplingParams(temperature=1.0, seed=1234)
    req = Request(prompt, max_new_tokens=6, sampling=sampled, neg_mode=0, ignore_eos=True, request_id="first")
    engine.add_request(req)
    engine.step()
    req.prompt_token_ids, req.max_new_tokens, req.stop_token_ids = (9,), 2, (full[2],)
    req.sampling, req.neg_mode, req.ignore_eos, req.request_id = SamplingParams(), 1, False, "second"
    engine.add_request(req)
    res = run_all(engine)
    first = res["first"]
    assert first.prompt_token_ids == tuple(prompt) and first.tokens == full  # not cut by EOS or the new stop id
    assert (first.seed, first.neg_mode, first.finish_reason) == (1234, 0, FinishReason.LENGTH)
    first_rows = [r for p, d in backend.steps for r in p + d if r.slot == 0]
    assert len(first_rows) == 6 and all(r.sampling == sampled and r.neg_mode == 0 for r in first_rows)
    second_rows = [r for p, d in backend.steps for r in p + d if r.slot == 1]
    assert second_rows and all(r.sampling == SamplingParams() and r.neg_mode == 1 for r in second_rows)
    assert res["second"].prompt_token_ids == (9,) and res["second"].neg_mode == 1


def test_an_invalid_change_to_a_submitted_request_fails_only_its_resubmission():
    engine, _ = make(max_slots=2)
    other = engine.add_request(Request([4, 4], max_new_tokens=3))
    req = Request([1], max_new_tokens=3)
    mine = engine.add_request(req)
    engine.step()
    req.sampling = None  # set after construction: Request's own checks never saw it
    with pytest.raises(ValueError, match="^sampling:"):
        engine.add_request(req)
    req.sampling, req.max_new_tokens = SamplingParams(), 0
    with pytest.raises(ValueError, match="^max_new_tokens:"):
        engine.add_request(req)
    res = run_all(engine)
    assert set(res) == {other, mine}
    assert all(r.finish_reason is FinishReason.LENGTH and r.error is None and len(r.tokens) == 3 for r in res.values())


def test_every_iteration_of_a_handle_yields_all_its_tokens():
    """The handle keeps its tokens: iterating it again, after the end or after result(), replays
    them and ends (a second pass used to wait for the result the first pass had taken)."""
    engine, _ = make()
    h = engine.submit(Request([1, 2, 3], max_new_tokens=3))
    first = [t.token for t in h]  # no background thread: the iteration drives step()
    steps = engine.stats["steps"]
    assert first == ScriptedBackend.expected([1, 2, 3], 3) == h.result(timeout=1).tokens
    assert [t.token for t in h.stream(timeout=1)] == first
    assert [t.index for t in h] == [0, 1, 2] and engine.stats["steps"] == steps  # a replay runs no step

    with engine:  # consumers in two threads each see every token
        h = engine.submit(Request([4], max_new_tokens=20))
        seen = [None, None]

        def consume(i):
            seen[i] = [t.token for t in h.stream(timeout=10)]

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        result = h.result(timeout=10)
        for t in threads:
            t.join(timeout=10)
    assert seen[0] == seen[1] == result.tokens == ScriptedBackend.expected([4], 20)


def test_polling_a_handle_with_timeout_zero_drives_the_engine():
    """Without the background thread, stream(timeout=0) runs a step before it may time out: a poll
    loop finishes the request (it spun forever when the deadline was checked first)."""
    engine, _ = make()
    h = engine.submit(Request([1, 2, 3], max_new_tokens=3))
    tokens, tries = [], 0
    while not h.done and tries < 20:
        tries += 1
        try:
            tokens += [t.token for t in h.stream(timeout=0)][len(tokens):]
        except TimeoutError:
            pass
    assert h.done and tokens == ScriptedBackend.expected([1, 2, 3], 3)


def test_a_poll_without_the_background_thread_drives_one_step_then_times_out():
    # timeout=0 without the background thread: each wait runs exactly one step, then raises
    # TimeoutError naming the request if that step did not deliver (here b waits behind a).
    engine, backend = make(max_slots=1)
    a = engine.submit(Request([1, 2], max_new_tokens=3))
    b = engine.submit(Request([3], max_new_tokens=1))
    with pytest.raises(TimeoutError, match=rf"^request {b.request_id}: not finished within 0 s"):
        b.result(timeout=0)
    assert len(backend.steps) == 1
    with pytest.raises(TimeoutError, match=rf"^request {b.request_id}: no output within 0 s"):
        next(iter(b.stream(timeout=0)))
    assert len(backend.steps) == 2 and not a.done
    assert b.result().tokens == ScriptedBackend.expected([3], 1) and a.result().finish_reason is FinishReason.LENGTH


def test_waits_on_a_running_engine_time_out_naming_the_request():
    # With the background thread busy (its step blocked), result(timeout=) and stream(timeout=)
    # raise TimeoutError after about the timeout instead of waiting for ever.
    engine = LLMEngine(backend := GatedBackend())
    with engine:
        h = engine.submit(Request([1, 2], max_new_tokens=2))
        try:
            with pytest.raises(TimeoutError, match=rf"^request {h.request_id}: not finished within 0.05 s"):
                h.result(timeout=0.05)
            with pytest.raises(TimeoutError, match=rf"^request {h.request_id}: no output within 0.05 s"):
                next(iter(h.stream(timeout=0.05)))
        finally:
            backend.gate.set()
        assert h.result(timeout=5).tokens == ScriptedBackend.expected([1, 2], 2)
        # ... and a timeout not yet due does not fire (the request needs a few milliseconds)
        assert engine.submit(Request([3], max_new_tokens=2)).result(timeout=0.95).finish_reason is FinishReason.LENGTH


def test_iterating_a_handle_waits_for_the_background_threads_tokens():
    # `for tok in handle` (no timeout) on a running engine waits for each token as it is decoded.
    engine = LLMEngine(backend := GatedBackend())
    with engine:
        h = engine.submit(Request([1, 2], max_new_tokens=3))
        seen, errors = [], []

        def consume():
            try:
                seen.extend(t.token for t in h)
            except Exception as exc:  # reported below
                errors.append(exc)

        consumer = threading.Thread(target=consume)
        consumer.start()
        time.sleep(0.1)  # the consumer waits: nothing was decoded yet
        backend.gate.set()
        consumer.join(5)
        assert errors == [] and seen == h.result(timeout=5).tokens == ScriptedBackend.expected([1, 2], 3)


def test_a_timed_wait_takes_over_when_shutdown_stops_the_background_thread():
    # shutdown(cancel=False) stops the thread and leaves the request queued; a handle already waiting
    # with a timeout notices within its 0.05 s polls and drives the remaining steps itself.
    backend = GatedBackend()
    engine = LLMEngine(backend)
    engine.start()
    h = engine.submit(Request([1, 2], max_new_tokens=3))
    assert backend.entered.wait(5)  # the thread is inside its first step
    stopper = shutdown_in_background(engine)  # the thread stops after that step
    threading.Timer(0.2, backend.gate.set).start()  # the step ends while the handle below waits
    res = h.result(timeout=3)
    stopper.join(5)
    assert res.finish_reason is FinishReason.LENGTH and res.tokens == ScriptedBackend.expected([1, 2], 3)
    assert not engine.is_running


# ------------------------------------------- cancellation targets the request, not its id
def test_a_stale_handle_cancels_nothing_once_its_request_is_done():
    """A handle whose request finished must not cancel a newer request that reuses the id."""
    engine, _ = make(max_slots=2)
    old = engine.submit(Request([1, 2], max_new_tokens=2, request_id="job"))
    assert old.result().finish_reason is FinishReason.LENGTH
    new = engine.submit(Request([3, 4], max_new_tokens=4, request_id="job"))
    assert old.cancel() is False
    r = new.result()
    assert r.finish_reason is FinishReason.LENGTH and r.tokens == ScriptedBackend.expected([3, 4], 4)
    # the id-based public API still cancels whatever live request holds the id now
    again = engine.submit(Request([5], max_new_tokens=9, request_id="job"))
    assert engine.abort_request("job") is True and engine.abort_request("job") is False
    assert again.result().finish_reason is FinishReason.CANCELLED and again.cancel() is False


def test_an_abort_racing_with_the_natural_finish_spares_the_next_request_with_that_id():
    """abort_request("job") while the step in which "job" finishes runs (another thread in
    production): the queued abort must not cancel a new "job" submitted after that step."""
    state = {}

    class Backend(ScriptedBackend):
        def step(self, prefill, decode):
            out = super().step(prefill, decode)
            if state.pop("abort_now", False):
                state["aborted"] = engine.abort_request("job")
            return out

    engine = LLMEngine(Backend(max_slots=2))
    engine.add_request(Request([1, 2], max_new_tokens=1, request_id="job"))
    state["abort_now"] = True
    (first,) = [o for o in engine.step() if isinstance(o, RequestResult)]
    assert state["aborted"] is True and first.finish_reason is FinishReason.LENGTH  # it finished anyway
    h = engine.submit(Request([5, 6], max_new_tokens=3, request_id="job"))
    second = run_all(engine)["job"]
    assert second.finish_reason is FinishReason.LENGTH and second.tokens == ScriptedBackend.expected([5, 6], 3)
    assert h.result() is second


def test_closing_an_async_stream_after_its_result_was_queued_spares_a_reused_id():
    """The stream's result is queued but not yet yielded when the consumer leaves; the
    cancel on close must not reach a new request that reuses the id meanwhile."""
    gate, state = threading.Event(), {"block": False}

    class Backend(ScriptedBackend):
        def step(self, prefill, decode):
            if state["block"]:
                assert gate.wait(5)
            return super().step(prefill, decode)

    engine = LLMEngine(Backend(max_slots=2))

    async def main():
        agen = engine.stream(Request([1, 2], max_new_tokens=1, request_id="job"))
        first = await agen.__anext__()
        assert isinstance(first, TokenOutput)
        for _ in range(500):  # the result is on its way to the stream's queue
            if not engine.has_unfinished():
                break
            await asyncio.sleep(0.01)
        assert not engine.has_unfinished()
        state["block"] = True
        new = engine.submit(Request([5, 6], max_new_tokens=3, request_id="job"))
        await agen.aclose()  # leaves before the queued RequestResult is yielded
        gate.set()
        return new.result(timeout=5)

    try:
        r = asyncio.run(main())
    finally:
        gate.set()
        engine.shutdown()
    assert r.finish_reason is FinishReason.LENGTH and r.tokens == ScriptedBackend.expected([5, 6], 3)


def test_generate_with_an_invalid_request_submits_none_of_them():
    """generate() checks every request before submitting any: a bad one leaves nothing queued."""
    engine, backend = make(max_slots=2, max_seq_len=64)
    with pytest.raises(ValueError, match=r"^prompt_token_ids: token id 500 at index 0 is outside") as e:
        engine.generate([Request([1, 2], max_new_tokens=30), Request([500], max_new_tokens=3)])
    assert e.value.__notes__ == ["generate(): request 1 of 2 is invalid; none was submitted"]
    assert engine.num_unfinished == 0
    (r,) = engine.generate([Request([3], max_new_tokens=2)])
    assert r.tokens == ScriptedBackend.expected([3], 2) and engine.stats["steps"] == 2 and not engine.has_unfinished()


def test_generate_cancels_what_it_submitted_when_a_later_submission_fails():
    """A failure only admission sees (here the same id twice in one call) cancels the requests
    already submitted, so none is left running; the error is admission's own."""
    engine, backend = make(max_slots=2, max_seq_len=64)
    with pytest.raises(ValueError, match="^request_id: 'dup' is already in use") as e:
        engine.generate([Request([1], max_new_tokens=3), Request([1, 2], max_new_tokens=30, request_id="dup"),
                         Request([3], max_new_tokens=3, request_id="dup")])
    assert e.value.__notes__ == ["generate(): submitting request 2 of 3 failed; the 2 already submitted were cancelled"]
    assert not engine.has_unfinished() and backend.history == {}
    (r,) = engine.generate([Request([3], max_new_tokens=2)])
    assert r.finish_reason is FinishReason.LENGTH and not engine.has_unfinished()


def test_an_id_taken_between_validation_and_admission_is_refused():
    # Another thread may take the id after the request was checked and before it is admitted
    # (emulated here from inside admission): admission checks again under the lock, so neither
    # request is lost or replaced.
    class RacingEngine(LLMEngine):
        racing = False

        def _neg_mode(self, request):
            mode = super()._neg_mode(request)
            if request.request_id == "job" and not self.racing and self._seqs == {}:
                self.racing = True
                self.add_request(Request([1], max_new_tokens=2, request_id="job"))
            return mode

    engine = RacingEngine(ScriptedBackend())
    with pytest.raises(ValueError, match="^request_id: 'job' is already in use by an unfinished request"):
        engine.add_request(Request([5, 6], max_new_tokens=3, request_id="job"))
    res = run_all(engine)
    assert list(res) == ["job"] and res["job"].tokens == ScriptedBackend.expected([1], 2)


def test_an_id_named_by_two_generate_calls_stays_reserved_until_both_are_in():
    # Two generate() calls name "req-1" (the second runs inside the first's submission, as another
    # thread would): when the inner one ends, "req-1" stays reserved for the outer call, so the
    # outer call's next automatic id skips it and its own "req-1" request is admitted.
    class NestingEngine(LLMEngine):
        nested = None

        def _neg_mode(self, request):
            if self.nested is None and request.request_id is None and "req-1" in self._reserved_ids:
                self.nested = self.generate([Request([7], max_new_tokens=1, request_id="req-1")])
            return super()._neg_mode(request)

    engine = NestingEngine(ScriptedBackend())
    outer = engine.generate([Request([1], max_new_tokens=1), Request([2], max_new_tokens=1),
                             Request([3], max_new_tokens=1, request_id="req-1")])
    assert [r.request_id for r in engine.nested] == ["req-1"]
    assert [r.request_id for r in outer] == ["req-0", "req-2", "req-1"]
    assert [r.tokens for r in outer] == [ScriptedBackend.expected([p], 1) for p in (1, 2, 3)]


def test_the_frontends_default_cancel_reaches_only_the_handles_own_request():
    """Engines that implement only abort_request(id) (the TensorRT-LLM engine) get object-based
    handle cancellation from the front end: a stale handle never calls abort_request for the
    newer request that holds its id."""
    from trt_neg.runtime.frontend import EngineFrontend

    class IdEngine(EngineFrontend):
        is_running = False

        def __init__(self):
            super().__init__(max_slots=2, max_seq_len=8, max_tokens_per_step=4, vocab_size=10, eos_token_ids=[],
                             neg_enabled=False, neg_seed=0)
            self.listeners, self.aborted = {}, []

        def _enqueue(self, seq, listener):
            self.listeners[seq] = listener

        def abort_request(self, request_id):
            with self._lock:
                if request_id not in self._seqs:
                    return False
                self.aborted.append(self._seqs[request_id])
                return True

        def finish(self, seq):  # retire, then (later) deliver the result, as the engines do
            seq.finish_reason = FinishReason.LENGTH
            with self._lock:
                del self._seqs[seq.request_id]
            return lambda: self.listeners.pop(seq)(seq.result())

        def start(self):
            return self

        def shutdown(self, cancel=True):
            pass

        def _progress(self):
            pass

    engine = IdEngine()
    old = engine.submit(Request([1], request_id="job"))
    (old_seq,) = engine.listeners
    deliver = engine.finish(old_seq)  # retired, result not yet delivered: the id is free
    new = engine.submit(Request([2], request_id="job"))
    assert old.cancel() is False and engine.aborted == []
    deliver()
    assert old.done and old.cancel() is False and engine.aborted == []
    assert new.cancel() is True and engine.aborted == [new._seq]


def test_a_failed_prefill_is_reported_once_without_a_spurious_release_error(caplog):
    """The backend failed the prefill, so it never filled the slot: retiring the request must not log
    a second error for releasing that (free) slot. A prefilled sequence's failed release is still logged."""
    engine, backend = make(max_slots=2, fail_when=lambda p, d: any(r.token_ids == (42,) for r in p))
    bad = engine.add_request(Request([42], max_new_tokens=4))
    with caplog.at_level("DEBUG", logger="trt_neg.runtime.llm_engine"):
        res = run_all(engine)
    assert res[bad].finish_reason is FinishReason.ERROR and "scripted backend failure" in res[bad].error
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["backend step failed"]
    assert backend.history == {}
    ok = engine.add_request(Request([1, 2], max_new_tokens=3))  # the slot is usable again
    assert run_all(engine)[ok].tokens == ScriptedBackend.expected([1, 2], 3)

    caplog.clear()
    engine, backend = make(max_slots=1)
    rid = engine.add_request(Request([1, 2], max_new_tokens=4))
    engine.step()
    backend.history.clear()  # the backend lost a slot it held: releasing it fails, and that is an error
    engine.abort_request(rid)
    engine.step()
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == ["backend.release(0) failed"]


# ------------------------------------------------ found by a model-based (stateful) test of the engine
def _changed_after_construction(field, value):
    req = Request([1, 2], max_new_tokens=3)
    setattr(req, field, value)
    return req


@pytest.mark.parametrize("field, value", [
    ("prompt_token_ids", ["x"]),  # validate() raised TypeError: '>=' not supported between str and int
    ("prompt_token_ids", 5),  # TypeError: object of type 'int' has no len()
    ("stop_token_ids", [None]),  # TypeError
])
def test_validate_names_the_field_of_a_request_changed_after_construction(field, value):
    engine = LLMEngine(ScriptedBackend(max_slots=2))
    with pytest.raises(ValueError, match=rf"^{field}:"):
        engine.validate(_changed_after_construction(field, value))


@pytest.mark.parametrize("field, value", [
    ("prompt_token_ids", ["x"]),  # generate() raised TypeError
    ("prompt_token_ids", [-1]),  # generate() submitted request 0, then cancelled it
    ("max_new_tokens", 0),
    ("neg_mode", 2),
    ("sampling", None),
    ("ignore_eos", "yes"),
    ("request_id", 5),
])
def test_generate_refuses_a_request_changed_after_construction_before_submitting_any(field, value):
    """docs/runtime.md: generate validates every request before it submits any, so an invalid one raises
    its ValueError with nothing queued (and no output reaches on_output)."""
    engine = LLMEngine(ScriptedBackend(max_slots=2))
    seen = []
    with pytest.raises(ValueError, match=rf"^{field}:") as e:
        engine.generate([Request([3], max_new_tokens=2), _changed_after_construction(field, value)],
                        on_output=seen.append)
    assert e.value.__notes__ == ["generate(): request 1 of 2 is invalid; none was submitted"]
    assert seen == [] and engine.stats["steps"] == 0 and not engine.has_unfinished()


def test_generate_with_distinct_ids_never_collides_with_an_engine_assigned_id():
    """The first request gets the engine-assigned id "req-1", which the second one names itself: every
    request is valid and their ids are distinct, yet generate() failed ("request_id: 'req-1' is already in
    use") after submitting and cancelling the first."""
    engine = LLMEngine(ScriptedBackend(max_slots=2))
    engine.generate([Request([1], max_new_tokens=1)])  # takes "req-0"
    first, second = engine.generate([Request([2], max_new_tokens=2),
                                     Request([3], max_new_tokens=2, request_id="req-1")])
    assert second.request_id == "req-1" and first.request_id != "req-1"
    assert first.finish_reason is second.finish_reason is FinishReason.LENGTH
    assert first.tokens == ScriptedBackend.expected([2], 2) and second.tokens == ScriptedBackend.expected([3], 2)


def test_generate_named_ids_are_not_taken_by_another_submitters_automatic_id():
    """Another submitter's request (automatic id) admitted between the submissions of one generate() call
    took "req-1", which that call's second request names: generate() failed after cancelling its first."""
    engine = LLMEngine(ScriptedBackend(max_slots=4))
    enqueue, other = engine._enqueue, []

    def enqueue_then_another_submitter(seq, listener):
        enqueue(seq, listener)
        if not other:  # as another thread would, between generate()'s first and second submission
            other.append(None)
            other[0] = engine.submit(Request([7], max_new_tokens=1))

    engine._enqueue = enqueue_then_another_submitter
    first, second = engine.generate([Request([2], max_new_tokens=2),
                                     Request([3], max_new_tokens=2, request_id="req-1")])
    assert second.request_id == "req-1" and len({first.request_id, second.request_id, other[0].request_id}) == 3
    assert other[0].result().tokens == ScriptedBackend.expected([7], 1) and engine._reserved_ids == {}
    engine.submit(Request([4], max_new_tokens=1, request_id="x")).result()
    with pytest.raises(ValueError, match="already in use"):  # the reservation ends with the call, even a failed one
        engine.generate([Request([5], max_new_tokens=1, request_id="y"),
                         Request([6], max_new_tokens=1, request_id="y")])
    assert engine._reserved_ids == {}
