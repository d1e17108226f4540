"""TrtllmExecutorEngine and ``run.py --backend trtllm``.

CPU tests drive the real ``trt_neg/trtllm/executor.py`` over a recording fake of
``tensorrt_llm.bindings.executor`` (tests/trtllm_stub/tensorrt_llm/bindings/executor.py, put
on sys.path per test, never installed) whose Executor replays scripted responses. The
``trtllm``-marked test decodes a real tiny engine (``TRT_NEG_TINY_ENGINE``) in the container.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from trt_neg.runtime import LLMEngine, Request, RequestResult, SamplingParams, TokenOutput
from trt_neg.runtime.testing import ScriptedBackend

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import run  # noqa: E402

VOCAB, SLOTS, MAX_INPUT, MAX_SEQ, MAX_TOKENS, EOS = 100, 4, 32, 48, 64, [2, 3]
MPI_ENV = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE"))


@pytest.fixture
def fake(trtllm_stub, monkeypatch):
    """The fake executor module; plugin loading recorded into its EVENTS."""
    tle = importlib.import_module("tensorrt_llm.bindings.executor")
    tle.reset()
    plugins = importlib.import_module("trt_neg.trtllm.plugins")

    def load_plugin_library(path=None):
        tle.EVENTS.append(("load_plugin_library", None if path is None else str(path)))
        return [] if path is None else [Path(path)]

    monkeypatch.setattr(plugins, "load_plugin_library", load_plugin_library)
    monkeypatch.delenv(plugins.PLUGIN_LIBRARY_ENV, raising=False)
    for names in MPI_ENV:  # not under MPI unless a test says so
        for name in names:
            monkeypatch.delenv(name, raising=False)
    yield tle
    for inst in tle.INSTANCES:
        inst.shutdown()
    tle.reset()


def make_engine_dir(path: Path, *, neg_enabled=True, hf_model_dir=None, plugin_library="lib/libtrt_neg_plugins.so",
                    pad_token_id=None, world_size=1, eos_token_id=EOS) -> Path:
    from trt_neg.trtllm.engine_dir import write_build_info

    path.mkdir(parents=True, exist_ok=True)
    config = {
        "version": "1.2.1",
        "pretrained_config": {
            "architecture": "RecurrentGemmaForCausalLM", "trt_neg_architecture": "DarwinNegForCausalLM",
            "vocab_size": VOCAB, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id,
            "mapping": {"world_size": world_size, "tp_size": world_size, "pp_size": 1},
            "neg_config": {"head_hidden_size": 8, "activation": "silu", "top_k": 8, "temperature": 1.0, "seed": 5,
                           "enabled": neg_enabled},
        },
        "build_config": {"max_batch_size": SLOTS, "max_input_len": MAX_INPUT, "max_seq_len": MAX_SEQ,
                         "max_num_tokens": MAX_TOKENS, "max_beam_width": 1},
    }
    (path / "config.json").write_text(json.dumps(config))
    for r in range(world_size):
        (path / f"rank{r}.engine").write_bytes(b"")
    write_build_info(path, plugin_library=plugin_library, hf_model_dir=hf_model_dir, tensorrt_llm_version="1.2.1")
    return path


def open_engine(path: Path, **kwargs):
    from trt_neg.trtllm.executor import TrtllmExecutorEngine

    return TrtllmExecutorEngine(path, poll_interval_s=0.01, **kwargs)


def script(tle, steps_by_prompt: dict):
    """RESPONDER: the steps for a request, chosen by its first prompt token."""
    tle.RESPONDER = lambda request, rid: list(steps_by_prompt[request.input_token_ids[0]])


def steps(tle, tokens, entropies=None, fired=None):
    entropies = entropies or [0.5 + 0.1 * i for i in range(len(tokens))]
    fired = fired or [0] * len(tokens)
    return [tle.Step(t, e, f) for t, e, f in zip(tokens, entropies, fired)]


class CharTokenizer:
    """Token id i decodes to one letter; enough for the runtime's incremental detokenizer."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i % 26) for i in ids if not (skip_special_tokens and i in EOS))


# ------------------------------------------------------------------------- request mapping
def test_executor_setup_and_request_mapping(fake, tmp_path):
    tle = fake
    path = make_engine_dir(tmp_path / "engine")
    script(tle, {5: steps(tle, [10, 11, 12, 13]),
                 7: [tle.Step(20, 0.1, 0), tle.Step(21, 0.1, 0, final=tle.FinishReason.END_ID)]})
    engine = open_engine(path, max_batch_size=2)
    try:
        # the plugin library (relative path resolved against the engine dir) is loaded before the executor
        assert tle.EVENTS[:2] == [("load_plugin_library", str(path / "lib/libtrt_neg_plugins.so")),
                                  ("Executor", str(path))]
        (ex,) = tle.INSTANCES
        cfg = ex.config
        assert ex.model_type is tle.ModelType.DECODER_ONLY
        assert cfg.max_beam_width == 1 and cfg.enable_chunked_context is False
        assert cfg.kv_cache_config.enable_block_reuse is False and cfg.batching_type is tle.BatchingType.INFLIGHT
        assert cfg.max_batch_size == 2 and cfg.max_num_tokens == MAX_TOKENS
        assert [(a.name, a.gather_context) for a in cfg.additional_model_outputs] == [
            ("neg_entropy", False), ("neg_fired", False)]

        sampled = Request([5, 6, 7], max_new_tokens=4, stop_token_ids=[9],
                          sampling=SamplingParams(temperature=0.7, top_k=5, top_p=0.9, seed=11))
        greedy = Request([7] * 30, max_new_tokens=30, ignore_eos=True)  # capped: max_seq_len - prompt = 18
        r1, r2 = engine.generate([sampled, greedy])
        (id1, q1), (id2, q2) = sorted(ex.enqueued.items())
        assert q1.input_token_ids == [5, 6, 7] and q1.max_tokens == 4 and q1.streaming is True
        sc = q1.sampling_config
        assert (sc.beam_width, sc.top_k, sc.top_p, sc.temperature, sc.seed) == (1, 5, 0.9, 0.7, 11)
        assert q1.end_id == -1 and q1.pad_id == EOS[0] and q1.stop_words == [[2], [3], [9]]
        assert [(a.name, a.gather_context) for a in q1.output_config.additional_model_outputs] == [
            ("neg_entropy", False), ("neg_fired", False)]
        assert q1.return_all_generated_tokens is False
        sc = q2.sampling_config  # greedy: top-k 1, no temperature / top-p, no seed
        assert (sc.beam_width, sc.top_k, sc.top_p, sc.temperature, sc.seed) == (1, 1, None, None, None)
        assert q2.max_tokens == MAX_SEQ - 30 and q2.stop_words is None
        assert r1.seed == 11 and r2.seed is None and r1.neg_mode == r2.neg_mode == 1
    finally:
        engine.shutdown()
    assert ("shutdown",) in tle.EVENTS


def test_unseeded_sampling_gets_a_reported_seed_and_explicit_filters(fake, tmp_path):
    tle = fake
    script(tle, {5: steps(tle, [10])})
    with open_engine(make_engine_dir(tmp_path / "e", pad_token_id=0)) as engine:
        (res,) = engine.generate([Request([5], max_new_tokens=1, sampling=SamplingParams(temperature=1.3))])
        (q,) = tle.INSTANCES[0].enqueued.values()
    sc = q.sampling_config  # top_k 0 / top_p 1.0 passed explicitly: both unset would mean greedy in TRT-LLM
    assert (sc.top_k, sc.top_p, sc.temperature) == (0, 1.0, 1.3)
    assert sc.seed == res.seed and res.seed is not None and q.pad_id == 0


