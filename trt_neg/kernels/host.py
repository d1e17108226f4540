"""CPU host build of the NEG op (plugins/neg/negHost.cpp), loaded with ctypes.

Built with g++ on first use and cached (:mod:`trt_neg.kernels.build`).
"""

from __future__ import annotations

import ctypes
from typing import Optional

import torch

from . import PLUGINS_DIR, check_num_threads, check_splits
from .build import HostLibrary

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 7}
KERNEL_MAX_VOCAB = 1 << 30  # negKernel.h kNegMaxVocab: the CUDA kernel's largest vocabulary


def _declare(lib: ctypes.CDLL) -> None:
    P, I32, I64, F32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
    lib.trtneg_last_error.restype = ctypes.c_char_p
    lib.trtneg_philox4x32_10.argtypes = [P, P, P]
    lib.trtneg_philox4x32_10.restype = None
    lib.trtneg_philox_uniform.argtypes = [ctypes.c_uint64, ctypes.c_uint64]
    lib.trtneg_philox_uniform.restype = F32
    lib.trtneg_gated_sample_host.argtypes = [P, I64, I64, P, F32, I32, F32, P, P, P, P, P, P, I32, I32]
    lib.trtneg_gated_sample_host.restype = ctypes.c_int
    lib.trtneg_split_plan.argtypes = [I64, I64, I32, I32, P]
    lib.trtneg_split_plan.restype = None
    lib.trtneg_neg_head_host.argtypes = [P, I32, I64, I64, P, I32, P, P, F32, I64, I32, P, I32]
    lib.trtneg_neg_head_host.restype = ctypes.c_int
    lib.trtneg_neg_step_host.argtypes = [P, I32, I64, I64, P, I64, P, I32, P, P, F32, I64, F32, I32, I32, F32,
                                         P, P, P, P, P, P, P, I32, I32]
    lib.trtneg_neg_step_host.restype = ctypes.c_int


_LIBRARY = HostLibrary(
    "neg", PLUGINS_DIR / "neg" / "negHost.cpp",
    [PLUGINS_DIR / "neg" / "negMath.h", PLUGINS_DIR / "common" / "hostDevice.h", PLUGINS_DIR / "common" / "philox.h"],
    ["-O3"], _declare)
library_path = _LIBRARY.path
load = _LIBRARY.load


def _check(rc: int) -> None:
    if rc != 0:
        raise ValueError(load().trtneg_last_error().decode())


def _ptr(t: Optional[torch.Tensor]):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def philox4x32_10(counter, key) -> tuple[int, int, int, int]:
    c = (ctypes.c_uint32 * 4)(*[int(x) & 0xFFFFFFFF for x in counter])
    k = (ctypes.c_uint32 * 2)(*[int(x) & 0xFFFFFFFF for x in key])
    o = (ctypes.c_uint32 * 4)()
    load().trtneg_philox4x32_10(c, k, o)
    return tuple(o)


def philox_uniform(seed: int, offset: int) -> float:
    from ..neg import integer_arg

    return float(load().trtneg_philox_uniform(integer_arg(seed, "seed") & (2**64 - 1),
                                              integer_arg(offset, "offset") & (2**64 - 1)))


def _rows(x, n: int, name: str) -> torch.Tensor:
    """Seeds/offsets for the C call: exactly n int64 values (the C code reads n of them, whatever it is given)."""
    from ..neg import kernel_rows_int64

    return kernel_rows_int64(x, n, name).to("cpu").contiguous().clone()


def _top_k_for_c(top_k, temperature, v: int) -> int:
    """``k = min(top_k, V)`` after the reference's argument checks: the C call takes an int32,
    which a larger top_k would wrap (2**32 + 1 to 1)."""
    from ..neg import check_sampling_args

    return min(check_sampling_args(top_k, temperature), v)


def _prep_common(logits: torch.Tensor, seeds, offsets, with_guided: bool):
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point() or logits.dim() != 2:
        raise ValueError(f"logits: expected a floating-point tensor [N, V], got {getattr(logits, 'shape', type(logits))}"
                         + (f" of {logits.dtype}" if isinstance(logits, torch.Tensor) else ""))
    z = logits.detach().to("cpu", torch.float32).contiguous()
    n, v = z.shape
    out = dict(
        token=torch.empty(n, dtype=torch.int32),
        fired=torch.empty(n, dtype=torch.int32),
        status=torch.empty(n, dtype=torch.int32),
        guided=torch.empty(n, v, dtype=torch.float32) if with_guided else None,
    )
    return z, n, v, _rows(seeds, n, "seeds"), _rows(offsets, n, "offsets"), out


def _result(out, entropy):
    from ..neg import NegStepOutput

    return NegStepOutput(
        token=out["token"].to(torch.int64),
        entropy=entropy,
        fired=out["fired"].bool(),
        status=out["status"],
        guided_logits=out["guided"],
    )


def split_plan(n: int, v: int, top_k: int, splits: int = 0) -> tuple[int, int, int]:
    """The CUDA kernel's split-V plan for N rows of V logits: (slices per row, slice length,
    candidate slots per slice).  ``splits`` 0 = automatic, else the requested count.  Arguments
    outside what the kernel takes are refused: the plan's arithmetic would overflow or wrap."""
    from ..neg import integer_arg

    n, v, k = integer_arg(n, "n"), integer_arg(v, "v"), integer_arg(top_k, "top_k")
    if not 0 <= n < 2**63:  # n travels to C as int64: ctypes would wrap a larger one silently
        raise ValueError(f"n: expected an integer in [0, 2**63), got {n}")
    if not 1 <= v <= KERNEL_MAX_VOCAB:
        raise ValueError(f"v: expected an integer in [1, {KERNEL_MAX_VOCAB}] (the kernel's kNegMaxVocab), got {v}")
    if k < 1:
        raise ValueError(f"top_k: expected an integer >= 1, got {k}")
    out = (ctypes.c_int32 * 3)()
    load().trtneg_split_plan(n, v, min(k, v), check_splits(splits), out)
    return tuple(out)


