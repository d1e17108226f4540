"""SamplingParams / Request validation and the batch-invariant request sampler."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from trt_neg.neg import gated_topk_sample, philox_uniform
from trt_neg.runtime import Request, SamplingParams
from trt_neg.runtime.sampler import greedy, sample


@pytest.mark.parametrize("kwargs, field", [
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"temperature": True}, "temperature"),
    ({"temperature": 10**400}, "temperature"),  # an int too large for a float
    ({"top_k": -1}, "top_k"),
    ({"top_k": 2.0}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": 10**400}, "top_p"),
    ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"seed": "1"}, "seed"),
])
def test_sampling_params_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("seed", [0, 1, 2**63, 2**64 - 1])
def test_every_seed_in_the_documented_range_is_accepted(seed):
    # seed: an integer in [0, 2**64), both ends included (a 64-bit Philox key).
    assert SamplingParams(temperature=1.0, seed=seed).seed == seed


def test_greedy_params_are_the_defaults():
    assert SamplingParams.greedy() == SamplingParams() and SamplingParams.greedy().is_greedy


def test_sampling_params_are_immutable():
    # Admission copies the Request but shares its SamplingParams: only a frozen one keeps a caller
    # from changing the sampling of a request already in flight (docs/runtime.md, "Admission fixes the request").
    p = SamplingParams(temperature=0.5, seed=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.temperature = 0.0


@pytest.mark.parametrize("kwargs, field", [
    ({"prompt_token_ids": []}, "prompt_token_ids"),
    ({"prompt_token_ids": "abc"}, "prompt_token_ids"),
    ({"prompt_token_ids": [1, -2]}, "prompt_token_ids"),
    ({"prompt_token_ids": [1, 2.5]}, "prompt_token_ids"),
    ({"prompt_token_ids": torch.tensor(5)}, "prompt_token_ids"),  # 0-d: one number, not a sequence
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 1.0}, "max_new_tokens"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"stop_token_ids": torch.tensor(5)}, "stop_token_ids"),
    ({"stop": [""]}, "stop"),
    ({"stop": [3]}, "stop"),
    ({"neg_mode": 2}, "neg_mode"),
    ({"neg_mode": "1"}, "neg_mode"),
    ({"sampling": {"temperature": 1.0}}, "sampling"),
    ({"ignore_eos": 1}, "ignore_eos"),
    ({"request_id": 5}, "request_id"),
])
def test_request_errors_name_the_field(kwargs, field):
    args = {"prompt_token_ids": [1, 2, 3], **kwargs}
    with pytest.raises(ValueError, match=rf"^{field}:"):
        Request(**args)


def test_request_accepts_tensors_and_single_stop_string():
    r = Request(torch.tensor([4, 5]), stop="xy", stop_token_ids=(1,))
    assert r.prompt_token_ids == (4, 5) and r.stop == ("xy",) and r.stop_token_ids == (1,)


def test_greedy_nan_and_ties():
    z = torch.tensor([[1.0, 3.0, 3.0, float("nan")], [float("-inf")] * 4, [float("nan"), 0.0, 0.0, 0.0]])
    assert greedy(z).tolist() == [1, 0, 1]
    greedy_params = [SamplingParams()] * 3
    assert sample(z, greedy_params, [0] * 3, [0] * 3).tolist() == [1, 0, 1]


def test_top_k_one_and_tiny_top_p_are_greedy():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 50, generator=g)
    z[3, 7] = z[3].max()  # a tie: the lowest id wins
    ref = greedy(z)
    for p in (SamplingParams(temperature=1.3, top_k=1, seed=5), SamplingParams(temperature=0.7, top_p=1e-6, seed=9)):
        got = sample(z, [p] * 16, [p.seed] * 16, list(range(16)))
        assert torch.equal(got, ref)


def test_sampling_uses_philox_at_the_position():
    """One row, top-k 3: the token is the inverse-CDF pick at u = philox(seed, position)."""
    z = torch.tensor([[2.0, 0.5, 1.0, -1.0, 1.0]])
    p = SamplingParams(temperature=0.8, top_k=3, seed=1234)
    for pos in range(40):
        u = philox_uniform(1234, pos)
        cand = [0, 2, 4]  # (logit desc, id asc)
        w = torch.softmax(torch.tensor([2.0, 1.0, 1.0]) / 0.8, 0)
        c = torch.cumsum(w, 0)
        expect = cand[int((c > u * c[-1]).nonzero()[0])]
        assert sample(z, [p], [1234], [pos]).item() == expect


def test_sampling_distribution_matches_softmax():
    z = torch.tensor([[1.0, 0.0, -1.0, 0.5, -3.0]])
    p = SamplingParams(temperature=1.0, seed=7)
    n = 4000
    toks = sample(z.expand(n, 5).contiguous(), [p] * n, [7] * n, list(range(n)))
    freq = torch.bincount(toks, minlength=5).float() / n
    assert torch.allclose(freq, torch.softmax(z[0], 0), atol=0.03)


def test_top_p_keeps_the_nucleus():
    z = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    p = SamplingParams(temperature=1.0, top_p=0.7, seed=3)
    n = 2000
    toks = sample(z.expand(n, 4).contiguous(), [p] * n, [3] * n, list(range(n)))
    assert set(toks.tolist()) == {0, 1}  # 0.5 < 0.7 so the second joins; 0.8 >= 0.7 stops
    assert abs((toks == 0).float().mean().item() - 0.5 / 0.8) < 0.04


def test_the_draw_takes_the_first_candidate_whose_cumulative_weight_exceeds_it():
    # 256 equal logits: weights 1, cumulative sums 1..256 exactly. At these positions (found by a
    # search over seed 1) u * 256 lands exactly on a boundary; "exceeds" (strictly) then takes the
    # next candidate, so the token is floor(u * 256) at every position.
    z = torch.zeros(1, 256)
    p = SamplingParams(temperature=1.0, seed=1)
    positions = [19233, 133098, 176764, 241083, 314053, *range(40)]
    u = [philox_uniform(1, pos) for pos in positions]
    assert all(float(x * 256).is_integer() for x in u[:5])  # the boundary cases
    got = sample(z.expand(len(positions), 256).contiguous(), [p] * len(positions), [1] * len(positions), positions)
    assert got.tolist() == [int(x * 256) for x in u]


def test_a_prefix_that_reaches_top_p_exactly_ends_the_nucleus():
    # Four equal weights, top_p 0.5: the first two hold exactly half the mass, so the third is left
    # out ("the shortest prefix whose mass reaches top_p").
    n = 400
    p = SamplingParams(temperature=1.0, top_p=0.5, seed=2)
    toks = sample(torch.zeros(n, 4), [p] * n, [2] * n, list(range(n)))
    assert set(toks.tolist()) == {0, 1}


def test_sampler_rows_are_batch_invariant():
    """A row's token is the same alone and inside any batch, for any mix of parameters."""
    g = torch.Generator().manual_seed(1)
    n, v = 24, 300
    z = torch.randn(n, v, generator=g) * 3
    params = [SamplingParams(temperature=[0.0, 0.5, 1.0, 2.0][i % 4], top_k=[0, 5, 40][i % 3],
                             top_p=[1.0, 0.9, 0.5][i % 3], seed=None if i % 4 == 0 else 100 + i) for i in range(n)]
    seeds = [p.seed or 0 for p in params]
    positions = [17 * i + 3 for i in range(n)]
    batched = sample(z, params, seeds, positions)
    for i in range(n):
        alone = sample(z[i:i + 1].clone(), [params[i]], [seeds[i]], [positions[i]])
        assert alone.item() == batched[i].item()
    perm = torch.randperm(n, generator=g).tolist()
    shuffled = sample(z[perm], [params[i] for i in perm], [seeds[i] for i in perm], [positions[i] for i in perm])
    assert shuffled.tolist() == [batched[i].item() for i in perm]


