"""The CUDA kernels run on the CPU simulation of CUDA (plugins/common/tests/cudaSim).

``negKernel.cu`` and ``gdnKernel.cu``, each with its TensorRT plugin's enqueue, are compiled
by g++ as C++ against the simulation's stand-in headers (-DTRTNEG_CUDA_SIM), with UBSan's
alignment and bounds checks, and called through plugins/{neg,gdn}/tests/*KernelSim.cpp's C
ABIs.  UBSan reports go to a log that every call checks, so a report fails that call with its
text (UBSan reports each place once per process).  Imported by name from the tests.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
from _build import PATTERN_INIT, PLUGINS

from trt_neg.kernels.build import HostLibrary
from trt_neg.kernels.host import DTYPE_CODES
from trt_neg.neg import ACTIVATION_CODES, NegStepOutput, canonical_activation

SIM = PLUGINS / "common" / "tests" / "cudaSim"
ORDERS = {"forward": 0, "reverse": 1, "shuffled": 2}
HEAD_ALGOS = {"gemv": 0, "mma": 1}
# The simulation modules loaded in one process share cudaSim's function-local statics (GNU
# unique symbols: lastError()'s std::string, the allocation map, ...), so all of them use one
# C++ library ABI: torch's, which the torch-extension simulations must use. torch 2.6's wheels
# still use the pre-C++11 ABI; built with the default one, the first-loaded module's
# std::string was freed by an extension with the other layout ("free(): invalid pointer").
CXX11_ABI = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
# PATTERN_INIT: a kernel's locals start as 0xFE bytes, as shared memory and device buffers start
# as the simulation's poison (costs nothing measurable; tests/test_sanitizers.py has the rest).
SIM_FLAGS = ["-O2", "-pthread", f"-I{SIM}", "-DTRTNEG_CUDA_SIM", "-Wall", "-Wno-unknown-pragmas", "-Wno-sign-compare",
             "-Werror", "-fsanitize=alignment,bounds", *PATTERN_INIT, CXX11_ABI]

# Before any simulation library (and with it libubsan) is loaded: UBSan reads its options once.
_UBSAN_LOG = Path(tempfile.mkdtemp(prefix="trtneg_ubsan_")) / "ubsan"
atexit.register(shutil.rmtree, _UBSAN_LOG.parent, ignore_errors=True)  # one folder per process
os.environ["UBSAN_OPTIONS"] = ":".join(
    filter(None, [os.environ.get("UBSAN_OPTIONS"), f"log_path={_UBSAN_LOG}", "halt_on_error=0"]))
_ubsan_seen = 0


def _declare(lib: ctypes.CDLL) -> None:
    P, I32, I64, F32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
    lib.trtneg_sim_last_error.restype = ctypes.c_char_p
    lib.trtneg_neg_step_sim.argtypes = [P, I32, I32, I32, P, I32, P, P, P, F32, I32, F32, P, I32, I32, F32, P, I64, P,
                                        I32, P, P, P, P, P, I32, I32, I32, I32, I32, I32, ctypes.c_uint32, I32, I32]
    lib.trtneg_neg_step_sim.restype = ctypes.c_int
    lib.trtneg_neg_plugin_sim.argtypes = [I32, I32, I32, I32, F32, I64, I32, I32, I32, P, I32, P, P, P, P, F32, F32, P,
                                          I32, P, P, P, P]
    lib.trtneg_neg_plugin_sim.restype = ctypes.c_int


def _sources():
    neg, common = PLUGINS / "neg", PLUGINS / "common"
    return [neg / "negKernel.cu", neg / "negKernel.h", neg / "negMath.h", neg / "negPluginCore.cpp",
            neg / "negPluginCore.h", common / "pluginFields.cpp", common / "pluginFields.h", common / "hostDevice.h",
            common / "philox.h", common / "cudaLaunch.h", *sorted(SIM.rglob("*.h")), *sorted(SIM.rglob("*.cuh"))]


NEG_SIM = HostLibrary("neg_sim", PLUGINS / "neg" / "tests" / "negKernelSim.cpp", _sources(), SIM_FLAGS, _declare)


class SimulatedKernelError(RuntimeError):
    """The launcher returned an error, the simulation caught a fault, or UBSan reported."""


def check_ubsan() -> None:
    """Raise on UBSan reports written since the last check (one log file per process)."""
    global _ubsan_seen
    log = _UBSAN_LOG.with_name(f"{_UBSAN_LOG.name}.{os.getpid()}")
    text = log.read_text(errors="replace") if log.exists() else ""
    new, _ubsan_seen = text[_ubsan_seen:], len(text)
    if new.strip():
        raise SimulatedKernelError(f"UBSan: {new.strip()}")


def _ptr(t: Optional[torch.Tensor]):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


def neg_step(hidden, logits, weights, *, activation="silu", top_k=8, temperature=1.0, seeds=None, seed=0,
             offsets=None, offsets_int32=False, threshold=None, entropy_in=None, with_guided=True, splits=0,
             head_algo="gemv", hidden_misalign=0, rows_misalign=0, guided_misalign=None, order="forward",
             shuffle_seed=0, sm_major=9, code_arch=0) -> NegStepOutput:
    """The CUDA op on the simulation, with the torch extension's arguments (``seeds`` per row
    or one ``seed``; ``offsets`` per row as int64, or int32 as TensorRT gives positions).

    ``entropy_in`` replaces the head (``hidden`` unused); ``logits=None`` computes entropies
    only; ``hidden_misalign`` / ``rows_misalign`` put hidden / the logits and guided rows that
    many bytes off cudaMalloc's alignment (``guided_misalign``, when given, the guided rows
    alone); ``order`` runs the threads and blocks forward,
    reversed or shuffled; ``sm_major`` is the simulated GPU and ``code_arch`` the architecture
    its kernels were compiled for (0: the GPU's own; e.g. 75 for a "7.5+PTX" build)."""
    h = None if hidden is None else hidden.detach().contiguous()
    z = None if logits is None else logits.detach().to(torch.float32).contiguous()
    n = (h if h is not None else (z if z is not None else torch.as_tensor(entropy_in))).shape[0]
    v = 0 if z is None else z.shape[1]
    w1 = weights.fc1_weight.detach().to(h.dtype if h is not None else torch.float32).contiguous()
    b1 = weights.fc1_bias.detach().float().contiguous()
    w2 = weights.fc2_weight.detach().float().reshape(-1).contiguous()
    b2 = float(weights.fc2_bias.detach().float().reshape(()))
    tau = float(torch.as_tensor(weights.threshold if threshold is None else threshold, dtype=torch.float32))
    ent_in = None if entropy_in is None else torch.as_tensor(entropy_in, dtype=torch.float32).contiguous()
    s = None if seeds is None else torch.as_tensor(seeds, dtype=torch.int64).reshape(n).contiguous()
    o = None if offsets is None else torch.as_tensor(
        offsets, dtype=torch.int32 if offsets_int32 else torch.int64).reshape(n).contiguous()
    out = dict(token=torch.full((n,), -7, dtype=torch.int32), entropy=torch.full((n,), float("nan")),
               fired=torch.full((n,), -7, dtype=torch.int32), status=torch.full((n,), -7, dtype=torch.int32),
               guided=torch.empty(n, v) if (with_guided and z is not None) else None)
    lib = NEG_SIM.load()
    rc = lib.trtneg_neg_step_sim(
        _ptr(h), DTYPE_CODES[h.dtype] if h is not None else 0, n, 0 if h is None else h.shape[1], _ptr(z), v,
        _ptr(w1), _ptr(b1), _ptr(w2), b2, w1.shape[0], tau, _ptr(ent_in),
        ACTIVATION_CODES[canonical_activation(activation)], int(top_k), float(temperature), _ptr(s), int(seed),
        _ptr(o), int(bool(offsets_int32)), _ptr(out["guided"]), _ptr(out["token"]), _ptr(out["entropy"]),
        _ptr(out["fired"]), _ptr(out["status"]), int(splits), HEAD_ALGOS[head_algo], int(hidden_misalign),
        int(rows_misalign), int(rows_misalign if guided_misalign is None else guided_misalign), ORDERS[order],
        int(shuffle_seed), int(sm_major), int(code_arch))
    check_ubsan()
    if rc != 0:
        raise SimulatedKernelError(lib.trtneg_sim_last_error().decode())
    return NegStepOutput(token=out["token"].to(torch.int64), entropy=out["entropy"], fired=out["fired"].bool(),
                         status=out["status"], guided_logits=out["guided"])



# TensorRT's DataType codes (pluginFields.h's TensorType) of the plugin's inputs.
_TRT_TYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 7, torch.int32: 3, torch.int64: 8}


