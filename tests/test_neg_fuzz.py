"""Differential fuzz of the NEG op: torch reference vs host library (every split-V path) vs a
small independent oracle of DESIGN.md section 4 written here in numpy (it shares no code with
trt_neg: Philox from the Random123 definition, the head in float64, z / T in fp32 and the
softmax weights and cumulative sums in float64).

Adversarial rows: integer-valued and all-equal logits, signed zeros, NaN/±inf mixes, logits
near the fp32 range at extreme temperatures, top_k around V, offsets and seeds near 2^32 and
2^63.  Tokens, fired flags and statuses must be equal, guided logits bit-equal; a token may
differ only where the draw lies within rounding of a cumulative boundary (checked in fp64).
"""

import math

import numpy as np
import pytest
import torch

from trt_neg import neg
from trt_neg.kernels import host

SPLITS = (0, 1, 2, 3, 7, 64)
_U32, _U64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------ the oracle


def _philox4x32_10(ctr, key):
    """Random123 philox4x32 with 10 rounds; round r uses key + r * (W0, W1)."""
    x = [int(c) & _U32 for c in ctr]
    for r in range(10):
        k0 = (key[0] + r * 0x9E3779B9) & _U32
        k1 = (key[1] + r * 0xBB67AE85) & _U32
        p0, p1 = 0xD2511F53 * x[0], 0xCD9E8D57 * x[2]
        x = [(p1 >> 32) ^ x[1] ^ k0, p1 & _U32, (p0 >> 32) ^ x[3] ^ k1, p0 & _U32]
    return tuple(x)


def _uniform(seed, offset):
    seed, offset = seed & _U64, offset & _U64
    x0 = _philox4x32_10((offset & _U32, offset >> 32, 0, 0), (seed & _U32, seed >> 32))[0]
    return (x0 >> 8) / 2.0**24


def _oracle_row(z, entropy, tau, top_k, temperature, seed, offset):
    """(token, fired, status, guided, tokens acceptable under fp32 rounding of the sums)."""
    z = np.asarray(z, np.float32)
    v = z.shape[0]
    zs = np.where(np.isnan(z), np.float32(-np.inf), z) + np.float32(0.0)  # NaN -> -inf, -0 -> +0
    fired = bool(np.float32(entropy) > np.float32(tau))
    status = (0 if np.isfinite(zs).any() else 1) | (2 if (zs == np.inf).any() else 0) | (4 if np.isnan(entropy) else 0)
    token = int(np.flatnonzero(zs == zs.max())[0])
    ok = {token}
    if fired:
        k = min(top_k, v)
        order = np.lexsort((np.arange(v), -zs))[:k]
        with np.errstate(all="ignore"):
            x = zs[order] / np.float32(temperature)
            if x[0] == np.inf:
                w = (x == np.inf).astype(np.float64)
            elif x[0] == -np.inf:
                w = np.zeros(k)
            else:
                w = np.exp((x - x[0]).astype(np.float64))
        u = _uniform(seed, offset)
        choice = 0
        if w.sum() > 0:
            c = np.cumsum(w) / w.sum()
            choice = int(np.flatnonzero(c > u)[0])
            tol = max(3e-6, 2.4e-7 * k)  # a sequential fp32 cumulative sum drifts ~k * eps
            near = np.flatnonzero(np.abs(c - u) < tol)
            ok = {int(order[i]) for i in near} | {int(order[min(i + 1, k - 1)]) for i in near}
        token = int(order[choice])
        ok.add(token)
    if fired or status & 3:
        guided = np.full(v, -np.inf, np.float32)
        guided[token] = 0.0
    else:
        guided = np.where(np.isnan(z), np.float32(-np.inf), z).astype(np.float32)
    return token, fired, status, guided, ok


def _oracle_head(h, w, act):
    h = h.double().numpy()
    x = h @ w.fc1_weight.double().numpy().T + w.fc1_bias.double().numpy()
    with np.errstate(all="ignore"):
        a = {
            "silu": lambda: x / (1 + np.exp(-x)),
            "relu": lambda: np.maximum(x, 0.0),
            "gelu": lambda: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
            "gelu_tanh": lambda: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
        }[act]()
    s = a @ w.fc2_weight.double().numpy().reshape(-1) + float(w.fc2_bias)
    return torch.from_numpy(np.maximum(s, 0) + np.log1p(np.exp(-np.abs(s))))