@pytest.mark.parametrize("n_params, n_seeds, n_positions", [(1, 2, 2), (2, 1, 2), (2, 2, 1), (3, 3, 3)])
def test_sample_needs_one_parameter_seed_and_position_per_row(n_params, n_seeds, n_positions):
    # A missing or extra entry would pair rows with another row's parameters or seed: refused.
    z = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="^sample: params, seeds and positions need one entry per logits row"):
        sample(z, [SamplingParams(temperature=1.0, seed=1)] * n_params, [1] * n_seeds, [0] * n_positions)


def test_no_finite_logit_row_is_defined():
    z = torch.tensor([[float("nan"), float("-inf"), float("nan")], [float("-inf"), math.inf, 0.0]])
    p = SamplingParams(temperature=1.0, seed=1)
    out = sample(z, [p, p], [1, 1], [0, 0]).tolist()
    assert out == [0, 1]


@pytest.mark.parametrize("top_k", [0, 4])  # full sort and compact candidates
def test_posinf_logits_share_the_mass_as_in_neg(top_k):
    """Several +inf logits: each is drawn, the finite ones never, and the token at every position
    is the one NEG's gated sampler draws with the same key and counter (docs/neg.md decision 6)."""
    z = torch.tensor([[0.0, math.inf, 1.0, math.inf, math.inf]])
    p = SamplingParams(temperature=1.0, top_k=top_k, seed=3)
    got = [sample(z, [p], [3], [pos]).item() for pos in range(120)]
    neg = [gated_topk_sample(z, torch.tensor([9.0]), 0.0, 8, 1.0, [3], [pos]).token.item() for pos in range(120)]
    assert got == neg and set(got) == {1, 3, 4}
    only_inf = torch.tensor([[-math.inf, math.inf, math.nan, math.inf]])  # no finite logit at all
    assert {sample(only_inf, [p], [3], [pos]).item() for pos in range(60)} == {1, 3}


