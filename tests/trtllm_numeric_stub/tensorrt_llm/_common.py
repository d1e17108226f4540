"""default_net() / default_trtnet(): an eager "network" (plugin layers run when added) and the
pointer registry standing in for device/host addresses of state pools.

The network and its slot are shared with the recording stub (tests/trtllm_stub_shared/_common.py);
the executing plugin layers, this module's network instance and the pointer registry (fresh per
test module: the module is re-imported after each purge) are this stub's."""

from __future__ import annotations

import torch

from trtllm_stub_shared._common import DefaultNetwork, Network


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


def _new_network():
    # The flags build.make_build_config sets for Darwin-NEG (in-flight batching), fp32 plugins.
    return Network(_TrtNetwork(), gpt_attention_plugin="float32", mamba_conv1d_plugin="float32",
                   multiple_profiles=False, lora_plugin=None)


_DEFAULT = DefaultNetwork(_new_network)
default_net, default_trtnet, reset = _DEFAULT.default_net, _DEFAULT.default_trtnet, _DEFAULT.reset


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