# ------------------------------------------------------------------------ streaming
def test_streaming_order_neg_extras_and_result(fake, tmp_path):
    tle = fake
    script(tle, {
        5: steps(tle, [10, 11, 12, 13], entropies=[0.1, 2.5, 0.3, 3.0], fired=[0, 1, 0, 1]),
        6: steps(tle, [20, 21, 3], entropies=[0.2, 0.4, 0.6]),  # 3 = EOS: stop word, kept as last token
    })
    with open_engine(make_engine_dir(tmp_path / "e")) as engine:
        h1 = engine.submit(Request([5, 1], max_new_tokens=4))
        h2 = engine.submit(Request([6, 1, 1], max_new_tokens=10))
        s1, s2 = list(h1.stream(timeout=10)), list(h2.stream(timeout=10))
        r1, r2 = h1.result(timeout=10), h2.result(timeout=10)
    assert all(isinstance(t, TokenOutput) for t in s1 + s2)
    assert [(t.index, t.token, t.entropy, t.fired) for t in s1] == [
        (0, 10, pytest.approx(0.1), False), (1, 11, pytest.approx(2.5), True), (2, 12, pytest.approx(0.3), False),
        (3, 13, pytest.approx(3.0), True)]
    assert [t.token for t in s2] == [20, 21, 3] and not any(t.fired for t in s2)
    assert r1.tokens == [10, 11, 12, 13] and r1.finish_reason.value == "length"
    assert r1.fired == [False, True, False, True] and r1.gate_activation_rate == 0.5
    assert r1.entropies == pytest.approx([0.1, 2.5, 0.3, 3.0])
    assert r2.tokens == [20, 21, 3] and r2.finish_reason.value == "stop" and r2.gate_activation_rate == 0.0
    assert r1.ttft is not None and r1.ttft >= 0 and len(r1.token_latencies) == 3
    assert [t.time for t in s1] == r1.token_times
    d = r1.to_dict()
    assert d["tokens"] == r1.tokens and d["gate_activation_rate"] == 0.5 and d["prompt_token_ids"] == [5, 1]


def test_kv_cache_memory_fraction_reaches_the_executor(fake, tmp_path):
    tle = fake
    engine = open_engine(make_engine_dir(tmp_path / "e"), kv_cache_free_gpu_memory_fraction=0.5)
    default = open_engine(make_engine_dir(tmp_path / "d"))
    engine.shutdown()
    default.shutdown()
    assert [ex.config.kv_cache_config.free_gpu_memory_fraction for ex in tle.INSTANCES] == [0.5, None]


def test_a_response_with_several_tokens_stops_at_our_stop_token(fake, tmp_path):
    # The executor may deliver several new tokens in one streaming response: the tokens after our
    # stop token (EOS, a stop word the executor did not act on yet) are not the request's.
    tle = fake
    script(tle, {5: []})  # the fake sends nothing by itself: the response below is the only one
    with open_engine(make_engine_dir(tmp_path / "e")) as engine:
        h = engine.submit(Request([5], max_new_tokens=10))
        (ex,) = tle.INSTANCES
        (exec_id,) = ex.enqueued
        result = tle.Result()
        result.output_token_ids = [[10, EOS[1], 11]]
        result.additional_outputs = [
            tle.AdditionalOutput("generation_neg_entropy", torch.tensor([[0.5, 0.6, 0.7] + [0.0] * 7])),
            tle.AdditionalOutput("generation_neg_fired", torch.tensor([[0, 1, 0] + [0] * 7], dtype=torch.int32))]
        engine._on_response(tle.Response(exec_id, result=result))
        r = h.result(timeout=10)
    assert r.finish_reason.value == "stop" and r.tokens == [10, EOS[1]] and r.fired == [False, True]
    assert r.entropies == pytest.approx([0.5, 0.6]) and [t.token for t in h] == [10, EOS[1]]
    assert ex.cancelled == [exec_id]  # the executor request, not finished by the executor, is cancelled


def test_pad_id_without_a_pad_or_eos_token_is_zero(fake, tmp_path):
    # pad_id falls back to the first EOS id, then to token 0 (a valid id of every vocabulary).
    tle = fake
    script(tle, {5: steps(tle, [10])})
    with open_engine(make_engine_dir(tmp_path / "e", eos_token_id=None)) as engine:
        assert engine.eos_token_ids == ()
        engine.generate([Request([5], max_new_tokens=1)])
        (q,) = tle.INSTANCES[0].enqueued.values()
    assert q.pad_id == 0 and q.stop_words is None


def test_timings_come_from_the_engines_clock(fake, tmp_path):
    # The clock passed to the engine times admission, each response and the finish (as LLMEngine's).
    tle = fake
    script(tle, {5: steps(tle, [10, 11, 12])})
    ticks = iter([100.0, 103.0, 107.0, 112.0, 120.0])
    with open_engine(make_engine_dir(tmp_path / "e"), clock=lambda: next(ticks)) as engine:
        r = engine.submit(Request([5], max_new_tokens=3)).result(timeout=10)
    assert (r.arrival_time, r.token_times, r.finish_time) == (100.0, [103.0, 107.0, 112.0], 120.0)
    assert r.ttft == 3.0 and r.token_latencies == [4.0, 5.0] and r.e2e_latency == 20.0


def test_the_plugin_library_variable_overrides_the_argument_and_build_info(fake, tmp_path, monkeypatch):
    # TRT_NEG_PLUGIN_LIB wins over plugin_library= and build_info.json: the engine asks for the
    # environment's list (load_plugin_library(None)).
    tle = fake
    plugins = importlib.import_module("trt_neg.trtllm.plugins")
    monkeypatch.setenv(plugins.PLUGIN_LIBRARY_ENV, "/opt/custom/libtrt_neg_plugins.so")
    engine = open_engine(make_engine_dir(tmp_path / "e"), plugin_library="/elsewhere/lib.so")
    engine.shutdown()
    assert tle.EVENTS[:2] == [("load_plugin_library", None), ("Executor", str(tmp_path / "e"))]


def test_late_responses_and_requests_without_a_listener_log_no_error(fake, tmp_path, caplog):
    # Our stop string cancels the executor request, whose final (cancelled) response then arrives
    # for a request already finished: it is dropped quietly; and a request added without a listener
    # is served without "listener failed" errors.
    tle = fake
    script(tle, {5: steps(tle, [10, 11, 12, 13, 14, 15]), 6: steps(tle, [20, 21])})
    engine = open_engine(make_engine_dir(tmp_path / "e"), tokenizer=CharTokenizer())
    with caplog.at_level(logging.ERROR, logger="trt_neg"):
        r = engine.submit(Request([5], max_new_tokens=6, stop=["mn"])).result(timeout=10)
        engine.add_request(Request([6], max_new_tokens=2))
        (ex,) = tle.INSTANCES
        deadline = time.monotonic() + 10
        while (ex._active or engine.has_unfinished()) and time.monotonic() < deadline:  # the late response is read
            time.sleep(0.01)
        time.sleep(0.05)
        engine.shutdown()
    assert r.finish_reason.value == "stop" and ex.cancelled == [1] and not ex._active
    assert [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR] == []


def test_bare_output_names_are_accepted(fake, tmp_path):
    tle = fake
    tle.OUTPUT_NAME_PREFIX = ""  # if 1.2.x does not prefix additional outputs with "generation_"
    script(tle, {5: steps(tle, [10, 11], entropies=[1.0, 2.0], fired=[1, 0])})
    with open_engine(make_engine_dir(tmp_path / "e")) as engine:
        (r,) = engine.generate([Request([5], max_new_tokens=2)])
    assert r.fired == [True, False] and r.entropies == pytest.approx([1.0, 2.0])


