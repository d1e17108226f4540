"""The project's TensorRT plugins inside a TensorRT-LLM network.

* :func:`load_plugin_library` loads ``libtrt_neg_plugins.so`` with
  ``ctypes.CDLL(path, mode=RTLD_GLOBAL)``; its static initialisers register the plugin
  creators with TensorRT's global registry under namespace ``trt_neg``. It must run
  before a network using them is built **and** before any executor deserialises such an
  engine (otherwise: "getPluginCreator could not find plugin").
* :func:`neg_sample` and :func:`gated_delta_rule` add the IPluginV3 layers the way
  TensorRT-LLM 1.2.x's own ``functional.dora_plugin`` does:
  ``trt.get_plugin_registry().get_creator(name, version, namespace)``,
  a ``trt.PluginFieldCollection``, ``creator.create_plugin(name, pfc, trt.TensorRTPhase.BUILD)``,
  ``default_trtnet().add_plugin_v3(inputs, [], plugin)`` and
  ``functional._add_plugin_info(layer, creator, name, pfc)`` (records the fields for
  TensorRT-LLM's graph tools); outputs are wrapped with ``functional._create_tensor``
  (checked against ``tensorrt_llm/functional.py::dora_plugin`` @0071496d).

Plugin names, versions, fields and input orders are those of ``plugins/neg/negPluginCore.h``
(``NegGatedSampling`` v1) and ``plugins/gdn/gdnPluginCore.h`` (``TrtNegGatedDeltaRule`` v1).
The field lists are built by plain functions (:func:`neg_plugin_fields`,
:func:`gdn_plugin_fields`) that need neither tensorrt nor tensorrt_llm, so they are tested
on CPU machines.
"""

from __future__ import annotations

import ctypes
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trt_neg.config import to_float32

PLUGIN_NAMESPACE = "trt_neg"
PLUGIN_LIBRARY = "libtrt_neg_plugins.so"
PLUGIN_LIBRARY_ENV = "TRT_NEG_PLUGIN_LIB"  # os.pathsep-separated list of libraries

NEG_PLUGIN_NAME, NEG_PLUGIN_VERSION = "NegGatedSampling", "1"  # plugins/neg/negPluginCore.h
GDN_PLUGIN_NAME, GDN_PLUGIN_VERSION = "TrtNegGatedDeltaRule", "1"  # plugins/gdn/gdnPluginCore.h
# plugins/gdn/gdnParams.h kMaxSeqsPerCall: the most sequences one GDN enqueue takes, so an
# engine's max_batch_size.
GDN_MAX_SEQS_PER_CALL = 4096

# plugins/neg/negKernel.h kNegMaxTopK: the most NEG candidates the kernel keeps (k = min(top_k, vocab_size)).
NEG_MAX_TOP_K = 1024
# plugins/neg/negMath.h: activation codes of the NEG head.
NEG_ACTIVATION_CODES = {"silu": 0, "gelu": 1, "relu": 2, "gelu_tanh": 3}
# nvinfer1::DataType codes (plugins/common/pluginFields.h TensorType): the GDN plugin's type_id.
TRT_DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 7}

# A plugin field before it becomes a trt.PluginField: (name, data, trt.PluginFieldType member name).
Field = tuple[str, np.ndarray, str]

_LOADED: dict[str, ctypes.CDLL] = {}


class PluginLibraryError(RuntimeError):
    """libtrt_neg_plugins.so is missing, does not load, or does not register a plugin."""


# ------------------------------------------------------------------------------------
# Loading the library
# ------------------------------------------------------------------------------------

def plugin_library_candidates() -> list[Path]:
    """Where :func:`load_plugin_library` looks when no path is given (in order)."""
    env = os.environ.get(PLUGIN_LIBRARY_ENV, "")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    root = Path(__file__).resolve().parents[2]
    return [root / "build" / "plugins" / PLUGIN_LIBRARY, root / "plugins" / "build" / PLUGIN_LIBRARY,
            root / "build" / PLUGIN_LIBRARY, Path(__file__).resolve().parent / "lib" / PLUGIN_LIBRARY]


def load_plugin_library(path: str | os.PathLike[str] | None = None) -> list[Path]:
    """Load the plugin library (or libraries) with ``RTLD_GLOBAL``; idempotent. Returns the paths loaded.

    ``path`` None: the ``TRT_NEG_PLUGIN_LIB`` list if set (every entry is loaded), else the
    first existing default location.
    """
    if path is not None:
        paths = [Path(path)]
    else:
        candidates = plugin_library_candidates()
        if os.environ.get(PLUGIN_LIBRARY_ENV):
            paths = candidates
        else:
            paths = [p for p in candidates if p.is_file()][:1]
            if not paths:
                raise PluginLibraryError(
                    f"{PLUGIN_LIBRARY} not found (looked in {', '.join(map(str, candidates))}); build it with "
                    f"cmake -S plugins -B build/plugins -DTENSORRT_ROOT=... (needs TensorRT headers, e.g. in the "
                    f"NGC container) or set {PLUGIN_LIBRARY_ENV}")
    loaded = []
    for p in paths:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in _LOADED:
            if not p.is_file():
                raise PluginLibraryError(f"plugin library {p} does not exist")
            try:
                _LOADED[key] = ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                raise PluginLibraryError(f"cannot load {p}: {exc}") from exc
        loaded.append(Path(key))
    return loaded


