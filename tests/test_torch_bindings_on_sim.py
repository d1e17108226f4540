"""The torch extension bindings themselves -- plugins/neg/negTorch.cpp and plugins/gdn/gdnTorch.cpp,
which the GPU check and the reference backend load on a GPU -- built on the CPU simulation of CUDA
(tests/_sim_extensions.py) and called through :mod:`trt_neg.kernels.cuda_ext`'s wrappers, as on a
GPU: the wrappers' arguments, the bindings' tensor checks and messages, their parameter mapping and
output allocation, and the kernels behind them, against the host libraries and the torch reference.

The GPU-check section tests that run on the host library (tests/_gpu_stand_ins.py's
HostNegExtension and HostGdnExtension) stand in for these bindings; their signatures are
checked against the real ones here.
"""

from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest
import torch
from _build import GXX
from _gpu_stand_ins import HostGdnExtension, HostNegExtension
from test_gdn_host import CTX, GEN, make_inputs
from test_gdn_kernel_sim import OUTPUT_ULP, op_args, same_bits
from test_neg_host import _logits, _weights

from trt_neg import neg
from trt_neg.kernels import cuda_ext, gdn_host, host

pytestmark = pytest.mark.skipif(GXX is None, reason="g++ missing")

sim = pytest.importorskip("_sim_extensions")
KB = 1024
DEVICE_WORD = "CPU (simulated CUDA)"  # torchBinding.h's kKernelDevice: "CUDA" in the GPU build


def _serving(monkeypatch, loader: str, ext):
    """``ext``, reset, as what cuda_ext's ``loader`` returns."""
    monkeypatch.setattr(cuda_ext, loader, lambda verbose=False: ext)
    return ext.reset()


@pytest.fixture
def neg_ext(monkeypatch):
    return _serving(monkeypatch, "load", sim.neg_extension())


@pytest.fixture
def gdn_ext(monkeypatch):
    return _serving(monkeypatch, "load_gdn", sim.gdn_extension())


def _same_sampling(got, want, what):
    for field in ("token", "fired", "status", "guided_logits"):
        assert torch.equal(getattr(got, field), getattr(want, field)), f"{what}: {field}"


# --------------------------------------------------------------------------- NEG
NEG_CASES = [
    # N, H, d, V, top_k: one row; a 7-token vocabulary; k >= V; several vocabulary slices per row
    (1, 64, 32, 7, 3),
    (5, 48, 16, 300, 8),
    (4, 64, 32, 100, 1024),
    (3, 128, 64, 70000, 50),
]


