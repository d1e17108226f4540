"""Gated DeltaNet op, chunked (UT-transform) context path (plugins/gdn/gdnChunk.h) on the
CPU host build: the same ``__host__ __device__`` chunk maths the CUDA kernel runs, vs the
fp64 per-token recurrence (tests/test_gdn_host.py::ref_gdn) and vs the per-token scan.

Tolerances (fp32 maths, outputs of magnitude ~1, states ~0.1-1): both paths are a few
1e-6 from fp64 over 150 tokens (measured: scan <= 5e-6, chunked <= 5e-6 on outputs, <= 2e-7
on states). The scan and the chunked form sum the same terms in different orders, so they
differ from each other by rounding only: we require the tolerance test_gdn_host.py uses for
the scan (rtol 2e-4, atol 2e-5) of both, and chunked vs scan within rtol 1e-4, atol 1e-5,
i.e. the chunked form must not be less accurate than the scan in any regime tested
(decay near 0 and 1, large gate swings inside a chunk, beta near 0 and 1, carried state).
"""

from __future__ import annotations

import re

import pytest
import torch

from test_gdn_host import CTX, GEN, assert_close, make_inputs, ref_gdn, rows
from trt_neg.kernels import gdn_host

# (Hk, Hv, dk, dv): GQA (Hv = 2 Hk), dk != dv both ways, dk % 8 == 0 (the chunked path's rule).
HEAD_CONFIGS = [(2, 4, 16, 8), (1, 2, 8, 24), (2, 2, 32, 32)]
CHUNKS = (16, 32, 64)  # the kernel's sizes (sm_86/89, sm_80, sm_90)
LENS = [1, 5, 16, 63, 64, 65, 150]  # T = 1, T < C, T = C, T not a multiple of C, several chunks


def call(x, cfg, pool, lens, *, algo, chunk=64, types=None, slots=None, gated=True, **kw):
    hk, hv, dk, dv = cfg
    last = torch.tensor(lens).cumsum(0).tolist()
    return gdn_host.gated_delta_rule(
        x["qkv"], x["a"], x["b"], x["A_log"], x["dt_bias"], pool, num_k_heads=hk, num_v_heads=hv, head_k_dim=dk,
        head_v_dim=dv, last_token_ids=last, request_types=types, slot_mapping=slots, z=x["z"] if gated else None,
        norm_weight=x["norm_weight"] if gated else None, algo=algo, chunk_size=chunk, **kw)


