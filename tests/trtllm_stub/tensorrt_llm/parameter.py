"""tensorrt_llm/parameter.py stand-in: Parameter(value=None, shape=None, dtype=None, is_buffer=False, ...)."""

import numpy as np


class Parameter:
    def __init__(self, value=None, shape=None, dtype=None, is_buffer=False, prefer_managed=False):
        if value is not None:
            shape = tuple(np.shape(value)) if shape is None else tuple(shape)
        self.shape = tuple(shape) if shape is not None else ()
        self.dtype = dtype
        self.is_buffer = is_buffer
        self._inited = value is not None

    def is_inited(self):  # PretrainedModel.load skips inited parameters (RoPE buffers)
        return self._inited

    @property
    def value(self):
        from .functional import Tensor

        return Tensor(op="parameter", args=(self,), dtype=self.dtype, shape=self.shape)
