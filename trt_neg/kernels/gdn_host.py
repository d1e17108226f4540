"""CPU host build of the Gated DeltaNet op (plugins/gdn/gdnHost.cpp), loaded with ctypes.

The same ``__host__ __device__`` maths (``plugins/gdn/gdnMath.h``) the CUDA kernel runs,
compiled with g++ on first use and cached (:mod:`trt_neg.kernels.build`). The context
phase runs either as the per-token scan or in the chunked (UT-transform) form of
``plugins/gdn/gdnChunk.h``; ``algo`` picks it exactly as the CUDA launcher does
(``"auto"``: chunked for segments of >= :data:`CHUNK_MIN_TOKENS` tokens).

:func:`gated_delta_rule` is the op exactly as the TensorRT plugin sees it: post-conv
``q|k|v`` channels, raw ``a``/``b``, optional gate ``z`` for the fused gated RMS norm, and a
state *pool* ``[num_slots, Hv, dk, dv]`` addressed through a slot mapping, updated in place.
"""

from __future__ import annotations

import ctypes
from typing import Optional, Sequence

import torch

from . import PLUGINS_DIR, check_num_threads
from .build import HostLibrary

GDN_DIR = PLUGINS_DIR / "gdn"
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 7}
CONTEXT, GENERATION = 0, 1
ALGOS = {"auto": 0, "scan": 1, "chunked": 2}
CHUNK_MIN_TOKENS = 16  # gdnChunk.h kChunkMinTokens
HOST_CHUNK_SIZE = 64  # gdnChunk.h kHostChunkSize
HOST_MAX_CHUNK_SIZE = 1024  # gdnChunk.h kHostMaxChunkSize
TOKEN_TILE = 8  # gdnChunk.h kTokenTile: chunk sizes are multiples of it


def _declare(lib: ctypes.CDLL) -> None:
    P, I32, I64, F32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
    lib.trtneg_gdn_last_error.restype = ctypes.c_char_p
    lib.trtneg_gdn_forward_host.argtypes = [P] * 12 + [I32, I32, I32, I32, I64, I64, I32, I32, I32, I32,
                                                      F32, I32, I32, I32, I32]
    lib.trtneg_gdn_forward_host.restype = ctypes.c_int
    lib.trtneg_gdn_chunk_plan.argtypes = [I32, I32, I32, I32, I64, I64, I32, I32, P, I32, P]
    lib.trtneg_gdn_chunk_plan.restype = ctypes.c_int
    lib.trtneg_gdn_convert.argtypes = [P, I64, I32, P]
    lib.trtneg_gdn_convert.restype = None


_LIBRARY = HostLibrary(
    "gdn", GDN_DIR / "gdnHost.cpp",
    [GDN_DIR / "gdnHost.h", GDN_DIR / "gdnChunk.h", GDN_DIR / "gdnMath.h", GDN_DIR / "gdnParams.h",
     PLUGINS_DIR / "common" / "hostDevice.h"],
    ["-O2"], _declare)
library_path = _LIBRARY.path
load = _LIBRARY.load


def _ptr(t: Optional[torch.Tensor]):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def _i32(x, n: int, name: str) -> torch.Tensor:
    """``n`` int32 values: integers only (decision 14 of docs/neg.md: a float such as 2.9 is refused,
    not truncated), each within int32."""
    from ..neg import int64_tensor

    t = int64_tensor(x, name).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name}: expected {n} values, got {t.numel()}")
    if t.numel() and not (-2**31 <= int(t.min()) and int(t.max()) < 2**31):
        raise ValueError(f"{name}: values must fit in int32, got {int(t.min())}..{int(t.max())}")
    return t.to(torch.int32).contiguous().clone()


def _int32(value, name: str) -> int:
    """One integer argument that travels to C as int32: refused, not wrapped, outside int32."""
    from ..neg import integer_arg

    x = integer_arg(value, name)
    if not -2**31 <= x < 2**31:
        raise ValueError(f"{name}: must fit in int32, got {x}")
    return x


