"""Recording stub of the few `tensorrt` Python APIs trt_neg.trtllm uses (TensorRT 10 names)."""

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


class TensorLocation(enum.IntEnum):
    DEVICE = 0
    HOST = 1


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


class _Plugin:
    def __init__(self, creator, name, pfc, phase):
        self.creator, self.name, self.pfc, self.phase = creator, name, pfc, phase


class _Creator:
    def __init__(self, name, version, namespace):
        self.name, self.plugin_version, self.plugin_namespace = name, version, namespace
        self.created = []

    def create_plugin(self, name, pfc, phase=None):
        plugin = _Plugin(self, name, pfc, phase)
        self.created.append(plugin)
        return plugin


class _Registry:
    """Creators are 'registered' by tests (what loading libtrt_neg_plugins.so would do)."""

    def __init__(self):
        self.creators = {}

    def register(self, name, version, namespace):
        self.creators[(name, version, namespace)] = _Creator(name, version, namespace)
        return self.creators[(name, version, namespace)]

    def get_creator(self, name, version, namespace=""):
        return self.creators.get((name, version, namespace))


_REGISTRY = _Registry()


def get_plugin_registry():
    return _REGISTRY