# ------------------------------------------------------------------------ inputs


def _logits(kind, n, v, g):
    z = torch.randn(n, v, generator=g) * 3
    if kind == "int":
        z = torch.round(z / 4)
    elif kind == "equal":
        z = torch.full((n, v), 1.5)
    elif kind == "signed_zeros":
        z = torch.where(torch.rand(n, v, generator=g) < 0.5, -0.0, 0.0)
    elif kind == "huge":
        z = z * 1e37  # z / T overflows to +-inf at small T
    elif kind == "nonfinite":
        m = torch.rand(n, v, generator=g)
        z[m < 0.2] = math.nan
        z[(m >= 0.2) & (m < 0.35)] = -math.inf
        special = [
            {"fill": math.nan},
            {"fill": -math.inf},
            {v // 2: math.inf},
            {v // 2: math.inf, v // 3: math.inf, v - 1: math.inf},
            {v - 1: math.inf, 0: math.nan},
            {"fill": math.nan, v - 1: math.inf},
            {"fill": math.nan, v - 1: -math.inf},
            {"fill": -math.inf, v - 1: 2.0},
            {"fill": math.inf},
        ]
        for row, spec in zip(z, special):
            if "fill" in spec:
                row.fill_(spec.pop("fill"))
            for i, val in spec.items():
                row[i] = val
    return z


def _ints(x, n):
    t = torch.as_tensor(x)
    return [int(t)] * n if t.dim() == 0 else [int(a) for a in t.tolist()]


def _check(z, ent, tau, top_k, temperature, seeds, offsets, splits=SPLITS):
    n = z.shape[0]
    ref = neg.gated_topk_sample(z, ent, tau, top_k, temperature, seeds, offsets)
    paths = [host.gated_topk_sample(z, ent, tau, top_k, temperature, seeds, offsets, splits=s) for s in splits]
    for s, got in zip(splits, paths):
        for field in ("token", "fired", "status"):
            assert torch.equal(getattr(got, field), getattr(paths[0], field)), (s, field)
        assert torch.equal(got.guided_logits.view(torch.int32), paths[0].guided_logits.view(torch.int32)), s
    seeds_l, offsets_l = _ints(seeds, n), _ints(offsets, n)
    ent32 = torch.as_tensor(ent, dtype=torch.float32).reshape(-1)
    tau32 = float(torch.as_tensor(tau, dtype=torch.float32))
    for r in range(n):
        token, fired, status, guided, ok = _oracle_row(z[r].numpy(), float(ent32[r]), tau32, top_k, temperature,
                                                       seeds_l[r], offsets_l[r])
        for name, out in (("reference", ref), ("host", paths[0])):
            where = f"{name} row {r}"
            assert bool(out.fired[r]) == fired, where
            assert int(out.status[r]) == status, where
            assert int(out.token[r]) in ok, f"{where}: token {int(out.token[r])}, oracle {token}"
            if int(out.token[r]) == token:
                assert torch.equal(out.guided_logits[r].view(torch.int32), torch.from_numpy(guided).view(torch.int32)), where


# ------------------------------------------------------------------------ tests


def test_oracle_philox_known_answers():
    assert _philox4x32_10((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert _philox4x32_10((_U32,) * 4, (_U32, _U32)) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)


def test_philox_words_split_at_2_32_and_2_63():
    """Counter = (offset lo, offset hi, 0, 0), key = (seed lo, seed hi), on every path."""
    offsets = [(b + d) & _U64 for b in (0, 2**31, 2**32, 2**63, 2**64) for d in (-2, -1, 0, 1)]
    seeds = [0, 2**32 - 1, 2**32, 2**63, 2**63 + 1, 2**64 - 1, 0x8000000080000000]
    pairs = [(s, o) for s in seeds for o in offsets]  # > 64: the vectorised torch path
    want = [_uniform(s, o) for s, o in pairs]
    s_t = torch.tensor([neg.as_int64(s) for s, _ in pairs])
    o_t = torch.tensor([neg.as_int64(o) for _, o in pairs])
    assert neg.philox_uniform(s_t, o_t).tolist() == want
    assert neg.philox_uniform(s_t[:40], o_t[:40]).tolist() == want[:40]
    assert [neg.philox_uniform(s, o) for s, o in pairs] == want
    assert [host.philox_uniform(s, o) for s, o in pairs] == want


@pytest.mark.parametrize("v", [1, 2, 7, 4095, 4096, 4097])
def test_sampling_fuzz_small_and_slice_boundary_vocabularies(v):
    g = torch.Generator().manual_seed(v)
    for kind in ("normal", "int", "equal", "signed_zeros", "nonfinite", "huge"):
        for top_k in sorted({1, 2, max(1, v - 1), v, v + 5, 1024}):
            n = 9 if kind == "nonfinite" else 3
            z = _logits(kind, n, v, g)
            ent = torch.rand(n, generator=g) * 2
            ent[::4] = math.nan
            seeds = torch.randint(-(2**63), 2**63 - 1, (n,), generator=g)
            offsets = torch.randint(-(2**63), 2**63 - 1, (n,), generator=g)
            for temperature, tau in ((1.0, 1.0), (1e-6, -math.inf), (1e6, -math.inf)):
                _check(z, ent, tau, top_k, temperature, seeds, offsets)


def test_sampling_fuzz_full_vocabulary():
    g = torch.Generator().manual_seed(248320)
    for kind in ("int", "nonfinite"):
        z = _logits(kind, 3, 248320, g)
        ent = torch.tensor([0.5, 2.0, math.nan])
        _check(z, ent, -1.0, 1024, 0.7, torch.tensor([-1, 2**62, 5]), torch.tensor([2**32 - 1, 2**32, -(2**63)]),
               splits=(0, 1, 3, 64))


def test_sampling_fuzz_many_rows_near_counter_word_boundaries():
    g = torch.Generator().manual_seed(256)
    n = 256
    z = _logits("int", n, 97, g)
    ent = torch.rand(n, generator=g) * 2
    seeds = torch.randint(-(2**63), 0, (n,), generator=g)  # high bit set
    base = [2**32 - 3, 2**63 - 200, -(2**63), -200, 2**31]
    offsets = torch.tensor([base[i % 5] + i // 5 for i in range(n)])
    _check(z, ent, 0.5, 8, 0.9, seeds, offsets, splits=(0, 1, 7))


def test_gate_at_the_threshold_and_at_infinities():
    z = torch.randn(8, 33, generator=torch.Generator().manual_seed(1))
    ent = torch.tensor([1.0, math.inf, -math.inf, math.nan, 0.0, -0.0, 1.0000001, 0.99999994])
    for tau in (1.0, math.inf, -math.inf, math.nan, 0.0, -0.0):
        _check(z, ent, tau, 5, 1.0, 9, torch.arange(8))
    assert neg.gated_topk_sample(z, ent, 1.0, 5, 1.0, 9, 0).fired.tolist() == [0, 1, 0, 0, 0, 0, 1, 0]


def test_no_candidate_mass_after_overflow_takes_the_first_candidate():
    """docs/neg.md decision 7: every z / T overflows to -inf: the argmax, with no status bit."""
    z = torch.tensor([[-1e33, -1e33, -3e33]])
    for offset in range(10):
        _check(z, torch.tensor([5.0]), 0.0, 3, 1e-6, 1, offset)
        assert int(neg.gated_topk_sample(z, torch.tensor([5.0]), 0.0, 3, 1e-6, 1, offset).token) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_head_fuzz_against_float64_oracle(dtype):
    g = torch.Generator().manual_seed(7)
    for act in ("silu", "gelu", "relu", "gelu_tanh"):
        for scale, b2 in ((1.0, 0.3), (50.0, 0.0), (1.0, 95.0), (1.0, -120.0), (1.0, 20.0)):
            w = neg.NegWeights(fc1_weight=(torch.randn(24, 64, generator=g) / 8).to(dtype),
                               fc1_bias=torch.randn(24, generator=g) * 0.1, fc2_weight=torch.randn(24, generator=g) / 5,
                               fc2_bias=torch.tensor(b2), threshold=torch.tensor(1.0))
            h = (torch.randn(9, 64, generator=g) * scale).to(dtype)
            want = _oracle_head(h, w, act)
            for got in (neg.neg_head(h, w, act), host.neg_head(h, w, act)):
                torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * scale)
