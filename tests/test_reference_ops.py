"""The reference model's gated delta rule kernels: chunked (prefill) vs recurrent (decode)."""

from __future__ import annotations

import pytest
import torch

from trt_neg.reference.ops import chunk_gated_delta_rule, gated_delta_rule, l2norm, recurrent_gated_delta_rule


def _inputs(batch=2, length=150, heads=3, dk=8, dv=5, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    q = l2norm(rand(batch, length, heads, dk)) * dk ** -0.5
    k = l2norm(rand(batch, length, heads, dk))
    v = rand(batch, length, heads, dv)
    g = -torch.rand(batch, length, heads, generator=gen, dtype=dtype) * 2.0  # decays in (e^-2, 1]
    beta = torch.rand(batch, length, heads, generator=gen, dtype=dtype)
    state = rand(batch, heads, dk, dv)
    return q, k, v, g, beta, state


@pytest.mark.parametrize("length", [1, 5, 64, 150])
def test_chunked_equals_recurrent(length):
    """Lengths below, at and above one chunk (64), not multiples of it, with an initial state."""
    q, k, v, g, beta, state = _inputs(length=length)
    out_c, state_c = chunk_gated_delta_rule(q, k, v, g, beta, state)
    out_r, state_r = recurrent_gated_delta_rule(q, k, v, g, beta, state)
    torch.testing.assert_close(out_c, out_r, rtol=0, atol=1e-10)
    torch.testing.assert_close(state_c, state_r, rtol=0, atol=1e-10)


def test_chunked_fp32_close_to_fp64():
    args = _inputs(length=150)
    out64, state64 = recurrent_gated_delta_rule(*args)
    out32, state32 = chunk_gated_delta_rule(*(a.float() for a in args))
    torch.testing.assert_close(out32.double(), out64, rtol=0, atol=2e-5)
    torch.testing.assert_close(state32.double(), state64, rtol=0, atol=2e-5)


def test_chunk_size_does_not_change_the_result():
    args = _inputs(length=100)
    out64, state64 = chunk_gated_delta_rule(*args, chunk_size=64)
    out16, state16 = chunk_gated_delta_rule(*args, chunk_size=16)
    torch.testing.assert_close(out16, out64, rtol=0, atol=1e-10)
    torch.testing.assert_close(state16, state64, rtol=0, atol=1e-10)


def test_inert_padding_keeps_the_state():
    """g = beta = 0 at the tail (right padding in a batched prefill) leaves the state as it was."""
    q, k, v, g, beta, state = _inputs(length=90)
    valid = 70
    g_pad, beta_pad = g.clone(), beta.clone()
    g_pad[:, valid:] = 0
    beta_pad[:, valid:] = 0
    out_p, state_p = chunk_gated_delta_rule(q, k, v, g_pad, beta_pad, state)
    out_t, state_t = chunk_gated_delta_rule(q[:, :valid], k[:, :valid], v[:, :valid], g[:, :valid],
                                            beta[:, :valid], state)
    torch.testing.assert_close(out_p[:, :valid], out_t, rtol=0, atol=1e-10)
    torch.testing.assert_close(state_p, state_t, rtol=0, atol=1e-10)


def test_matches_transformers_torch_kernel():
    """Independent check against transformers' own torch chunked kernel (GVA: 2 key heads, 4 value heads)."""
    from transformers.models.qwen3_5 import modeling_qwen3_5 as hf

    gen = torch.Generator().manual_seed(1)
    b, t, hk, hv, dk, dv = 2, 80, 2, 4, 8, 6
    q, k = torch.randn(b, t, hk, dk, generator=gen), torch.randn(b, t, hk, dk, generator=gen)
    v = torch.randn(b, t, hv, dv, generator=gen)
    g = -torch.rand(b, t, hv, generator=gen)
    beta = torch.rand(b, t, hv, generator=gen)
    state = torch.randn(b, hv, dk, dv, generator=gen)
    ref_out, ref_state = hf.torch_chunk_gated_delta_rule(q, k, v, g=g, beta=beta, initial_state=state,
                                                         output_final_state=True, use_qk_l2norm_in_kernel=True)
    qn = (l2norm(q) * dk ** -0.5).repeat_interleave(hv // hk, dim=2)
    kn = l2norm(k).repeat_interleave(hv // hk, dim=2)
    out, final = gated_delta_rule(qn, kn, v, g, beta, state)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-4)
    torch.testing.assert_close(final, ref_state, rtol=0, atol=1e-4)


def test_l2norm_eps_is_the_fla_and_transformers_one():
    """x / sqrt(sum(x^2) + 1e-6): visible only on short vectors (|x|^2 ~ eps), which the random
    inputs above never are. A zero vector stays zero (no NaN)."""
    from transformers.models.qwen3_5 import modeling_qwen3_5 as hf

    x = torch.tensor([[3e-4, 4e-4], [0.0, 0.0], [1e-3, 0.0], [3.0, 4.0]], dtype=torch.float64)
    want = x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(l2norm(x), want, rtol=1e-12, atol=0)
    torch.testing.assert_close(l2norm(x.float()), hf.l2norm(x.float(), dim=-1, eps=1e-6), rtol=0, atol=0)
    assert l2norm(x)[0].tolist() == pytest.approx([0.3 / 1.25 ** 0.5, 0.4 / 1.25 ** 0.5], rel=1e-12)


@pytest.mark.gpu
def test_fla_kernels_match_torch_on_cuda():
    """The flash-linear-attention dispatch (when importable) vs the torch kernels, on CUDA."""
    from trt_neg.reference.ops import _fla_kernels

    if _fla_kernels() is None:
        pytest.skip("fla (flash-linear-attention) is not importable")
    for length in (1, 150):
        args = [a.float().cuda() for a in _inputs(length=length, heads=4, dk=64, dv=64)]
        out_fla, state_fla = gated_delta_rule(*args)
        out_torch, state_torch = gated_delta_rule(*args, use_fla=False)
        torch.testing.assert_close(out_fla, out_torch, rtol=0, atol=2e-3)
        torch.testing.assert_close(state_fla, state_torch, rtol=0, atol=2e-3)
