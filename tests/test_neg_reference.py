"""trt_neg.neg reference: Philox known answers, definition checks, argument errors."""

import math

import numpy as np
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


# ---------------------------------------------------------------------------------------------
# Found by mutation testing (mutants of trt_neg/neg.py that the suite above let through)
# ---------------------------------------------------------------------------------------------

def test_tensor_names_and_status_bits_are_the_documented_ones():
    """The five tensor names are DESIGN.md section 4's (and the checkpoint reader's), the status
    bits docs/neg.md decision 10's: the host library and the kernels share those numbers."""
    from trt_neg.checkpoint.hf import NEG_TENSORS

    assert neg.TENSOR_NAMES == {"fc1_weight": "neg_head.fc1.weight", "fc1_bias": "neg_head.fc1.bias",
                                "fc2_weight": "neg_head.fc2.weight", "fc2_bias": "neg_head.fc2.bias",
                                "threshold": "neg_gate.threshold"}
    assert tuple(neg.TENSOR_NAMES.values()) == NEG_TENSORS
    assert [int(s) for s in (NegStatus.OK, NegStatus.NO_FINITE_LOGIT, NegStatus.POS_INF_LOGIT,
                             NegStatus.NAN_ENTROPY)] == [0, 1, 2, 4]
    assert neg.ACTIVATION_CODES == {"silu": 0, "gelu": 1, "relu": 2, "gelu_tanh": 3}


def test_weights_accept_numbers_and_lists_and_keep_a_tensors_dtype():
    w = NegWeights(fc1_weight=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], fc1_bias=[0.0, 0.0, 0.0],
                   fc2_weight=[1.0, -1.0, 0.5], fc2_bias=0.25, threshold=1.5)
    assert all(t.dtype == torch.float32 for t in w.state_dict().values())
    assert (w.hidden_size, w.head_hidden_size, w.tau) == (2, 3, 1.5)
    bf16 = NegWeights(**{**_weights().__dict__, "fc1_weight": _weights().fc1_weight.bfloat16()})
    assert bf16.fc1_weight.dtype == torch.bfloat16  # a tensor is taken as given
    ints = NegWeights(fc1_weight=[[1, 0]], fc1_bias=[0], fc2_weight=[1], fc2_bias=0, threshold=1)
    assert all(t.dtype == torch.float32 for t in ints.state_dict().values())  # numbers become fp32
    assert NegWeights(**{**_weights().__dict__, "threshold": 0.1}).tau == float(torch.tensor(0.1))  # fp32, not fp16
    w64 = _weights().to(dtype=torch.float64)
    assert all(t.dtype == torch.float64 for t in w64.state_dict().values())
    assert all(t.device.type == "meta" for t in _weights().to(device="meta").state_dict().values())
    assert neg.threshold_scalar(0.5, device="meta").device.type == "meta"


@pytest.mark.parametrize("fc2_shape", [(8,), (1, 8)])
def test_weights_accept_both_fc2_forms(fc2_shape):
    w = _weights()
    NegWeights(w.fc1_weight, w.fc1_bias, w.fc2_weight.reshape(fc2_shape), w.fc2_bias, w.threshold)


@pytest.mark.parametrize("field,value,error", [
    ("fc1_weight", torch.zeros(8), ValueError),           # not 2-D
    ("fc2_weight", torch.zeros(8, 1), ValueError),        # [d, 1]: d rows
    ("fc2_weight", torch.zeros(1, 1, 8), ValueError),     # 3-D
    ("fc2_weight", torch.zeros(7), ValueError),           # wrong length
    ("fc2_bias", torch.zeros(2), ValueError),
    ("threshold", torch.zeros(2), ValueError),
    ("threshold", torch.tensor(1), TypeError),            # an integer tensor
    ("fc1_bias", torch.zeros(8, dtype=torch.int32), TypeError),
])
def test_weights_refuse_bad_shapes_and_dtypes_naming_the_tensor(field, value, error):
    kwargs = dict(_weights().__dict__)
    kwargs[field] = value
    with pytest.raises(error, match=neg.TENSOR_NAMES[field].replace(".", r"\.")):
        NegWeights(**kwargs)


def test_missing_weight_message_names_the_tensor():
    sd = _weights().state_dict()
    del sd["neg_head.fc1.bias"]
    with pytest.raises(KeyError, match="NEG weights: missing tensor 'p.neg_head.fc1.bias'"):
        NegWeights.from_state_dict({"p." + k: v for k, v in sd.items()}, prefix="p.")