def test_listener_and_asyncio_stream(fake, tmp_path):
    tle = fake
    script(tle, {5: steps(tle, [10, 11, 12]), 6: steps(tle, [20, 21])})  # 6: script runs out -> pending
    with open_engine(make_engine_dir(tmp_path / "e")) as engine:
        seen = []
        rid = engine.add_request(Request([5], max_new_tokens=3), listener=seen.append)

        async def consume():
            items = [item async for item in engine.stream(Request([5], max_new_tokens=3))]
            early = []
            async for item in engine.stream(Request([6], max_new_tokens=5)):
                early.append(item)
                break  # leaving early cancels the request
            return items, early

        items, early = asyncio.run(consume())
        assert isinstance(items[-1], RequestResult) and [t.token for t in items[:-1]] == [10, 11, 12]
        assert len(early) == 1
        deadline = time.monotonic() + 5
        while engine.has_unfinished() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not engine.has_unfinished()  # the abandoned stream was cancelled
        assert len(tle.INSTANCES[0].cancelled) == 1
    assert seen[-1].request_id == rid and isinstance(seen[-1], RequestResult) and len(seen) == 4


# ------------------------------------------------------------------ finish reasons
@pytest.mark.parametrize("case, reason, error", [
    ("end_id", "stop", None),
    ("stop_words", "stop", None),
    ("length_early", "length", None),
    ("timed_out", "error", "timed out"),
    ("not_finished", "error", "without a finish reason"),
    ("error_response", "error", "executor: boom"),
    ("missing_output", "error", "neg_fired"),
])
def test_finish_reason_mapping(fake, tmp_path, case, reason, error):
    tle = fake
    F = tle.FinishReason
    body = {
        "end_id": [tle.Step(10, 0.1, 0), tle.Step(11, 0.1, 0, final=F.END_ID)],
        "stop_words": [tle.Step(10, 0.1, 0), tle.Step(11, 0.1, 0, final=F.STOP_WORDS)],
        "length_early": [tle.Step(10, 0.1, 0), tle.Step(11, 0.1, 0, final=F.LENGTH)],
        "timed_out": [tle.Step(10, 0.1, 0), tle.Step(final=F.TIMED_OUT)],
        "not_finished": [tle.Step(10, 0.1, 0), tle.Step(final=F.NOT_FINISHED)],
        "error_response": [tle.Step(10, 0.1, 0), tle.Step(error="boom")],
        "missing_output": [tle.Step(10, 0.1, None)],
    }[case]
    script(tle, {5: body})
    with open_engine(make_engine_dir(tmp_path / "e"), tokenizer=CharTokenizer()) as engine:
        (r,) = engine.generate([Request([5], max_new_tokens=8)])
    assert r.finish_reason.value == reason
    assert (r.error is None) if error is None else (error in r.error)
    if case in ("end_id", "stop_words", "length_early"):
        assert r.tokens == [10, 11] and r.text == "kl"


def test_unrecognised_output_names_fail_the_request_clearly(fake, tmp_path):
    tle = fake
    tle.OUTPUT_NAME_PREFIX = "other_"
    script(tle, {5: steps(tle, [10, 11])})
    with open_engine(make_engine_dir(tmp_path / "e")) as engine:
        (r,) = engine.generate([Request([5], max_new_tokens=2)])
        (ex,) = tle.INSTANCES
    assert ex.cancelled == list(ex.enqueued)  # the executor request is not left running
    assert r.finish_reason.value == "error" and "lacks the additional output 'neg_entropy'" in r.error
    assert "other_neg_entropy" in r.error and not engine.has_unfinished()


def test_token_slice_layouts():
    from trt_neg.trtllm.executor import _token_slice

    full = [[0.0, 1.0, 2.0, 3.0, 0.0, 0.0]]  # [beam, max_tokens]: the executor's whole buffer
    assert _token_slice(full, 1, 2, "x") == [1.0, 2.0]
    assert _token_slice([[[5], [6], [7]]], 2, 1, "x") == [7]  # [beam, max_tokens, 1]
    assert _token_slice([[8.0, 9.0]], 4, 2, "x") == [8.0, 9.0]  # a per-step slice
    assert _token_slice([1, 2, 3], 0, 3, "x") == [1, 2, 3]  # 1-D
    with pytest.raises(RuntimeError, match="tokens 3..4"):
        _token_slice([[1.0, 2.0, 3.0, 4.0]], 3, 2, "x")


def test_stop_string_is_ours_and_cancels_the_executor_request(fake, tmp_path):
    tle = fake
    script(tle, {5: steps(tle, [10, 11, 12, 13, 14, 15])})  # k l m n o p
    with open_engine(make_engine_dir(tmp_path / "e"), tokenizer=CharTokenizer()) as engine:
        h = engine.submit(Request([5], max_new_tokens=6, stop=["mn"]))
        streamed = "".join(t.text for t in h.stream(timeout=10))
        r = h.result(timeout=10)
        (ex,) = tle.INSTANCES
    assert r.finish_reason.value == "stop" and r.tokens == [10, 11, 12, 13] and r.text == "kl" == streamed
    assert list(ex.enqueued) == ex.cancelled  # our stop cancels the executor request


# ------------------------------------------------------------------- cancellation
def test_cancel_ends_with_the_tokens_so_far(fake, tmp_path):
    tle = fake
    script(tle, {5: steps(tle, [10, 11])})  # then nothing: the request stays in flight
    with open_engine(make_engine_dir(tmp_path / "e")) as engine:
        h = engine.submit(Request([5], max_new_tokens=10))
        it = h.stream(timeout=10)
        assert [next(it).token, next(it).token] == [10, 11]
        assert h.cancel() is True and h.cancel() is False
        r = h.result(timeout=10)
        assert engine.abort_request(r.request_id) is False
        (ex,) = tle.INSTANCES
    assert r.finish_reason.value == "cancelled" and r.tokens == [10, 11]
    assert ex.cancelled == list(ex.enqueued)


def test_shutdown_cancels_unfinished_requests(fake, tmp_path):
    tle = fake
    script(tle, {5: []})
    engine = open_engine(make_engine_dir(tmp_path / "e"))
    h = engine.submit(Request([5], max_new_tokens=10))
    engine.shutdown()
    assert h.result(timeout=5).finish_reason.value == "cancelled"
    assert tle.EVENTS[-1] == ("shutdown",)
    with pytest.raises(RuntimeError, match="shut down"):
        engine.add_request(Request([5]))


# ------------------------------------------------------------------ bad requests
def test_bad_requests_are_rejected_before_enqueue_with_the_runtime_wording(fake, tmp_path):
    tle = fake
    script(tle, {5: []})
    reference = LLMEngine(ScriptedBackend(vocab_size=VOCAB, max_slots=SLOTS, max_seq_len=MAX_SEQ),
                          max_tokens_per_step=MAX_INPUT)
    with open_engine(make_engine_dir(tmp_path / "e")) as engine:
        engine.add_request(Request([5], max_new_tokens=3, request_id="busy"))
        reference.add_request(Request([5], max_new_tokens=3, request_id="busy"))
        bad = [
            Request([5, VOCAB]),  # outside the vocabulary
            Request([5], stop_token_ids=[VOCAB + 3]),
            Request([5] * MAX_SEQ),  # no room left in max_seq_len
            Request([5] * (MAX_INPUT + 1)),  # more than max_input_len / the step budget
            Request([5], stop=["x"]),  # stop strings need a tokenizer
            Request([5], request_id="busy"),
        ]
        for req in bad:
            with pytest.raises(ValueError) as ours:
                engine.add_request(req)
            with pytest.raises(ValueError) as theirs:
                reference.validate(req)
            assert str(ours.value) == str(theirs.value)
        with pytest.raises(ValueError, match="neg_mode: 0 .*built with NEG"):
            engine.add_request(Request([5], neg_mode=0))
        with pytest.raises(ValueError, match="max_new_tokens"):
            engine.add_request(Request([5], max_new_tokens=0))
        assert len(tle.INSTANCES[0].enqueued) == 1  # only "busy"


