"""The fused NEG CUDA op -- ``negKernel.cu``'s own kernels and launcher -- run on the CPU
simulation of CUDA (tests/_cuda_sim.py), against the host library and the torch reference.

With the entropies given, the simulated kernel must equal the host library bit for bit (the
simulation's block reductions sum in thread order, as the host loops do), on every path
(one block per row, split-V with any slice count) and in every thread/block order (forward,
reversed, shuffled: a missing barrier shows up as a difference).  With the NEG-Head, the
entropies are within fp32 summation-order tolerance of the reference.  What stays for a GPU
run (python -m trt_neg.gpu_check): the hardware's own reduction order, memory model and speed.
"""

import dataclasses
import math

import pytest
import torch
from _build import GXX
from test_neg_host import _compare, _logits, _weights

from trt_neg import neg
from trt_neg.kernels import host

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ missing")

sim = pytest.importorskip("_cuda_sim")

ORDERS = ("forward", "reverse", "shuffled")


def _inputs(kind, n, v, seed):
    g = torch.Generator().manual_seed(seed)
    z = _logits(kind, n, v, g)
    entropy = torch.rand(n, generator=g) * 2
    entropy[::5] = float("nan")
    seeds = torch.randint(-(2**62), 2**62, (n,), generator=g)
    offsets = torch.randint(0, 2**40, (n,), generator=g)
    return z, entropy, seeds, offsets


def _assert_same(got, want, what):
    for field in ("token", "fired", "status"):
        assert torch.equal(getattr(got, field), getattr(want, field)), f"{what}: {field}"
    assert torch.equal(got.guided_logits, want.guided_logits), f"{what}: guided logits"


def _sample(z, entropy, tau, top_k, temperature, seeds, offsets, **kw):
    w = neg.NegWeights(fc1_weight=torch.zeros(1, 1), fc1_bias=torch.zeros(1), fc2_weight=torch.zeros(1),
                       fc2_bias=torch.zeros(()), threshold=torch.tensor(tau))
    return sim.neg_step(None, z, w, entropy_in=entropy, top_k=top_k, temperature=temperature, seeds=seeds,
                        offsets=offsets, **kw)


SAMPLE_CASES = [
    # kind, N, V, top_k, temperature, slice counts to force besides the automatic plan and 1, orders
    ("normal", 1, 7, 3, 1.0, (), ORDERS),
    ("ties", 37, 7, 8, 1.0, (), ORDERS),  # top_k >= V
    ("nonfinite", 16, 50, 10, 1.0, (3,), ORDERS),
    ("nonfinite", 8, 7, 1024, 2.0, (2,), ORDERS),  # top_k >= V: each slice keeps all its keys, the last fewer
    ("ties", 5, 9001, 1024, 0.7, (2, 5, 64), ORDERS),  # k spans several slices; V % 4 != 0
    ("fp16", 3, 40000, 64, 1.3, (7,), ORDERS),
    ("normal", 260, 64, 8, 1.0, (), ("reverse",)),  # N past the split-V target: one block per row
]


@pytest.mark.parametrize("kind,n,v,top_k,temperature,forced,orders", SAMPLE_CASES)
def test_gated_sampling_equals_host_bit_for_bit_on_every_path_and_order(kind, n, v, top_k, temperature, forced,
                                                                         orders):
    z, entropy, seeds, offsets = _inputs(kind, n, v, n * 131 + v)
    # each distinct plan once (the automatic plan may be one of the forced ones)
    plans = {host.split_plan(n, v, top_k, s): s for s in (1, *forced, 0)}
    for tau in (1.0, -math.inf, math.inf):
        want = host.gated_topk_sample(z, entropy, tau, top_k, temperature, seeds, offsets)
        for splits in plans.values():
            for order in orders if tau == 1.0 else orders[-1:]:
                got = _sample(z, entropy, tau, top_k, temperature, seeds, offsets, splits=splits, order=order,
                              shuffle_seed=splits)
                _assert_same(got, want, f"tau={tau} splits={splits} order={order}")
                assert torch.equal(got.entropy.isnan(), entropy.isnan())
                assert torch.equal(got.entropy.nan_to_num(), entropy.nan_to_num()), "entropy passed through"
        ref = neg.gated_topk_sample(z, entropy, tau, top_k, temperature, seeds, offsets)
        _compare(ref, got, z, top_k=top_k, temperature=temperature, seeds=seeds, offsets=offsets)


def test_full_vocabulary_row_on_the_automatic_split_plan():
    """V = 248320 (Qwen3.5), one row: 64 slices of 3880, fired and not fired."""
    z, entropy, seeds, offsets = _inputs("ties", 2, 248320, 7)
    entropy[:] = torch.tensor([0.2, 1.5])
    assert host.split_plan(2, 248320, 1024) == (64, 3880, 1024)
    want = host.gated_topk_sample(z, entropy, 1.0, 1024, 1.0, seeds, offsets)
    got = _sample(z, entropy, 1.0, 1024, 1.0, seeds, offsets, order="reverse")
    _assert_same(got, want, "V=248320")
    assert got.fired.tolist() == [False, True]