def check_chunk_size(chunk_size) -> int:
    """The host library's chunk: a multiple of TOKEN_TILE up to HOST_MAX_CHUNK_SIZE (its scratch grows
    as the square of it; the CUDA kernel itself uses 64, 32 or 16)."""
    from ..neg import integer_arg

    c = integer_arg(chunk_size, "chunk_size")
    if not TOKEN_TILE <= c <= HOST_MAX_CHUNK_SIZE or c % TOKEN_TILE:
        raise ValueError(f"chunk_size: expected a multiple of {TOKEN_TILE} in [{TOKEN_TILE}, {HOST_MAX_CHUNK_SIZE}], "
                         f"got {chunk_size!r}")
    return c


def gated_delta_rule(qkv: torch.Tensor, a: torch.Tensor, b: torch.Tensor, A_log: torch.Tensor,
                     dt_bias: torch.Tensor, state_pool: torch.Tensor, *, num_k_heads: int, num_v_heads: int,
                     head_k_dim: int, head_v_dim: int, last_token_ids: Sequence[int],
                     request_types: Sequence[int] | None = None, slot_mapping: Sequence[int] | None = None,
                     z: torch.Tensor | None = None, norm_weight: torch.Tensor | None = None,
                     norm_eps: float = 1e-6, remove_padding: bool = True, continue_context: bool = False,
                     num_threads: int = 0, algo: str = "auto", chunk_size: int = HOST_CHUNK_SIZE) -> torch.Tensor:
    """Run the GDN op on the CPU; ``state_pool`` (fp32, contiguous, CPU) is updated in place.

    Packed layout (``remove_padding``): ``qkv`` [T, 2*Hk*dk + Hv*dv], ``a``/``b`` [T, Hv],
    ``z`` [T, Hv*dv]; ``last_token_ids[i]`` is the cumulative token count through sequence i
    (non-decreasing, <= T); rows past ``last_token_ids[-1]`` are returned as zeros.
    Padded layout: ``qkv`` [B, L, C] etc., ``last_token_ids[i]`` is sequence i's length, in
    [0, L]; positions past it are zeros. An entry outside its range raises ValueError.
    ``request_types`` (default all context) selects zero-initialised (context) or carried
    (generation) state per sequence. Returns y [..., Hv*dv] in the dtype of ``qkv``
    (gated-normed when ``z`` is given, else the raw recurrence output o).
    ``algo``: ``"scan"``, ``"chunked"`` (every sequence, even 1 token) or ``"auto"``;
    ``chunk_size``: a multiple of 8 up to 1024 (the kernel uses 64, 32 or 16 by shared memory).
    """
    if algo not in ALGOS:
        raise ValueError(f"algo: expected one of {sorted(ALGOS)}, got {algo!r}")
    chunk = check_chunk_size(chunk_size)
    dtype = qkv.dtype
    if dtype not in _DTYPE_CODES:
        raise TypeError(f"qkv: dtype {dtype} not supported (float32, float16, bfloat16)")
    if state_pool.dtype != torch.float32 or state_pool.device.type != "cpu" or not state_pool.is_contiguous():
        raise ValueError("state_pool must be a contiguous fp32 CPU tensor [num_slots, Hv, dk, dv]")
    if tuple(state_pool.shape[1:]) != (num_v_heads, head_k_dim, head_v_dim):
        raise ValueError(f"state_pool: expected [*, {num_v_heads}, {head_k_dim}, {head_v_dim}], "
                         f"got {tuple(state_pool.shape)}")
    conv_dim = 2 * num_k_heads * head_k_dim + num_v_heads * head_v_dim
    lead = tuple(qkv.shape[:-1])
    if qkv.shape[-1] != conv_dim or qkv.dim() != (2 if remove_padding else 3):
        raise ValueError(f"qkv: expected [{'T' if remove_padding else 'B, L'}, {conv_dim}], got {tuple(qkv.shape)}")
    if (z is None) != (norm_weight is None):
        raise ValueError("z and norm_weight go together")

    def prep(t, shape, name, dt=dtype):
        t = t.detach().to("cpu", dt).contiguous()
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"{name}: expected {tuple(shape)}, got {tuple(t.shape)}")
        return t

    qkv_c = prep(qkv, qkv.shape, "qkv")
    a_c = prep(a, lead + (num_v_heads,), "a")
    b_c = prep(b, lead + (num_v_heads,), "b")
    z_c = None if z is None else prep(z, lead + (num_v_heads * head_v_dim,), "z")
    alog_c = prep(A_log, (num_v_heads,), "A_log", torch.float32)
    dtb_c = prep(dt_bias, (num_v_heads,), "dt_bias", torch.float32)
    w_c = None if norm_weight is None else prep(norm_weight, (head_v_dim,), "norm_weight", torch.float32)

    batch = len(last_token_ids) if remove_padding else qkv.shape[0]
    last = _i32(last_token_ids, batch, "last_token_ids")
    rtypes = _i32([CONTEXT] * batch if request_types is None else request_types, batch, "request_types")
    slots = None if slot_mapping is None else _i32(slot_mapping, batch, "slot_mapping")
    num_tokens = qkv.shape[0] if remove_padding else qkv.shape[0] * qkv.shape[1]
    max_seq_len = 0 if remove_padding else qkv.shape[1]
    out = torch.empty(lead + (num_v_heads * head_v_dim,), dtype=dtype)

    lib = load()
    rc = lib.trtneg_gdn_forward_host(
        _ptr(qkv_c), _ptr(a_c), _ptr(b_c), _ptr(z_c), _ptr(alog_c), _ptr(dtb_c), _ptr(w_c), _ptr(state_pool),
        _ptr(slots), _ptr(rtypes), _ptr(last), _ptr(out), _DTYPE_CODES[dtype], batch, int(remove_padding),
        max_seq_len, num_tokens, state_pool.shape[0], num_k_heads, num_v_heads, head_k_dim, head_v_dim,
        float(norm_eps), int(continue_context), check_num_threads(num_threads), ALGOS[algo], chunk)
    if rc != 0:
        raise ValueError(lib.trtneg_gdn_last_error().decode())
    return out