def test_engine_without_neg(fake, tmp_path):
    tle = fake
    script(tle, {5: [tle.Step(10), tle.Step(11)]})  # no NEG outputs in this engine
    with open_engine(make_engine_dir(tmp_path / "e", neg_enabled=False)) as engine:
        with pytest.raises(ValueError, match="neg_mode: 1 .*without NEG"):
            engine.add_request(Request([5], neg_mode=1))
        (r,) = engine.generate([Request([5], max_new_tokens=2)])
        (ex,) = tle.INSTANCES
    assert r.neg_mode == 0 and r.fired == [False, False] and all(math.isnan(e) for e in r.entropies)
    (q,) = ex.enqueued.values()
    assert q.output_config.additional_model_outputs is None and ex.config.additional_model_outputs is None


def test_limits_are_checked_against_the_engine(fake, tmp_path):
    path = make_engine_dir(tmp_path / "e")
    for kwargs, name in (({"max_batch_size": SLOTS + 1}, "max_batch_size"),
                         ({"max_seq_len": MAX_SEQ + 1}, "max_seq_len"), ({"max_num_tokens": 0}, "max_num_tokens")):
        with pytest.raises(ValueError, match=name):
            open_engine(path, **kwargs)


# ------------------------------------------------ multi-GPU: LEADER mode under MPI
def as_rank(monkeypatch, rank, size):
    """This process is MPI rank ``rank`` of ``size`` (what mpirun's Open MPI tells it)."""
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", str(rank))
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", str(size))


def test_tp2_leader_serves_like_a_single_gpu_engine(fake, tmp_path, monkeypatch):
    tle = fake
    as_rank(monkeypatch, 0, 2)
    script(tle, {5: steps(tle, [10, 11], entropies=[1.0, 2.0], fired=[0, 1])})
    path = make_engine_dir(tmp_path / "tp2", world_size=2)
    with open_engine(path) as engine:
        (r,) = engine.generate([Request([5], max_new_tokens=2)])
        (ex,) = tle.INSTANCES
        assert engine.is_leader and engine.is_running and (engine.mpi_rank, engine.mpi_size) == (0, 2)
    assert tle.EVENTS[:2] == [("load_plugin_library", str(path / "lib/libtrt_neg_plugins.so")),
                              ("Executor", str(path))]
    pc = ex.config.parallel_config  # LEADER mode, TensorRT-LLM's default devices and participants
    assert (pc.communication_type, pc.communication_mode) == (tle.CommunicationType.MPI, tle.CommunicationMode.LEADER)
    assert (pc.device_ids, pc.participant_ids, pc.orchestrator_config) == (None, None, None)
    assert r.tokens == [10, 11] and r.fired == [False, True] and len(ex.enqueued) == 1
    assert tle.EVENTS[-1] == ("shutdown",)


def test_single_gpu_engine_sets_no_parallel_config(fake, tmp_path):
    script(fake, {5: steps(fake, [10])})
    with open_engine(make_engine_dir(tmp_path / "e")) as engine:
        engine.generate([Request([5], max_new_tokens=1)])
        assert engine.is_leader and (engine.mpi_rank, engine.mpi_size) == (0, 1)
    assert fake.INSTANCES[0].config.parallel_config is None  # unchanged: the executor's defaults


def test_tp2_non_leader_never_enqueues(fake, tmp_path, monkeypatch):
    tle = fake
    as_rank(monkeypatch, 1, 2)
    path = make_engine_dir(tmp_path / "tp2", world_size=2)
    engine = open_engine(path)
    (ex,) = tle.INSTANCES
    assert not engine.is_leader and not engine.is_running  # no dispatcher: await_responses is the leader's
    assert tle.EVENTS == [("load_plugin_library", str(path / "lib/libtrt_neg_plugins.so")), ("Executor", str(path))]
    with pytest.raises(RuntimeError, match="rank 1 of 2 is not the leader"):
        engine.add_request(Request([5]))
    assert engine.abort_request("req-1") is False and not engine.has_unfinished()
    engine.shutdown()  # the real one returns when the leader has shut down
    assert ex.enqueued == {} and tle.EVENTS[-1] == ("shutdown",)
    assert not any(e[0] in ("enqueue_request", "cancel_request", "non-leader call") for e in tle.EVENTS)


def test_run_py_tp2_leader_and_non_leader(fake, tmp_path, monkeypatch):
    tle = fake
    path = make_engine_dir(tmp_path / "tp2", world_size=2)
    args = ["--backend", "trtllm", "--engine-dir", str(path), "--token-ids", "5", "--max-new-tokens", "2", "--json"]
    as_rank(monkeypatch, 1, 2)
    r = CliRunner().invoke(run.main, args)
    assert r.exit_code == 0, (r.output, r.exception)
    assert r.output == "" and r.stdout == ""  # nothing on stdout or stderr
    assert not any(e[0] in ("enqueue_request", "non-leader call") for e in tle.EVENTS)
    assert tle.EVENTS[-1] == ("shutdown",)

    tle.reset()
    script(tle, {5: steps(tle, [10, 11])})
    as_rank(monkeypatch, 0, 2)
    r = CliRunner().invoke(run.main, args)
    assert r.exit_code == 0, (r.output, r.exception)
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["tokens"] == [10, 11] and row["id"] == "ids0"


@pytest.mark.parametrize("size, expected", [
    (None, "this process is not running under MPI"),
    (4, "this process is one of 4 MPI processes"),
])
def test_tp2_engine_needs_mpirun_with_one_process_per_rank(fake, tmp_path, monkeypatch, size, expected):
    from trt_neg.trtllm.executor import MpiLaunchError

    if size is not None:
        as_rank(monkeypatch, 0, size)
    path = make_engine_dir(tmp_path / "tp2", world_size=2)
    command = f"mpirun -n 2 python run.py --backend trtllm --engine-dir {path} ..."
    with pytest.raises(MpiLaunchError) as exc:
        open_engine(path)
    assert expected in str(exc.value) and command in str(exc.value) and "tp 2, pp 1" in str(exc.value)
    assert fake.INSTANCES == [] and fake.EVENTS == []  # refused before the plugin library or the executor

    r = CliRunner().invoke(run.main, ["--backend", "trtllm", "--engine-dir", str(path), "--token-ids", "5"])
    assert r.exit_code == 1 and r.stdout == ""
    (line,) = [ln for ln in r.output.splitlines() if ln.strip()]
    assert line.startswith("Error: ") and expected in line and command in line


def test_single_gpu_engine_under_mpirun_is_refused(fake, tmp_path, monkeypatch):
    from trt_neg.trtllm.executor import MpiLaunchError

    as_rank(monkeypatch, 0, 2)
    with pytest.raises(MpiLaunchError, match="single-GPU engine .* one of 2 MPI processes: run it without mpirun"):
        open_engine(make_engine_dir(tmp_path / "e"))


def test_mpi_rank_and_size_come_from_tensorrt_llm_first(fake, monkeypatch):
    from trt_neg.trtllm.executor import mpi_world

    utils = importlib.import_module("tensorrt_llm._utils")
    assert mpi_world() == (0, 1)
    monkeypatch.setenv("PMI_RANK", "2")
    monkeypatch.setenv("PMI_SIZE", "3")
    assert mpi_world() == (2, 3)
    monkeypatch.setattr(utils, "mpi_rank", lambda: 1, raising=False)  # tensorrt_llm._utils (mpi4py) wins
    monkeypatch.setattr(utils, "mpi_world_size", lambda: 4, raising=False)
    assert mpi_world() == (1, 4)