# ------------------------------------------------------------------------------------
# Field lists (pure: no tensorrt needed)
# ------------------------------------------------------------------------------------

def _i32(v: int) -> np.ndarray:
    return np.array([int(v)], dtype=np.int32)


def neg_plugin_fields(*, hidden_size: int, head_hidden_size: int, vocab_size: int, top_k: int = 8,
                      temperature: float = 1.0, seed: int = 0, activation: str = "silu") -> list[Field]:
    """Fields of ``NegGatedSampling`` (``NegPluginConfig::fieldSpecs`` order and types)."""
    if activation not in NEG_ACTIVATION_CODES:
        raise ValueError(f"NEG activation must be one of {sorted(NEG_ACTIVATION_CODES)}, got {activation!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"NEG seed must fit in 64 bits, got {seed}")
    _check_neg_top_k(top_k, vocab_size)
    t32 = to_float32(float(temperature))
    if not (t32 > 0 and math.isfinite(t32)):
        raise ValueError(f"NEG temperature must be finite and > 0 in float32 (the plugin field), got {temperature}")
    # The seed is a 64-bit key; the field is INT64, so seeds >= 2**63 travel as their two's complement.
    seed_i64 = np.array([int(seed)], dtype=np.uint64).view(np.int64)
    return [
        ("hidden_size", _i32(hidden_size), "INT32"),
        ("head_hidden_size", _i32(head_hidden_size), "INT32"),
        ("vocab_size", _i32(vocab_size), "INT32"),
        ("top_k", _i32(top_k), "INT32"),
        ("temperature", np.array([float(temperature)], dtype=np.float32), "FLOAT32"),
        ("seed", seed_i64, "INT64"),
        ("activation", _i32(NEG_ACTIVATION_CODES[activation]), "INT32"),
    ]


def _check_neg_top_k(top_k: int, vocab_size: int) -> None:
    """ValueError unless the NEG kernel takes ``top_k``: what NegPluginConfig::validate accepts."""
    if not 1 <= top_k < 2**31:
        raise ValueError(f"NEG top_k must be in [1, 2^31-1] (an INT32 plugin field), got {top_k}")
    if top_k > NEG_MAX_TOP_K and vocab_size > NEG_MAX_TOP_K:
        raise ValueError(f"NEG top_k {top_k} exceeds {NEG_MAX_TOP_K}, the most candidates the NEG kernel keeps "
                         f"(kNegMaxTopK, plugins/neg/negKernel.h); engines need neg_config.top_k <= "
                         f"{NEG_MAX_TOP_K} (the torch backend takes any top_k)")


def gdn_plugin_fields(*, num_k_heads: int, num_v_heads: int, head_k_dim: int, head_v_dim: int, dtype: str,
                      remove_input_padding: bool = True, gated_norm: bool = True, norm_eps: float = 1e-6,
                      continue_context: bool = False) -> list[Field]:
    """Fields of ``TrtNegGatedDeltaRule`` (``GdnPluginConfig::fields()`` order and types; all length 1)."""
    if dtype not in TRT_DTYPE_CODES:
        raise ValueError(f"Gated DeltaNet activation dtype must be one of {sorted(TRT_DTYPE_CODES)}, got {dtype!r}")
    if num_v_heads % num_k_heads:
        raise ValueError(f"num_v_heads ({num_v_heads}) must be a multiple of num_k_heads ({num_k_heads})")
    return [
        ("num_k_heads", _i32(num_k_heads), "INT32"),
        ("num_v_heads", _i32(num_v_heads), "INT32"),
        ("head_k_dim", _i32(head_k_dim), "INT32"),
        ("head_v_dim", _i32(head_v_dim), "INT32"),
        ("type_id", _i32(TRT_DTYPE_CODES[dtype]), "INT32"),
        ("remove_input_padding", _i32(bool(remove_input_padding)), "INT32"),
        ("gated_norm", _i32(bool(gated_norm)), "INT32"),
        ("norm_eps", np.array([float(norm_eps)], dtype=np.float32), "FLOAT32"),
        ("continue_context", _i32(bool(continue_context)), "INT32"),
    ]


# ------------------------------------------------------------------------------------
# Network wrappers (need tensorrt + tensorrt_llm)
# ------------------------------------------------------------------------------------

def field_collection(trt: Any, fields: Sequence[Field]) -> Any:
    """``trt.PluginFieldCollection`` of ``fields``."""
    return trt.PluginFieldCollection(
        [trt.PluginField(name, data, getattr(trt.PluginFieldType, kind)) for name, data, kind in fields])


def _add_plugin_v3(name: str, version: str, fields: Sequence[Field], inputs: Sequence[Any]) -> Any:
    """Create plugin ``name`` from the registry and add it to the current network; returns the layer."""
    from trt_neg.trtllm import require_tensorrt_llm

    require_tensorrt_llm()
    import tensorrt as trt
    from tensorrt_llm import functional as F
    from tensorrt_llm._common import default_trtnet

    creator = trt.get_plugin_registry().get_creator(name, version, PLUGIN_NAMESPACE)
    if creator is None:
        raise PluginLibraryError(
            f"TensorRT has no plugin creator {PLUGIN_NAMESPACE}::{name} v{version}: load {PLUGIN_LIBRARY} first "
            f"(trt_neg.trtllm.plugins.load_plugin_library) and check that it was built with this plugin")
    pfc = field_collection(trt, fields)
    plugin = creator.create_plugin(name, pfc, trt.TensorRTPhase.BUILD)
    if plugin is None:
        raise PluginLibraryError(f"{name}: create_plugin failed (see the [trt_neg] message on stderr)")
    layer = default_trtnet().add_plugin_v3([t.trt_tensor for t in inputs], [], plugin)
    add_info = getattr(F, "_add_plugin_info", None)  # lets TensorRT-LLM's graph tools see the fields
    if add_info is not None:
        add_info(layer, creator, name, pfc)
    return layer


def neg_sample(hidden: Any, logits: Any, w1: Any, b1: Any, w2: Any, b2: Any, tau: Any, positions: Any, *,
               hidden_size: int, head_hidden_size: int, vocab_size: int, top_k: int = 8,
               temperature: float = 1.0, seed: int = 0, activation: str = "silu") -> tuple[Any, Any, Any, Any]:
    """NEG head + gate + gated top-k sampling (DESIGN.md section 4) as one plugin layer.

    Inputs: hidden [N, H] (its dtype is W1's), logits [N, V] fp32, W1 [d, H], b1 [d] fp32,
    w2 [d] or [1, d] fp32, b2 and tau scalar or [1] fp32, positions [N] int32/int64 (the
    absolute position of the token being generated: the Philox offset).
    Returns (guided logits [N, V] fp32, token [N] int32, entropy [N] fp32, fired [N] int32).
    """
    from tensorrt_llm.functional import _create_tensor

    fields = neg_plugin_fields(hidden_size=hidden_size, head_hidden_size=head_hidden_size, vocab_size=vocab_size,
                               top_k=top_k, temperature=temperature, seed=seed, activation=activation)
    layer = _add_plugin_v3(NEG_PLUGIN_NAME, NEG_PLUGIN_VERSION, fields,
                           [hidden, logits, w1, b1, w2, b2, tau, positions])
    return tuple(_create_tensor(layer.get_output(i), layer) for i in range(4))  # type: ignore[return-value]


def gated_delta_rule(qkv: Any, a: Any, b: Any, a_log: Any, dt_bias: Any, rnn_state_ptr: Any,
                     host_request_types: Any, last_token_ids: Any, slot_mapping: Any, z: Any = None,
                     norm_weight: Any = None, *, num_k_heads: int, num_v_heads: int, head_k_dim: int,
                     head_v_dim: int, dtype: str, remove_input_padding: bool = True, norm_eps: float = 1e-6,
                     continue_context: bool = False) -> Any:
    """The Gated DeltaNet recurrence over TensorRT-LLM's paged RNN state (context and generation).

    Input order of ``plugins/gdn/gdnPluginCore.h``: qkv (post conv1d + SiLU), a, b, A_log
    [Hv] fp32, dt_bias [Hv] fp32, rnn_state_ptr (host int64 [1]), host_request_types,
    last_token_ids, slot_mapping, then z and norm_weight [dv] fp32 when the gated norm is
    fused (``z`` given). Returns y [.., Hv*dv] in ``dtype``.
    """
    from tensorrt_llm.functional import _create_tensor

    gated = z is not None
    if gated and norm_weight is None:
        raise ValueError("gated_delta_rule: z given without norm_weight")
    fields = gdn_plugin_fields(num_k_heads=num_k_heads, num_v_heads=num_v_heads, head_k_dim=head_k_dim,
                               head_v_dim=head_v_dim, dtype=dtype, remove_input_padding=remove_input_padding,
                               gated_norm=gated, norm_eps=norm_eps, continue_context=continue_context)
    inputs = [qkv, a, b, a_log, dt_bias, rnn_state_ptr, host_request_types, last_token_ids, slot_mapping]
    if gated:
        inputs += [z, norm_weight]
    layer = _add_plugin_v3(GDN_PLUGIN_NAME, GDN_PLUGIN_VERSION, fields, inputs)
    return _create_tensor(layer.get_output(0), layer)


__all__ = ["GDN_PLUGIN_NAME", "GDN_PLUGIN_VERSION", "NEG_ACTIVATION_CODES", "NEG_MAX_TOP_K", "NEG_PLUGIN_NAME",
           "NEG_PLUGIN_VERSION", "PLUGIN_LIBRARY", "PLUGIN_LIBRARY_ENV", "PLUGIN_NAMESPACE", "PluginLibraryError",
           "TRT_DTYPE_CODES", "field_collection", "gated_delta_rule", "gdn_plugin_fields", "load_plugin_library",
           "neg_plugin_fields", "neg_sample", "plugin_library_candidates"]
