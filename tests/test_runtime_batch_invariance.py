"""Batch invariance on the tiny model: every request gets exactly the tokens it gets alone.

56 requests of random prompt and output lengths — greedy and seeded sampling, NEG off
and on — join a busy batch at random steps; some are cancelled midway; invalid requests
are submitted in between.  Each is compared, token for token (and fired flag for fired
flag), with the same request run alone.  No tolerance on tokens: a batched matmul that
flipped a token would be a bug to find, not to hide.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from trt_neg.runtime import FinishReason, LLMEngine, Request, RequestResult, SamplingParams, TokenOutput
from trt_neg.runtime.torch_backend import TorchBackend

N_REQUESTS = 56
MAX_SLOTS = 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def backend(tiny_checkpoint):
    return TorchBackend.from_pretrained(tiny_checkpoint, max_slots=MAX_SLOTS, max_seq_len=128)


def workload(vocab: int, seed: int = 2024) -> list[Request]:
    rng = random.Random(seed)
    kinds = [
        ("greedy", 0), ("greedy", 1), ("sample", 0), ("sample", 1), ("unseeded", 1), ("greedy", 1),
    ]
    reqs = []
    for i in range(N_REQUESTS):
        kind, mode = kinds[i % len(kinds)]
        if kind == "greedy":
            sp = SamplingParams()
        else:
            sp = SamplingParams(temperature=rng.choice([0.7, 1.0, 1.5]), top_k=rng.choice([0, 5, 50]),
                                top_p=rng.choice([1.0, 0.9]), seed=None if kind == "unseeded" else rng.randrange(2**64))
        prompt = [rng.randrange(vocab) for _ in range(rng.randint(1, 48))]
        reqs.append(Request(prompt, max_new_tokens=rng.randint(1, 40), sampling=sp, neg_mode=mode,
                            request_id=f"r{i:02d}-{kind}-m{mode}"))
    return reqs


def alone(backend: TorchBackend, req: Request, seed: int | None) -> RequestResult:
    """The request by itself in an engine with one slot (with the seed the batched run used)."""
    sp = req.sampling
    if seed is not None and sp.seed is None:
        sp = SamplingParams(temperature=sp.temperature, top_k=sp.top_k, top_p=sp.top_p, seed=seed)
    solo = Request(req.prompt_token_ids, max_new_tokens=req.max_new_tokens, sampling=sp, neg_mode=req.neg_mode)
    engine = LLMEngine(backend, max_batch_size=1)
    engine.add_request(solo)
    out = None
    while engine.has_unfinished():
        for item in engine.step():
            if isinstance(item, RequestResult):
                out = item
    assert out is not None and out.finish_reason in (FinishReason.STOP, FinishReason.LENGTH)
    return out


def check_same(batched: RequestResult, solo: RequestResult, prefix_only: bool = False) -> None:
    n = len(batched.tokens)
    if prefix_only:
        assert n <= len(solo.tokens)
    else:
        assert batched.finish_reason == solo.finish_reason, batched.request_id
        assert n == len(solo.tokens), batched.request_id
    assert batched.tokens == solo.tokens[:n], batched.request_id
    assert batched.fired == solo.fired[:n], batched.request_id
    assert torch.allclose(torch.tensor(batched.entropies), torch.tensor(solo.entropies[:n]), rtol=1e-5, atol=1e-6)


def test_busy_batch_gives_every_request_its_solo_tokens(backend):
    busy_batch_check(backend, workload(backend.vocab_size))


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_batch_invariant_mode_gives_solo_tokens_on_any_workload(backend, seed):
    """Batched decode can differ from the solo run in the last bits of a GEMM, which flips a
    sampled draw that lands that close to a probability boundary (1 request in 1680 random
    ones, benchmarks/RESULTS.md): the default-mode test above runs one fixed
    workload. In batch-invariant mode every row runs alone, so any workload gives exactly the
    solo tokens."""
    invariant = TorchBackend(backend.runner, backend.neg_weights, backend.neg_config, backend.eos_token_ids,
                             batch_invariant=True)
    busy_batch_check(invariant, workload(backend.vocab_size, seed), seed)


@pytest.mark.gpu
def test_busy_batch_gives_every_request_its_solo_tokens_on_gpu(tiny_checkpoint):
    """The same on CUDA (fp32): cuBLAS picks kernels by batch size too."""
    gpu_backend = TorchBackend.from_pretrained(tiny_checkpoint, max_slots=MAX_SLOTS, max_seq_len=128, device="cuda")
    busy_batch_check(gpu_backend, workload(gpu_backend.vocab_size)[:30])


def busy_batch_check(backend: TorchBackend, reqs: list[Request], seed: int = 7) -> None:
    # Unseeded requests get their seed from the engine: a seeded source keeps the workload (and so
    # this test) the same on every run.
    engine = LLMEngine(backend, max_batch_size=MAX_SLOTS, max_tokens_per_step=96,
                       seed_source=random.Random(seed * 31))
    rows_per_step = []
    real_step = backend.step

    def counting_step(prefill, decode):
        rows_per_step.append((len(prefill), len(decode)))
        return real_step(prefill, decode)

    backend.step = counting_step
    rng = random.Random(seed)
    to_cancel = {r.request_id for r in rng.sample(reqs, max(4, len(reqs) // 8))}
    pending = list(reqs)
    streamed: dict[str, list[int]] = {}
    results: dict[str, RequestResult] = {}
    try:
        step = 0
        while pending or engine.has_unfinished():
            for _ in range(rng.choice([0, 0, 1, 2, 4])):
                if pending:
                    engine.add_request(pending.pop(0))
            if step % 9 == 4:  # invalid submissions never disturb the batch
                for bad, field in ((Request([backend.vocab_size]), "prompt_token_ids"),
                                   (Request([1] * 128), "prompt_token_ids"),
                                   (Request([1], stop=["x"]), "stop")):
                    with pytest.raises(ValueError, match=f"^{field}:"):
                        engine.add_request(bad)
            for item in engine.step():
                if isinstance(item, TokenOutput):
                    assert item.index == len(streamed.setdefault(item.request_id, []))
                    streamed[item.request_id].append(item.token)
                    if item.request_id in to_cancel and item.index == 1:
                        engine.abort_request(item.request_id)  # False if it just finished
                else:
                    assert item.request_id not in results, "duplicated result"
                    results[item.request_id] = item
            step += 1
            assert step < 5000
    finally:
        del backend.step

    assert set(results) == {r.request_id for r in reqs}, "lost requests"
    assert max(d for _, d in rows_per_step) >= 8, f"the batch was never busy: {max(rows_per_step)}"
    assert any(p >= 2 for p, _ in rows_per_step) and any(p and d for p, d in rows_per_step)
    cancelled = [rid for rid, r in results.items() if r.finish_reason is FinishReason.CANCELLED]
    assert 3 <= len(cancelled) <= len(to_cancel)
    fired = 0
    for req in reqs:
        res = results[req.request_id]
        assert streamed.get(req.request_id, []) == res.tokens
        solo = alone(backend, req, res.seed)
        check_same(res, solo, prefix_only=res.finish_reason is FinishReason.CANCELLED)
        if req.neg_mode == 0:
            assert not any(res.fired)
        fired += sum(res.fired)
    assert fired > 0, "NEG never fired: the NEG path was not exercised"


def test_background_thread_and_asyncio_give_solo_tokens(backend):
    """The same property through the threaded engine and asyncio streaming."""
    reqs = workload(backend.vocab_size)[:16]
    engine = LLMEngine(backend, max_batch_size=8, seed_source=random.Random(37))

    async def consume(req):
        return [item async for item in engine.stream(req)]

    async def main():
        return await asyncio.gather(*(consume(r) for r in reqs))

    try:
        outs = asyncio.run(main())
    finally:
        engine.shutdown()
    for req, items in zip(reqs, outs):
        res = items[-1]
        assert isinstance(res, RequestResult) and [i.token for i in items[:-1]] == res.tokens
        check_same(res, alone(backend, req, res.seed))


def test_inflight_greedy_tokens_match_transformers_generate(backend, tiny_checkpoint):
    """End to end against the independent reference: mode-0 greedy tokens from a busy batch
    equal transformers' ``generate`` on each prompt alone (EOS ignored on both sides)."""
    import logging

    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    hf = AutoModelForCausalLM.from_pretrained(str(tiny_checkpoint), dtype=torch.float32).eval()
    rng = random.Random(5)
    reqs = [Request([rng.randrange(backend.vocab_size) for _ in range(rng.randint(1, 30))],
                    max_new_tokens=rng.randint(1, 24), neg_mode=0, ignore_eos=True) for _ in range(10)]
    results = LLMEngine(backend, max_batch_size=4).generate(reqs)
    with torch.no_grad():
        for req, res in zip(reqs, results):
            ids = torch.tensor([req.prompt_token_ids])
            out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=req.max_new_tokens,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
            assert res.tokens == out[0, ids.shape[1]:].tolist()