def test_missing_rank_engine_is_named(fake, tmp_path, monkeypatch):
    from trt_neg.trtllm.engine_dir import EngineDirError, read_engine_dir

    path = make_engine_dir(tmp_path / "tp2", world_size=2)
    info = read_engine_dir(path)
    assert (info.world_size, info.tp_size, info.pp_size) == (2, 2, 1)
    assert [p.name for p in info.engine_files] == ["rank0.engine", "rank1.engine"]
    (path / "rank1.engine").unlink()
    with pytest.raises(EngineDirError, match=r"missing rank1\.engine \(a 2-GPU engine, tp 2 pp 1, needs rank0"):
        read_engine_dir(path)
    as_rank(monkeypatch, 0, 2)
    r = CliRunner().invoke(run.main, ["--backend", "trtllm", "--engine-dir", str(path), "--token-ids", "5"])
    assert r.exit_code == 2 and "missing rank1.engine" in r.output and fake.INSTANCES == []
    cfg = json.loads((path / "config.json").read_text())
    cfg["pretrained_config"]["mapping"] = {"world_size": 4, "tp_size": 2, "pp_size": 1}
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngineDirError, match="world_size 4 != tp_size 2 \\* pp_size 1"):
        read_engine_dir(path)


# -------------------------------------------------------------------- engine dir
def test_engine_dir_contract(tmp_path):
    from trt_neg.trtllm.engine_dir import BUILD_INFO_FILE, EngineDirError, read_engine_dir

    hf = tmp_path / "hf"
    hf.mkdir()
    path = make_engine_dir(tmp_path / "e", hf_model_dir=str(hf), plugin_library=None)
    info = read_engine_dir(path)
    assert (info.plugin_library, info.hf_model_dir, info.neg_enabled, info.neg_seed) == (None, hf, True, 5)
    assert (info.vocab_size, info.eos_token_ids, info.max_batch_size, info.max_input_len, info.max_seq_len,
            info.max_num_tokens, info.tensorrt_llm_version) == (VOCAB, tuple(EOS), SLOTS, MAX_INPUT, MAX_SEQ,
                                                                MAX_TOKENS, "1.2.1")
    build_info = json.loads((path / BUILD_INFO_FILE).read_text())

    def broken(change, match):
        data = dict(build_info)
        change(data)
        (path / BUILD_INFO_FILE).write_text(json.dumps(data))
        with pytest.raises(EngineDirError, match=match):
            read_engine_dir(path)

    broken(lambda d: d.update(build_info_version=2), "newer")
    broken(lambda d: d.pop("hf_model_dir"), "hf_model_dir is required")
    broken(lambda d: d.update(plugin_library=3), "plugin_library must be")
    (path / BUILD_INFO_FILE).unlink()
    with pytest.raises(EngineDirError, match="build_info.json: missing"):
        read_engine_dir(path)
    path = make_engine_dir(tmp_path / "e2")
    (path / "rank0.engine").unlink()
    with pytest.raises(EngineDirError, match="rank0.engine"):
        read_engine_dir(path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["pretrained_config"]["trt_neg_architecture"] = "LlamaForCausalLM"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngineDirError, match="not a Darwin-NEG engine"):
        read_engine_dir(path)
    with pytest.raises(EngineDirError, match="not a directory"):
        read_engine_dir(tmp_path / "nope")


# ------------------------------------------------------- without tensorrt_llm (real path)
def test_engine_class_fails_cleanly_without_tensorrt_llm(no_trtllm, tmp_path):
    from trt_neg.trtllm import TensorRTLLMUnavailable
    from trt_neg.trtllm.executor import TrtllmExecutorEngine

    with pytest.raises(TensorRTLLMUnavailable) as exc:
        TrtllmExecutorEngine(make_engine_dir(tmp_path / "e"))
    msg = str(exc.value)
    assert "tensorrt_llm 1.2.x" in msg and "container" in msg and "\n" not in msg


def test_run_py_trtllm_fails_cleanly_without_tensorrt_llm(no_trtllm, tmp_path):
    r = CliRunner().invoke(run.main, ["--backend", "trtllm", "--engine-dir", str(tmp_path / "X"), "hi"])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    (line,) = [ln for ln in r.output.splitlines() if ln.strip()]
    assert line.startswith("Error: ") and "tensorrt_llm 1.2.x" in line and "container" in line


def test_run_py_trtllm_subprocess_without_tensorrt_llm():
    if importlib.util.find_spec("tensorrt_llm") is not None:
        pytest.skip("tensorrt_llm is installed here")
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), "--backend", "trtllm", "--engine-dir", "X"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "tensorrt_llm 1.2.x" in line and "container" in line


# ------------------------------------------------------------------- run.py (fake)
@pytest.mark.parametrize("args, message", [
    (["--backend", "trtllm", "--token-ids", "5"], "--engine-dir is required"),
    (["--backend", "trtllm", "--engine-dir", "E", "--dtype", "float32", "--token-ids", "5"], "--dtype does not apply"),
    (["--backend", "trtllm", "--engine-dir", "E", "--device", "cpu", "--token-ids", "5"], "--device does not apply"),
    (["--backend", "trtllm", "--engine-dir", "E", "--batch-invariant", "--token-ids", "5"],
     "--batch-invariant does not apply"),
    (["--engine-dir", "E", "--token-ids", "5"], "--engine-dir applies only"),
])
def test_run_py_trtllm_usage_errors(args, message):
    r = CliRunner().invoke(run.main, args)
    assert r.exit_code == 2 and message in r.output


def test_run_py_trtllm_json_and_streaming(fake, tmp_path):
    tle = fake
    script(tle, {5: steps(tle, [10, 11, 12], entropies=[0.5, 2.0, 0.25], fired=[0, 1, 0]),
                 7: steps(tle, [20, 3])})
    path = make_engine_dir(tmp_path / "e")
    r = CliRunner().invoke(run.main, ["--backend", "trtllm", "--engine-dir", str(path), "--token-ids", "5,6",
                                      "--token-ids", "7", "--max-new-tokens", "3", "--json"])
    assert r.exit_code == 0, (r.output, r.exception)
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [row["id"] for row in rows] == ["ids0", "ids1"]
    assert rows[0]["tokens"] == [10, 11, 12] and rows[0]["fired"] == [False, True, False]
    assert rows[0]["gate_activation_rate"] == pytest.approx(1 / 3) and rows[0]["finish_reason"] == "length"
    assert rows[1]["tokens"] == [20, 3] and rows[1]["finish_reason"] == "stop" and rows[1]["neg_mode"] == 1
    assert set(rows[0]) == {"request_id", "prompt_token_ids", "tokens", "text", "finish_reason", "neg_mode",
                            "gate_activation_rate", "entropies", "fired", "seed", "ttft_s", "per_token_latency_s",
                            "mean_per_token_latency_s", "e2e_latency_s", "error", "id"}
    # the executor was given the engine's batch size (the torch default 8 does not apply)
    assert tle.INSTANCES[0].config.max_batch_size == SLOTS

    tle.reset()
    script(tle, {5: steps(tle, [10, 11])})
    r = CliRunner().invoke(run.main, ["--backend", "trtllm", "--engine-dir", str(path), "--token-ids", "5",
                                      "--max-new-tokens", "2"])
    assert r.exit_code == 0 and r.stdout == "10 11 \n" and "gate activation" in r.stderr

    r = CliRunner().invoke(run.main, ["--backend", "trtllm", "--engine-dir", str(path), "--token-ids", "5",
                                      "--mode", "0"])
    assert r.exit_code == 2 and "Invalid value for --mode: 0 (NEG off) is not available" in r.output, r.output
    r = CliRunner().invoke(run.main, ["--backend", "trtllm", "--engine-dir", str(path), "hello"])
    assert r.exit_code == 2 and "no tokenizer" in r.output
    r = CliRunner().invoke(run.main, ["--backend", "trtllm", "--engine-dir", str(tmp_path), "--token-ids", "5"])
    assert r.exit_code == 2 and "config.json: missing" in r.output


