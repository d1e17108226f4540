"""trt_neg.neg reference: Philox known answers, definition checks, argument errors."""

import math

import pytest
import torch

from trt_neg import neg
from trt_neg.neg import NegStatus, NegWeights

# Random123 kat_vectors, philox4x32 10: counter[4], key[2] -> output[4].
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("ctr,key,expected", PHILOX_KAT)
def test_philox_kat_python(ctr, key, expected):
    assert neg.philox4x32_10(ctr, key) == expected


def test_philox_kat_torch():
    cols = [torch.tensor([c[i] for c, _, _ in PHILOX_KAT]) for i in range(4)]
    keys = [torch.tensor([k[i] for _, k, _ in PHILOX_KAT]) for i in range(2)]
    out = neg.philox4x32_10_torch(cols, keys)
    for j, (_, _, exp) in enumerate(PHILOX_KAT):
        assert tuple(int(w[j]) for w in out) == exp


def test_philox_torch_matches_python_random():
    g = torch.Generator().manual_seed(0)
    words = torch.randint(0, 2**32, (6, 64), generator=g, dtype=torch.int64)
    out = neg.philox4x32_10_torch(list(words[:4]), list(words[4:]))
    for j in range(64):
        ref = neg.philox4x32_10([int(w[j]) for w in words[:4]], [int(w[j]) for w in words[4:]])
        assert tuple(int(w[j]) for w in out) == ref


def test_philox_uniform_layout():
    seed, offset = 0x0123456789ABCDEF, 0xFEDCBA9876543210
    x0 = neg.philox4x32_10((offset & 0xFFFFFFFF, offset >> 32, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))[0]
    assert neg.philox_uniform(seed, offset) == (x0 >> 8) / 2**24
    # negative int64 seeds are their two's-complement bits; tensor and int paths agree
    seeds = torch.tensor([-1, 0, 7, -(2**63)])
    offs = torch.tensor([5, 2**40, 0, 123])
    u = neg.philox_uniform(seeds, offs)
    assert u.dtype == torch.float32
    for s, o, ut in zip(seeds.tolist(), offs.tolist(), u.tolist()):
        assert ut == neg.philox_uniform(s, o)
        assert 0.0 <= ut < 1.0


def test_philox_uniform_small_and_vectorised_paths_agree():
    """Up to 64 draws go through Python ints, more through the vectorised torch version:
    bit-identical, shapes and broadcasting kept."""
    g = torch.Generator().manual_seed(0)
    seeds = torch.randint(-(2**63), 2**63 - 1, (200,), generator=g, dtype=torch.int64)
    offs = torch.randint(0, 2**62, (200,), generator=g, dtype=torch.int64)
    big = neg.philox_uniform(seeds, offs)  # vectorised
    small = torch.cat([neg.philox_uniform(seeds[i:i + 50], offs[i:i + 50]) for i in range(0, 200, 50)])
    assert torch.equal(big, small)
    grid = neg.philox_uniform(torch.tensor([[3], [4]]), torch.arange(5))  # broadcast to [2, 5]
    assert grid.shape == (2, 5) and grid.dtype == torch.float32
    assert grid[1, 2].item() == neg.philox_uniform(4, 2)


def _weights(h=16, d=8, seed=0, tau=1.0):
    g = torch.Generator().manual_seed(seed)
    return NegWeights(
        fc1_weight=torch.randn(d, h, generator=g) / math.sqrt(h),
        fc1_bias=torch.randn(d, generator=g) * 0.1,
        fc2_weight=torch.randn(1, d, generator=g) / math.sqrt(d),
        fc2_bias=torch.tensor([0.5]),
        threshold=torch.tensor(tau),
    )


@pytest.mark.parametrize("act", ["silu", "gelu", "relu", "gelu_tanh"])
def test_neg_head_formula_fp64(act):
    w = _weights()
    h = torch.randn(5, 16, dtype=torch.bfloat16)
    got = neg.neg_head(h, w, act)
    fn = {"silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu, "relu": torch.relu,
          "gelu_tanh": lambda x: torch.nn.functional.gelu(x, approximate="tanh")}[act]
    x = h.double()
    ref = torch.nn.functional.softplus(fn(x @ w.fc1_weight.double().t() + w.fc1_bias.double()) @ w.fc2_weight.double().reshape(-1) + 0.5)
    assert got.dtype == torch.float32 and got.shape == (5,)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)
    assert (got > 0).all()  # softplus: entropy in nats is positive


