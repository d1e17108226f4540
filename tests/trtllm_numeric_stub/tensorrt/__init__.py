"""Numeric stand-in of the few `tensorrt` Python APIs trt_neg.trtllm uses (TensorRT 10 names).

Plugin creators are registered by ``trt_neg_numeric_plugins.register()`` (what loading
libtrt_neg_plugins.so does for real); ``create_plugin`` returns an object with
``execute(inputs) -> outputs`` that ``tensorrt_llm._common.default_trtnet().add_plugin_v3`` runs.
"""

from __future__ import annotations

import enum


class DataType(enum.IntEnum):  # nvinfer1::DataType codes
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    BF16 = 7
    INT64 = 8


float32, float16, int32, int64, bfloat16, bool = (DataType.FLOAT, DataType.HALF, DataType.INT32, DataType.INT64,
                                                  DataType.BF16, DataType.BOOL)


class PluginFieldType(enum.IntEnum):  # nvinfer1::PluginFieldType codes
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    CHAR = 6
    DIMS = 7
    UNKNOWN = 8
    BF16 = 9
    INT64 = 10


class TensorRTPhase(enum.IntEnum):
    BUILD = 0
    RUNTIME = 1


class PluginField:
    def __init__(self, name, data, type):
        self.name, self.data, self.type = name, data, type


class PluginFieldCollection(list):
    pass


class _Registry:
    def __init__(self):
        self.creators = {}

    def register(self, creator, namespace):
        self.creators[(creator.name, creator.plugin_version, namespace)] = creator
        return creator

    def get_creator(self, name, version, namespace=""):
        return self.creators.get((name, version, namespace))


_REGISTRY = _Registry()


def get_plugin_registry():
    return _REGISTRY
