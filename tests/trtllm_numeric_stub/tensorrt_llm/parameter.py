"""tensorrt_llm/parameter.py stand-in: Parameter(value=None, shape=None, dtype=None, is_buffer=False, ...)
(constructor shared: tests/trtllm_stub_shared/parameter.py) holding a torch tensor; ``.value`` is a
functional.Tensor over it.

Dtype, as 1.x parameter.py (index id 728909344): the constructor's ``dtype`` (default float32) is
the declared one; the ``value`` setter (what ``PretrainedModel.load`` calls with the checkpoint
tensor) keeps the *value's* dtype -- on a mismatch it logs "Parameter was initialized as X but
set to Y" and adopts Y, so the graph constant has the stored dtype, not the declared one. Each
such mismatch is appended to :data:`DTYPE_WARNINGS` ((name, declared, stored)) so tests
can require none. A constructor value (the RoPE buffers) is converted to the declared dtype.
"""

from __future__ import annotations

import numpy as np
import torch

from trtllm_stub_shared import parameter as _shared

DTYPE_WARNINGS: list[tuple[str, str, str]] = []  # (parameter name, declared, stored)


class Parameter(_shared.Parameter):
    def __init__(self, value=None, shape=None, dtype=None, is_buffer=False, prefer_managed=False):
        super().__init__(value, shape, dtype, is_buffer, prefer_managed)
        if self.dtype is None:
            self.dtype = "float32"  # Parameter._DEFAULT_DTYPE (with a warning in TensorRT-LLM)
        self._data = None if value is None else self._as_torch(value)

    def _as_torch(self, value):
        from ._utils import to_torch_dtype

        t = torch.as_tensor(np.asarray(value)) if not isinstance(value, torch.Tensor) else value
        return t.to(to_torch_dtype(self.dtype))

    def is_inited(self):  # PretrainedModel.load skips inited parameters (RoPE buffers)
        return self._data is not None

    def set_value(self, value: torch.Tensor, name: str = "?") -> None:
        """The ``value`` setter: shape checked, the stored dtype kept (see the module docstring)."""
        from ._utils import dtype_name, to_torch_dtype

        if tuple(value.shape) != self.shape:
            raise ValueError(f"parameter shape {self.shape}, got {tuple(value.shape)}")
        declared = to_torch_dtype(self.dtype)
        if value.dtype != declared:
            DTYPE_WARNINGS.append((name, dtype_name(declared), dtype_name(value.dtype)))
        self._data = value

    @property
    def value(self):
        from .functional import Tensor

        if self._data is None:
            raise RuntimeError("parameter used before it was loaded")
        return Tensor(self._data)