@pytest.mark.parametrize("misalign", [0, 4, 8])
def test_unaligned_rows_take_the_scalar_loads(misalign):
    """Logits/guided 4 or 8 bytes off cudaMalloc's alignment: the kernel must not use float4
    loads (the simulation faults on a misaligned one), with guided logits and without (then the
    logits' alignment alone decides)."""
    z, entropy, seeds, offsets = _inputs("nonfinite", 6, 4096, 11)
    want = host.gated_topk_sample(z, entropy, 1.0, 16, 1.0, seeds, offsets)
    for splits in (1, 2):
        what = f"misalign={misalign} splits={splits}"
        _assert_same(_sample(z, entropy, 1.0, 16, 1.0, seeds, offsets, splits=splits, rows_misalign=misalign), want,
                     what)
        got = _sample(z, entropy, 1.0, 16, 1.0, seeds, offsets, splits=splits, rows_misalign=misalign,
                      with_guided=False)
        assert got.guided_logits is None
        _assert_same(dataclasses.replace(got, guided_logits=want.guided_logits), want, f"{what} without guided")
        if misalign:  # aligned logits, misaligned guided rows: the guided rows' alignment decides too
            got = _sample(z, entropy, 1.0, 16, 1.0, seeds, offsets, splits=splits, guided_misalign=misalign)
            _assert_same(got, want, f"{what} guided only")


def test_draw_on_a_cumulative_boundary_takes_the_next_candidate():
    """1024 tied logits: every candidate's probability is exactly 2^-10, so the cumulative sums
    are exact, and where u * 1024 is an integer j the draw lands on the boundary c[j-1] = u.
    The rule is the first c > u: candidate j (c >= u would take j - 1)."""
    k = 1024
    offsets = torch.arange(1 << 17)
    u = neg.philox_uniform(torch.tensor(3), offsets)
    hits = offsets[((u * k).frac() == 0) & (u > 0)][:3]
    n = hits.numel()
    z = torch.full((n, k), 0.25)
    entropy = torch.full((n,), 2.0)
    seeds = torch.full((n,), 3)
    want = host.gated_topk_sample(z, entropy, 1.0, k, 1.0, seeds, hits)
    assert want.token.tolist() == (u[hits] * k).long().tolist()  # tied: candidate j is id j
    for splits in (1, 4):
        _assert_same(_sample(z, entropy, 1.0, k, 1.0, seeds, hits, splits=splits), want, f"splits={splits}")


HEAD_CASES = [
    # N, H, d, V, dtype
    (1, 64, 16, 5000, torch.bfloat16),
    (9, 136, 80, 300, torch.float16),  # two row tiles of the GEMV, partial neuron tile of the MMA head
    (70, 128, 64, 257, torch.bfloat16),  # two MMA row tiles
    (5, 100, 20, 999, torch.float32),  # H % 4 != 0: the GEMV's scalar loads; d % 8 != 0: warps past d
    (3, 100, 24, 999, torch.bfloat16),  # H % 8 != 0: the MMA head falls back to the GEMV
]


@pytest.mark.parametrize("n,hs,d,v,dtype", HEAD_CASES)
@pytest.mark.parametrize("head_algo", ["gemv", "mma"])
def test_neg_step_with_head_vs_reference(n, hs, d, v, dtype, head_algo):
    g = torch.Generator().manual_seed(n * 1000 + hs)
    w = _weights(hs, d, g, dtype, 0.0)
    h = torch.randn(n, hs, generator=g).to(dtype)
    z = _logits("ties", n, v, g)
    ref_ent = neg.neg_head(h, w)
    tau = float(ref_ent.median())
    seeds, offsets = torch.arange(n) * 7 + 3, torch.arange(n) + 40
    got = sim.neg_step(h, z, w, top_k=16, seeds=seeds, offsets=offsets, threshold=tau, head_algo=head_algo,
                       order="shuffled", shuffle_seed=n)
    torch.testing.assert_close(got.entropy, ref_ent, rtol=2e-6, atol=2e-6)
    ref = neg.neg_step(h, z, w, top_k=16, seeds=seeds, offsets=offsets, threshold=tau)
    _compare(ref, got, z, top_k=16, temperature=1.0, seeds=seeds, offsets=offsets, tau=tau, exact_fired=False)
    # Given the kernel's own entropies, the sampling is the host library's exactly.
    _assert_same(got, host.gated_topk_sample(z, got.entropy, tau, 16, 1.0, seeds, offsets), "sampling")
    assert got.fired.any() or n == 1


