"""tensorrt_llm/parameter.py stand-in: Parameter(value=None, shape=None, dtype=None, is_buffer=False, ...)
(constructor shared: tests/trtllm_stub_shared/parameter.py) holding a torch tensor; ``.value`` is a
functional.Tensor over it."""

from __future__ import annotations

import numpy as np
import torch

from trtllm_stub_shared import parameter as _shared


class Parameter(_shared.Parameter):
    def __init__(self, value=None, shape=None, dtype=None, is_buffer=False, prefer_managed=False):
        super().__init__(value, shape, dtype, is_buffer, prefer_managed)
        self._data = None if value is None else self._as_torch(value)

    def _as_torch(self, value):
        t = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
        if self.dtype is not None:
            from ._utils import str_dtype_to_torch

            t = t.to(str_dtype_to_torch(self.dtype))
        return t

    def is_inited(self):  # PretrainedModel.load skips inited parameters (RoPE buffers)
        return self._data is not None

    def set_value(self, value: torch.Tensor) -> None:
        if tuple(value.shape) != self.shape:
            raise ValueError(f"parameter shape {self.shape}, got {tuple(value.shape)}")
        self._data = self._as_torch(value)

    @property
    def value(self):
        from .functional import Tensor

        if self._data is None:
            raise RuntimeError("parameter used before it was loaded")
        return Tensor(self._data)
