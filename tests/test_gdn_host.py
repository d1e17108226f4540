"""Gated DeltaNet op (plugins/gdn): the CPU host build of the kernel maths vs an fp64
recurrence written here from DESIGN.md section 3, and vs the reference backend's
recurrent and chunked gated delta rule (trt_neg/reference/ops.py).

The op is exercised the way TensorRT-LLM drives it: packed tokens of several sequences,
a state pool [slots, Hv, dk, dv] addressed through a slot mapping, context requests
(zero state) mixed with generation requests (carried state).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from trt_neg.kernels import gdn_host

CTX, GEN = gdn_host.CONTEXT, gdn_host.GENERATION

# (Hk, Hv, dk, dv): Hv/Hk = 1, 2, 4 and dk != dv both ways.
HEAD_CONFIGS = [(2, 2, 16, 16), (2, 4, 8, 16), (1, 4, 16, 8)]


def make_inputs(T, hk, hv, dk, dv, *, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    conv = 2 * hk * dk + hv * dv
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, dtype=torch.float64) * scale)  # noqa: E731
    return dict(
        qkv=r(T, conv).to(dtype),
        a=r(T, hv).to(dtype),
        b=r(T, hv, scale=2.0).to(dtype),
        z=r(T, hv * dv).to(dtype),
        A_log=r(hv, scale=0.5).float(),
        dt_bias=r(hv, scale=0.5).float(),
        norm_weight=(1.0 + 0.3 * r(dv)).float(),
    )


def ref_gdn(x, hk, hv, dk, dv, S0=None, norm_eps=1e-6, gated=True):
    """fp64 per-token recurrence of DESIGN.md section 3 for one sequence.

    x: tensors of make_inputs (rows = this sequence's tokens). Returns (y [T, Hv*dv], S [Hv, dk, dv]).
    """
    f = lambda t: t.to(torch.float64)  # noqa: E731
    qkv, a, b, z = f(x["qkv"]), f(x["a"]), f(x["b"]), f(x["z"])
    A_log, dt_bias, w = f(x["A_log"]), f(x["dt_bias"]), f(x["norm_weight"])
    T = qkv.shape[0]
    q = qkv[:, : hk * dk].reshape(T, hk, dk)
    k = qkv[:, hk * dk: 2 * hk * dk].reshape(T, hk, dk)
    v = qkv[:, 2 * hk * dk:].reshape(T, hv, dv)
    q = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + 1e-6) * dk ** -0.5
    k = k * torch.rsqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    q = q.repeat_interleave(hv // hk, dim=1)
    k = k.repeat_interleave(hv // hk, dim=1)
    beta = torch.sigmoid(b)
    g = -A_log.exp() * F.softplus(a + dt_bias)
    S = torch.zeros(hv, dk, dv, dtype=torch.float64) if S0 is None else f(S0).clone()
    out = []
    for t in range(T):
        S = S * g[t].exp()[:, None, None]
        d = beta[t][:, None] * (v[t] - torch.einsum("hkv,hk->hv", S, k[t]))
        S = S + k[t][:, :, None] * d[:, None, :]
        out.append(torch.einsum("hkv,hk->hv", S, q[t]))
    o = torch.stack(out) if T else torch.zeros(0, hv, dv, dtype=torch.float64)
    if gated:
        o = o * torch.rsqrt((o * o).mean(-1, keepdim=True) + norm_eps) * w * F.silu(z.reshape(T, hv, dv))
    return o.reshape(T, hv * dv), S


def run(x, hk, hv, dk, dv, pool, lens, *, types=None, slots=None, gated=True, **kw):
    last = torch.tensor(lens).cumsum(0).tolist()
    return gdn_host.gated_delta_rule(
        x["qkv"], x["a"], x["b"], x["A_log"], x["dt_bias"], pool, num_k_heads=hk, num_v_heads=hv, head_k_dim=dk,
        head_v_dim=dv, last_token_ids=last, request_types=types, slot_mapping=slots,
        z=x["z"] if gated else None, norm_weight=x["norm_weight"] if gated else None, **kw)


def rows(x, lo, hi):
    return {n: (t[lo:hi] if t.dim() == 2 else t) for n, t in x.items()}


def assert_close(actual, expected, rtol=2e-4, atol=2e-5):
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol)


@pytest.mark.parametrize("hk,hv,dk,dv", HEAD_CONFIGS)
def test_packed_batch_vs_fp64(hk, hv, dk, dv):
    """Several prompts (lengths 1..150) in one packed call, slots permuted; fresh context state."""
    lens = [1, 2, 17, 64, 150]
    x = make_inputs(sum(lens), hk, hv, dk, dv, seed=hv * 10 + dk)
    num_slots = 8
    pool = torch.randn(num_slots, hv, dk, dv)  # stale contents: context must ignore them
    before = pool.clone()
    slots = [6, 0, 3, 7, 2]
    y = run(x, hk, hv, dk, dv, pool, lens, slots=slots)
    start = 0
    for n, s in zip(lens, slots):
        y_ref, S_ref = ref_gdn(rows(x, start, start + n), hk, hv, dk, dv)
        assert_close(y[start:start + n], y_ref)
        assert_close(pool[s], S_ref)
        start += n
    for s in set(range(num_slots)) - set(slots):  # unused slots untouched
        assert torch.equal(pool[s], before[s])


@pytest.mark.parametrize("hk,hv,dk,dv", HEAD_CONFIGS)
def test_context_then_generation_equals_long_context(hk, hv, dk, dv):
    """State carried across calls: a prompt then 6 single-token generation steps equals one long prompt."""
    n, m = 37, 6
    x = make_inputs(n + m, hk, hv, dk, dv, seed=7)
    pool_long = torch.zeros(2, hv, dk, dv)
    y_long = run(x, hk, hv, dk, dv, pool_long, [n + m], slots=[1])

    pool = torch.full((2, hv, dk, dv), 5.0)
    ys = [run(rows(x, 0, n), hk, hv, dk, dv, pool, [n], slots=[1])]
    for t in range(n, n + m):
        ys.append(run(rows(x, t, t + 1), hk, hv, dk, dv, pool, [1], types=[GEN], slots=[1]))
    assert_close(torch.cat(ys), y_long, rtol=1e-6, atol=1e-6)
    assert_close(pool[1], pool_long[1], rtol=1e-6, atol=1e-6)
    y_ref, S_ref = ref_gdn(x, hk, hv, dk, dv)
    assert_close(y_long, y_ref)
    assert_close(pool_long[1], S_ref)


def test_mixed_context_and_generation_batch():
    """One call with generation requests interleaved with context requests (any order)."""
    hk, hv, dk, dv = 2, 4, 8, 16
    # Three sequences already have state (prompts of 20, 5, 9 tokens).
    prompts = [20, 5, 9]
    xs = [make_inputs(p + 1, hk, hv, dk, dv, seed=100 + i) for i, p in enumerate(prompts)]
    new = make_inputs(12, hk, hv, dk, dv, seed=200)
    pool = torch.randn(6, hv, dk, dv)
    slots = [5, 1, 3]
    for xi, p, s in zip(xs, prompts, slots):
        run(rows(xi, 0, p), hk, hv, dk, dv, pool, [p], slots=[s])
    # Batch: [gen seq0, ctx new (12 tokens, slot 0), gen seq2, gen seq1].
    batch = {n: torch.cat([rows(xs[0], 20, 21)[n], new[n], rows(xs[2], 9, 10)[n], rows(xs[1], 5, 6)[n]])
             if new[n].dim() == 2 else new[n] for n in new}
    # Per-head parameters differ per sequence in make_inputs; use the new sequence's for all.
    for xi in xs:
        for n in ("A_log", "dt_bias", "norm_weight"):
            xi[n] = new[n]
    pool2 = torch.randn(6, hv, dk, dv)
    for xi, p, s in zip(xs, prompts, slots):
        run(rows(xi, 0, p), hk, hv, dk, dv, pool2, [p], slots=[s])
    y = run(batch, hk, hv, dk, dv, pool2, [1, 12, 1, 1], types=[GEN, CTX, GEN, GEN], slots=[5, 0, 3, 1])
    y_ref0, S0 = ref_gdn(xs[0], hk, hv, dk, dv)
    y_ref2, S2 = ref_gdn(xs[2], hk, hv, dk, dv)
    y_ref1, S1 = ref_gdn(xs[1], hk, hv, dk, dv)
    y_new, S_new = ref_gdn(new, hk, hv, dk, dv)
    assert_close(y[0:1], y_ref0[-1:])
    assert_close(y[1:13], y_new)
    assert_close(y[13:14], y_ref2[-1:])
    assert_close(y[14:15], y_ref1[-1:])
    for s, S in ((5, S0), (0, S_new), (3, S2), (1, S1)):
        assert_close(pool2[s], S)


@pytest.mark.parametrize("hk,hv,dk,dv", HEAD_CONFIGS)
def test_vs_reference_backend(hk, hv, dk, dv):
    """Raw recurrence output (no gated norm) vs trt_neg.reference.ops recurrent and chunked kernels."""
    ops = pytest.importorskip("trt_neg.reference.ops")
    T = 150
    x = make_inputs(T, hk, hv, dk, dv, seed=3)
    S_init = torch.randn(hv, dk, dv) * 0.1
    pool = S_init[None].clone()
    y = run(x, hk, hv, dk, dv, pool, [T], types=[GEN], slots=[0], gated=False)  # continues from S_init

    qkv = x["qkv"].float()
    q = ops.l2norm(qkv[:, : hk * dk].reshape(1, T, hk, dk)) * dk ** -0.5
    k = ops.l2norm(qkv[:, hk * dk: 2 * hk * dk].reshape(1, T, hk, dk))
    v = qkv[:, 2 * hk * dk:].reshape(1, T, hv, dv)
    q, k = (t.repeat_interleave(hv // hk, dim=2) for t in (q, k))
    g = (-x["A_log"].exp() * F.softplus(x["a"].float() + x["dt_bias"]))[None]
    beta = torch.sigmoid(x["b"].float())[None]
    for fn in (ops.recurrent_gated_delta_rule, ops.chunk_gated_delta_rule):
        o, S = fn(q, k, v, g, beta, S_init[None].clone())
        assert_close(y, o.reshape(T, hv * dv), rtol=1e-3, atol=1e-4)
        assert_close(pool[0], S[0], rtol=1e-3, atol=1e-4)


def test_continue_context_is_chunked_prefill():
    """continue_context: a prompt split into two context calls equals one call."""
    hk, hv, dk, dv = 2, 4, 8, 16
    x = make_inputs(90, hk, hv, dk, dv, seed=11)
    pool_a = torch.zeros(1, hv, dk, dv)
    y_a = run(x, hk, hv, dk, dv, pool_a, [90])
    pool_b = torch.zeros(1, hv, dk, dv)
    y1 = run(rows(x, 0, 50), hk, hv, dk, dv, pool_b, [50])
    y2 = run(rows(x, 50, 90), hk, hv, dk, dv, pool_b, [40], continue_context=True)
    assert_close(torch.cat([y1, y2]), y_a, rtol=1e-6, atol=1e-6)
    assert_close(pool_b, pool_a, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cfg, lens, L, algo", [
    ((1, 2, 8, 8), [5, 1, 9], 9, {}),
    ((2, 4, 8, 16), [40, 1, 17], 41, {"algo": "chunked", "chunk_size": 16}),  # gdnChunk.h's path
])
def test_padded_layout_equals_packed(cfg, lens, L, algo):
    hk, hv, dk, dv = cfg
    x = make_inputs(sum(lens), hk, hv, dk, dv, seed=5)
    pool_p = torch.zeros(3, hv, dk, dv)
    y_packed = run(x, hk, hv, dk, dv, pool_p, lens, **algo)

    padded = {}
    for n, t in x.items():
        if t.dim() == 2:
            buf = torch.full((3, L, t.shape[1]), float("nan"), dtype=t.dtype)  # padding is never read
            s = 0
            for i, m in enumerate(lens):
                buf[i, :m] = t[s:s + m]
                s += m
            padded[n] = buf
        else:
            padded[n] = t
    pool_d = torch.zeros(3, hv, dk, dv)
    y_pad = gdn_host.gated_delta_rule(
        padded["qkv"], padded["a"], padded["b"], x["A_log"], x["dt_bias"], pool_d, num_k_heads=hk,
        num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, last_token_ids=lens, z=padded["z"],
        norm_weight=x["norm_weight"], remove_padding=False, **algo)
    s = 0
    for i, m in enumerate(lens):
        assert torch.equal(y_pad[i, :m], y_packed[s:s + m])
        assert torch.equal(y_pad[i, m:], torch.zeros_like(y_pad[i, m:]))
        s += m
    assert torch.equal(pool_d, pool_p)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_io(dtype):
    """fp16/bf16 activations: fp32 maths on the rounded inputs; the output is the fp32 result
    rounded to nearest even (checked bit for bit against torch's rounding)."""
    hk, hv, dk, dv = 2, 4, 16, 16
    x = make_inputs(40, hk, hv, dk, dv, seed=9, dtype=dtype)
    pool_h = torch.zeros(1, hv, dk, dv)
    y_h = run(x, hk, hv, dk, dv, pool_h, [40])
    assert y_h.dtype == dtype
    x32 = {n: t.float() for n, t in x.items()}
    pool_f = torch.zeros(1, hv, dk, dv)
    y_f = run(x32, hk, hv, dk, dv, pool_f, [40])
    assert torch.equal(pool_h, pool_f)
    assert torch.equal(y_h, y_f.to(dtype))
    y_ref, _ = ref_gdn(x, hk, hv, dk, dv)
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3
    assert_close(y_h, y_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_output_rounding_matches_torch(dtype):
    """The kernel's fp32 -> fp16/bf16 store (gdnMath.h, round to nearest even) equals torch's
    conversion bit for bit: random values over many binades, ties, subnormals, overflow, inf, NaN."""
    g = torch.Generator().manual_seed(0)
    rand = torch.randn(20000, generator=g) * torch.exp2(torch.randint(-30, 20, (20000,), generator=g).float())
    bits = torch.randint(0, 2**31 - 1, (20000,), generator=g, dtype=torch.int64)
    # Exact halfway cases for fp16 (13 dropped bits) and bf16 (16 dropped bits), both signs.
    ties = torch.tensor(bits.to(torch.int32).tolist(), dtype=torch.int32)
    ties16 = ((ties & ~0x1FFF) | 0x1000).view(torch.float32)
    tiesbf = ((ties & ~0xFFFF) | 0x8000).view(torch.float32)
    edge = torch.tensor([65504.0, 65519.0, 65520.0, 1e6, -1e6, 6.1035e-5, 5.96e-8, 2.98e-8, 2.99e-8, 1e-9, 0.0,
                         -0.0, 3.4e38, -3.4e38, 1e-40, float("inf"), float("-inf")])
    x = torch.cat([rand, ties16, -ties16, tiesbf, -tiesbf, edge]).contiguous()
    x = x[torch.isfinite(x) | torch.isinf(x)]
    got = gdn_host.convert(x, dtype)
    want = x.to(dtype)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))
    nan = gdn_host.convert(torch.tensor([float("nan")]), dtype)
    assert torch.isnan(nan.float()).all()


def test_errors():
    hk, hv, dk, dv = 1, 2, 4, 4
    x = make_inputs(6, hk, hv, dk, dv)
    pool = torch.zeros(3, hv, dk, dv)
    with pytest.raises(ValueError, match="share slot"):
        run(x, hk, hv, dk, dv, pool, [3, 3], slots=[1, 1])
    with pytest.raises(ValueError, match="outside"):
        run(x, hk, hv, dk, dv, pool, [3, 3], slots=[0, 3])
    with pytest.raises(ValueError, match="request type"):
        run(x, hk, hv, dk, dv, pool, [3, 3], types=[0, 2])
    with pytest.raises(ValueError, match="last_token_ids"):
        gdn_host.gated_delta_rule(x["qkv"], x["a"], x["b"], x["A_log"], x["dt_bias"], pool, num_k_heads=hk,
                                  num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, last_token_ids=[4, 7])
    with pytest.raises(ValueError, match="multiple"):
        gdn_host.gated_delta_rule(torch.zeros(1, 3 * 2 * 4 + 4 * 4), torch.zeros(1, 4), torch.zeros(1, 4),
                                  torch.zeros(4), torch.zeros(4), torch.zeros(1, 4, 4, 4), num_k_heads=3,
                                  num_v_heads=4, head_k_dim=4, head_v_dim=4, last_token_ids=[1])
    with pytest.raises(ValueError, match="state_pool"):
        run(x, hk, hv, dk, dv, torch.zeros(3, hv, dk, dv + 1), [6])


@pytest.mark.parametrize("kw, message", [
    (dict(ids=[2.9, 6.0]), "last_token_ids: expected an integer, got 2.9"),
    (dict(ids=torch.tensor([3.0, 6.0])), "last_token_ids: expected integers, got dtype torch.float32"),
    (dict(slots=[0.7, 1.2]), "slot_mapping: expected an integer, got 0.7"),
    (dict(slots=[0, 2**40]), "slot_mapping: values must fit in int32, got 0..1099511627776"),
    (dict(num_threads=10**9), "num_threads: expected an integer in [0, 1024]"),
    (dict(num_threads=1.5), "num_threads: expected an integer in [0, "),
])
def test_integer_arguments_are_integers(kw, message):
    # Floats were truncated ([2.9, 6.0] ran as [2, 6]); 10**9 threads ended the process in libgomp.
    hk, hv, dk, dv = 1, 2, 4, 4
    x = make_inputs(6, hk, hv, dk, dv)
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        gdn_host.gated_delta_rule(x["qkv"], x["a"], x["b"], x["A_log"], x["dt_bias"], torch.zeros(3, hv, dk, dv),
                                  num_k_heads=hk, num_v_heads=hv, head_k_dim=dk, head_v_dim=dv,
                                  last_token_ids=kw.get("ids", [3, 6]), slot_mapping=kw.get("slots"),
                                  num_threads=kw.get("num_threads", 0))


def test_a_pool_without_slots_is_named():
    hk, hv, dk, dv = 1, 2, 4, 4
    x = make_inputs(6, hk, hv, dk, dv)
    with pytest.raises(ValueError, match=r"^gdn: state_pool is a null pointer \(a pool of no slots\?\)$"):
        run(x, hk, hv, dk, dv, torch.zeros(0, hv, dk, dv), [3, 3])


def test_a_call_without_tokens_resets_its_context_slots():
    # Empty tensors have null data pointers: the call was refused ("a required pointer is null").
    hk, hv, dk, dv = 1, 2, 4, 4
    x = make_inputs(0, hk, hv, dk, dv)
    pool = torch.ones(3, hv, dk, dv)
    y = run(x, hk, hv, dk, dv, pool, [0, 0], types=[0, 1], slots=[2, 0])
    assert y.shape == (0, hv * dv)
    assert torch.equal(pool[2], torch.zeros_like(pool[2]))  # the context request's fresh (zero) state
    assert torch.equal(pool[:2], torch.ones_like(pool[:2]))  # the generation request's slot, untouched


def test_empty_batch_and_zero_length():
    hk, hv, dk, dv = 1, 1, 4, 4
    x = make_inputs(3, hk, hv, dk, dv)
    pool = torch.ones(2, hv, dk, dv)
    # A zero-length context request resets its slot and produces no rows.
    y = run(x, hk, hv, dk, dv, pool, [0, 3], slots=[0, 1])
    assert y.shape == (3, hv * dv)
    assert torch.equal(pool[0], torch.zeros_like(pool[0]))
    assert math.isfinite(float(y.abs().sum()))


@pytest.mark.parametrize("algo", ["scan", "chunked", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_rows_past_the_last_sequence_are_zero(algo, dtype):
    """Packed rows last_token_ids[-1] .. T belong to no sequence: zeros, like the padded
    layout's padding (the kernel writes them too)."""
    hk, hv, dk, dv = 1, 2, 8, 8
    T, lens = 12, [1, 6]
    x = make_inputs(T, hk, hv, dk, dv, seed=3, dtype=dtype)
    x_owned = rows(x, 0, sum(lens))
    pool_ref = torch.zeros(2, hv, dk, dv)
    y_ref = run(x_owned, hk, hv, dk, dv, pool_ref, lens, algo=algo, chunk_size=16)
    for _ in range(3):  # the output is torch.empty: let it land on memory freed full of NaN
        garbage = torch.full((T, hv * dv), float("nan"), dtype=dtype)
        del garbage
        pool = torch.zeros(2, hv, dk, dv)
        y = run(x, hk, hv, dk, dv, pool, lens, algo=algo, chunk_size=16)
        assert torch.equal(y[:sum(lens)], y_ref)
        assert torch.equal(y[sum(lens):], torch.zeros_like(y[sum(lens):]))
        assert torch.equal(pool, pool_ref)
    # no sequence at all: every row
    garbage = torch.full((T, hv * dv), float("nan"), dtype=dtype)
    del garbage
    y = gdn_host.gated_delta_rule(x["qkv"], x["a"], x["b"], x["A_log"], x["dt_bias"], torch.zeros(1, hv, dk, dv),
                                  num_k_heads=hk, num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, last_token_ids=[])
    assert torch.equal(y, torch.zeros_like(y))


def test_padded_length_longer_than_max_seq_len_is_an_error():
    """Padded layout: last_token_ids[b] is sequence b's length, at most max_seq_len (L);
    longer is an error naming the entry (as packed counts past num_tokens are), not a clamp."""
    hk, hv, dk, dv = 1, 2, 4, 4
    L = 4
    x = make_inputs(2 * L, hk, hv, dk, dv, seed=2)
    pad = {n: (t.reshape(2, L, -1) if t.dim() == 2 else t) for n, t in x.items()}

    def call(lens):
        return gdn_host.gated_delta_rule(pad["qkv"], pad["a"], pad["b"], x["A_log"], x["dt_bias"],
                                         torch.zeros(2, hv, dk, dv), num_k_heads=hk, num_v_heads=hv, head_k_dim=dk,
                                         head_v_dim=dv, last_token_ids=lens, remove_padding=False)

    with pytest.raises(ValueError, match=r"last_token_ids\[0\] = 9.*max_seq_len = 4"):
        call([9, 2])
    with pytest.raises(ValueError, match=r"last_token_ids\[1\] = 5"):
        call([2, 5])
    with pytest.raises(ValueError, match=r"last_token_ids\[1\] = -1"):
        call([2, -1])
    y = call([L, 0])  # the limits themselves are fine
    assert torch.equal(y[1], torch.zeros_like(y[1]))
    # packed: the same entry is named
    with pytest.raises(ValueError, match=r"last_token_ids\[1\] = 9.*num_tokens = 8"):
        run(x, hk, hv, dk, dv, torch.zeros(2, hv, dk, dv), [4, 5])


def test_every_tensor_the_c_code_reads_is_checked_by_shape_and_layout():
    """The C call trusts its pointers: a tensor of the wrong shape, dtype or layout would be read past its
    end or reinterpreted; each is refused by name before the call."""
    hk, hv, dk, dv = 1, 2, 4, 4
    x = make_inputs(6, hk, hv, dk, dv)
    pool = torch.zeros(3, hv, dk, dv)
    bad = [
        (dict(qkv=x["qkv"].to(torch.int32)), TypeError, r"^qkv: dtype torch.int32 not supported"),
        (dict(qkv=x["qkv"][:, :-1]), ValueError, r"^qkv: expected \[T, 16\], got \(6, 15\)$"),
        (dict(a=x["a"][:5]), ValueError, r"^a: expected \(6, 2\), got \(5, 2\)$"),
        (dict(b=x["b"][:, :1]), ValueError, r"^b: expected \(6, 2\), got \(6, 1\)$"),
        (dict(z=x["z"][:, :-1]), ValueError, r"^z: expected \(6, 8\), got \(6, 7\)$"),
        (dict(A_log=x["A_log"][:1]), ValueError, r"^A_log: expected \(2,\), got \(1,\)$"),
        (dict(dt_bias=x["dt_bias"].reshape(1, 2)), ValueError, r"^dt_bias: expected \(2,\), got \(1, 2\)$"),
        (dict(norm_weight=x["norm_weight"][:2]), ValueError, r"^norm_weight: expected \(4,\), got \(2,\)$"),
        (dict(norm_weight=None), ValueError, r"^z and norm_weight go together$"),
        (dict(pool=pool.double()), ValueError, r"^state_pool must be a contiguous fp32 CPU tensor"),
        (dict(pool=torch.zeros(hv, dk, dv, 3).permute(3, 0, 1, 2)), ValueError,
         r"^state_pool must be a contiguous fp32 CPU tensor"),
        (dict(ids=[3]), None, None),  # one sequence: fine
        (dict(ids=[3, 6], types=[0]), ValueError, r"^request_types: expected 2 values, got 1$"),
        (dict(algo="fast"), ValueError, r"^algo: expected one of \['auto', 'chunked', 'scan'\], got 'fast'$"),
    ]
    for change, error, match in bad:
        args = {**x, "pool": pool, "ids": [3, 6], "types": None, "algo": "auto", **change}
        call = lambda: gdn_host.gated_delta_rule(  # noqa: E731
            args["qkv"], args["a"], args["b"], args["A_log"], args["dt_bias"], args["pool"], num_k_heads=hk,
            num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, last_token_ids=args["ids"], request_types=args["types"],
            z=args["z"], norm_weight=args["norm_weight"], algo=args["algo"])
        if error is None:
            call()
            continue
        with pytest.raises(error, match=match):
            call()


def test_chunk_plan_refuses_an_unknown_algo_and_a_batch_beyond_the_kernels():
    with pytest.raises(ValueError, match=r"^algo: expected one of"):
        gdn_host.chunk_plan(16, 32, 128, 128, 228 * 1024, algo="fast")
    with pytest.raises(ValueError, match=r"^batch must be in \[0, 4096\], got 4097$"):
        gdn_host.chunk_plan(16, 32, 128, 128, 228 * 1024, batch=4097)
    assert gdn_host.chunk_plan(16, 32, 128, 128, 228 * 1024, batch=4096)["chunk"] > 0


@pytest.mark.parametrize("slots, message", [
    ([-2**40, 0], "slot_mapping: values must fit in int32, got -1099511627776..0"),
    ([0, 2**31], "slot_mapping: values must fit in int32, got 0..2147483648"),
])
def test_int32_arguments_are_refused_not_wrapped_at_both_ends(slots, message):
    """-2**40 and 2**31 would wrap to valid slots 0 and -2**31 as int32."""
    hk, hv, dk, dv = 1, 2, 4, 4
    x = make_inputs(6, hk, hv, dk, dv)
    with pytest.raises(ValueError, match=re.escape(message)):
        run(x, hk, hv, dk, dv, torch.zeros(3, hv, dk, dv), [3, 3], slots=slots)
    with pytest.raises(ValueError, match=r"^num_k_heads: must fit in int32, got 2147483648$"):
        gdn_host.chunk_plan(2**31, 32, 128, 128, 228 * 1024)