@pytest.mark.parametrize("temperature", [1e-40, 1e-50])  # z / T overflows fp32; T itself underflows it
def test_a_tiny_temperature_keeps_the_softmax_shift_invariant(temperature):
    """Adding a constant to every logit leaves the distribution unchanged, however small T is: the
    tied largest logits share the mass and nothing else is drawn."""
    p = SamplingParams(temperature=temperature, seed=1)
    z = torch.tensor([[-1.0, 0.0, 0.0, -0.5]])
    draws = [(s, pos) for s in range(4) for pos in range(25)]
    got = [sample(z, [p], [s], [pos]).item() for s, pos in draws]
    assert got == [sample(z + 3.0, [p], [s], [pos]).item() for s, pos in draws]
    assert set(got) == {1, 2}


@pytest.mark.parametrize("top_k", [0, 4])
def test_a_temperature_past_fp32s_range_draws_every_finite_logit(top_k):
    """T = 1e39 is +inf in fp32: every finite candidate gets the same weight, -inf and NaN none, so
    the token is candidate floor(u * 3) in (logit desc, id asc) order."""
    z = torch.tensor([[0.0, -math.inf, 5.0, 1.0, math.nan]])
    p = SamplingParams(temperature=1e39, top_k=top_k, seed=11)
    finite_in_order = [2, 3, 0]
    for pos in range(90):
        expect = finite_in_order[int(philox_uniform(11, pos) * 3)]
        assert sample(z, [p], [11], [pos]).item() == expect


def _tie_heavy_logits(g: torch.Generator, n: int, v: int) -> torch.Tensor:
    """Logits rounded to a coarse grid (many ties), with some -inf and NaN entries."""
    z = torch.round(torch.randn(n, v, generator=g) * 2) / 2
    z[torch.rand(n, v, generator=g) < 0.1] = -math.inf
    z[torch.rand(n, v, generator=g) < 0.02] = math.nan
    return z


@pytest.mark.parametrize("width", [8, 16, 64])
def test_compact_candidates_give_the_full_sort_tokens(width):
    """Sampling from the compact candidate table picks exactly the full-sort token, ties and
    -inf/NaN included, for rows that fit, rows that do not (k-th value tied past the width)
    and rows without top-k."""
    g = torch.Generator().manual_seed(width)
    n, v = 96, 200
    z = _tie_heavy_logits(g, n, v)
    z[5, :] = 0.0  # every logit tied: never fits
    params = [SamplingParams(temperature=[0.3, 1.0, 3.0][i % 3], top_k=[1, 3, 8, 16, 0, 50][i % 6],
                             top_p=[1.0, 0.8, 0.3][i % 3], seed=7 + i) for i in range(n)]
    seeds = [p.seed for p in params]
    positions = [11 * i for i in range(n)]
    full = sample(z, params, seeds, positions, compact_width=0)
    compact = sample(z, params, seeds, positions, compact_width=width)
    assert compact.tolist() == full.tolist()


def test_compact_rows_stay_batch_invariant_next_to_full_rows():
    g = torch.Generator().manual_seed(3)
    n, v = 12, 5000
    z = _tie_heavy_logits(g, n, v)
    params = [SamplingParams(temperature=1.0, top_k=[4, 0, 2000][i % 3], seed=i + 1) for i in range(n)]
    seeds, positions = [p.seed for p in params], [3 * i for i in range(n)]
    batched = sample(z, params, seeds, positions, compact_width=1024)
    for i in range(n):
        assert sample(z[i:i + 1].clone(), [params[i]], [seeds[i]], [positions[i]]).item() == batched[i].item()
