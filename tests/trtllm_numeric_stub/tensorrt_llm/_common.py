"""default_net() / default_trtnet(): an eager "network" (plugin layers run when added) and the
pointer registry standing in for device/host addresses of state pools."""

from __future__ import annotations

from types import SimpleNamespace

import torch


class _Layer:
    def __init__(self, plugin, outputs):
        self.plugin, self.outputs = plugin, list(outputs)

    def get_output(self, i):
        return self.outputs[i]


class _TrtNetwork:
    def __init__(self):
        self.plugin_layers = []

    def add_plugin_v3(self, inputs, shape_inputs, plugin):
        assert list(shape_inputs) == []
        layer = _Layer(plugin, plugin.execute(list(inputs)))
        self.plugin_layers.append(layer)
        return layer


class _Network:
    def __init__(self):
        self.trt_network = _TrtNetwork()
        # The flags build.make_build_config sets for Darwin-NEG (in-flight batching).
        self.plugin_config = SimpleNamespace(
            remove_input_padding=True, paged_kv_cache=True, paged_state=True, gpt_attention_plugin="float32",
            mamba_conv1d_plugin="float32", gemm_plugin=None, tokens_per_block=32, reduce_fusion=False,
            multiple_profiles=False, lora_plugin=None)
        self.outputs = {}


_NET = _Network()


def default_net():
    return _NET


def default_trtnet():
    return _NET.trt_network


def reset():
    global _NET
    _NET = _Network()
    return _NET


# --- "pointers" -------------------------------------------------------------------------
_POINTERS: dict[int, torch.Tensor] = {}


def register_pointer(tensor: torch.Tensor) -> int:
    """The address TensorRT-LLM's runtime would pass for ``tensor`` (a state pool)."""
    ptr = int(tensor.data_ptr())
    _POINTERS[ptr] = tensor
    return ptr


def resolve_pointer(ptr) -> torch.Tensor:
    value = int(torch.as_tensor(ptr).reshape(-1)[0])
    if value not in _POINTERS:
        raise KeyError(f"no buffer registered at address {value:#x}")
    return _POINTERS[value]


def register_object(obj) -> int:
    """A fake address for a Python object (the KV-cache pool)."""
    ptr = id(obj)
    _POINTERS[ptr] = obj
    return ptr