@pytest.mark.parametrize("n,hs,d,v,top_k", NEG_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_neg_step_through_the_binding(neg_ext, n, hs, d, v, top_k, dtype):
    """cuda_ext.neg_step -> negTorch.cpp -> negKernel.cu: entropies within fp32 summation-order
    tolerance of the reference, and, given those entropies, tokens, fired flags, statuses and
    guided logits equal to the host library's bit for bit; vs the torch reference, as the GPU
    check compares (a token may differ only on a draw at a cumulative boundary)."""
    from trt_neg.gpu_check import sec_neg

    g = torch.Generator().manual_seed(n * 131 + v)
    w = _weights(hs, d, g, dtype, 0.0)
    h = torch.randn(n, hs, generator=g).to(dtype)
    z = _logits("ties", n, v, g)
    seeds, offsets = torch.randint(-(2**62), 2**62, (n,), generator=g), torch.arange(n) + 2**33
    ref_entropy = neg.neg_head(h, w)
    for tau in (-math.inf, float(ref_entropy.median()), math.inf):
        got = cuda_ext.neg_step(h, z, w, top_k=top_k, temperature=0.8, seeds=seeds, offsets=offsets, threshold=tau)
        assert got.token.dtype == torch.int64 and got.fired.dtype == torch.bool and got.guided_logits.shape == (n, v)
        torch.testing.assert_close(got.entropy, ref_entropy, rtol=2e-6, atol=2e-6)
        _same_sampling(got, host.gated_topk_sample(z, got.entropy, tau, top_k, 0.8, seeds, offsets), f"tau={tau}")
        ref = neg.neg_step(h, z, w, top_k=top_k, temperature=0.8, seeds=seeds, offsets=offsets, threshold=tau)
        _, _, fails = sec_neg._compare(ref, got, z, top_k, 0.8, seeds, offsets, tau=tau)
        assert not fails, fails
    assert bool(got.fired.any()) is False and bool(ref.fired.any()) is False  # tau = +inf never fires


def test_neg_step_from_given_entropies_on_every_path_and_order(neg_ext):
    """The entropy_in path (the head skipped), without guided logits: the automatic plan, one
    block per row and forced slice counts, with threads and blocks forward, reversed and
    shuffled, all give the host library's bits; the plan is one launch, or two with slices."""
    g = torch.Generator().manual_seed(3)
    n, v = 6, 9001
    z = _logits("nonfinite", n, v, g)
    entropy = torch.rand(n, generator=g) * 2
    entropy[2] = float("nan")  # never fires
    seeds, offsets = torch.arange(n) * 17 - 40, torch.arange(n) + 3
    w = neg.NegWeights(torch.zeros(1, 1), torch.zeros(1), torch.zeros(1), torch.zeros(()), torch.tensor(1.0))
    want = host.gated_topk_sample(z, entropy, 1.0, 64, 1.1, seeds, offsets, with_guided=False)
    launches = {}
    for order in ("forward", "reverse", "shuffled"):
        neg_ext.device.order, neg_ext.device.shuffle_seed = order, 5
        for splits in (0, 1, 2, 7):
            got = cuda_ext.neg_step(None, z, w, top_k=64, temperature=1.1, seeds=seeds, offsets=offsets,
                                    entropy=entropy, with_guided=False, splits=splits)
            assert got.guided_logits is None
            torch.testing.assert_close(got.entropy, want.entropy, rtol=0, atol=0, equal_nan=True)
            for field in ("token", "fired", "status"):
                assert torch.equal(getattr(got, field), getattr(want, field)), f"{order} splits={splits}: {field}"
            launches[splits] = neg_ext.launches()
    assert not bool(want.fired[2]) and bool(want.fired.any())
    assert launches[1] == 1 and launches[2] == launches[7] == 2


def test_cuda_wrapper_takes_seeds_and_offsets_as_the_host_build_does(neg_ext):
    """cuda_ext.neg_step (neg_step_fast's GPU path) reads seeds/offsets with the reference's
    rules: 64-bit seeds past 2**63 and numpy uint64 work, one value is broadcast, a float,
    bool or string is refused rather than truncated (found by review: the wrapper had its own
    loose conversion)."""
    g = torch.Generator().manual_seed(8)
    z, entropy = torch.randn(4, 300, generator=g), torch.full((4,), 3.0)
    w = neg.NegWeights(torch.zeros(1, 1), torch.zeros(1), torch.zeros(1), torch.zeros(()), torch.tensor(1.0))
    want = host.gated_topk_sample(z, entropy, 1.0, 16, 1.0, [2**64 - 1] * 4, [2**63 + 5] * 4)
    for seeds, offsets in ((2**64 - 1, [2**63 + 5]), (np.uint64(2**64 - 1), np.full(4, 2**63 + 5, dtype=np.uint64)),
                           (torch.tensor([-1]), torch.full((4,), -(2**63) + 5))):
        got = cuda_ext.neg_step(None, z, w, top_k=16, seeds=seeds, offsets=offsets, entropy=entropy)
        _same_sampling(got, want, f"seeds={seeds!r}")
    for bad, message in (({"offsets": 1.7}, "offsets: expected an integer, got 1.7"),
                         ({"seeds": torch.tensor([1.5] * 4)}, "seeds: expected integers, got dtype torch.float32"),
                         ({"seeds": True}, "seeds: expected an integer, got True")):
        args = {"seeds": 0, "offsets": 0, **bad}
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            cuda_ext.neg_step(None, z, w, top_k=16, entropy=entropy, **args)


@pytest.mark.parametrize("head_algo", ["gemv", "mma"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n,hs,d", [(40, 96, 48), (1, 40, 65), (70, 72, 100), (37, 512, 64)])
def test_neg_head_alone_through_the_binding(neg_ext, n, hs, d, head_algo, dtype):
    """cuda_ext.neg_head (logits=None): the head pass only, GEMV or tensor-core tiles (fp32
    takes the GEMV either way), within fp32 tolerance of the reference, on one shape of ours
    and test_neg_gpu.py's but its largest (one row; N and d not multiples of the tiles; H not
    a multiple of the K step); on an sm_75 device the tiles fall back to the GEMV."""
    g = torch.Generator().manual_seed(n + hs + d)
    w = _weights(hs, d, g, dtype, 0.0)
    h = torch.randn(n, hs, generator=g).to(dtype)
    got = cuda_ext.neg_head(h, w, "gelu", head_algo=head_algo)
    assert got.shape == (n,) and got.dtype == torch.float32
    assert neg_ext.launches() == 2  # the head's dot products, then the row pass that finishes H_hat
    torch.testing.assert_close(got, neg.neg_head(h, w, "gelu"), rtol=2e-6, atol=2e-6)
    neg_ext.device.sm = (7, 5)
    assert torch.equal(cuda_ext.neg_head(h, w, "gelu", head_algo=head_algo), cuda_ext.neg_head(h, w, "gelu"))


def _neg_args(n=4, v=50, hs=32, d=16, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(0)
    return dict(hidden=torch.randn(n, hs, generator=g).to(dtype), logits=torch.randn(n, v, generator=g),
                w1=torch.randn(d, hs, generator=g).to(dtype), b1=torch.zeros(d), w2=torch.randn(d, generator=g),
                b2=torch.zeros(1), tau=torch.ones(1), seeds=torch.arange(n), offsets=torch.arange(n),
                entropy_in=None, activation=0, top_k=8, temperature=1.0, with_guided=True)


NEG_BAD_ARGS = [
    ({"hidden": None}, "neg_step: give hidden (with w1, b1, w2, b2) or entropy_in"),
    ({"w1": None}, "hidden, w1, b1, w2, b2 are required without entropy_in"),
    ({"logits": torch.zeros(4, 50, device="meta")}, "logits: must be on cpu, got meta"),
    ({"tau": torch.ones(0)}, "tau: expected the gate threshold (1 element), got an empty tensor"),
    ({"tau": torch.ones(1, dtype=torch.float64)}, "tau: expected dtype Float, got Double"),
    ({"hidden": torch.zeros(4, 32, dtype=torch.int32)}, "hidden: dtype must be float32, float16 or bfloat16, got Int"),
    ({"w1": torch.zeros(16, 32)}, "w1: expected dtype BFloat16, got Float"),
    ({"w1": torch.zeros(16, 31, dtype=torch.bfloat16)}, "w1: columns must equal hidden size"),
    ({"b1": torch.zeros(15)}, "b1/w2: expected 16 elements"),
    ({"b2": torch.zeros(1, dtype=torch.float16)}, "b2: expected dtype Float, got Half"),
    ({"b2": torch.zeros(0)}, "b2: expected the head's output bias (1 element), got 0 elements"),
    ({"b2": torch.zeros(2)}, "b2: expected the head's output bias (1 element), got 2 elements"),
    ({"logits": torch.zeros(50, 4).t()}, "logits: must be contiguous"),
    ({"logits": torch.zeros(3, 50)}, "logits: expected 4 rows"),
    ({"logits": torch.zeros(4, 50, 1)}, "logits: expected 2 dims, got 3"),
    ({"seeds": torch.arange(4, dtype=torch.int32)}, "seeds: expected dtype Long, got Int"),
    ({"offsets": torch.arange(3)}, "seeds/offsets: expected 4 elements"),
    ({"w1": torch.zeros(16, 32, dtype=torch.bfloat16, device="meta")}, "w1: must be on cpu, got meta"),
    ({"seeds": torch.arange(4, device="meta")}, "seeds: must be on cpu, got meta"),
    ({"hidden": None, "entropy_in": torch.zeros(4, dtype=torch.float64)}, "entropy_in: expected dtype Float, got Double"),
    ({"hidden": None, "entropy_in": torch.zeros(4, 1)}, "entropy_in: expected 1 dims, got 2"),
    ({"hidden": torch.zeros(4, 32, dtype=torch.bfloat16, device="meta")}, "hidden: must be a " + DEVICE_WORD),
    ({"hidden": None, "entropy_in": torch.zeros(4, device="meta")}, "entropy_in: must be a " + DEVICE_WORD),
    ({"splits": -1}, "splits: expected 0 (automatic) or a slice count, got -1"),
    ({"head_algo": 2}, "head_algo: expected 0 (GEMV) or 1 (tensor cores), got 2"),
    ({"top_k": 1025}, "negStepLaunch failed: invalid argument"),
    ({"temperature": 0.0}, "negStepLaunch failed: invalid argument"),
]


@pytest.mark.parametrize("change,message", NEG_BAD_ARGS, ids=[m[:40] for _, m in NEG_BAD_ARGS])
def test_neg_binding_refuses_bad_arguments(neg_ext, change, message):
    """negTorch.cpp's checks, with the message naming the tensor or parameter; the launcher's
    own refusals come back as its cudaError_t's text. hidden (or entropy_in) off the kernels'
    device is refused before the device guard is built: the real guard refuses a non-CUDA
    device with a message of its own, and so does the simulation's stand-in a non-CPU one."""
    with pytest.raises(RuntimeError, match=re.escape(message)):
        neg_ext.neg_step(**{**_neg_args(), **change})


def test_neg_binding_output_shapes(neg_ext):
    """token/entropy/fired/status [N] (int32, fp32, int32, int32) and guided [N, V] fp32, or an
    undefined tensor (None) without guided logits or without logits."""
    token, entropy, fired, status, guided = neg_ext.neg_step(**_neg_args(n=3, v=70))
    assert [t.dtype for t in (token, entropy, fired, status, guided)] == [torch.int32, torch.float32, torch.int32,
                                                                           torch.int32, torch.float32]
    assert [tuple(t.shape) for t in (token, entropy, fired, status, guided)] == [(3,)] * 4 + [(3, 70)]
    assert neg_ext.neg_step(**{**_neg_args(n=3, v=70), "with_guided": False})[4] is None
    assert neg_ext.neg_step(**{**_neg_args(n=3, v=70), "logits": None})[4] is None


# --------------------------------------------------------------------------- GDN
GDN_CFG = (2, 4, 32, 16)  # Hk, Hv, dk, dv: GQA, dk != dv


@pytest.mark.parametrize("algo", list(gdn_host.ALGOS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gdn_forward_through_the_binding(gdn_ext, algo, dtype):
    """cuda_ext.gdn_forward -> gdnTorch.cpp -> gdnKernel.cu on a mixed packed batch (decode
    steps from carried state, prompts below and over the chunk threshold, permuted slots, the
    gated norm): output and state pool within the kernel-vs-host tolerance of the host library
    at the device's chunk size, bit-identical across thread orders; unused slots untouched."""
    lens, types, slots = [1, 5, 20, 1, 40], [GEN, CTX, CTX, GEN, CTX], [3, 0, 5, 1, 2]
    x = make_inputs(sum(lens), *GDN_CFG, seed=4, dtype=dtype)
    pool = torch.randn(7, *GDN_CFG[1:]) * 0.3
    args = op_args(x, GDN_CFG, lens, types=types, slots=slots)
    chunk = gdn_ext.chunk_size(*GDN_CFG)
    assert chunk == gdn_host.chunk_plan(*GDN_CFG, sim.H200_SHARED_OPTIN)["chunk"] == 64
    want_pool = pool.clone()
    want = gdn_host.gated_delta_rule(**args, state_pool=want_pool, algo=algo, chunk_size=chunk)
    runs = []
    for order in ("forward", "reverse", "shuffled"):
        gdn_ext.device.order, gdn_ext.device.shuffle_seed = order, 3
        p = pool.clone()
        runs.append((cuda_ext.gdn_forward(**args, state_pool=p, algo=algo), p))
    (y, p), rest = runs[0], runs[1:]
    assert all(same_bits(y_o, y) and same_bits(p_o, p) for y_o, p_o in rest), "thread orders differ: a race"
    assert y.dtype == dtype and y.shape == (sum(lens), GDN_CFG[1] * GDN_CFG[3])
    torch.testing.assert_close(y.float(), want.float(), rtol=OUTPUT_ULP[dtype], atol=1e-5)
    torch.testing.assert_close(p, want_pool, rtol=1e-4, atol=1e-5)
    assert torch.equal(p[[4, 6]], pool[[4, 6]])


@pytest.mark.parametrize("sm,optin", [((9, 0), 227 * KB), ((8, 0), 163 * KB), ((8, 9), 99 * KB), ((8, 9), 12000)])
def test_gdn_chunk_size_follows_the_device(gdn_ext, sm, optin):
    """The binding's chunk_size reads the device's opt-in shared memory (here the simulated
    GPU's) and picks what the host library's plan picks; shared_bytes is the scan launch's."""
    gdn_ext.device.sm, gdn_ext.device.max_shared_optin = sm, optin
    for cfg in (GDN_CFG, (1, 1, 128, 128)):
        assert gdn_ext.chunk_size(*cfg) == gdn_host.chunk_plan(*cfg, optin)["chunk"]
    assert gdn_ext.chunk_size(1, 1, 128, 128) == {227 * KB: 64, 163 * KB: 32, 99 * KB: 16, 12000: 0}[optin]
    assert gdn_ext.shared_bytes(1, 1, 128, 128) == 66816  # gdnKernel.h's scan launch for dk = dv = 128


def _gdn_args(dtype=torch.float32):
    x = make_inputs(7, *GDN_CFG, seed=1, dtype=dtype)
    hk, hv, dk, dv = GDN_CFG
    return dict(qkv=x["qkv"], a=x["a"], b=x["b"], z=x["z"], a_log=x["A_log"], dt_bias=x["dt_bias"],
                norm_weight=x["norm_weight"], state_pool=torch.zeros(3, hv, dk, dv), slot_mapping=None,
                last_token_ids=torch.tensor([2, 7], dtype=torch.int32), request_types=[CTX, CTX], num_k_heads=hk,
                num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, norm_eps=1e-6, remove_padding=True,
                continue_context=False, algo=0)


GDN_BAD_ARGS = [
    ({"algo": 3}, "algo: must be 0 (auto), 1 (scan) or 2 (chunked), got 3"),
    ({"qkv": torch.zeros(7, 144, device="meta")}, f"qkv: must be a {DEVICE_WORD} tensor"),
    ({"qkv": torch.zeros(7, 144, dtype=torch.float64)}, "qkv: dtype must be float32, float16 or bfloat16, got Double"),
    ({"qkv": torch.zeros(7, 143)}, "qkv: last dim must be 2*Hk*dk + Hv*dv = 192, got 143"),
    ({"qkv": torch.zeros(7, 2, 192)}, "qkv: expected 2 dims, got 3"),
    ({"num_k_heads": 0}, "head counts and dims must be > 0"),
    ({"a": torch.zeros(7, 3)}, "a: expected 28 elements, got 21"),
    ({"b": torch.zeros(7, 4, dtype=torch.bfloat16)}, "b: expected dtype Float, got BFloat16"),
    ({"a_log": torch.zeros(4, dtype=torch.float64)}, "A_log: expected dtype Float, got Double"),
    ({"dt_bias": torch.zeros(3)}, "dt_bias: expected 4 elements, got 3"),
    ({"norm_weight": None}, "z and norm_weight go together"),
    ({"state_pool": torch.zeros(3, 4, 16, 32)}, "state_pool: expected [num_slots, 4, 32, 16], got [3, 4, 16, 32]"),
    ({"last_token_ids": torch.tensor([2, 7])}, "last_token_ids: expected dtype Int, got Long"),
    ({"state_pool": torch.zeros(0, 4, 32, 16)}, "state_pool: no slots for 2 sequences"),
    ({"slot_mapping": torch.tensor([0], dtype=torch.int32)}, "slot_mapping: expected 2 elements, got 1"),
    ({"request_types": [CTX, 2]}, "request_types[1]: must be 0 (context) or 1 (generation), got 2"),
    ({"state_pool": torch.zeros(4, 32, 16, 3).permute(3, 0, 1, 2)}, "state_pool: must be contiguous"),
    ({"z": torch.zeros(7, 63)}, "z: expected 448 elements, got 441"),
    ({"norm_weight": torch.zeros(15)}, "norm_weight: expected 16 elements, got 15"),
    ({"request_types": [CTX] * 4097, "last_token_ids": torch.zeros(4097, dtype=torch.int32)},
     "at most 4096 sequences per call, got 4097"),
    ({"qkv": torch.zeros(3, 7, 192), "remove_padding": False}, "qkv: padded layout needs [B, L, C] with B = 2"),
    ({"num_v_heads": 3, "a": torch.zeros(21), "b": torch.zeros(21), "a_log": torch.zeros(3), "dt_bias": torch.zeros(3),
      "qkv": torch.zeros(7, 2 * 2 * 32 + 3 * 16), "z": torch.zeros(7, 48), "state_pool": torch.zeros(3, 3, 32, 16)},
     "gdn: num_v_heads must be a multiple of num_k_heads"),
]


@pytest.mark.parametrize("change,message", GDN_BAD_ARGS, ids=[m[:40] for _, m in GDN_BAD_ARGS])
def test_gdn_binding_refuses_bad_arguments(gdn_ext, change, message):
    """gdnTorch.cpp's checks, and gdn::validate's messages passed on, naming the tensor or
    parameter."""
    with pytest.raises(RuntimeError, match=re.escape(message)):
        gdn_ext.gdn_forward(**{**_gdn_args(), **change})


def _host_gdn(args, rows, last_token_ids, request_types, slot_mapping, pool):
    hk, hv, dk, dv = GDN_CFG
    return gdn_host.gated_delta_rule(
        args["qkv"][rows], args["a"][rows], args["b"][rows], args["a_log"], args["dt_bias"], pool, num_k_heads=hk,
        num_v_heads=hv, head_k_dim=dk, head_v_dim=dv, last_token_ids=last_token_ids, request_types=request_types,
        slot_mapping=slot_mapping, z=args["z"][rows], norm_weight=args["norm_weight"])


@pytest.mark.parametrize("bad_first", [True, False], ids=["bad-slot-first", "bad-slot-last"])
def test_gdn_slot_past_the_pool_is_skipped_with_zero_rows(gdn_ext, bad_first):
    """A slot mapping lives on the device, so neither binding nor launcher can check it; the
    kernel skips a sequence whose slot is outside the pool (the binding passes the pool's slot
    count) as a padding slot: its output rows are zeros (not what the buffer held: torch.empty
    gives NaN here), nothing past the pool is read or written, and the other sequence runs as
    usual. When the skipped sequence is the last one, the packed rows after it are zeros too."""
    args = _gdn_args()
    backing = torch.full((4, *args["state_pool"].shape[1:]), 7.0)
    pool = backing[:3]  # slot 3 would be backing[3]
    # rows [0, 2) are the first sequence, [2, 6) the second; row 6 belongs to no sequence
    args.update(state_pool=pool, last_token_ids=torch.tensor([2, 6], dtype=torch.int32),
                slot_mapping=torch.tensor([3, 1] if bad_first else [1, -1], dtype=torch.int32))
    y = gdn_ext.gdn_forward(**args)
    assert torch.equal(backing[3], torch.full_like(backing[3], 7.0))
    assert torch.equal(backing[0], backing[3]) and torch.equal(backing[2], backing[3])
    good_rows, skipped_rows = (slice(2, 6), slice(0, 2)) if bad_first else (slice(0, 2), slice(2, 7))
    want_pool = torch.zeros(3, *pool.shape[1:])
    want = _host_gdn(args, good_rows, [good_rows.stop - good_rows.start], [CTX], [1], want_pool)
    torch.testing.assert_close(y[good_rows], want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(pool[1], want_pool[1], rtol=1e-4, atol=1e-5)
    assert torch.equal(y[skipped_rows], torch.zeros_like(y[skipped_rows]))
    if bad_first:
        assert torch.equal(y[6:], torch.zeros_like(y[6:]))


def test_gdn_slot_past_the_pool_padded_layout_gives_zero_rows(gdn_ext):
    """The padded layout [B, L, C]: a skipped sequence's L rows are all zeros, the other
    sequence's rows past its length are zeros as before, and its first rows match the host."""
    args = _gdn_args()
    qkv, a, b, z = args["qkv"], args["a"], args["b"], args["z"]
    pad = lambda t: torch.stack([t[:4], torch.cat([t[4:7], torch.zeros_like(t[:1])])])  # noqa: E731
    args.update(qkv=pad(qkv), a=pad(a), b=pad(b), z=pad(z), remove_padding=False,
                last_token_ids=torch.tensor([4, 3], dtype=torch.int32),
                slot_mapping=torch.tensor([5, 0], dtype=torch.int32))
    y = gdn_ext.gdn_forward(**args)
    assert torch.equal(y[0], torch.zeros_like(y[0])) and torch.equal(y[1, 3:], torch.zeros_like(y[1, 3:]))
    host_args = {**_gdn_args(), "qkv": qkv, "a": a, "b": b, "z": z}
    want_pool = torch.zeros(3, *args["state_pool"].shape[1:])
    want = _host_gdn(host_args, slice(4, 7), [3], [CTX], [0], want_pool)
    torch.testing.assert_close(y[1, :3], want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(args["state_pool"][0], want_pool[0], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- stand-ins
def _binding_signature(fn) -> list[tuple[str, object]]:
    """(name, default or inspect.Parameter.empty) of a pybind11 function, from its docstring."""
    first = fn.__doc__.splitlines()[0]
    params = first[first.index("(") + 1:first.rindex(") ->")]
    out = []
    for p in re.split(r",\s*(?![^\[]*\])", params):
        name, _, rest = p.partition(":")
        default = rest.split("=", 1)[1].strip() if "=" in rest else inspect.Parameter.empty
        out.append((name.strip(), default if default is inspect.Parameter.empty else eval(default)))
    return out


def _python_signature(fn) -> list[tuple[str, object]]:
    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def test_stand_ins_have_the_bindings_signatures(neg_ext, gdn_ext):
    """The host-library stand-ins the GPU-check section tests use take the real bindings'
    parameters, in order, with the same defaults: a binding change fails here, not on a GPU."""
    assert _python_signature(HostNegExtension.neg_step) == _binding_signature(neg_ext.module.neg_step)
    assert _python_signature(HostGdnExtension.gdn_forward) == _binding_signature(gdn_ext.module.gdn_forward)
    # chunk_size's parameters are positional (a lambda: pybind11 names them arg0..arg3)
    assert len(_python_signature(HostGdnExtension.chunk_size)) == len(_binding_signature(gdn_ext.module.chunk_size))