def plugin_enqueue(hidden, logits, weights, threshold, positions, *, max_rows, top_k=8, temperature=1.0, seed=0,
                   activation="silu") -> NegStepOutput:
    """The TensorRT plugin's enqueue (negPluginEnqueue) on the simulation: the plugin's fields,
    its inputs in its order (positions int32 or int64, as the engine gives them), and the
    workspace getWorkspaceSize reserves for a profile of up to ``max_rows`` rows."""
    h = hidden.detach().contiguous()
    z = logits.detach().float().contiguous()
    n, v = z.shape
    w1 = weights.fc1_weight.detach().to(h.dtype).contiguous()
    b1 = weights.fc1_bias.detach().float().contiguous()
    w2 = weights.fc2_weight.detach().float().reshape(-1).contiguous()
    pos = positions.contiguous()
    out = dict(guided=torch.empty(n, v), token=torch.empty(n, dtype=torch.int32), entropy=torch.empty(n),
               fired=torch.empty(n, dtype=torch.int32))
    lib = NEG_SIM.load()
    rc = lib.trtneg_neg_plugin_sim(
        h.shape[1], w1.shape[0], v, int(top_k), float(temperature), int(seed),
        ACTIVATION_CODES[canonical_activation(activation)], n, int(max_rows), _ptr(h), _TRT_TYPES[h.dtype], _ptr(z),
        _ptr(w1), _ptr(b1), _ptr(w2), float(weights.fc2_bias.float()), float(threshold), _ptr(pos),
        _TRT_TYPES[pos.dtype], _ptr(out["guided"]), _ptr(out["token"]), _ptr(out["entropy"]), _ptr(out["fired"]))
    check_ubsan()
    if rc != 0:
        raise SimulatedKernelError(lib.trtneg_sim_last_error().decode())
    return NegStepOutput(token=out["token"].to(torch.int64), entropy=out["entropy"], fired=out["fired"].bool(),
                         status=None, guided_logits=out["guided"])