def chunk_plan(num_k_heads: int, num_v_heads: int, head_k_dim: int, head_v_dim: int, max_shared_bytes: int, *,
               num_tokens: int = 4096, batch: int = 1, has_context: bool = True,
               request_types: Sequence[int] | None = None, algo: str = "auto") -> dict:
    """The CUDA launcher's decisions (gdnChunk.h) for a device with ``max_shared_bytes`` of
    opt-in shared memory per block: ``chunk`` (largest fitting size, 0 = scan only),
    ``shared_bytes`` at that size, and ``launch_chunk`` for a packed call of ``num_tokens``
    tokens (0 = scan-only launch, -1 = ``"chunked"`` forced but impossible). The call's
    requests: ``request_types`` (0 context, 1 generation; sets ``batch``) when given, else
    ``batch`` sequences whose first is a context request iff ``has_context``."""
    if algo not in ALGOS:
        raise ValueError(f"algo: expected one of {sorted(ALGOS)}, got {algo!r}")
    types = None
    if request_types is not None:
        batch = len(request_types)
        types = _i32(request_types, batch, "request_types")
    if not 0 <= batch <= 4096:
        raise ValueError(f"batch must be in [0, 4096], got {batch}")
    dims = [_int32(x, name) for x, name in ((num_k_heads, "num_k_heads"), (num_v_heads, "num_v_heads"),
                                            (head_k_dim, "head_k_dim"), (head_v_dim, "head_v_dim"))]
    out = (ctypes.c_int64 * 3)()
    lib = load()
    if lib.trtneg_gdn_chunk_plan(*dims, int(max_shared_bytes), int(num_tokens), int(batch), int(has_context),
                                 _ptr(types), ALGOS[algo], out):
        raise ValueError(lib.trtneg_gdn_last_error().decode())
    return dict(chunk=out[0], shared_bytes=out[1], launch_chunk=out[2])


def convert(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """fp32 -> ``dtype`` through the kernel's own store routine (for tests of its rounding)."""
    src = x.detach().to("cpu", torch.float32).contiguous()
    out = torch.empty(src.shape, dtype=dtype)
    load().trtneg_gdn_convert(_ptr(src), src.numel(), _DTYPE_CODES[dtype], _ptr(out))
    return out
