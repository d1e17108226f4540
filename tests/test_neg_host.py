"""Host (CPU) build of the NEG kernel maths vs the torch reference (trt_neg.neg).

Tokens and fired flags must match exactly, except where a draw lands within fp32
rounding of a cumulative boundary (checked explicitly in fp64) or, for the full op, an
entropy within rounding of the threshold; entropies within fp32 tolerance.
"""

import math
import os
import re

import numpy as np
import pytest
import torch

from trt_neg import neg
from trt_neg.kernels import host
from tests.test_neg_reference import PHILOX_KAT


@pytest.fixture(scope="module", autouse=True)
def _lib():
    host.load()


@pytest.mark.parametrize("ctr,key,expected", PHILOX_KAT)
def test_host_philox_kat(ctr, key, expected):
    assert host.philox4x32_10(ctr, key) == expected


def test_host_philox_uniform_matches_python():
    g = torch.Generator().manual_seed(1)
    for s, o in torch.randint(-(2**62), 2**62, (200, 2), generator=g).tolist():
        assert host.philox_uniform(s, o) == neg.philox_uniform(s, o)


def _near_boundary(z_row, k, temperature, u, tol=2e-5):
    """True when u * sum(p) is within rounding of a cumulative boundary (fp64 check)."""
    zz = torch.where(torch.isnan(z_row), -math.inf, z_row.double())
    vals = sorted(((-v, i) for i, v in enumerate(zz.tolist())))[:k]
    x = torch.tensor([-v for v, _ in vals], dtype=torch.float64) / temperature
    if not math.isfinite(float(x[0])):
        return False
    p = torch.softmax(x, 0)
    c = torch.cumsum(p, 0)
    return bool(((c - u).abs() < tol).any())


