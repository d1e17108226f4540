"""Numeric stand-in of the few `tensorrt` Python APIs trt_neg.trtllm uses (TensorRT 10 names).

Plugin creators are registered by ``trt_neg_numeric_plugins.register()`` (what loading
libtrt_neg_plugins.so does for real); ``create_plugin`` returns an object with
``execute(inputs) -> outputs`` that ``tensorrt_llm._common.default_trtnet().add_plugin_v3`` runs.
The enums and plugin-field containers are shared with the recording stub
(``tests/trtllm_stub_shared/tensorrt_api.py``); the registry of executing creators is this stub's.
"""

from __future__ import annotations

from trtllm_stub_shared.tensorrt_api import (DataType, PluginField, PluginFieldCollection,  # noqa: F401
                                            PluginFieldType, TensorRTPhase, bfloat16, bool, float16,
                                            float32, int32, int64)


class _Registry:
    def __init__(self):
        self.creators = {}

    def register(self, creator, namespace):
        self.creators[(creator.name, creator.plugin_version, namespace)] = creator
        return creator

    # IPluginRegistry.get_creator("type"_a, "version"_a, "plugin_namespace"_a = ""): TensorRT 10.13 pyPlugin.cpp
    def get_creator(self, type, version, plugin_namespace=""):
        return self.creators.get((type, version, plugin_namespace))


_REGISTRY = _Registry()


def get_plugin_registry():
    return _REGISTRY
