"""default_net() / default_trtnet(): a recording network with a plugin_config.

The network and its slot are shared with the numeric stub (tests/trtllm_stub_shared/_common.py);
the recording plugin layers and this module's network instance (fresh per test: the module is
re-imported after each purge) are this stub's."""

from trtllm_stub_shared._common import DefaultNetwork, Network


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


def _new_network():
    return Network(_TrtNetwork(), gpt_attention_plugin="auto", mamba_conv1d_plugin="auto")


_DEFAULT = DefaultNetwork(_new_network)
default_net, default_trtnet, reset = _DEFAULT.default_net, _DEFAULT.default_trtnet, _DEFAULT.reset
