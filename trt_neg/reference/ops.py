"""The Gated DeltaNet token mixer's two maths kernels, in plain torch (fp32).

Per value head, with state ``S`` [dk, dv] (fp32), per token t (DESIGN.md section 3)::

    S_t = exp(g_t) * S_{t-1}
    d_t = beta_t * (v_t - S_t^T k_t)          # the delta rule: write only the correction
    S_t = S_t + k_t d_t^T
    o_t = S_t^T q_t

``recurrent_gated_delta_rule`` runs that loop literally (decode: one token per step).
``chunk_gated_delta_rule`` computes the same thing for a whole prompt in chunks of 64
tokens with a few matmuls per chunk (prefill). Both take q and k already L2-normalised
(q also scaled by dk^-0.5) and already repeated to the value heads, so they are pure
linear algebra; they return the output and the final state.

A position with ``g = 0`` and ``beta = 0`` leaves the state unchanged: right padding in a
batched prefill is made inert that way (and the chunked kernel pads to whole chunks the
same way).

On a CUDA device, when the ``fla`` package (flash-linear-attention) is importable,
``gated_delta_rule`` dispatches to its Triton kernels instead; set
``TRT_NEG_DISABLE_FLA=1`` to force the torch code.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os

import torch
import torch.nn.functional as F

CHUNK_SIZE = 64


def l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / sqrt(sum(x^2) + eps) over the last dim (the FLA / transformers convention)."""
    return x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + eps)


def recurrent_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                               beta: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-by-token gated delta rule.

    q, k [B, T, H, dk]; v [B, T, H, dv]; g, beta [B, T, H]; state [B, H, dk, dv]; all fp32.
    Returns o [B, T, H, dv] and the final state [B, H, dk, dv].
    """
    outputs = []
    for t in range(q.shape[1]):
        q_t, k_t, v_t = q[:, t], k[:, t], v[:, t]  # [B, H, d]
        state = state * g[:, t].exp()[..., None, None]
        predicted = torch.einsum("bhkv,bhk->bhv", state, k_t)  # S^T k
        delta = beta[:, t, :, None] * (v_t - predicted)
        state = state + k_t[..., :, None] * delta[..., None, :]  # S + k d^T
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q_t))  # S^T q
    return torch.stack(outputs, dim=1), state


def chunk_gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor,
                           beta: torch.Tensor, state: torch.Tensor,
                           chunk_size: int = CHUNK_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """The same maths as :func:`recurrent_gated_delta_rule`, chunk by chunk.

    Inside a chunk, with ``c_t = sum_{s<=t} g_s`` (log decay from the chunk start) and the
    chunk's initial state ``S0``, unrolling the recurrence gives

        S_t = e^{c_t} S0 + sum_{s<=t} e^{c_t - c_s} k_s u_s^T
        u_t = beta_t (v_t - e^{c_t} S0^T k_t - sum_{s<t} e^{c_t - c_s} (k_t . k_s) u_s)

    i.e. ``(I + A) U = beta*V - (beta*e^c*K) S0`` with ``A`` strictly lower triangular,
    ``A[t, s] = beta_t e^{c_t - c_s} k_t . k_s``: one triangular solve per chunk (the WY /
    UT form). Then ``o_t = e^{c_t} S0^T q_t + sum_{s<=t} e^{c_t - c_s} (q_t . k_s) u_s`` and
    the next chunk starts from ``S_C = e^{c_C} S0 + sum_s e^{c_C - c_s} k_s u_s^T``.
    """
    batch, length, heads, dk = k.shape
    dv = v.shape[-1]
    pad = (-length) % chunk_size
    # [B, H, T, d] layout; zero padding (g = beta = 0) leaves the state untouched.
    q, k, v = (F.pad(x.transpose(1, 2), (0, 0, 0, pad)) for x in (q, k, v))
    g, beta = (F.pad(x.transpose(1, 2), (0, pad)) for x in (g, beta))
    n = (length + pad) // chunk_size
    q, k, v = (x.reshape(batch, heads, n, chunk_size, -1) for x in (q, k, v))
    g, beta = (x.reshape(batch, heads, n, chunk_size) for x in (g, beta))

    c = g.cumsum(dim=-1)  # [B, H, n, C] log decay from the chunk start, inclusive
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    # decay[t, s] = e^{c_t - c_s} for s <= t, 0 above the diagonal (masked before exp).
    decay = (c[..., :, None] - c[..., None, :]).masked_fill(~causal, float("-inf")).exp()

    k_beta = k * beta[..., None]
    a = (k_beta @ k.transpose(-1, -2)) * decay  # A (its diagonal is ignored by the solve)
    solve = functools.partial(torch.linalg.solve_triangular, a, upper=False, unitriangular=True)  # (I+A)^-1 rhs
    u_from_v = solve(v * beta[..., None])  # (I + A)^-1 beta V
    u_from_state = solve(k_beta * c.exp()[..., None])  # (I + A)^-1 beta e^c K
    attn = (q @ k.transpose(-1, -2)) * decay  # intra-chunk q_t . k_s e^{c_t - c_s}, s <= t
    q_decayed = q * c.exp()[..., None]
    k_to_end = k * (c[..., -1:] - c).exp()[..., None]  # e^{c_C - c_s} k_s
    chunk_decay = c[..., -1].exp()[..., None, None]  # [B, H, n, 1, 1]

    out = torch.empty(batch, heads, n, chunk_size, dv, dtype=q.dtype, device=q.device)
    for i in range(n):
        u = u_from_v[:, :, i] - u_from_state[:, :, i] @ state
        out[:, :, i] = q_decayed[:, :, i] @ state + attn[:, :, i] @ u
        state = state * chunk_decay[:, :, i] + k_to_end[:, :, i].transpose(-1, -2) @ u
    out = out.reshape(batch, heads, n * chunk_size, dv)[:, :, :length]
    return out.transpose(1, 2), state


@functools.cache
def _fla_kernels():
    """flash-linear-attention's (chunk, recurrent) kernels, or None when not importable."""
    if os.environ.get("TRT_NEG_DISABLE_FLA") == "1" or importlib.util.find_spec("fla") is None:
        return None
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as chunk
        from fla.ops.gated_delta_rule import fused_recurrent_gated_delta_rule as recurrent
    except Exception:  # an fla build that does not match this torch/triton: use torch
        return None
    return chunk, recurrent


def _call_fla(kernel, q, k, v, g, beta, state):
    kwargs = dict(scale=1.0, initial_state=state.contiguous(), output_final_state=True)
    if "head_first" in inspect.signature(kernel).parameters:
        kwargs["head_first"] = False  # [B, T, H, d] layout
    if "use_qk_l2norm_in_kernel" in inspect.signature(kernel).parameters:
        kwargs["use_qk_l2norm_in_kernel"] = False  # already normalised
    out, final = kernel(q.contiguous(), k.contiguous(), v.contiguous(), g.contiguous(), beta.contiguous(),
                        **kwargs)
    return out.float(), final.float()


def gated_delta_rule(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor,
                     state: torch.Tensor, use_fla: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked for several tokens, recurrent for one; fla on CUDA when available."""
    kernels = _fla_kernels() if (use_fla is not False and q.is_cuda) else None
    if kernels is not None:
        return _call_fla(kernels[0] if q.shape[1] > 1 else kernels[1], q, k, v, g, beta, state)
    if q.shape[1] == 1:
        return recurrent_gated_delta_rule(q, k, v, g, beta, state)
    return chunk_gated_delta_rule(q, k, v, g, beta, state)