# ---- Gated DeltaNet (plugins/gdn/gdnKernel.cu through plugins/gdn/tests/gdnKernelSim.cpp) ----

from trt_neg.kernels import gdn_host  # noqa: E402

KB = 1024
# Simulated GPUs: compute capability and cudaDevAttrMaxSharedMemoryPerBlockOptin. With the
# 9B's heads (dk = dv = 128) the launcher picks chunk sizes 64, 32 and 16 on them.
GDN_ARCHS = {"sm_90": (9, 0, 227 * KB), "sm_80": (8, 0, 163 * KB), "sm_89": (8, 9, 99 * KB)}


def _declare_gdn(lib: ctypes.CDLL) -> None:
    P, I32, I64, F32 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_float
    lib.trtneg_sim_last_error.restype = ctypes.c_char_p
    lib.trtneg_gdn_forward_sim.argtypes = [P] * 12 + [I32, I32, I32, I32, I64, I64, I32, I32, I32, I32, F32, I32,
                                                      I32, I32, ctypes.c_uint32, I32, I32, I32, I32, P]
    lib.trtneg_gdn_forward_sim.restype = ctypes.c_int
    lib.trtneg_gdn_plugin_sim.argtypes = [I32] * 7 + [F32, I32, P, I32, I64] + [P] * 6 + [I64] + [P] * 6
    lib.trtneg_gdn_plugin_sim.restype = ctypes.c_int


def _gdn_sources():
    gdn, common = PLUGINS / "gdn", PLUGINS / "common"
    return [gdn / "gdnKernel.cu", gdn / "gdnKernel.h", gdn / "gdnHost.cpp", gdn / "gdnHost.h", gdn / "gdnChunk.h",
            gdn / "gdnMath.h", gdn / "gdnParams.h", gdn / "gdnPluginCore.cpp", gdn / "gdnPluginCore.h",
            gdn / "gdnPluginEnqueue.h", common / "pluginFields.cpp", common / "pluginFields.h", common / "hostDevice.h",
            common / "cudaLaunch.h", *sorted(SIM.rglob("*.h"))]


GDN_SIM = HostLibrary("gdn_sim", PLUGINS / "gdn" / "tests" / "gdnKernelSim.cpp", _gdn_sources(), SIM_FLAGS,
                      _declare_gdn)


