"""Numeric creators for the project's two TensorRT plugins (what loading libtrt_neg_plugins.so
registers), running the CPU host builds of the same kernel maths.

* ``TrtNegGatedDeltaRule`` v1 (plugins/gdn/gdnPluginCore.h): inputs 0 qkv, 1 a, 2 b, 3 A_log,
  4 dt_bias, 5 rnn_state_ptr (int64 [1] address of the fp32 pool [slots, Hv, dk, dv]),
  6 host_request_types, 7 last_token_ids, 8 slot_mapping, 9 z, 10 norm_weight (gated_norm);
  fields num_k_heads, num_v_heads, head_k_dim, head_v_dim, type_id, remove_input_padding,
  gated_norm, norm_eps, continue_context -> ``trt_neg.kernels.gdn_host.gated_delta_rule``.
* ``NegGatedSampling`` v1 (plugins/neg/negPluginCore.h): inputs hidden, logits, W1, b1, w2,
  b2, tau, positions (the Philox offsets); fields hidden_size, head_hidden_size, vocab_size,
  top_k, temperature, seed, activation; outputs guided logits [N,V] fp32, token [N] int32,
  entropy [N] fp32, fired [N] int32 -> ``trt_neg.kernels.host.neg_step``.

Input / output dtypes are checked as TensorRT checks them at build time through each plugin's
``supportsFormatCombination`` (strongly typed network: no reformat/cast is inserted, a type the
plugin refuses fails the build), raising ``functional.DTypeError``:
* GDN (gdnPluginCore.cpp ``GdnPluginConfig::expectedType``, used by gdnPlugin.cpp
  ``supportsFormatCombination``): qkv, a, b, z and the output in ``type_id``; A_log, dt_bias,
  norm_weight fp32; rnn_state_ptr int64; host_request_types, last_token_ids, slot_mapping int32.
  Output dtype = qkv's (``getOutputDataTypes``).
* NEG (negPluginCore.cpp ``negSupportsType`` / ``negOutputTypes``): hidden fp32/fp16/bf16, W1 the
  same dtype as hidden, logits / b1 / w2 / b2 / tau fp32, positions int32 or int64; outputs
  guided fp32, token int32, entropy fp32, fired int32.

Each plugin object keeps its last inputs (``last_inputs``) so tests can look at what the
network fed it (e.g. the NEG plugin's logits = the LM head output).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

import tensorrt as trt
from tensorrt_llm._common import resolve_pointer
from tensorrt_llm.functional import DTypeError

F32, I32, I64 = torch.float32, torch.int32, torch.int64
_ACT = (torch.float32, torch.float16, torch.bfloat16)
_GDN_INPUTS = ("qkv", "a", "b", "A_log", "dt_bias", "rnn_state_ptr", "host_request_types", "last_token_ids",
               "slot_mapping", "z", "norm_weight")
_NEG_INPUTS = ("hidden", "logits", "W1", "b1", "w2", "b2", "tau", "positions")


def _check_types(plugin: str, names, inputs, wanted) -> None:
    """``wanted[i]``: the dtype (or tuple of dtypes) input i must have."""
    for i, (name, t, want) in enumerate(zip(names, inputs, wanted)):
        wants = want if isinstance(want, tuple) else (want,)
        if t.dtype not in wants:
            raise DTypeError(f"{plugin} input {i} ({name}): got {t.dtype}, supportsFormatCombination accepts "
                             f"{' or '.join(str(w) for w in wants)}")

NAMESPACE = "trt_neg"
_GDN_DTYPES = {0: torch.float32, 1: torch.float16, 7: torch.bfloat16}
_NEG_ACTIVATIONS = {0: "silu", 1: "gelu", 2: "relu", 3: "gelu_tanh"}


def _fields(pfc, spec):
    got = {}
    for f in pfc:
        if f.name not in spec:
            raise ValueError(f"unknown plugin field {f.name!r}")
        kind = spec[f.name]
        if f.type != getattr(trt.PluginFieldType, kind) or len(f.data) != 1:
            raise ValueError(f"field {f.name}: expected one {kind}, got {f.type!r} x{len(f.data)}")
        got[f.name] = f.data[0].item()
    return got


class _Creator:
    def __init__(self, name, plugin_cls):
        self.name, self.plugin_version, self.plugin_namespace = name, "1", NAMESPACE
        self.plugin_cls, self.created = plugin_cls, []

    def create_plugin(self, name, field_collection, phase):  # IPluginCreatorV3One: phase has no default
        plugin = self.plugin_cls(field_collection)
        self.created.append(plugin)
        return plugin


class GdnPlugin:
    SPEC = {"num_k_heads": "INT32", "num_v_heads": "INT32", "head_k_dim": "INT32", "head_v_dim": "INT32",
            "type_id": "INT32", "remove_input_padding": "INT32", "gated_norm": "INT32", "norm_eps": "FLOAT32",
            "continue_context": "INT32"}

    def __init__(self, pfc):
        self.f = _fields(pfc, self.SPEC)
        self.last_inputs = None

    def execute(self, inputs):
        from trt_neg.kernels import gdn_host

        f = self.f
        gated = bool(f["gated_norm"])
        if len(inputs) != (11 if gated else 9):
            raise ValueError(f"TrtNegGatedDeltaRule: {len(inputs)} inputs with gated_norm={gated}")
        self.last_inputs = inputs
        qkv, a, b, a_log, dt_bias, state_ptr, req, last, slots = inputs[:9]
        act = _GDN_DTYPES[f["type_id"]]  # GdnPluginConfig::expectedType
        _check_types("TrtNegGatedDeltaRule", _GDN_INPUTS, inputs,
                     (act, act, act, F32, F32, I64, I32, I32, I32) + ((act, F32) if gated else ()))
        y = gdn_host.gated_delta_rule(
            qkv, a, b, a_log, dt_bias, resolve_pointer(state_ptr), num_k_heads=f["num_k_heads"],
            num_v_heads=f["num_v_heads"], head_k_dim=f["head_k_dim"], head_v_dim=f["head_v_dim"],
            last_token_ids=last.tolist(), request_types=req.tolist(), slot_mapping=slots.tolist(),
            z=inputs[9] if gated else None, norm_weight=inputs[10] if gated else None, norm_eps=f["norm_eps"],
            remove_padding=bool(f["remove_input_padding"]), continue_context=bool(f["continue_context"]))
        assert y.dtype == qkv.dtype  # getOutputDataTypes: output 0 has qkv's type
        return [y]


class NegPlugin:
    SPEC = {"hidden_size": "INT32", "head_hidden_size": "INT32", "vocab_size": "INT32", "top_k": "INT32",
            "temperature": "FLOAT32", "seed": "INT64", "activation": "INT32"}

    def __init__(self, pfc):
        self.f = _fields(pfc, self.SPEC)
        self.last_inputs = None

    def execute(self, inputs):
        from trt_neg.kernels import host

        f = self.f
        if len(inputs) != 8:
            raise ValueError(f"NegGatedSampling: {len(inputs)} inputs, expected 8")
        self.last_inputs = inputs
        hidden, logits, w1, b1, w2, b2, tau, positions = inputs
        n = logits.shape[0]
        if tuple(hidden.shape) != (n, f["hidden_size"]) or tuple(logits.shape) != (n, f["vocab_size"]):
            raise ValueError(f"NEG shapes: hidden {tuple(hidden.shape)}, logits {tuple(logits.shape)}, fields {f}")
        # negSupportsType: hidden fp32/fp16/bf16, W1 = hidden's type, positions int32/int64, the rest fp32.
        _check_types("NegGatedSampling", _NEG_INPUTS, inputs,
                     (_ACT, F32, hidden.dtype, F32, F32, F32, F32, (I32, I64)))
        if tuple(w1.shape) != (f["head_hidden_size"], f["hidden_size"]):
            raise ValueError(f"NEG: W1 {tuple(w1.shape)}")
        if tuple(positions.shape) != (n,):
            raise ValueError(f"NEG positions: {tuple(positions.shape)}")
        weights = SimpleNamespace(fc1_weight=w1, fc1_bias=b1, fc2_weight=w2, fc2_bias=b2, threshold=tau)
        out = host.neg_step(hidden, logits, weights, activation=_NEG_ACTIVATIONS[f["activation"]], top_k=f["top_k"],
                            temperature=f["temperature"], seeds=int(f["seed"]),
                            offsets=positions.to(torch.int64), with_guided=True)
        outs = [out.guided_logits, out.token.to(I32), out.entropy, out.fired.to(I32)]
        assert [o.dtype for o in outs] == [F32, I32, F32, I32]  # negOutputTypes
        return outs


def register():
    """What ``load_plugin_library`` does for real: put the creators in TensorRT's registry."""
    registry = trt.get_plugin_registry()
    return {name: registry.register(_Creator(name, cls), NAMESPACE)
            for name, cls in (("TrtNegGatedDeltaRule", GdnPlugin), ("NegGatedSampling", NegPlugin))}