# ------------------------------------------------------------ real engine (container)
@pytest.mark.trtllm
def test_tiny_engine_matches_the_torch_backend_greedy():
    """Greedy NEG mode 1 on the tiny engine vs the torch backend: same tokens, fired flags and
    entropies (fp32 engine: 1e-3). TRT_NEG_TINY_ENGINE = an engine directory with build_info.json
    whose hf_model_dir is the tiny HF checkpoint; TRT_NEG_PLUGIN_LIB if the recorded library moved."""
    engine_dir = os.environ.get("TRT_NEG_TINY_ENGINE")
    if not engine_dir:
        pytest.skip("TRT_NEG_TINY_ENGINE is not set")
    from trt_neg.runtime.torch_backend import TorchBackend
    from trt_neg.trtllm.engine_dir import read_engine_dir
    from trt_neg.trtllm.executor import TrtllmExecutorEngine

    info = read_engine_dir(engine_dir)
    assert info.hf_model_dir is not None and info.neg_enabled
    prompts = [[1, 17, 33, 250, 7], [5, 6, 7, 8, 9, 10, 11], [42]]
    requests = [Request(p, max_new_tokens=12, ignore_eos=True) for p in prompts]
    with TrtllmExecutorEngine(engine_dir) as engine:
        got = engine.generate(requests)
    reference = LLMEngine(TorchBackend.from_pretrained(info.hf_model_dir, max_slots=len(prompts), dtype="float32"))
    expected = reference.generate([Request(p, max_new_tokens=12, ignore_eos=True) for p in prompts])
    for g, e in zip(got, expected):
        assert g.tokens == e.tokens
        assert g.fired == e.fired
        assert g.entropies == pytest.approx(e.entropies, abs=1e-3)
        assert g.finish_reason == e.finish_reason


def test_shutdown_from_a_listener_on_the_dispatcher_thread(fake, tmp_path):
    tle = fake
    script(tle, {5: steps(tle, [10, 11]), 6: steps(tle, [12])})  # then nothing: both stay in flight
    engine = open_engine(make_engine_dir(tmp_path / "e"))
    seen = []

    def stop_on_first(item):
        if isinstance(item, TokenOutput) and not seen:
            seen.append(item)
            engine.shutdown()  # runs on the dispatcher thread

    h1 = engine.submit(Request([5], max_new_tokens=10), on_output=stop_on_first)
    h2 = engine.submit(Request([6], max_new_tokens=10))
    assert h1.result(timeout=5).finish_reason.value == "cancelled"
    assert h2.result(timeout=5).finish_reason.value == "cancelled"
    for _ in range(500):
        if tle.EVENTS[-1] == ("shutdown",):
            break
        time.sleep(0.01)
    assert tle.EVENTS[-1] == ("shutdown",) and not engine.is_running


# ------------------------------------------------------ lifecycle and races (dispatcher)
def test_a_failure_handling_a_response_fails_only_that_request(fake, tmp_path):
    """As in LLMEngine: an error recording a token (here the tokenizer's) ends that request with
    ``error`` and cancels its executor request; it used to leave the request unfinished forever."""
    tle = fake

    class FailingTokenizer(CharTokenizer):
        def decode(self, ids, skip_special_tokens=True):
            if 12 in ids:
                raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
            return super().decode(ids, skip_special_tokens)

    script(tle, {5: steps(tle, [10, 11, 12, 13]), 6: steps(tle, [20, 21])})
    with open_engine(make_engine_dir(tmp_path / "e"), tokenizer=FailingTokenizer()) as engine:
        bad = engine.submit(Request([5], max_new_tokens=4))
        good = engine.submit(Request([6], max_new_tokens=2))
        r = bad.result(timeout=2)
        assert good.result(timeout=2).tokens == [20, 21]
        (ex,) = tle.INSTANCES
        assert r.finish_reason.value == "error" and r.error.startswith("UnicodeDecodeError: ")
        assert r.tokens == [10, 11, 12] and ex.cancelled == [1]  # bad's executor request, not good's
        assert not engine.has_unfinished()


def test_a_second_shutdown_returns_when_the_first_is_done(fake, tmp_path):
    """shutdown() from a listener hands the work to a helper thread; a later shutdown() (a ``with``
    block's exit) used to return at once, with the executor and the dispatcher still running."""
    tle = fake
    script(tle, {5: steps(tle, [10, 11]), 6: steps(tle, [12])})  # then nothing: both stay in flight
    engine = open_engine(make_engine_dir(tmp_path / "e"))
    asked = []

    def stop_on_first(item):
        if isinstance(item, TokenOutput) and not asked:
            engine.shutdown()  # on the dispatcher thread: returns at once
            asked.append(True)

    h1 = engine.submit(Request([5], max_new_tokens=10), on_output=stop_on_first)
    h2 = engine.submit(Request([6], max_new_tokens=10))
    deadline = time.monotonic() + 5
    while not asked and time.monotonic() < deadline:
        time.sleep(0.001)
    engine.shutdown()
    assert ("shutdown",) in tle.EVENTS and not engine.is_running
    assert h1.done and h2.done and h1.result().finish_reason.value == "cancelled"
    assert tle.EVENTS.count(("shutdown",)) == 1


def test_shutdown_without_cancel_lets_requests_finish(fake, tmp_path):
    """shutdown(cancel=False) used to report in-flight requests ``cancelled`` without cancelling
    them in the executor (whose own shutdown runs its active requests to their end)."""
    tle = fake
    script(tle, {5: steps(tle, [10, 11, 12])})
    engine = open_engine(make_engine_dir(tmp_path / "e"))
    h = engine.submit(Request([5], max_new_tokens=3))
    engine.shutdown(cancel=False)
    r = h.result(timeout=2)
    assert r.finish_reason.value == "length" and r.tokens == [10, 11, 12]
    assert tle.INSTANCES[0].cancelled == [] and tle.EVENTS[-1] == ("shutdown",)


def test_abort_request_racing_shutdown_never_reaches_a_shut_down_executor(fake, tmp_path):
    """abort_request looked the request up, let go of the lock, then called cancel_request: a
    shutdown() in between made it raise TensorRT-LLM's "Shutdown called" at the caller."""
    tle = fake
    script(tle, {5: steps(tle, [10, 11])})
    engine = open_engine(make_engine_dir(tmp_path / "e"))
    ex = engine.executor
    shut_down, cancelling = threading.Event(), threading.Event()
    real_cancel, real_shutdown = ex.cancel_request, ex.shutdown

    def slow_cancel(id=None):  # widens the window between the lookup and the executor call
        cancelling.set()
        shut_down.wait(0.3)
        return real_cancel(id)

    def recorded_shutdown():
        real_shutdown()
        shut_down.set()

    ex.cancel_request, ex.shutdown = slow_cancel, recorded_shutdown
    got = []

    def abort():
        try:
            got.append(engine.abort_request("r"))
        except Exception as exc:  # noqa: BLE001 - what the caller would see
            got.append(exc)

    aborter = threading.Thread(target=abort)

    def on_first(item):  # the executor finishes the request while abort_request is under way
        if isinstance(item, TokenOutput) and item.index == 0:
            aborter.start()
            cancelling.wait(2)

    h = engine.submit(Request([5], max_new_tokens=2, request_id="r"), on_output=on_first)
    r = h.result(timeout=2)
    engine.shutdown()
    aborter.join(2)
    assert got == [True] and not any(e[0] == "call after shutdown" for e in tle.EVENTS)
    assert (r.finish_reason.value, r.tokens) in (("length", [10, 11]), ("cancelled", [10]))  # length, unless slowed


