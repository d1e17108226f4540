import numpy as np
import torch

import tensorrt as trt

_NP = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64}
_TRT = {"float32": trt.float32, "float16": trt.float16, "bfloat16": trt.bfloat16, "int32": trt.int32,
        "int64": trt.int64}
TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int32": torch.int32,
         "int64": torch.int64}


def pad_vocab_size(vocab_size, tp_size):  # tensorrt_llm/_utils.py: ceil(vocab / tp) * tp
    return int(-(-vocab_size // tp_size) * tp_size)


def str_dtype_to_np(dtype):
    return _NP[dtype]


def str_dtype_to_trt(dtype):
    return _TRT[dtype]


def str_dtype_to_torch(dtype):
    return TORCH[dtype]