def test_weights_from_state_dict_errors():
    w = _weights()
    sd = w.state_dict()
    assert NegWeights.from_state_dict(sd).head_hidden_size == 8
    bad = dict(sd)
    del bad["neg_gate.threshold"]
    with pytest.raises(KeyError, match="neg_gate.threshold"):
        NegWeights.from_state_dict(bad)
    bad = dict(sd)
    bad["neg_head.fc1.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match="neg_head.fc1.bias"):
        NegWeights.from_state_dict(bad)
    bad = dict(sd)
    bad["neg_head.fc2.weight"] = torch.zeros(2, 8)
    with pytest.raises(ValueError, match="neg_head.fc2.weight"):
        NegWeights.from_state_dict(bad)


def test_argument_errors():
    z = torch.randn(2, 5)
    e = torch.zeros(2)
    with pytest.raises(ValueError, match="top_k"):
        neg.gated_topk_sample(z, e, 0.0, 0, 1.0, 0, 0)
    with pytest.raises(ValueError, match="temperature"):
        neg.gated_topk_sample(z, e, 0.0, 2, 0.0, 0, 0)
    with pytest.raises(ValueError, match="seeds"):
        neg.gated_topk_sample(z, e, 0.0, 2, 1.0, torch.zeros(3, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match="entropy"):
        neg.gated_topk_sample(z, torch.zeros(3), 0.0, 2, 1.0, 0, 0)
    with pytest.raises(ValueError, match="activation"):
        neg.neg_head(torch.randn(1, 16), _weights(), "tanh")
    with pytest.raises(ValueError, match="hidden"):
        neg.neg_head(torch.randn(1, 15), _weights(), "silu")


def test_not_fired_is_argmax_and_base_logits():
    z = torch.tensor([[1.0, 3.0, 3.0, float("nan"), -2.0]])
    out = neg.gated_topk_sample(z, torch.tensor([0.5]), 1.0, 3, 1.0, 0, 0)
    assert out.token.tolist() == [1] and not out.fired[0] and out.status.tolist() == [0]
    assert out.guided_logits[0].tolist() == [1.0, 3.0, 3.0, -math.inf, -2.0]


def test_gate_strict_and_nan():
    z = torch.randn(3, 6)
    out = neg.gated_topk_sample(z, torch.tensor([1.0, 1.0000001, float("nan")]), 1.0, 3, 1.0, 0, 0)
    assert out.fired.tolist() == [False, True, False]
    assert out.status.tolist() == [0, 0, int(NegStatus.NAN_ENTROPY)]


def test_fired_draw_matches_manual_definition():
    torch.manual_seed(0)
    z = torch.randn(40, 50)
    z[:, 7] = z[:, 3]  # ties
    seeds = torch.arange(40) * 17
    offs = torch.arange(40) + 1000
    out = neg.gated_topk_sample(z, torch.full((40,), 9.0), 1.0, 6, 0.7, seeds, offs)
    assert out.fired.all()
    for r in range(40):
        row = z[r].tolist()
        order = sorted(range(50), key=lambda i: (-row[i], i))[:6]
        x = torch.tensor([row[i] for i in order]) / 0.7
        p = torch.softmax(x.double(), 0)
        c = torch.cumsum(p, 0)
        u = neg.philox_uniform(int(seeds[r]), int(offs[r]))
        j = int((c > u * c[-1]).nonzero()[0])
        assert int(out.token[r]) == order[j]
        g = out.guided_logits[r]
        assert g[order[j]] == 0.0 and torch.isinf(g).sum() == 49


def test_all_nan_row_and_posinf():
    z = torch.full((3, 9), float("nan"))
    z[1, 4] = math.inf
    z[1, 6] = math.inf
    z[2] = -math.inf
    out = neg.gated_topk_sample(z, torch.tensor([5.0, 5.0, 0.0]), 1.0, 4, 1.0, 3, 4)
    assert out.status.tolist() == [1, 3, 1]
    assert out.token[0] == 0 and out.token[1] in (4, 6) and out.token[2] == 0
    assert torch.isfinite(out.guided_logits).sum(dim=1).tolist() == [1, 1, 1]


def test_topk_ge_vocab_and_temperature():
    z = torch.randn(8, 7)
    out = neg.gated_topk_sample(z, torch.full((8,), 2.0), 1.0, 1000, 3.0, torch.arange(8), 0)
    assert out.fired.all() and ((out.token >= 0) & (out.token < 7)).all()
    one = neg.gated_topk_sample(z, torch.full((8,), 2.0), 1.0, 1, 3.0, torch.arange(8), 0)
    assert torch.equal(one.token, torch.argmax(z, 1))


def test_neg_step_bf16_and_batch_independence():
    w = _weights(tau=0.0)
    h = torch.randn(6, 16, dtype=torch.bfloat16)
    z = torch.randn(6, 30)
    seeds = torch.full((6,), 11)
    offs = torch.arange(6) + 20
    full = neg.neg_step(h, z, w, top_k=5, temperature=1.0, seeds=seeds, offsets=offs)
    for r in range(6):
        one = neg.neg_step(h[r:r + 1], z[r:r + 1], w, top_k=5, temperature=1.0, seeds=seeds[r:r + 1], offsets=offs[r:r + 1])
        assert int(one.token[0]) == int(full.token[r])


@pytest.mark.parametrize("temperature", [1e-46, 1e39, -1e39])
def test_temperature_that_is_zero_or_inf_in_fp32_is_refused(temperature):
    """The softmax divides by T in fp32: 1e-46 rounds to 0 there (every positive logit becomes
    +inf, the draw uniform over them) and 1e39 to inf; both are errors, as 0 and inf are."""
    z = torch.tensor([[0.5, 1.0, 2.0, 0.75]])
    with pytest.raises(ValueError, match="temperature: expected a finite value > 0 in float32"):
        neg.gated_topk_sample(z, torch.tensor([5.0]), 0.0, 4, temperature, 1, 0)


def test_tiny_fp32_temperature_is_accepted_and_greedy():
    """1e-30 is a normal fp32 number: accepted, and it leaves all the mass on the largest logit."""
    z = torch.tensor([[0.5, 1.0, 2.0, 0.75]])
    tokens = {int(neg.gated_topk_sample(z, torch.tensor([5.0]), 0.0, 4, 1e-30, 1, o).token) for o in range(20)}
    assert tokens == {2}
