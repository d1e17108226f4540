"""Host-library stand-ins for the CUDA extensions, for running GPU-check sections on a CPU."""

from __future__ import annotations

from trt_neg.kernels import host


def host_neg_step(hidden, logits, weights, *, activation="silu", top_k=8, temperature=1.0, seeds=0, offsets=0,
                  threshold=None, entropy=None, with_guided=True, splits=0, head_algo="gemv"):
    """:func:`trt_neg.kernels.cuda_ext.neg_step`'s signature, served by the host library (which has
    one head: ``head_algo`` is checked, then ignored)."""
    assert head_algo in ("gemv", "mma")
    if entropy is not None:
        tau = weights.threshold if threshold is None else threshold
        return host.gated_topk_sample(logits, entropy, tau, top_k, temperature, seeds, offsets,
                                      with_guided=with_guided, splits=splits)
    return host.neg_step(hidden, logits, weights, activation=activation, top_k=top_k, temperature=temperature,
                         seeds=seeds, offsets=offsets, threshold=threshold, with_guided=with_guided, splits=splits)


def host_neg_head(hidden, weights, activation="silu", head_algo="gemv"):
    """:func:`trt_neg.kernels.cuda_ext.neg_head`'s signature, served by the host library."""
    assert head_algo in ("gemv", "mma")
    return host.neg_head(hidden, weights, activation)