def test_misaligned_hidden_and_old_gpus_fall_back_to_the_gemv():
    g = torch.Generator().manual_seed(5)
    w = _weights(64, 32, g, torch.bfloat16, 0.0)
    h = torch.randn(4, 64, generator=g).to(torch.bfloat16)
    z = torch.randn(4, 100, generator=g)
    gemv = sim.neg_step(h, z, w, seed=1)
    assert torch.equal(sim.neg_step(h, z, w, seed=1, head_algo="mma", sm_major=7).entropy, gemv.entropy)
    # An H100 running a "7.5+PTX" build: the tiles' code is the sm_75 body, a trap; the GEMV runs
    assert torch.equal(sim.neg_step(h, z, w, seed=1, head_algo="mma", sm_major=9, code_arch=75).entropy,
                       gemv.entropy)
    mma = sim.neg_step(h, z, w, seed=1, head_algo="mma", sm_major=9, code_arch=80)  # built for sm_80: tiles
    torch.testing.assert_close(mma.entropy, gemv.entropy, rtol=2e-6, atol=2e-6)
    # hidden 2 or 8 bytes off: neither 16-byte loads in the GEMV nor the MMA head may run
    for algo in ("gemv", "mma"):
        for misalign in (2, 8):
            got = sim.neg_step(h, z, w, seed=1, head_algo=algo, hidden_misalign=misalign)
            torch.testing.assert_close(got.entropy, gemv.entropy, rtol=2e-6, atol=2e-6)


def test_entropy_only_call_matches_the_full_step():
    g = torch.Generator().manual_seed(9)
    w = _weights(48, 16, g, torch.float16, 0.0)
    h = torch.randn(5, 48, generator=g).to(torch.float16)
    full = sim.neg_step(h, torch.randn(5, 64, generator=g), w, seed=3)
    only = sim.neg_step(h, None, w)
    assert torch.equal(only.entropy, full.entropy)
    assert only.token.tolist() == [-1] * 5  # never written: the simulated device buffer's poison


def test_int32_positions_and_one_seed_for_all_rows():
    z, entropy, _, _ = _inputs("normal", 6, 3000, 21)
    entropy[:] = 2.0  # every row fires
    offsets = torch.arange(6) * 1000 + 5
    offsets[4:] = torch.tensor([-5, -(2**31)])  # int32 positions are sign-extended, as int64 ones
    want = host.gated_topk_sample(z, entropy, 1.0, 32, 0.9, torch.full((6,), 77), offsets)
    for int32 in (False, True):
        got = _sample(z, entropy, 1.0, 32, 0.9, None, offsets, seed=77, offsets_int32=int32)
        _assert_same(got, want, f"int32 positions={int32}")


@pytest.mark.parametrize("kwargs", [dict(top_k=1025), dict(temperature=0.0), dict(splits=-1)])
def test_launcher_refuses_bad_arguments(kwargs):
    z, entropy, seeds, offsets = _inputs("normal", 2, 50, 1)
    args = dict(top_k=8, temperature=1.0) | kwargs
    with pytest.raises(sim.SimulatedKernelError, match="invalid argument"):
        _sample(z, entropy, 1.0, args.pop("top_k"), args.pop("temperature"), seeds, offsets, **args)


@pytest.mark.parametrize("hidden_dtype,positions_dtype", [(torch.bfloat16, torch.int32), (torch.float32, torch.int64)])
def test_tensorrt_plugin_enqueue_vs_reference(hidden_dtype, positions_dtype):
    """The plugin's enqueue (negPluginEnqueue: its I/O order, field wiring and the workspace
    getWorkspaceSize reserves for the profile's largest N) on the simulation, against neg_step
    with the plugin's fields: one seed for every row, positions as the Philox offsets."""
    g = torch.Generator().manual_seed(17)
    n, hs, d, v = 6, 64, 32, 3000
    w = _weights(hs, d, g, hidden_dtype, 0.0)
    h = torch.randn(n, hs, generator=g).to(hidden_dtype)
    z = _logits("ties", n, v, g)
    tau = float(neg.neg_head(h, w).median())
    positions = torch.tensor([0, 5, 2**31 - 1, 7, 100, 3], dtype=positions_dtype)
    fields = dict(top_k=40, temperature=0.8, seed=-(2**62) + 5, activation="gelu_tanh")
    got = sim.plugin_enqueue(h, z, w, tau, positions, max_rows=8, **fields)
    ref = neg.neg_step(h, z, w, top_k=40, temperature=0.8, seeds=fields["seed"], offsets=positions.long(),
                       threshold=tau, activation="gelu_tanh")
    torch.testing.assert_close(got.entropy, ref.entropy, rtol=2e-6, atol=2e-6)
    got = dataclasses.replace(got, status=ref.status)  # the plugin has no status output
    _compare(ref, got, z, top_k=40, temperature=0.8, seeds=torch.full((n,), fields["seed"]), offsets=positions,
             tau=tau, exact_fired=False)
    assert got.fired.any() and not got.fired.all()