def _compare(ref, got, logits, *, top_k, temperature, seeds, offsets, tau=None, exact_fired=True):
    n, v = logits.shape
    assert got.token.shape == ref.token.shape == (n,)
    tau_f = None if tau is None else float(tau)
    bad = []
    for r in range(n):
        if bool(got.fired[r]) != bool(ref.fired[r]):
            e = float(ref.entropy[r])
            assert not exact_fired and abs(e - tau_f) <= 1e-5 * (1 + abs(tau_f)), f"row {r}: fired differs, H={e} tau={tau_f}"
            continue
        if int(got.token[r]) != int(ref.token[r]):
            assert bool(ref.fired[r]), f"row {r}: argmax token differs"
            u = neg.philox_uniform(int(seeds[r]), int(offsets[r]))
            assert _near_boundary(logits[r], min(top_k, v), temperature, u), f"row {r}: token differs away from a boundary"
            bad.append(r)
            continue
        assert int(got.status[r]) == int(ref.status[r]), f"row {r}: status"
        if got.guided_logits is not None:
            assert torch.equal(got.guided_logits[r], ref.guided_logits[r]), f"row {r}: guided logits"
    assert len(bad) <= max(1, n // 50), f"too many boundary mismatches: {bad}"


def _logits(kind, n, v, g):
    z = torch.randn(n, v, generator=g) * 3
    if kind == "ties":
        z = torch.round(z)  # many exact ties, including at the k-th value
    elif kind == "nonfinite":
        m = torch.rand(n, v, generator=g)
        z[m < 0.1] = float("nan")
        z[(m >= 0.1) & (m < 0.2)] = -math.inf
        z[0] = float("nan")  # all NaN
        if n > 1:
            z[1] = -math.inf  # all -inf
        if n > 2:
            z[2, v // 2] = math.inf
            z[2, v // 3] = math.inf  # two +inf
        if n > 3:
            z[3, : v - 1] = float("nan")  # a single finite logit
    elif kind == "fp16":
        z = z.half().float()
    return z


CASES = [
    # kind, N, V, top_k, temperature
    ("normal", 1, 7, 3, 1.0),
    ("ties", 37, 7, 8, 1.0),  # top_k >= V
    ("ties", 64, 100, 5, 0.5),
    ("nonfinite", 16, 50, 10, 1.0),
    ("nonfinite", 8, 7, 1024, 2.0),
    ("normal", 256, 64, 8, 1.0),
    ("normal", 128, 1000, 1024, 0.8),  # k spans most of the vocabulary
    ("fp16", 33, 4096, 64, 1.3),
    ("ties", 3, 248320, 1024, 1.0),
    ("normal", 4, 248320, 8, 1.0),
]


@pytest.mark.parametrize("kind,n,v,top_k,temperature", CASES)
def test_gated_sample_host_vs_reference(kind, n, v, top_k, temperature):
    g = torch.Generator().manual_seed(hash((kind, n, v)) % 2**31)
    z = _logits(kind, n, v, g)
    entropy = torch.rand(n, generator=g) * 2
    entropy[:: 5] = float("nan")
    seeds = torch.randint(-(2**62), 2**62, (n,), generator=g)
    offsets = torch.randint(0, 2**40, (n,), generator=g)
    for tau in (1.0, -math.inf, math.inf, -1e30):
        ref = neg.gated_topk_sample(z, entropy, tau, top_k, temperature, seeds, offsets)
        got = host.gated_topk_sample(z, entropy, tau, top_k, temperature, seeds, offsets)
        _compare(ref, got, z, top_k=top_k, temperature=temperature, seeds=seeds, offsets=offsets)
        if tau == math.inf:
            assert not got.fired.any()
        if tau == -math.inf:
            assert torch.equal(got.fired, ~torch.isnan(entropy))


def _weights(h, d, g, dtype, tau):
    return neg.NegWeights(
        fc1_weight=(torch.randn(d, h, generator=g) / math.sqrt(h)).to(dtype),
        fc1_bias=torch.randn(d, generator=g) * 0.1,
        fc2_weight=torch.randn(d, generator=g) / math.sqrt(d),
        fc2_bias=torch.tensor(0.3),
        threshold=torch.tensor(tau),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("act", ["silu", "gelu", "relu", "gelu_tanh"])
def test_neg_head_host_vs_reference(dtype, act):
    g = torch.Generator().manual_seed(3)
    w = _weights(96, 40, g, dtype, 0.0)
    h = torch.randn(17, 96, generator=g).to(dtype)
    torch.testing.assert_close(host.neg_head(h, w, act), neg.neg_head(h, w, act), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("act", ["silu", "gelu", "relu", "gelu_tanh"])
def test_neg_head_host_vs_reference_at_extreme_pre_activations(act):
    """Pre-activations from the fp32 maximum to inf, in a batch and alone: the reference must
    not depend on torch's vectorised GELU, which overflows from ~1.7e38 and turns +inf into NaN
    in a tensor of two or more elements (found by an independent check of DESIGN.md section 4)."""
    pre = torch.tensor([3e38, 1.7e38, -3e38, math.inf, -math.inf, 1e-45, -0.0, 20.0, -20.0])
    w = neg.NegWeights(torch.ones(2, 1), torch.zeros(2), torch.full((2,), 1e-38), torch.tensor(0.0),
                       torch.tensor(10.0))
    ref, got = neg.neg_head(pre[:, None], w, act), host.neg_head(pre[:, None], w, act)
    torch.testing.assert_close(got, ref, rtol=2e-6, atol=2e-6, equal_nan=True)
    alone = torch.stack([neg.neg_head(pre[i:i + 1, None], w, act)[0] for i in range(len(pre))])
    torch.testing.assert_close(alone, ref, rtol=0, atol=0, equal_nan=True)
    if act == "gelu":  # gelu(x) = x there, so H_hat = softplus(2 * 1e-38 * x) stays finite
        assert float(ref[0]) == pytest.approx(math.log1p(math.exp(6.0)), rel=1e-6)
        assert torch.isfinite(ref[:3]).all()


@pytest.mark.parametrize("n,v,hs,d,dtype", [(1, 7, 32, 8, torch.bfloat16), (64, 500, 128, 64, torch.float16),
                                            (256, 257, 64, 32, torch.float32), (2, 248320, 256, 64, torch.bfloat16)])
def test_neg_step_host_vs_reference(n, v, hs, d, dtype):
    g = torch.Generator().manual_seed(n * 7 + v)
    w = _weights(hs, d, g, dtype, 0.0)
    h = torch.randn(n, hs, generator=g).to(dtype)
    z = _logits("ties" if n % 2 else "normal", n, v, g)
    ent = neg.neg_head(h, w)
    tau = float(ent.median()) if n > 1 else float(ent[0]) - 0.1
    seeds = torch.full((n,), 1234)
    offsets = torch.arange(n) + 77
    ref = neg.neg_step(h, z, w, top_k=16, temperature=1.0, seeds=seeds, offsets=offsets, threshold=tau)
    got = host.neg_step(h, z, w, top_k=16, temperature=1.0, seeds=seeds, offsets=offsets, threshold=tau)
    torch.testing.assert_close(got.entropy, ref.entropy, rtol=2e-6, atol=2e-6)
    _compare(ref, got, z, top_k=16, temperature=1.0, seeds=seeds, offsets=offsets, tau=tau, exact_fired=False)
    assert ref.fired.any() or n == 1


def test_host_errors():
    z = torch.randn(2, 5)
    with pytest.raises(ValueError, match="top_k"):
        host.gated_topk_sample(z, torch.zeros(2), 0.0, 0, 1.0, 0, 0)
    with pytest.raises(ValueError, match="temperature"):
        host.gated_topk_sample(z, torch.zeros(2), 0.0, 1, -1.0, 0, 0)


def test_host_refuses_seeds_offsets_of_the_wrong_length():
    """The C code reads N seeds and N offsets; a shorter array must be refused, not read past its end."""
    z = torch.randn(5, 9)
    with pytest.raises(ValueError, match="seeds"):
        host.gated_topk_sample(z, torch.full((5,), 9.0), 0.0, 3, 1.0, torch.arange(3), 0)
    with pytest.raises(ValueError, match="offsets"):
        host.gated_topk_sample(z, torch.full((5,), 9.0), 0.0, 3, 1.0, 0, torch.arange(7))
    w = _weights(16, 8, torch.Generator().manual_seed(0), torch.float32, 0.0)
    with pytest.raises(ValueError, match="offsets"):
        host.neg_step(torch.randn(5, 16), z, w, seeds=0, offsets=[1, 2])
    # a single value still broadcasts to every row
    one = host.gated_topk_sample(z, torch.full((5,), 9.0), 0.0, 3, 1.0, torch.tensor([4]), [11])
    ref = neg.gated_topk_sample(z, torch.full((5,), 9.0), 0.0, 3, 1.0, 4, 11)
    assert torch.equal(one.token, ref.token)


def test_host_neg_step_refuses_hidden_wider_or_narrower_than_fc1():
    """W1 is read as [d, H] with H taken from ``hidden``: a mismatch must be an error naming hidden."""
    w = _weights(16, 8, torch.Generator().manual_seed(0), torch.float32, 0.0)
    z = torch.randn(2, 9)
    for hs in (15, 17):
        with pytest.raises(ValueError, match="hidden"):
            host.neg_step(torch.randn(2, hs), z, w)


def test_host_and_reference_take_64_bit_seeds_as_python_ints():
    """Seeds are 64-bit (neg_config.seed < 2**64): 2**64 - 1 has the bits of int64 -1 on every path."""
    z = torch.randn(4, 30)
    ent = torch.full((4,), 9.0)
    ref = neg.gated_topk_sample(z, ent, 0.0, 8, 1.0, -1, torch.arange(4) + 5)
    for seed in (2**64 - 1, [2**64 - 1] * 4):
        assert torch.equal(neg.gated_topk_sample(z, ent, 0.0, 8, 1.0, seed, torch.arange(4) + 5).token, ref.token)
        assert torch.equal(host.gated_topk_sample(z, ent, 0.0, 8, 1.0, seed, torch.arange(4) + 5).token, ref.token)


# --- the CUDA kernel's split-V path (docs/neg.md), run by the host library in the same steps

SPLIT_CASES = [
    # kind, N, V, top_k
    ("ties", 5, 4099, 8),  # V not a multiple of 4; ties across slice boundaries
    ("ties", 3, 4096, 1024),  # k larger than a slice: every slice keeps all of its logits
    ("nonfinite", 6, 9000, 16),
    ("normal", 2, 10, 3),  # more slices requested than V allows
    ("fp16", 4, 20000, 600),
    ("ties", 2, 248320, 1024),
]


@pytest.mark.parametrize("kind,n,v,top_k", SPLIT_CASES)
def test_split_paths_equal_one_pass_and_reference(kind, n, v, top_k):
    """Every split count gives bit-identical outputs to the one-pass path, which matches the
    reference: the slices' top-k hold the row's top-k, and ties keep the lowest ids."""
    g = torch.Generator().manual_seed(hash((kind, n, v, top_k)) % 2**31)
    z = _logits(kind, n, v, g)
    if kind == "ties":
        z = torch.round(z / 4)  # few distinct values: ties at the k-th logit span slices
    entropy = torch.rand(n, generator=g) * 2
    entropy[0] = float("nan")
    seeds = torch.randint(-(2**62), 2**62, (n,), generator=g)
    offsets = torch.randint(0, 2**40, (n,), generator=g)
    for tau in (1.0, -math.inf):
        one = host.gated_topk_sample(z, entropy, tau, top_k, 0.9, seeds, offsets, splits=1)
        ref = neg.gated_topk_sample(z, entropy, tau, top_k, 0.9, seeds, offsets)
        _compare(ref, one, z, top_k=top_k, temperature=0.9, seeds=seeds, offsets=offsets)
        for splits in (0, 2, 3, 7, 64):
            got = host.gated_topk_sample(z, entropy, tau, top_k, 0.9, seeds, offsets, splits=splits)
            for field in ("token", "fired", "status", "guided_logits"):
                assert torch.equal(getattr(got, field), getattr(one, field)), (splits, tau, field)


def test_split_plan_covers_the_row_in_aligned_nonempty_slices():
    for n in (1, 2, 7, 64, 255, 256, 1024):
        for v in (1, 7, 4095, 4096, 8191, 151936, 248320, 262144):
            for k in (1, 8, 1024):
                for requested in (0, 1, 3, 64, 1000):
                    s, length, per = host.split_plan(n, v, k, requested)
                    assert 1 <= s <= 64
                    assert per == min(k, v, length)
                    if s == 1:
                        assert length == v
                        continue
                    assert length % 4 == 0 and (s - 1) * length < v <= s * length  # no empty slice
                    if requested == 0:
                        assert length >= 2048 and n < 256 and s <= -(-256 // n)
    assert host.split_plan(1, 248320, 8) == (64, 3880, 8)  # N=1: 64 blocks scan the row
    assert host.split_plan(8, 248320, 8) == (32, 7760, 8)
    assert host.split_plan(256, 248320, 8)[0] == 1  # enough rows to fill the GPU
    # A requested count is taken as given (clamped to [1, 64]), 1 included: one block per row.
    assert host.split_plan(1, 248320, 8, 1) == (1, 248320, 8)
    assert host.split_plan(300, 248320, 8, 2) == (2, 124160, 8)
    with pytest.raises(ValueError, match="splits"):
        host.gated_topk_sample(torch.zeros(1, 8), torch.zeros(1), 0.0, 2, 1.0, 0, 0, splits=-1)


def test_automatic_split_count_is_the_documented_one_at_its_boundaries():
    """docs/neg.md: splits = min(ceil(256 / N), V / 2048, 64), one pass per row from N = 256 on
    and for an empty batch. Each V here is a multiple of 4 * splits, so no slice is dropped."""
    def documented(n, v):
        return max(1, min(-(-256 // n) if 0 < n < 256 else 1, v // 2048, 64))

    for n in (0, 1, 2, 3, 64, 128, 255, 256, 257):
        for v in (2044, 2048, 4092, 4096, 6144, 8192, 131072, 262144):
            assert host.split_plan(n, v, 8)[0] == documented(n, v), (n, v)
    assert [host.split_plan(1, v, 8)[0] for v in (4095, 4096, 6143, 6144)] == [1, 2, 2, 3]


@pytest.mark.parametrize("args,message", [
    ((1, 2**40, 2**31), r"v: expected an integer in \[1, 1073741824\] \(the kernel's kNegMaxVocab\), got 1099511627776"),
    ((1, 2**63 - 1, 8), r"v: expected an integer in \[1, 1073741824\]"),  # v + s - 1 overflowed int64
    ((1, 0, 8), r"v: expected an integer in \[1, 1073741824\]"),
    ((-1, 4096, 8), r"n: expected an integer in \[0, 2\*\*63\), got -1"),
    ((2**64 + 4, 4096, 8), r"n: expected an integer in \[0, 2\*\*63\), got 18446744073709551620"),  # ran as n = 4
    ((2**63, 4096, 8), r"n: expected an integer in \[0, 2\*\*63\)"),  # ran as n < 0
    ((1, 4096, 0), r"top_k: expected an integer >= 1, got 0"),
    ((1, 4096.0, 8), r"v: expected an integer, got 4096.0"),
])
def test_split_plan_refuses_what_the_kernel_does_not_take(args, message):
    """split_plan(1, 2**40, 2**31) returned (64, 0, -2147483648): the slice length truncated to int32
    and top_k wrapped on its way to C."""
    with pytest.raises(ValueError, match=f"^{message}"):
        host.split_plan(*args)


def test_host_top_k_beyond_int32_is_not_wrapped():
    """top_k travels to C as int32: 2**32 + 1 must mean "all of V" (as in the reference), not 1."""
    z = torch.zeros(1, 6)  # flat row: every candidate equally likely
    e = torch.tensor([5.0])
    for top_k in (2**32 + 1, 2**31):
        ref = [int(neg.gated_topk_sample(z, e, 0.0, top_k, 1.0, 3, o).token) for o in range(60)]
        got = [int(host.gated_topk_sample(z, e, 0.0, top_k, 1.0, 3, o).token) for o in range(60)]
        assert got == ref and set(got) == set(range(6))
    w = _weights(8, 4, torch.Generator().manual_seed(0), torch.float32, -math.inf)
    h = torch.randn(1, 8, generator=torch.Generator().manual_seed(1))
    ref = [int(neg.neg_step(h, z, w, top_k=2**32 + 2, offsets=o).token) for o in range(30)]
    assert [int(host.neg_step(h, z, w, top_k=2**32 + 2, offsets=o).token) for o in range(30)] == ref


def test_host_refuses_top_k_and_temperature_as_the_reference_does():
    z = torch.randn(2, 5)
    w = _weights(8, 4, torch.Generator().manual_seed(0), torch.float32, 0.0)
    for top_k, temperature in ((True, 1.0), (2, 1e-46), (2, 1e39)):
        with pytest.raises(ValueError) as ref_err:
            neg.gated_topk_sample(z, torch.zeros(2), 0.0, top_k, temperature, 0, 0)
        with pytest.raises(ValueError) as host_err:
            host.gated_topk_sample(z, torch.zeros(2), 0.0, top_k, temperature, 0, 0)
        assert str(host_err.value) == str(ref_err.value)
        with pytest.raises(ValueError) as host_step_err:
            host.neg_step(torch.randn(2, 8), z, w, top_k=top_k, temperature=temperature)
        assert str(host_step_err.value) == str(ref_err.value)


@pytest.mark.parametrize("change,message", [
    ({"top_k": 4.0}, "top_k: expected an integer >= 1, got 4.0"),
    ({"top_k": "4"}, "top_k: expected an integer >= 1, got '4'"),
    ({"temperature": "1.0"}, "temperature: expected a number, got '1.0'"),
    ({"temperature": np.True_}, f"temperature: expected a number, got {np.True_!r}"),
    ({"offsets": np.array([1, 2, 3], dtype=">f8")}, "offsets: expected integers, got dtype >f8"),
    ({"offsets": torch.tensor([1.7, 1.0, 1.0])}, "offsets: expected integers, got dtype torch.float32"),
    ({"offsets": [1.5, 2, 3]}, "offsets: expected an integer, got 1.5"),
    ({"seeds": np.array([1.0, 2.0, 3.0])}, "seeds: expected integers, got dtype float64"),
    ({"seeds": torch.tensor([True, False, True])}, "seeds: expected integers, got dtype torch.bool"),
    ({"seeds": 2.0}, "seeds: expected an integer, got 2.0"),
])
def test_reference_and_host_refuse_non_integer_arguments_alike(change, message):
    """Found by an independent check of DESIGN.md section 4: float offsets were truncated
    (1.7 drew with offset 1) and a string temperature was parsed; both are refused now, with
    the same message from the reference and the host build."""
    args = {**dict(top_k=4, temperature=1.0, seeds=0, offsets=0), **change}
    z, e = torch.randn(3, 20), torch.ones(3)
    for op in (neg.gated_topk_sample, host.gated_topk_sample):
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            op(z, e, 0.0, args["top_k"], args["temperature"], args["seeds"], args["offsets"])


@pytest.mark.parametrize("seed, offset, message", [
    (0, 1.7, "offset: expected an integer, got 1.7"),
    (True, 1, "seed: expected an integer, got True"),
    ("3", 1, "seed: expected an integer, got '3'"),
])
def test_philox_uniform_refuses_what_is_not_an_integer(seed, offset, message):
    # Both truncated them (an offset of 1.7 drew offset 1's number), against decision 14.
    for op in (neg.philox_uniform, host.philox_uniform):
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            op(seed, offset)
    assert neg.philox_uniform(np.int64(3), 2) == host.philox_uniform(np.uint8(3), torch.tensor(2))


@pytest.mark.parametrize("seed, offset, message", [
    (torch.tensor([1.7]), torch.tensor([1]), "seed: expected integers, got dtype torch.float32"),
    (torch.tensor(0), [1, 2.5], "offset: expected an integer, got 2.5"),
])
def test_philox_uniform_on_tensors_refuses_what_is_not_an_integer(seed, offset, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        neg.philox_uniform(seed, offset)


@pytest.mark.parametrize("num_threads", [-1, 1.5, True, "2", 1025, 10**9])
def test_host_num_threads_is_checked(num_threads):
    # 10**9 made libgomp end the process ("Out of memory allocating ..."), with no Python error.
    w = _weights(8, 4, torch.Generator().manual_seed(0), torch.float32, 0.0)
    calls = (lambda: host.neg_head(torch.randn(2, 8), w, num_threads=num_threads),
             lambda: host.neg_step(torch.randn(2, 8), torch.randn(2, 5), w, num_threads=num_threads),
             lambda: host.gated_topk_sample(torch.randn(2, 5), torch.ones(2), 0.0, 2, 1.0, 0, 0,
                                            num_threads=num_threads))
    for call in calls:
        with pytest.raises(ValueError, match=r"^num_threads: expected an integer in \[0, "):
            call()


def test_a_threshold_of_several_values_and_a_list_hidden_are_named():
    w = _weights(8, 4, torch.Generator().manual_seed(0), torch.float32, 0.0)
    h, z = torch.randn(2, 8), torch.randn(2, 5)
    for op in (neg.neg_step, host.neg_step):  # a raw RuntimeError from reshape before
        with pytest.raises(ValueError, match=r"^threshold: expected one value, got shape \(2,\)$"):
            op(h, z, w, threshold=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"^threshold: expected one value, got shape \(2,\)$"):
        host.gated_topk_sample(z, torch.ones(2), [0.0, 1.0], 2, 1.0, 0, 0)
    with pytest.raises(TypeError, match="^hidden/logits: expected torch tensors, got list and Tensor$"):
        neg.neg_step(h.tolist(), z, w)  # an AttributeError ('list' has no 'dim') before


def test_host_num_threads_applies_to_the_call_only():
    # The library shares libgomp with torch: omp_set_num_threads changed torch's thread count for good.
    w = _weights(8, 4, torch.Generator().manual_seed(0), torch.float32, 0.0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ref = host.neg_head(torch.randn(3, 8, generator=torch.Generator().manual_seed(4)), w, num_threads=1)
        more = host.neg_head(torch.randn(3, 8, generator=torch.Generator().manual_seed(4)), w,
                             num_threads=(os.cpu_count() or 1) + 2)  # more threads than CPUs: allowed
        assert torch.equal(ref, more)
        host.neg_head(torch.randn(3, 8), w, num_threads=1)
        host.neg_step(torch.randn(3, 8), torch.randn(3, 5), w, num_threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_integer_scalars_of_numpy_and_torch_are_integers():
    """top_k, seeds and offsets as numpy or torch integers give what Python ints give; uint64
    seeds keep their 64 bits (2**64 - 1 is the int64 -1)."""
    z, e = torch.randn(3, 50, generator=torch.Generator().manual_seed(2)), torch.ones(3)
    want = neg.gated_topk_sample(z, e, 0.0, 6, 1.0, [2**64 - 1] * 3, [0, 1, 2**40])
    for top_k in (np.int64(6), torch.tensor(6), np.uint8(6)):
        for seeds, offsets in (([np.uint64(2**64 - 1)] * 3, np.array([0, 1, 2**40], dtype=np.uint64)),
                               (np.full(3, -1, dtype=np.int64), torch.tensor([0, 1, 2**40])),
                               (torch.tensor(-1), [np.int64(0), np.int32(1), 2**40]),
                               (np.array([-1] * 3, dtype=">i8"), np.array([0, 1, 2**40], dtype=">u8"))):
            for op in (neg.gated_topk_sample, host.gated_topk_sample):
                got = op(z, e, 0.0, top_k, 1.0, seeds, offsets)
                assert torch.equal(got.token, want.token) and torch.equal(got.guided_logits, want.guided_logits)
    assert torch.equal(neg.per_row_int64(range(3), 3, "offsets"), torch.arange(3))


def test_host_takes_what_the_reference_takes_for_hidden_and_refuses_integer_logits():
    w = _weights(8, 4, torch.Generator().manual_seed(0), torch.float32, 0.0)
    h = torch.randn(8, generator=torch.Generator().manual_seed(1))
    got, ref = host.neg_head(h, w), neg.neg_head(h, w)
    assert got.shape == ref.shape == () and torch.allclose(got, ref, rtol=2e-6, atol=2e-6)
    for op in (neg.gated_topk_sample, host.gated_topk_sample):
        with pytest.raises(ValueError, match="logits: expected a floating-point tensor"):
            op(torch.ones(2, 3, dtype=torch.int32), torch.ones(2), 0.0, 2, 1.0, 0, 0)


def test_host_twins_refuse_inputs_the_c_code_would_read_out_of_bounds():
    """The C calls read N*H hidden values, N entropies and d*H weights from the pointers they get: every
    shape they are given is checked first (a mismatch would read past a buffer, not raise)."""
    g = torch.Generator().manual_seed(3)
    w = _weights(8, 4, g, torch.float32, 0.5)
    logits = torch.randn(3, 16, generator=g)
    with pytest.raises(ValueError, match=r"^entropy: expected shape \(3,\), got \(2,\)$"):
        host.gated_topk_sample(logits, torch.zeros(2), 0.5, 4, 1.0, 0, 0)
    with pytest.raises(TypeError, match=r"^hidden: dtype torch.int32 not supported"):
        host.neg_head(torch.zeros(3, 8, dtype=torch.int32), w)
    with pytest.raises(ValueError, match=r"^hidden: expected shape \[N, H\], got \(2, 3, 8\)$"):
        host.neg_head(torch.zeros(2, 3, 8), w)
    with pytest.raises(ValueError, match=r"^hidden: last dimension 7 != fc1_weight columns 8$"):
        host.neg_head(torch.zeros(3, 7), w)
    with pytest.raises(TypeError, match=r"^hidden: dtype torch.float64 not supported"):
        host.neg_step(torch.zeros(3, 8, dtype=torch.float64), logits, w)
    with pytest.raises(ValueError, match=r"^hidden: expected \[3, H\], got \(2, 8\)$"):
        host.neg_step(torch.zeros(2, 8), logits, w)
    with pytest.raises(ValueError, match=r"^hidden: last dimension 7 != fc1_weight columns 8$"):
        host.neg_step(torch.zeros(3, 7), logits, w)


def test_host_neg_head_takes_float64_weights_as_float32():
    """W1 in a dtype the C code has no code for (float64) is converted, not reinterpreted."""
    g = torch.Generator().manual_seed(4)
    w = _weights(8, 4, g, torch.float32, 0.5)
    w64 = neg.NegWeights(w.fc1_weight.double(), w.fc1_bias, w.fc2_weight, w.fc2_bias, w.threshold)
    hidden = torch.randn(3, 8, generator=g)
    assert torch.equal(host.neg_head(hidden, w64), host.neg_head(hidden, w))
    torch.testing.assert_close(host.neg_head(hidden, w), neg.neg_head(hidden, w), rtol=1e-5, atol=1e-5)


def test_host_c_entry_refuses_activation_codes_outside_0_to_3():
    """negActivationValid guards the C entry (the Python twins pass only known names' codes):
    one past each end of 0..3 is refused with its message, every code inside is run."""
    import ctypes

    lib = host.load()
    hidden, w1, b1, w2 = torch.ones(1, 8), torch.ones(4, 8), torch.zeros(4), torch.ones(4)
    entropy = torch.empty(1)
    p = lambda t: ctypes.c_void_p(t.data_ptr())  # noqa: E731

    def head(code):
        return lib.trtneg_neg_head_host(p(hidden), 0, 1, 8, p(w1), 0, p(b1), p(w2), 0.0, 4, code, p(entropy), 1)

    for code in (-1, 4):
        assert head(code) != 0
        assert lib.trtneg_last_error().decode() == "activation: unknown activation code"
    assert [head(code) for code in range(4)] == [0, 0, 0, 0]


def test_sampling_reads_each_candidates_logit_to_the_last_bit():
    """The candidates' logits come back from their 64-bit sort keys (negKeyToFloat); at
    T = 2**-23 one ulp of a logit near 1 is a factor e in its weight, so the draw sees a
    lost low mantissa bit: here the odd-mantissa logit must keep P = 1 / (1 + e**-1)."""
    top = float(np.nextafter(np.float32(1.0), np.float32(2.0)))  # 1 + 2**-23: odd mantissa
    n = 64
    z = torch.tensor([[1.0, top]] * n)
    offsets = torch.arange(n)
    ref = neg.gated_topk_sample(z, torch.full((n,), 9.0), 0.0, 2, 2.0**-23, 5, offsets)
    got = host.gated_topk_sample(z, torch.full((n,), 9.0), 0.0, 2, 2.0**-23, 5, offsets)
    _compare(ref, got, z, top_k=2, temperature=2.0**-23, seeds=[5] * n, offsets=offsets, tau=0.0)
    share = float((ref.token == 1).float().mean())
    assert 0.6 < share < 0.85, share  # 0.73 expected; equal weights (a lost bit) give 0.5
