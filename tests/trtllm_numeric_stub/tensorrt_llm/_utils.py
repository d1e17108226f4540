"""tensorrt_llm/_utils.py stand-in: the shared helpers (tests/trtllm_stub_shared/_utils.py) plus
``str_dtype_to_torch`` for the torch-backed tensors of this stub."""

import torch

from trtllm_stub_shared._utils import pad_vocab_size, str_dtype_to_np, str_dtype_to_trt  # noqa: F401

TORCH = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int32": torch.int32,
         "int64": torch.int64}


def str_dtype_to_torch(dtype):
    return TORCH[dtype]
