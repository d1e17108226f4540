"""tensorrt_llm/_utils.py stand-in: the shared helpers (tests/trtllm_stub_shared/_utils.py) plus
``str_dtype_to_torch`` for the torch-backed tensors of this stub, and TensorRT-LLM's own numpy
stand-in for bfloat16.

numpy has no bfloat16: TensorRT-LLM 1.x ``_utils.py`` defines ``np_bfloat16 =
np.dtype('V2', metadata={"dtype": "bfloat16"})`` and ``str_dtype_to_np("bfloat16")`` returns it
(``constant`` turns such an array into a bf16 ITensor). The shared helper maps bfloat16 to
float32 (enough for the recording stub); here, where ``functional.constant`` gives constants
their numpy dtype, a bf16 network must get a bf16 constant, so this stub returns
``np_bfloat16`` and ``to_torch_dtype`` maps it back.
"""

import numpy as np
import torch

from trtllm_stub_shared._utils import pad_vocab_size, str_dtype_to_trt  # noqa: F401
from trtllm_stub_shared import tensorrt_api as _trt

np_bfloat16 = np.dtype("V2", metadata={"dtype": "bfloat16"})

TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int32": torch.int32,
         "int64": torch.int64, "bool": torch.bool}
_NP = {"float32": np.float32, "float16": np.float16, "bfloat16": np_bfloat16, "int32": np.int32, "int64": np.int64}
_TRT_TO_STR = {_trt.float32: "float32", _trt.float16: "float16", _trt.bfloat16: "bfloat16", _trt.int32: "int32",
               _trt.int64: "int64", _trt.bool: "bool"}
TORCH_TO_STR = {v: k for k, v in TORCH.items()}


def str_dtype_to_np(dtype):
    return _NP[dtype]


def str_dtype_to_torch(dtype):
    return TORCH[dtype]


def to_torch_dtype(dtype) -> torch.dtype:
    """A dtype given as a name, a ``tensorrt.DataType``, a numpy dtype (incl. ``np_bfloat16``) or a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str):
        return TORCH[dtype]
    if isinstance(dtype, _trt.DataType):
        return TORCH[_TRT_TO_STR[dtype]]
    npd = np.dtype(dtype)
    if npd == np_bfloat16 and (npd.metadata or {}).get("dtype") == "bfloat16":
        return torch.bfloat16
    return torch.from_numpy(np.zeros((), dtype=npd)).dtype


def dtype_name(dtype) -> str:
    return TORCH_TO_STR.get(to_torch_dtype(dtype), str(dtype))