def gated_topk_sample(logits, entropy, threshold, top_k, temperature, seeds, offsets, *, with_guided=True, num_threads=0,
                      splits=0):
    """Host-library twin of :func:`trt_neg.neg.gated_topk_sample`.

    Runs the CUDA kernel's steps sequentially; ``splits`` picks its path: 0 = the plan the
    kernel picks for this (N, V, top_k), 1 = one pass per row, > 1 = that many vocabulary
    slices per row merged afterwards (docs/neg.md, "split-V").  Every path gives the same
    result."""
    from ..neg import threshold_scalar

    z, n, v, s, o, out = _prep_common(logits, seeds, offsets, with_guided)
    ent = torch.as_tensor(entropy, dtype=torch.float32).reshape(-1).contiguous().clone()
    if ent.numel() != n:
        raise ValueError(f"entropy: expected shape ({n},), got {tuple(ent.shape)}")
    tau = float(threshold_scalar(threshold))
    k = _top_k_for_c(top_k, temperature, v)
    _check(load().trtneg_gated_sample_host(_ptr(z), n, v, _ptr(ent), tau, k, float(temperature), _ptr(s),
                                           _ptr(o), _ptr(out["guided"]), _ptr(out["token"]), _ptr(out["fired"]),
                                           _ptr(out["status"]), check_num_threads(num_threads), check_splits(splits)))
    return _result(out, ent)


def _weights(weights, hidden_dtype):
    w1 = weights.fc1_weight.detach().cpu()
    if w1.dtype not in DTYPE_CODES:
        w1 = w1.float()
    w1 = w1.contiguous()
    b1 = weights.fc1_bias.detach().to("cpu", torch.float32).contiguous()
    w2 = weights.fc2_weight.detach().to("cpu", torch.float32).reshape(-1).contiguous()
    b2 = float(weights.fc2_bias.detach().float().reshape(()))
    return w1, b1, w2, b2


def neg_head(hidden: torch.Tensor, weights, activation: str = "silu", *, num_threads=0) -> torch.Tensor:
    from ..neg import ACTIVATION_CODES, canonical_activation

    h = hidden.detach().cpu()
    if h.dtype not in DTYPE_CODES:
        raise TypeError(f"hidden: dtype {h.dtype} not supported (float32, float16, bfloat16)")
    squeeze = h.dim() == 1  # one hidden state [H], as the reference takes it
    h = (h.reshape(1, -1) if squeeze else h).contiguous()
    if h.dim() != 2:
        raise ValueError(f"hidden: expected shape [N, H], got {tuple(hidden.shape)}")
    n, hs = h.shape
    w1, b1, w2, b2 = _weights(weights, h.dtype)
    d = w1.shape[0]
    if w1.shape[1] != hs:
        raise ValueError(f"hidden: last dimension {hs} != fc1_weight columns {w1.shape[1]}")
    ent = torch.empty(n, dtype=torch.float32)
    _check(load().trtneg_neg_head_host(_ptr(h), DTYPE_CODES[h.dtype], n, hs, _ptr(w1), DTYPE_CODES[w1.dtype], _ptr(b1),
                                       _ptr(w2), b2, d, ACTIVATION_CODES[canonical_activation(activation)], _ptr(ent),
                                       check_num_threads(num_threads)))
    return ent.reshape(()) if squeeze else ent


def neg_step(hidden, logits, weights, *, activation="silu", top_k=8, temperature=1.0, seeds=0, offsets=0,
             threshold=None, with_guided=True, num_threads=0, splits=0):
    """Host-library twin of :func:`trt_neg.neg.neg_step` (whole op in one C call; ``splits`` as
    in :func:`gated_topk_sample`)."""
    from ..neg import ACTIVATION_CODES, canonical_activation, threshold_scalar

    h = hidden.detach().cpu().contiguous()
    if h.dtype not in DTYPE_CODES:
        raise TypeError(f"hidden: dtype {h.dtype} not supported (float32, float16, bfloat16)")
    z, n, v, s, o, out = _prep_common(logits, seeds, offsets, with_guided)
    if h.dim() != 2 or h.shape[0] != n:
        raise ValueError(f"hidden: expected [{n}, H], got {tuple(h.shape)}")
    w1, b1, w2, b2 = _weights(weights, h.dtype)
    if w1.shape[1] != h.shape[1]:  # the C code reads W1 as [d, H] with H from hidden
        raise ValueError(f"hidden: last dimension {h.shape[1]} != fc1_weight columns {w1.shape[1]}")
    tau = float(threshold_scalar(weights.threshold if threshold is None else threshold))
    ent = torch.empty(n, dtype=torch.float32)
    k = _top_k_for_c(top_k, temperature, v)
    _check(load().trtneg_neg_step_host(
        _ptr(h), DTYPE_CODES[h.dtype], n, h.shape[1], _ptr(z), v, _ptr(w1), DTYPE_CODES[w1.dtype], _ptr(b1), _ptr(w2),
        b2, w1.shape[0], tau, ACTIVATION_CODES[canonical_activation(activation)], k, float(temperature),
        _ptr(s), _ptr(o), _ptr(out["guided"]), _ptr(out["token"]), _ptr(ent), _ptr(out["fired"]), _ptr(out["status"]),
        check_num_threads(num_threads), check_splits(splits)))
    return _result(out, ent)
