"""Recording stub of the few `tensorrt` Python APIs trt_neg.trtllm uses (TensorRT 10 names).

The enums and plugin-field containers are shared with the numeric stub
(``tests/trtllm_stub_shared/tensorrt_api.py``); the registry of recording creators is this stub's.
"""

from __future__ import annotations

from trtllm_stub_shared.tensorrt_api import (DataType, PluginField, PluginFieldCollection,  # noqa: F401
                                            PluginFieldType, TensorLocation, TensorRTPhase, bfloat16, bool,
                                            float16, float32, int32, int64)


class _Plugin:
    def __init__(self, creator, name, pfc, phase):
        self.creator, self.name, self.pfc, self.phase = creator, name, pfc, phase


class _Creator:
    def __init__(self, name, version, namespace):
        self.name, self.plugin_version, self.plugin_namespace = name, version, namespace
        self.created = []

    def create_plugin(self, name, field_collection, phase):
        # IPluginCreatorV3One.create_plugin(name, field_collection, phase): phase has no default
        # (TensorRT 10.13 python/src/infer/pyPlugin.cpp, "name"_a, "field_collection"_a, "phase"_a).
        plugin = _Plugin(self, name, field_collection, phase)
        self.created.append(plugin)
        return plugin


class _Registry:
    """Creators are 'registered' by tests (what loading libtrt_neg_plugins.so would do)."""

    def __init__(self):
        self.creators = {}

    def register(self, name, version, namespace):
        self.creators[(name, version, namespace)] = _Creator(name, version, namespace)
        return self.creators[(name, version, namespace)]

    # IPluginRegistry.get_creator("type"_a, "version"_a, "plugin_namespace"_a = ""): TensorRT 10.13 pyPlugin.cpp
    def get_creator(self, type, version, plugin_namespace=""):
        return self.creators.get((type, version, plugin_namespace))


_REGISTRY = _Registry()


def get_plugin_registry():
    return _REGISTRY