def test_neg_head_refuses_non_float_or_non_tensor_hidden_and_bad_rank():
    w = _weights()
    with pytest.raises(TypeError, match="hidden"):
        neg.neg_head(torch.ones(2, 16, dtype=torch.int64), w)
    with pytest.raises(TypeError, match="hidden"):
        neg.neg_head([[0.0] * 16], w)
    with pytest.raises(ValueError, match=r"hidden: expected shape \[N, H\]"):
        neg.neg_head(torch.zeros(1, 2, 16), w)
    one = neg.neg_head(torch.ones(16), w)  # a single vector gives a 0-d entropy
    assert one.shape == () and one == neg.neg_head(torch.ones(1, 16), w)[0]


def test_threshold_is_compared_in_float32():
    """tau is fp32 in the checkpoint and the kernels: a float64 0.1 rounds to fp32 0.1 first, so an
    entropy of exactly fp32(0.1) does not exceed it (in fp64 it would, by 1.5e-9)."""
    e = torch.tensor([0.1], dtype=torch.float32)
    for tau in (0.1, torch.tensor(0.1, dtype=torch.float64), torch.tensor([0.1], dtype=torch.float64)):
        assert neg.gate(e, tau).tolist() == [False]
        out = neg.gated_topk_sample(torch.randn(1, 5), e, tau, 3, 1.0, 0, 0)
        assert out.fired.tolist() == [False]
    assert neg.threshold_scalar(torch.tensor([0.1], dtype=torch.float64)).dtype == torch.float32
    with pytest.raises(ValueError, match="threshold: expected one value"):
        neg.gate(e, torch.zeros(2))


def test_neg_step_output_fire_rate_and_shape_errors():
    z = torch.randn(4, 6)
    out = neg.gated_topk_sample(z, torch.tensor([2.0, 0.0, 2.0, 2.0]), 1.0, 3, 1.0, 0, 0)
    assert out.fire_rate == 0.75
    assert neg.gated_topk_sample(z[:0], torch.zeros(0), 1.0, 3, 1.0, 0, 0).fire_rate == 0.0
    with pytest.raises(ValueError, match="vocabulary dimension must be >= 1"):
        neg.gated_topk_sample(torch.zeros(2, 0), torch.zeros(2), 1.0, 3, 1.0, 0, 0)
    for bad in (torch.zeros(2, 3, dtype=torch.int64), torch.zeros(3), torch.zeros(1, 2, 3), [[0.0, 1.0]]):
        with pytest.raises(ValueError, match=r"logits: expected a floating-point tensor \[N, V\]"):
            neg.gated_topk_sample(bad, torch.zeros(2), 1.0, 3, 1.0, 0, 0)
    with pytest.raises(ValueError, match="hidden/logits: expected"):
        neg.neg_step(torch.zeros(3, 16), torch.zeros(2, 6), _weights())
    with pytest.raises(TypeError, match="hidden/logits: expected torch tensors"):
        neg.neg_step([[0.0] * 16], torch.zeros(1, 6), _weights())


def test_philox_torch_widens_narrow_integer_words():
    """Words given as int32 tensors (or plain ints) are widened to int64 before the 32x32-bit
    products, so they give the known answers too (an int32 product would wrap)."""
    ctr, key, expected = PHILOX_KAT[2]
    words = [torch.tensor([c], dtype=torch.int64).to(torch.int32) if c < 2**31 else torch.tensor([c]) for c in ctr]
    keys = [torch.tensor([k]).to(torch.int32) if k < 2**31 else torch.tensor([k]) for k in key]
    assert any(w.dtype == torch.int32 for w in words + keys)
    assert tuple(int(w) for w in neg.philox4x32_10_torch(words, keys)) == expected
    assert tuple(int(w) for w in neg.philox4x32_10_torch(list(ctr), list(key))) == expected


def test_philox_uniform_with_one_tensor_argument_broadcasts_the_other():
    """A Python-int seed with a tensor of offsets (or the reverse) takes the tensor path: an fp32
    tensor of the broadcast shape, each draw the scalar draw of its own pair."""
    offs = torch.arange(4) + 10
    u = neg.philox_uniform(7, offs)
    assert isinstance(u, torch.Tensor) and u.dtype == torch.float32 and u.shape == (4,)
    assert u.tolist() == [neg.philox_uniform(7, o) for o in range(10, 14)]
    v = neg.philox_uniform(torch.tensor([3, 4]), 5)
    assert isinstance(v, torch.Tensor) and v.tolist() == [neg.philox_uniform(3, 5), neg.philox_uniform(4, 5)]
    one = neg.philox_uniform(7, torch.tensor(12))  # a 0-d tensor: still a tensor
    assert isinstance(one, torch.Tensor) and one.shape == () and one.item() == neg.philox_uniform(7, 12)


