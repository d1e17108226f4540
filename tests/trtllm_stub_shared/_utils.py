"""``tensorrt_llm/_utils.py`` stand-ins both stubs re-export (the numeric stub adds ``str_dtype_to_torch``)."""

from __future__ import annotations

import numpy as np

from . import tensorrt_api as trt

_NP = {"float32": np.float32, "float16": np.float16, "bfloat16": np.float32, "int32": np.int32, "int64": np.int64}
_TRT = {"float32": trt.float32, "float16": trt.float16, "bfloat16": trt.bfloat16, "int32": trt.int32,
        "int64": trt.int64}


def pad_vocab_size(vocab_size, tp_size):  # tensorrt_llm/_utils.py: ceil(vocab / tp) * tp
    return int(-(-vocab_size // tp_size) * tp_size)


def str_dtype_to_np(dtype):
    return _NP[dtype]


def str_dtype_to_trt(dtype):
    return _TRT[dtype]