def test_a_cancel_that_loses_the_race_keeps_the_natural_finish(fake, tmp_path):
    """handle.cancel() returns True when it asked the executor; if the executor had already
    finished the request, the result keeps that finish (docs/trtllm_runtime.md), once."""
    tle = fake
    script(tle, {7: steps(tle, [30, 31, 32]), 8: steps(tle, [40]), 5: steps(tle, [10])})
    with open_engine(make_engine_dir(tmp_path / "e")) as engine:
        held, release = threading.Event(), threading.Event()

        def hold_dispatcher(item):  # so that the next await_responses has both 8's token and 5's end
            if isinstance(item, TokenOutput) and item.index == 0:
                held.set()
                release.wait(5)

        engine.submit(Request([7], max_new_tokens=3), on_output=hold_dispatcher)
        assert held.wait(5)
        said, seen, victim = [], [], []
        engine.submit(Request([8], max_new_tokens=1),
                      on_output=lambda item: said.append(victim[0].cancel()) if isinstance(item, TokenOutput) else None)
        victim.append(engine.submit(Request([5], max_new_tokens=1), on_output=seen.append))
        release.set()
        r = victim[0].result(timeout=2)
    assert said == [True] and r.finish_reason.value == "length" and r.tokens == [10]
    assert [type(item).__name__ for item in seen] == ["TokenOutput", "RequestResult"]


@pytest.mark.parametrize("stop, reason, text", [(["zzz"], "length", "klm"), (["lm"], "stop", "k")])
def test_text_held_back_when_the_executor_ends_a_request_reaches_the_stream(fake, tmp_path, stop, reason, text):
    """The executor ends the request (LENGTH) while text is held back for a possible stop string: that
    text is streamed with the last token (it reached the result only), and a stop string it completes
    cuts it and makes the finish reason stop."""
    tle = fake
    script(tle, {5: [tle.Step(10, 0.1, 0), tle.Step(11, 0.1, 0), tle.Step(12, 0.1, 0, final=tle.FinishReason.LENGTH)]})
    with open_engine(make_engine_dir(tmp_path / "e"), tokenizer=CharTokenizer()) as engine:
        handle = engine.submit(Request([5], max_new_tokens=8, stop=stop))
        streamed = "".join(out.text for out in handle.stream(timeout=10))
        result = handle.result(timeout=10)
    assert (result.finish_reason.value, result.text, streamed) == (reason, text, text)


class ByteTokenizer:
    """Token t is the byte t: a token can end inside a UTF-8 character."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


@pytest.mark.parametrize("stop, reason, text", [((), "length", "e\ufffd"), (["\ufffd"], "stop", "e")])
def test_a_final_response_without_a_token_flushes_the_incomplete_end_into_the_result(fake, tmp_path, stop, reason,
                                                                                     text):
    # The last token is the lead byte of a 2-byte character; the executor then ends the request in a
    # response that brings no token. The text is the decode of the generated ids ("e" + U+FFFD), as
    # with LLMEngine, and a stop string that end completes cuts it there and makes it a stop (before
    # the fix the text kept the stop string, with finish reason "length").
    tle = fake
    script(tle, {97: [tle.Step(ord("e"), 0.1, 0), tle.Step(0xC3, 0.1, 0), tle.Step(final=tle.FinishReason.LENGTH)]})
    with open_engine(make_engine_dir(tmp_path / "e"), tokenizer=ByteTokenizer()) as engine:
        handle = engine.submit(Request([97], max_new_tokens=8, stop=stop))
        streamed = "".join(out.text for out in handle.stream(timeout=10))
        result = handle.result(timeout=10)
    assert (result.finish_reason.value, result.tokens, result.text) == (reason, [ord("e"), 0xC3], text)
    assert streamed == "e"  # the flushed end reaches the result only: no token carries it


def test_a_final_response_without_a_token_needs_no_tokenizer(fake, tmp_path):
    tle = fake
    script(tle, {5: [tle.Step(10, 0.1, 0), tle.Step(final=tle.FinishReason.LENGTH)]})
    with open_engine(make_engine_dir(tmp_path / "e")) as engine:
        result = engine.submit(Request([5], max_new_tokens=8)).result(timeout=10)
    assert (result.finish_reason.value, result.tokens, result.text, result.error) == ("length", [10], None, None)


def test_engine_limits_at_their_bounds(fake, tmp_path):
    # The smallest limits allowed work (one slot; max_seq_len 2), and below them the error names
    # the constructor's argument and the engine's bound.
    tle = fake
    path = make_engine_dir(tmp_path / "e")
    engine = open_engine(path, max_batch_size=1, max_seq_len=2)
    engine.shutdown()
    assert (tle.INSTANCES[0].config.max_batch_size, engine.max_slots, engine.max_seq_len) == (1, 1, 2)
    with pytest.raises(ValueError, match=rf"^max_batch_size: must be an integer in \[1, {SLOTS}\] \(the engine's "
                                         r"max_batch_size\), got 0$"):
        open_engine(path, max_batch_size=0)
    with pytest.raises(ValueError, match=rf"^max_seq_len: must be an integer in \[2, {MAX_SEQ}\] \(the engine's "
                                         r"max_seq_len\), got 1$"):
        open_engine(path, max_seq_len=1)


def test_background_threads_never_keep_the_process_alive(fake, tmp_path):
    # A program that forgets shutdown() must still exit: both engines' threads are daemons.
    engine = open_engine(make_engine_dir(tmp_path / "e"))
    try:
        assert engine._thread.daemon
    finally:
        engine.shutdown()
    llm = LLMEngine(ScriptedBackend()).start()
    try:
        assert llm._thread.daemon
    finally:
        llm.shutdown()


def _set(path_keys, value):
    """A change to an engine config.json: set the value at path_keys (a missing key is popped for value None)."""
    def change(config):
        *parents, key = path_keys
        for parent in parents:
            config = config[parent]
        if value is _POP:
            config.pop(key)
        else:
            config[key] = value
    return change


_POP = object()


@pytest.mark.parametrize("path_keys, value, match", [
    (("pretrained_config", "vocab_size"), _POP, r"pretrained_config\.vocab_size: required but missing"),
    (("pretrained_config", "vocab_size"), True, r"pretrained_config\.vocab_size: must be an integer >= 1, got True"),
    (("pretrained_config", "vocab_size"), 0, r"pretrained_config\.vocab_size: must be an integer >= 1, got 0"),
    (("pretrained_config", "mapping"), [1], r"pretrained_config\.mapping: expected an object, got \[1\]"),
    (("pretrained_config", "eos_token_id"), [2, VOCAB], r"pretrained_config\.eos_token_id: must be a token id"),
    (("pretrained_config", "eos_token_id"), True, r"pretrained_config\.eos_token_id: must be a token id"),
    (("pretrained_config", "eos_token_id"), -1, r"pretrained_config\.eos_token_id: must be a token id"),
    (("pretrained_config", "pad_token_id"), VOCAB, r"pretrained_config\.pad_token_id: must be a token id or null"),
    (("pretrained_config", "pad_token_id"), -1, r"pretrained_config\.pad_token_id: must be a token id or null"),
    (("pretrained_config", "pad_token_id"), False, r"pretrained_config\.pad_token_id: must be a token id or null"),
    (("pretrained_config", "pad_token_id"), 1.5, r"pretrained_config\.pad_token_id: must be a token id or null"),
    (("pretrained_config", "neg_config"), _POP, r"pretrained_config\.neg_config: required"),
    (("pretrained_config", "neg_config", "enabled"), "yes", r"neg_config\.enabled: must be true or false"),
    (("pretrained_config", "neg_config", "seed"), -1, r"neg_config\.seed: must be an integer in \[0, 2\*\*64\)"),
    (("pretrained_config", "neg_config", "seed"), 2**64, r"neg_config\.seed: must be an integer in \[0, 2\*\*64\)"),
    (("pretrained_config", "neg_config", "seed"), True, r"neg_config\.seed: must be an integer in \[0, 2\*\*64\)"),
    (("pretrained_config", "mapping", "tp_size"), 0, r"mapping\.tp_size: must be an integer >= 1, got 0"),
    (("build_config", "max_batch_size"), _POP, r"build_config\.max_batch_size: required but missing"),
    (("build_config", "max_seq_len"), 1, r"build_config\.max_seq_len: must be an integer >= 2, got 1"),
    (("build_config", "max_input_len"), MAX_SEQ, rf"build_config\.max_input_len: {MAX_SEQ} must be smaller than "
                                                 rf"max_seq_len \({MAX_SEQ}\): a sequence holds its prompt plus"),
    (("build_config",), _POP, r"needs 'pretrained_config' and 'build_config' objects"),
])
def test_engine_dir_refuses_each_bad_config_field_by_name(tmp_path, path_keys, value, match):
    """Every field read_engine_dir takes from config.json is checked, and the error names it (config.json
    is TensorRT-LLM's file: a hand-edited or foreign one must not reach the executor as a wrong limit)."""
    from trt_neg.trtllm.engine_dir import EngineDirError, read_engine_dir

    path = make_engine_dir(tmp_path / "e")
    config = json.loads((path / "config.json").read_text())
    _set(path_keys, value)(config)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineDirError, match=match) as exc:
        read_engine_dir(path)
    assert str(exc.value).startswith(str(path / "config.json"))