def test_bool_tensors_are_not_integers_or_temperatures_but_number_tensors_are():
    """docs/neg.md decision 14: a bool is refused, also as a 0-d torch tensor (whose __index__ and
    __float__ would otherwise read it as 1); integer and float tensors are taken by value."""
    z, e = torch.randn(2, 5), torch.full((2,), 9.0)
    with pytest.raises(ValueError, match="top_k: expected an integer >= 1"):
        neg.gated_topk_sample(z, e, 0.0, torch.tensor(True), 1.0, 0, 0)
    with pytest.raises(ValueError, match="temperature: expected a number"):
        neg.gated_topk_sample(z, e, 0.0, 2, torch.tensor(True), 0, 0)
    with pytest.raises(ValueError, match="temperature: expected a number"):
        neg.gated_topk_sample(z, e, 0.0, 2, np.bool_(True), 0, 0)
    with pytest.raises(ValueError, match="seeds: expected an integer"):
        neg.integer_arg(torch.tensor(False), "seeds")
    want = neg.gated_topk_sample(z, e, 0.0, 2, 0.5, 3, 4).token
    assert torch.equal(neg.gated_topk_sample(z, e, 0.0, torch.tensor(2), torch.tensor(0.5), 3, 4).token, want)
    assert neg.check_sampling_args(np.int64(3), np.float32(0.5)) == 3


def test_int64_tensor_takes_every_integer_width_by_value_and_uint64_by_its_bits():
    """docs/neg.md decision 14 for seeds and offsets given as tensors or numpy arrays of any integer
    width and byte order; complex, float and bool refused; an empty list is still int64."""
    want = torch.tensor([5, -7, 2**31 - 1])
    for x in (torch.tensor([5, -7, 2**31 - 1], dtype=torch.int32), np.array([5, -7, 2**31 - 1], dtype=np.int32),
              np.array([5, -7, 2**31 - 1], dtype=">i4"), np.array([5, -7, 2**31 - 1], dtype=">i8"),
              [np.int32(5), torch.tensor(-7), 2**31 - 1]):
        got = neg.int64_tensor(x, "seeds")
        assert got.dtype == torch.int64 and torch.equal(got, want), x
    for x in (torch.tensor([2**63 + 5, 3], dtype=torch.uint64), np.array([2**63 + 5, 3], dtype=np.uint64),
              np.array([2**63 + 5, 3], dtype=">u8"), [2**63 + 5, 3]):
        assert neg.int64_tensor(x, "seeds").tolist() == [-(2**63) + 5, 3], x
    assert neg.int64_tensor(np.int16(-3), "seeds").tolist() == -3
    assert neg.int64_tensor([], "seeds").dtype == torch.int64
    for bad in (torch.tensor([1 + 0j]), torch.tensor([1.0]), torch.tensor([True]), np.array([1.0]),
                np.array([True]), [1, 2.0], "7"):
        with pytest.raises(ValueError, match="seeds: expected"):
            neg.int64_tensor(bad, "seeds")
    # the same through the op: int32 seeds and offsets draw what int64 ones draw
    z, e = torch.randn(3, 40, generator=torch.Generator().manual_seed(5)), torch.full((3,), 9.0)
    ref = neg.gated_topk_sample(z, e, 0.0, 8, 1.0, [1, 2, 3], [10, 11, 12]).token
    for seeds, offs in ((torch.tensor([1, 2, 3], dtype=torch.int32), np.array([10, 11, 12], dtype=np.int32)),
                        (np.array([1, 2, 3], dtype=np.int16), torch.tensor([10, 11, 12], dtype=torch.int32))):
        assert torch.equal(neg.gated_topk_sample(z, e, 0.0, 8, 1.0, seeds, offs).token, ref)


def _with_draws(monkeypatch, draws):
    """gated_topk_sample with its Philox draws replaced by ``draws`` (one per fired row)."""
    monkeypatch.setattr(neg, "philox_uniform",
                        lambda seeds, offsets: torch.tensor(draws, dtype=torch.float32).reshape(seeds.shape))


def test_draw_takes_the_first_candidate_whose_cumulative_probability_exceeds_u_times_the_sum(monkeypatch):
    """DESIGN.md section 4 to the bit: the target is u * sum(p) in fp32 (the cumulative sum's own last
    element, here 0.99999994, not 1) and a candidate is taken when its cumulative probability
    *exceeds* it (strictly)."""
    logits = torch.tensor([[0.11335152387619019, 0.000649846566375345, -0.820141613483429],
                           [2.0, 2.0, -1.0]])
    # row 0: u equal to c[0] = 0.43733147; u * 0.99999994 rounds below c[0], so candidate 0
    # row 1: two equal candidates, c = [0.5, 1.0]; u = 0.5 does not exceed c[0] = 0.5: candidate 1
    _with_draws(monkeypatch, [0.4373314678668976, 0.5])
    out = neg.gated_topk_sample(logits, torch.full((2,), 9.0), 1.0, 3, 1.0, 0, 0)
    assert out.fired.all() and out.token.tolist() == [0, 1]


