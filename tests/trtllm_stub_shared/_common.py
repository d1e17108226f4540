"""The parts of ``tensorrt_llm._common`` both stubs share: the default network's shape and the
``default_net()`` / ``default_trtnet()`` / ``reset()`` trio.

The network *instance* is per-test state, so it is not kept here: each stub's ``_common.py``
creates its own :class:`DefaultNetwork` at import (the purge between tests re-imports it, so a
test starts from a fresh network) and re-exports the slot's bound methods.
"""

from __future__ import annotations

from types import MappingProxyType, SimpleNamespace

# The plugin_config flags both stubs set alike (those build.make_build_config sets for Darwin-NEG);
# each stub adds the ones where they differ (e.g. gpt_attention_plugin "auto" vs "float32").
PLUGIN_CONFIG = MappingProxyType(dict(remove_input_padding=True, paged_kv_cache=True, paged_state=True,
                                     gemm_plugin=None, tokens_per_block=32, reduce_fusion=False))


class Network:
    """What ``default_net()`` returns: ``trt_network`` (a stub's own), ``plugin_config``, ``outputs``."""

    def __init__(self, trt_network, **plugin_config):
        self.trt_network = trt_network
        self.plugin_config = SimpleNamespace(**{**PLUGIN_CONFIG, **plugin_config})
        self.outputs = {}


class DefaultNetwork:
    """One stub's default-network slot; ``make()`` builds a fresh :class:`Network`."""

    def __init__(self, make):
        self._make = make
        self._net = make()

    def default_net(self):
        return self._net

    def default_trtnet(self):
        return self._net.trt_network

    def reset(self):
        self._net = self._make()
        return self._net
