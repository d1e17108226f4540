"""default_net() / default_trtnet(): a recording network with a plugin_config."""

from types import SimpleNamespace


class _Layer:
    def __init__(self, inputs, shape_inputs, plugin):
        self.inputs, self.shape_inputs, self.plugin = inputs, shape_inputs, plugin

    def get_output(self, i):
        return ("output", self, i)


class _TrtNetwork:
    def __init__(self):
        self.plugin_layers = []

    def add_plugin_v3(self, inputs, shape_inputs, plugin):
        layer = _Layer(list(inputs), list(shape_inputs), plugin)
        self.plugin_layers.append(layer)
        return layer


class _Network:
    def __init__(self):
        self.trt_network = _TrtNetwork()
        self.plugin_config = SimpleNamespace(
            remove_input_padding=True, paged_kv_cache=True, paged_state=True, gpt_attention_plugin="auto",
            mamba_conv1d_plugin="auto", gemm_plugin=None, tokens_per_block=32, reduce_fusion=False)
        self.outputs = {}


_NET = _Network()


def default_net():
    return _NET


def default_trtnet():
    return _NET.trt_network


def reset():
    global _NET
    _NET = _Network()