def test_engine_dir_limits_default_from_max_seq_len_and_mapping_from_world_size(tmp_path):
    """A config.json without max_input_len / max_num_tokens / tp_size gets the documented defaults:
    max_input_len = max_seq_len - 1, max_num_tokens = max_batch_size * max_input_len, tp = world / pp."""
    from trt_neg.trtllm.engine_dir import read_engine_dir

    path = make_engine_dir(tmp_path / "e", world_size=2, eos_token_id=7, pad_token_id=0)
    config = json.loads((path / "config.json").read_text())
    config["build_config"].update(max_input_len=None, max_num_tokens=None)  # null: the default, as absent
    config["pretrained_config"]["mapping"] = {"world_size": 2}
    config["pretrained_config"]["neg_config"] = {"head_hidden_size": 8}  # enabled and seed: their defaults
    (path / "config.json").write_text(json.dumps(config))
    info = read_engine_dir(path)
    assert (info.max_input_len, info.max_num_tokens) == (MAX_SEQ - 1, SLOTS * (MAX_SEQ - 1))
    assert (info.world_size, info.tp_size, info.pp_size) == (2, 2, 1)
    assert (info.eos_token_ids, info.pad_token_id, info.neg_enabled, info.neg_seed) == ((7,), 0, True, 0)
    config["pretrained_config"]["mapping"] = {"tp_size": 2}
    config["pretrained_config"]["eos_token_id"] = None
    (path / "config.json").write_text(json.dumps(config))
    info = read_engine_dir(path)
    assert (info.world_size, info.tp_size, info.pp_size, info.eos_token_ids) == (2, 2, 1, ())
    assert info.describe() == (
        "a TensorRT-LLM engine directory (tp 2, pp 1; rank0.engine, rank1.engine), built with tensorrt_llm 1.2.1 "
        f"from an unrecorded HF checkpoint; max_batch_size {SLOTS}, max_seq_len {MAX_SEQ}, NEG enabled")
    config["pretrained_config"].update(mapping=None, eos_token_id=[0, VOCAB - 1])  # no mapping: one GPU; 0 is a token
    config["pretrained_config"]["neg_config"]["seed"] = 2**64 - 1  # the largest 64-bit key
    (path / "config.json").write_text(json.dumps(config))
    info = read_engine_dir(path)
    assert (info.world_size, info.tp_size, info.pp_size, info.eos_token_ids) == (1, 1, 1, (0, VOCAB - 1))
    assert info.neg_seed == 2**64 - 1
    for mapping in ({"world_size": 2, "tp_size": 1, "pp_size": 2}, {"tp_size": 1, "pp_size": 2}):
        config["pretrained_config"]["mapping"] = mapping
        (path / "config.json").write_text(json.dumps(config))
        info = read_engine_dir(path)
        assert (info.world_size, info.tp_size, info.pp_size) == (2, 1, 2)


@pytest.mark.parametrize("change, match", [
    ({"build_info_version": "1"}, r"build_info_version must be an integer, got '1'"),
    ({"build_info_version": True}, r"build_info_version must be an integer, got True"),
    ({"build_info_version": 0}, r"build_info_version must be >= 1, got 0"),
    ({"tensorrt_llm_version": 1.2}, r"tensorrt_llm_version must be a string, got 1\.2"),
    ({"trt_neg_version": ["0.1"]}, r"trt_neg_version must be a string"),
    ({"hf_model_dir": ""}, r"hf_model_dir must be a non-empty string or null, got ''"),
])
def test_build_info_fields_are_checked_by_name(tmp_path, change, match):
    from trt_neg.trtllm.engine_dir import BUILD_INFO_FILE, EngineDirError, read_engine_dir

    path = make_engine_dir(tmp_path / "e")
    info = json.loads((path / BUILD_INFO_FILE).read_text())
    info.update(change)
    (path / BUILD_INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(EngineDirError, match=match) as exc:
        read_engine_dir(path)
    assert str(exc.value).startswith(str(path / BUILD_INFO_FILE))


@pytest.mark.parametrize("text, match", [(b"[1]", "expected a JSON object, got list"),
                                         (b"{", "is not valid JSON"), (b"\xff{}", "is not UTF-8")])
def test_engine_config_that_is_not_a_json_object_is_named(tmp_path, text, match):
    from trt_neg.trtllm.engine_dir import EngineDirError, read_engine_dir

    path = make_engine_dir(tmp_path / "e")
    (path / "config.json").write_bytes(text)
    with pytest.raises(EngineDirError, match=match) as exc:
        read_engine_dir(path)
    assert str(exc.value).startswith(str(path / "config.json") + ": ")


def test_a_mapping_with_only_pp_size_needs_one_engine_per_stage(tmp_path):
    """Without world_size and tp_size, tp is TensorRT-LLM's default 1 (it was 1 // pp = 0: a 0-GPU engine
    directory that needed no rank engine at all)."""
    from trt_neg.trtllm.engine_dir import EngineDirError, read_engine_dir

    path = make_engine_dir(tmp_path / "e")
    config = json.loads((path / "config.json").read_text())
    config["pretrained_config"]["mapping"] = {"pp_size": 2}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(EngineDirError, match=r"missing rank1\.engine \(a 2-GPU engine, tp 1 pp 2, needs rank0\.engine "
                                             r"\.\. rank1\.engine"):
        read_engine_dir(path)
    (path / "rank1.engine").write_bytes(b"")
    info = read_engine_dir(path)
    assert (info.world_size, info.tp_size, info.pp_size) == (2, 1, 2)


def test_a_single_gpu_engine_without_its_engine_file_is_named_plainly(tmp_path):
    from trt_neg.trtllm.engine_dir import EngineDirError, read_engine_dir

    path = make_engine_dir(tmp_path / "e")
    (path / "rank0.engine").unlink()
    with pytest.raises(EngineDirError) as info:
        read_engine_dir(path)
    assert str(info.value) == f"{path}: missing rank0.engine (the serialized engine)"
    path = make_engine_dir(tmp_path / "tp3", world_size=3)
    (path / "rank2.engine").unlink()
    with pytest.raises(EngineDirError) as info:
        read_engine_dir(path)
    assert str(info.value).startswith(f"{path}: missing rank2.engine (a 3-GPU engine, tp 3 pp 1, needs rank0.engine .. "
                                      "rank2.engine, one per rank;")