def test_rounding_fallback_is_the_last_candidate_with_probability(monkeypatch):
    """docs/neg.md decision 7: when no cumulative probability exceeds u * sum (reachable only by
    rounding; forced here with u = 1) the token is the last candidate with p > 0 -- never a
    zero-probability one -- and rows that do find a candidate are unaffected."""
    logits = torch.tensor([[0.0, -50.0, 0.0, -1e4, -3e4],   # p = [.5, .5, ~2e-22, 0, 0] in order (0, 2, 1, 3, 4)
                           [0.0, 0.0, -50.0, -1e4, -3e4]])
    _with_draws(monkeypatch, [1.0, 0.25])
    out = neg.gated_topk_sample(logits, torch.full((2,), 9.0), 1.0, 4, 1.0, 0, 0)
    assert out.token.tolist() == [1, 0]
    assert out.guided_logits[0].tolist() == [-math.inf, 0.0, -math.inf, -math.inf, -math.inf]


def test_neg_step_defaults_are_design_section_4s_and_it_checks_both_tensors():
    """neg_step without sampling arguments is top_k 8, T_neg 1.0, seed 0, offset 0 (DESIGN.md section 4)."""
    w = _weights(tau=-1.0)  # every row fires
    g = torch.Generator().manual_seed(3)
    h = torch.randn(64, 16, generator=g)
    z = torch.cat([torch.zeros(32, 12), torch.randn(32, 12, generator=g) * 2], dim=0)  # ties + spread rows
    got = neg.neg_step(h, z, w)
    want = neg.gated_topk_sample(z, neg.neg_head(h, w), w.threshold, 8, 1.0, 0, 0)
    assert got.fired.all() and torch.equal(got.token, want.token)
    assert int(got.token[:32].max()) <= 7  # flat rows: only the 8 lowest ids are candidates
    for k, t, s, o in ((9, 1.0, 0, 0), (8, 2.0, 0, 0), (8, 1.0, 1, 0), (8, 1.0, 0, 1)):
        other = neg.gated_topk_sample(z, neg.neg_head(h, w), w.threshold, k, t, s, o)
        assert not torch.equal(other.token, got.token), (k, t, s, o)
    w2 = _weights(tau=-1.0)
    for hidden, logits in ((torch.zeros(16), torch.zeros(16, 5)), (torch.zeros(5, 16), torch.zeros(5)),
                           (torch.zeros(2, 16), torch.zeros(3, 5))):  # (first dims agree in the first two)
        with pytest.raises(ValueError, match=r"hidden/logits: expected \[N, H\] and \[N, V\] with the same N"):
            neg.neg_step(hidden, logits, w2)
    with pytest.raises(TypeError, match="hidden/logits: expected torch tensors"):
        neg.neg_step(torch.zeros(1, 16), [[0.0] * 5], w2)
    # threshold= overrides the stored tau
    assert not neg.neg_step(h, z, w, threshold=1e9).fired.any()


def test_neg_step_fast_runs_the_reference_on_cpu(monkeypatch):
    """neg_step_fast dispatches to the CUDA extension only for CUDA tensors: on CPU it is neg_step,
    and the extension module is never imported."""
    import sys
    import types

    poisoned = types.ModuleType("trt_neg.kernels.cuda_ext")

    def refuse(*args, **kwargs):
        raise AssertionError("the CUDA extension was used for CPU tensors")
    poisoned.neg_step = refuse
    monkeypatch.setitem(sys.modules, "trt_neg.kernels.cuda_ext", poisoned)
    import trt_neg.kernels as kernels
    monkeypatch.setattr(kernels, "cuda_ext", poisoned, raising=False)
    w = _weights(tau=-1.0)
    h, z = torch.randn(4, 16), torch.randn(4, 30)
    for top_k in (5, 2000):
        got = neg.neg_step_fast(h, z, w, top_k=top_k, seeds=3, offsets=torch.arange(4))
        want = neg.neg_step(h, z, w, top_k=top_k, seeds=3, offsets=torch.arange(4))
        assert torch.equal(got.token, want.token) and torch.equal(got.guided_logits, want.guided_logits)
    assert torch.equal(neg.neg_step_fast(h, z, w).token, neg.neg_step(h, z, w).token)  # default top_k 8