def close_to_scan(y_chunk, y_scan):
    assert_close(y_chunk, y_scan, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cfg", HEAD_CONFIGS)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_packed_batch_vs_fp64_and_scan(cfg, chunk):
    """Packed sequences of lengths 1..150 (slots permuted, stale pool contents), fresh state."""
    hk, hv, dk, dv = cfg
    x = make_inputs(sum(LENS), *cfg, seed=chunk + dk)
    slots = [3, 0, 7, 5, 1, 6, 2]
    pool = {a: torch.randn(8, hv, dk, dv) for a in ("scan", "chunked")}
    pool["chunked"].copy_(pool["scan"])
    y = {a: call(x, cfg, pool[a], LENS, algo=a, chunk=chunk, slots=slots) for a in pool}
    close_to_scan(y["chunked"], y["scan"])
    start = 0
    for n, s in zip(LENS, slots):
        y_ref, S_ref = ref_gdn(rows(x, start, start + n), *cfg)
        for a in pool:
            assert_close(y[a][start:start + n], y_ref)
            assert_close(pool[a][s], S_ref)
        start += n
    assert torch.equal(pool["chunked"][4], pool["scan"][4])  # unused slot untouched


@pytest.mark.parametrize("continue_context", [False, True])
def test_carried_state(continue_context):
    """State carried in: generation-type requests with several tokens, or context requests
    with continue_context (chunked prefill), continue from the slot's state."""
    cfg = (2, 4, 16, 16)
    hk, hv, dk, dv = cfg
    lens = [70, 9, 33]
    x = make_inputs(sum(lens), *cfg, seed=21)
    S0 = torch.randn(3, hv, dk, dv) * 0.3
    types = [CTX] * 3 if continue_context else [GEN] * 3
    pools = {a: S0.clone() for a in ("scan", "chunked")}
    y = {a: call(x, cfg, pools[a], lens, algo=a, chunk=32, types=types, continue_context=continue_context)
         for a in pools}
    close_to_scan(y["chunked"], y["scan"])
    start = 0
    for i, n in enumerate(lens):
        y_ref, S_ref = ref_gdn(rows(x, start, start + n), *cfg, S0=S0[i])
        assert_close(y["chunked"][start:start + n], y_ref)
        assert_close(pools["chunked"][i], S_ref)
        start += n


def test_prompt_split_across_calls_equals_one_call():
    """continue_context: 100 tokens as 37 + 63 (chunk boundaries in different places) == one call."""
    cfg = (1, 2, 16, 16)
    x = make_inputs(100, *cfg, seed=4)
    pool_a = torch.zeros(1, 2, 16, 16)
    y_a = call(x, cfg, pool_a, [100], algo="chunked", chunk=16)
    pool_b = torch.zeros(1, 2, 16, 16)
    y1 = call(rows(x, 0, 37), cfg, pool_b, [37], algo="chunked", chunk=16)
    y2 = call(rows(x, 37, 100), cfg, pool_b, [63], algo="chunked", chunk=16, continue_context=True)
    close_to_scan(torch.cat([y1, y2]), y_a)
    assert_close(pool_b, pool_a, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_io_dtypes(dtype):
    """fp16/bf16 activations: the state stays fp32 and matches the scan's to fp32 rounding;
    outputs are within one rounding of the output format of the scan's."""
    cfg = (2, 4, 16, 16)
    x = make_inputs(90, *cfg, seed=9, dtype=dtype)
    pools = {a: torch.zeros(1, 4, 16, 16) for a in ("scan", "chunked")}
    y = {a: call(x, cfg, pools[a], [90], algo=a) for a in pools}
    assert y["chunked"].dtype == dtype
    assert_close(pools["chunked"], pools["scan"], rtol=1e-4, atol=1e-6)
    ulp = {torch.float32: 1e-4, torch.float16: 2 ** -10, torch.bfloat16: 2 ** -7}[dtype]
    assert_close(y["chunked"], y["scan"], rtol=ulp, atol=1e-5)
    y_ref, _ = ref_gdn(x, *cfg)
    tol = {torch.float32: 2e-4, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    assert_close(y["chunked"], y_ref, rtol=tol, atol=tol)


def extreme_inputs(T, cfg, seed):
    """Per-head A_log from -9 (decay ~0.9999) to 5 (decay underflows to 0 in fp32) and one
    head with exp(A_log) = inf (g = -inf); per-token gate swings (a = +-12: softplus 12 vs
    6e-6) so one chunk mixes |g| ~ 1e3 with |g| ~ 1e-4; beta near 0 and 1 (b = +-16)."""
    hk, hv, dk, dv = cfg
    x = make_inputs(T, *cfg, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x["A_log"] = torch.tensor([-9.0, -4.0, 0.0, 2.0, 5.0, 100.0, 1.0, -1.0][:hv])
    x["dt_bias"] = torch.zeros(hv)
    swing = torch.where(torch.rand(T, hv, generator=g) < 0.3, 12.0, -12.0)
    x["a"] = swing + 0.1 * torch.randn(T, hv, generator=g)
    x["b"] = torch.where(torch.rand(T, hv, generator=g) < 0.5, 16.0, -16.0) + torch.randn(T, hv, generator=g)
    return x


@pytest.mark.parametrize("chunk", [16, 64])
def test_extreme_gates_and_beta(chunk):
    """Both paths stay ~1e-6 from fp64 here. A chunked form built on cumulative sums
    (exp(c_t - c_s), as trt_neg.reference.ops.chunk_gated_delta_rule and FLA do) loses
    ~|c| * 2^-24 in the exponent and is 2e-4..7e-4 off in fp32 on these inputs (and NaN
    for the g = -inf head): the tolerances below would fail it."""
    cfg = (4, 8, 16, 16)
    hk, hv, dk, dv = cfg
    T = 150
    x = extreme_inputs(T, cfg, seed=chunk)
    S0 = torch.randn(1, hv, dk, dv) * 0.5
    pools = {a: S0.clone() for a in ("scan", "chunked")}
    y = {a: call(x, cfg, pools[a], [T], algo=a, chunk=chunk, types=[GEN], gated=False) for a in pools}
    assert bool(torch.isfinite(y["chunked"]).all()) and bool(torch.isfinite(pools["chunked"]).all())
    y_ref, S_ref = ref_gdn(x, *cfg, S0=S0[0], gated=False)
    for a in pools:
        assert_close(y[a], y_ref)
        assert_close(pools[a][0], S_ref)
    close_to_scan(y["chunked"], y["scan"])
    assert_close(pools["chunked"], pools["scan"], rtol=1e-4, atol=1e-6)


def test_auto_picks_scan_below_threshold_and_chunked_above():
    """auto == scan bit for bit below CHUNK_MIN_TOKENS and == chunked at or above it, per sequence."""
    cfg = (1, 2, 16, 16)
    m = gdn_host.CHUNK_MIN_TOKENS
    lens = [m - 1, m, 1, 3 * m]
    x = make_inputs(sum(lens), *cfg, seed=8)
    out, pools = {}, {}
    for a in ("auto", "scan", "chunked"):
        pools[a] = torch.zeros(4, 2, 16, 16)
        out[a] = call(x, cfg, pools[a], lens, algo=a)
    bounds = torch.tensor([0] + lens).cumsum(0).tolist()
    for i, n in enumerate(lens):
        want = "chunked" if n >= m else "scan"
        assert torch.equal(out["auto"][bounds[i]:bounds[i + 1]], out[want][bounds[i]:bounds[i + 1]])
        assert torch.equal(pools["auto"][i], pools[want][i])
    # A head_k_dim the chunked path does not support: auto runs the scan, forced chunked refuses.
    cfg12 = (1, 1, 12, 8)
    x12 = make_inputs(40, *cfg12, seed=1)
    p_auto, p_scan = torch.zeros(1, 1, 12, 8), torch.zeros(1, 1, 12, 8)
    assert torch.equal(call(x12, cfg12, p_auto, [40], algo="auto"), call(x12, cfg12, p_scan, [40], algo="scan"))
    with pytest.raises(ValueError, match="head_k_dim % 8"):
        call(x12, cfg12, torch.zeros(1, 1, 12, 8), [40], algo="chunked")


def test_auto_follows_the_launch_rule_too():
    """auto is the kernel's choice per launch as well as per sequence: a launch the kernel runs
    scan-only (generation requests only, here of several tokens each, as speculative decoding
    would send) is the scan on the host too, bit for bit."""
    cfg = (1, 2, 16, 16)
    m = gdn_host.CHUNK_MIN_TOKENS
    lens = [m + 4, 2 * m]
    x = make_inputs(sum(lens), *cfg, seed=9)
    out, pools = {}, {}
    for a in ("auto", "scan", "chunked"):
        pools[a] = torch.randn(2, 2, 16, 16, generator=torch.Generator().manual_seed(1))
        out[a] = call(x, cfg, pools[a], lens, algo=a, types=[GEN, GEN], slots=[0, 1])
    assert torch.equal(out["auto"], out["scan"]) and torch.equal(pools["auto"], pools["scan"])
    assert not torch.equal(out["auto"], out["chunked"])  # the rule chose, not the data


def test_argument_errors():
    cfg = (1, 1, 8, 8)
    x = make_inputs(4, *cfg)
    with pytest.raises(ValueError, match="multiple of 8"):
        call(x, cfg, torch.zeros(1, 1, 8, 8), [4], algo="chunked", chunk=12)
    with pytest.raises(ValueError, match="algo"):
        call(x, cfg, torch.zeros(1, 1, 8, 8), [4], algo="fast")


KB = 1024


@pytest.mark.parametrize("arch,optin,chunk", [("sm_90", 227 * KB, 64), ("sm_80", 163 * KB, 32),
                                              ("sm_89", 99 * KB, 16), ("default 48 KB", 48 * KB, 0)])
def test_chunk_size_per_architecture(arch, optin, chunk):
    """The 9B's heads (dk = dv = 128): the largest chunk whose shared memory fits the opt-in limit."""
    plan = gdn_host.chunk_plan(16, 32, 128, 128, optin)
    assert plan["chunk"] == chunk, arch
    if chunk:
        assert plan["shared_bytes"] <= optin
        bigger = gdn_host.chunk_plan(16, 32, 128, 128, 10 ** 9)["chunk"]
        assert chunk == bigger or gdn_host.chunk_plan(16, 32, 128, 128, plan["shared_bytes"] - 1)["chunk"] < chunk


def test_launch_rule():
    """Per launch: a chunk-capable launch only with a context request and >= 16 tokens
    (pure generation steps keep the scan kernel's small footprint); forced modes obey."""
    plan = lambda **kw: gdn_host.chunk_plan(16, 32, 128, 128, 227 * KB, **kw)["launch_chunk"]  # noqa: E731
    assert plan(num_tokens=4096) == 64
    assert plan(num_tokens=gdn_host.CHUNK_MIN_TOKENS) == 64
    assert plan(num_tokens=gdn_host.CHUNK_MIN_TOKENS - 1) == 0
    assert plan(num_tokens=256, batch=256, has_context=False) == 0
    # one context request among 15 generation requests (1 token each): its segment is the rest
    assert plan(num_tokens=15 + gdn_host.CHUNK_MIN_TOKENS, batch=16) == 64
    assert plan(num_tokens=15 + gdn_host.CHUNK_MIN_TOKENS - 1, batch=16) == 0
    assert plan(num_tokens=4096, algo="scan") == 0
    assert plan(num_tokens=1, has_context=False, algo="chunked") == 64
    assert gdn_host.chunk_plan(1, 1, 12, 128, 227 * KB, algo="chunked")["launch_chunk"] == -1
    assert gdn_host.chunk_plan(1, 1, 12, 128, 227 * KB)["launch_chunk"] == 0


def test_launch_rule_with_zero_length_context_requests():
    """Context requests may hold 0 tokens (an empty prompt chunk): the packed bound on the
    longest context segment subtracts only the generation requests (>= 1 token each), so a
    16-token prompt beside empty ones still gets a chunk-capable launch."""
    plan = lambda types, n: gdn_host.chunk_plan(  # noqa: E731
        16, 32, 128, 128, 227 * KB, num_tokens=n, request_types=types)["launch_chunk"]
    m = gdn_host.CHUNK_MIN_TOKENS
    assert plan([CTX, CTX], m) == 64  # 0 + 16 tokens (the old bound said 15: scan-only)
    assert plan([CTX, CTX, CTX, CTX], m) == 64  # 0 + 0 + 0 + 16
    assert plan([CTX, GEN, CTX, GEN], m + 2) == 64  # 0, 1, 16, 1
    assert plan([CTX, CTX], m - 1) == 0  # no segment can reach 16
    assert plan([GEN, GEN, CTX], m + 1) == 0  # 1, 1, 15
    assert plan([GEN, GEN], 64) == 0  # pure generation: scan kernel
    assert plan([], 0) == 0


def test_gpu_check_gdn_chunked_section_on_a_cpu_stand_in(monkeypatch):
    """The GPU check's new GDN code (trt_neg/gpu_check/sec_gdn.py) runs end to end with the
    host op standing in for the CUDA extension (no GPU here): catches Python errors before a
    GPU session does."""
    import types

    from trt_neg.gpu_check import common, sec_gdn
    from trt_neg.kernels import cuda_ext

    def fake_forward(*args, algo="auto", **kw):
        return gdn_host.gated_delta_rule(*args, algo=algo, chunk_size=32, **kw)

    monkeypatch.setattr(common, "DEVICE", "cpu")
    monkeypatch.setattr(cuda_ext, "gdn_forward", fake_forward)
    monkeypatch.setattr(cuda_ext, "load_gdn", lambda: types.SimpleNamespace(chunk_size=lambda *cfg: 32))
    monkeypatch.setattr(sec_gdn, "cuda_time_us", lambda fn, reps, warmup=3: (fn(), 100.0)[1])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    lines = []
    ctx = types.SimpleNamespace(quick=True, log=lines.append)
    ok, rows = sec_gdn.chunked_vs_scan(ctx, lengths=(1, 40), cfg=(1, 2, 16, 16))
    assert ok and [r["T"] for r in rows] == [1, 40] and rows[1]["scan_over_chunked"] == 1.0
    assert rows[1]["err_out_chunked"] < 1e-5 and rows[1]["chunked_vs_scan"] < 1e-5
    assert any("scan/chunk" in line for line in lines)
    for algo in sec_gdn.ALGOS:
        assert sec_gdn.vs_host((2, 4, 32, 16), torch.float32, True, 3, algo=algo) == (0.0, 0.0)
        e_out, e_state = sec_gdn.vs_reference((1, 2, 16, 16), 4, algo)
        assert e_out < 1e-5 and e_state < 1e-5


@pytest.mark.parametrize("chunk", [2**20, 2**32 + 64, 1032, 12, 0, 8.0, True])
def test_chunk_size_out_of_range_is_an_error_not_an_abort(chunk):
    """2**20 ended the process (the chunk scratch, ~C^2 floats, failed to allocate inside an OpenMP
    region: std::terminate); 2**32 + 64 ran as 64 (ctypes' int32 wrap). algo="auto" with a 16-token
    context takes the chunked path."""
    cfg = (1, 1, 8, 8)
    expected = "a multiple of 8 in [8, 1024]" if type(chunk) is int else "an integer"
    with pytest.raises(ValueError, match=f"^{re.escape(f'chunk_size: expected {expected}, got {chunk!r}')}$"):
        call(make_inputs(16, *cfg), cfg, torch.zeros(1, 1, 8, 8), [16], algo="auto", chunk=chunk)


def test_the_host_library_refuses_a_chunk_past_its_limit(monkeypatch):
    """The C entry point's own bound, for callers that skip the Python check; 1024 itself runs."""
    cfg, lens = (1, 1, 8, 8), [16]
    x = make_inputs(16, *cfg)
    y_scan = call(x, cfg, torch.zeros(1, 1, 8, 8), lens, algo="scan")
    close_to_scan(call(x, cfg, torch.zeros(1, 1, 8, 8), lens, algo="chunked", chunk=1024), y_scan)
    monkeypatch.setattr(gdn_host, "check_chunk_size", lambda c: c)
    with pytest.raises(ValueError, match=r"^gdn: chunk_size must be a multiple of 8 in \[8, 1024\], got 1032$"):
        call(x, cfg, torch.zeros(1, 1, 8, 8), lens, algo="chunked", chunk=1032)


@pytest.mark.parametrize("dims,message", [
    ((1, 1, 128, 2**31 - 1), "head_v_dim must be <= 1024"),  # headVDim + 31 overflowed int32 in the plan
    ((1, 1, 128, 0), "head counts and dims must be positive"),
    ((2, 3, 128, 128), "num_v_heads must be a multiple of num_k_heads"),
])
def test_chunk_plan_refuses_shapes_the_op_refuses(dims, message):
    with pytest.raises(ValueError, match=f"^gdn: {message}"):
        gdn_host.chunk_plan(*dims, 227 * KB)
    with pytest.raises(ValueError, match=r"^head_v_dim: must fit in int32, got 4294967424$"):
        gdn_host.chunk_plan(1, 1, 128, 2**32 + 128, 227 * KB)  # was read as 128