def gdn_forward(qkv, a, b, A_log, dt_bias, state_pool, *, num_k_heads, num_v_heads, head_k_dim, head_v_dim,
                last_token_ids, request_types=None, slot_mapping=None, z=None, norm_weight=None, norm_eps=1e-6,
                remove_padding=True, continue_context=False, algo="auto", arch="sm_90", order="forward",
                shuffle_seed=0, func_max_threads=1024):
    """The CUDA op (gdn::launch) on the simulation, with gdn_host.gated_delta_rule's arguments
    (``state_pool``: contiguous fp32, updated in place); ``arch``: a GDN_ARCHS key; ``order``:
    the threads' and blocks' run order; ``func_max_threads``: the kernels' maxThreadsPerBlock
    as cudaFuncGetAttributes reports it. Returns (y, the kernel launch's dynamic shared
    memory in bytes, -1 when no kernel ran)."""
    assert state_pool.dtype == torch.float32 and state_pool.is_contiguous()
    major, minor, optin = GDN_ARCHS[arch]
    dtype = qkv.dtype
    # Every array the library reads, kept alive (bound to a name) until the call returns.
    dense = lambda t, dt: None if t is None else t.detach().to(dt).contiguous()  # noqa: E731
    ints = lambda v: None if v is None else torch.as_tensor(v, dtype=torch.int32).reshape(-1).contiguous()  # noqa: E731
    qkv_c, a_c, b_c, z_c = (dense(t, dtype) for t in (qkv, a, b, z))
    alog_c, dtb_c, w_c = (dense(t, torch.float32) for t in (A_log, dt_bias, norm_weight))
    last, types, slots = ints(last_token_ids), ints(request_types), ints(slot_mapping)
    batch = last.numel() if remove_padding else qkv.shape[0]
    num_tokens = qkv.shape[0] if remove_padding else qkv.shape[0] * qkv.shape[1]
    out = torch.empty(qkv.shape[:-1] + (num_v_heads * head_v_dim,), dtype=dtype)
    shared_bytes = ctypes.c_int64(0)
    lib = GDN_SIM.load()
    rc = lib.trtneg_gdn_forward_sim(
        _ptr(qkv_c), _ptr(a_c), _ptr(b_c), _ptr(z_c), _ptr(alog_c), _ptr(dtb_c), _ptr(w_c), _ptr(state_pool),
        _ptr(slots), _ptr(types), _ptr(last), _ptr(out), DTYPE_CODES[dtype], batch, int(remove_padding),
        0 if remove_padding else qkv.shape[1], num_tokens, state_pool.shape[0], num_k_heads, num_v_heads,
        head_k_dim, head_v_dim, float(norm_eps), int(continue_context), gdn_host.ALGOS[algo], ORDERS[order],
        int(shuffle_seed), major, minor, optin, int(func_max_threads), ctypes.byref(shared_bytes))
    check_ubsan()
    if rc != 0:
        raise SimulatedKernelError(lib.trtneg_sim_last_error().decode())
    return out, shared_bytes.value


def gdn_plugin_enqueue(qkv, a, b, A_log, dt_bias, state_pool, *, num_k_heads, num_v_heads, head_k_dim, head_v_dim,
                       last_token_ids, request_types=None, slot_mapping=None, z=None, norm_weight=None,
                       norm_eps=1e-6, remove_padding=True, continue_context=False):
    """The TensorRT plugin's enqueue (gdn::pluginEnqueue) on the simulation, with
    gdn_forward's arguments turned into the plugin's: its fields (gated_norm = z given, type_id
    = qkv's dtype, whose DTYPE_CODES are TensorRT's), its inputs in its order, the state pool (updated in place) behind a host
    rnn_state_ptr; request types default to context and slots to the sequence index, as the
    host library's do. Returns y."""
    assert state_pool.dtype == torch.float32 and state_pool.is_contiguous()
    dtype = qkv.dtype
    dense = lambda t, dt: None if t is None else t.detach().to(dt).contiguous()  # noqa: E731
    ints = lambda v: torch.as_tensor(v, dtype=torch.int32).reshape(-1).contiguous()  # noqa: E731
    qkv_c, a_c, b_c, z_c = (dense(t, dtype) for t in (qkv, a, b, z))
    alog_c, dtb_c, w_c = (dense(t, torch.float32) for t in (A_log, dt_bias, norm_weight))
    last = ints(last_token_ids)
    batch = last.numel()
    types = ints([0] * batch if request_types is None else request_types)
    slots = ints(range(batch) if slot_mapping is None else slot_mapping)
    dims = (ctypes.c_int64 * qkv_c.dim())(*qkv_c.shape)
    out = torch.empty(qkv.shape[:-1] + (num_v_heads * head_v_dim,), dtype=dtype)
    lib = GDN_SIM.load()
    rc = lib.trtneg_gdn_plugin_sim(
        num_k_heads, num_v_heads, head_k_dim, head_v_dim, DTYPE_CODES[dtype], int(remove_padding), int(z is not None),
        float(norm_eps), int(continue_context), dims, qkv_c.dim(), batch, _ptr(qkv_c), _ptr(a_c), _ptr(b_c),
        _ptr(alog_c), _ptr(dtb_c), _ptr(state_pool), state_pool.shape[0], _ptr(types), _ptr(last), _ptr(slots),
        _ptr(z_c), _ptr(w_c), _ptr(out))
    check_ubsan()
    if rc != 0:
        raise SimulatedKernelError(lib.trtneg_sim_last_error().decode())
    return out
