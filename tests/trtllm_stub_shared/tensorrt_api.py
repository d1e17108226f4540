"""The ``tensorrt`` (TensorRT 10) enums and plugin-field containers both stubs re-export.

The plugin registry is not here: each stub keeps its own (recording vs executing creators),
as per-test state in its ``tensorrt/__init__.py``.
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
    """``trt.PluginField(name="", data=<buffer>, type=PluginFieldType.UNKNOWN)``.

    TensorRT 10.13 ``python/src/infer/pyPlugin.cpp`` (``plugin_field_constructor``) takes ``data`` as a
    ``py::buffer`` and sets ``length = info.size`` (the element count): a list or a Python scalar is
    rejected with a TypeError, so the stand-in rejects what has no buffer protocol too.
    """

    def __init__(self, name="", data=None, type=PluginFieldType.UNKNOWN):
        if data is not None:
            try:
                memoryview(data)
            except TypeError:
                raise TypeError(f"PluginField {name!r}: data must support the buffer protocol (a numpy array), "
                                f"got {data.__class__.__name__}") from None
        self.name, self.data, self.type = name, data, type


class PluginFieldCollection(list):
    pass
