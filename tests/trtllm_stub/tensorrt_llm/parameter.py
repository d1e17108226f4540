"""tensorrt_llm/parameter.py stand-in: Parameter(value=None, shape=None, dtype=None, is_buffer=False, ...)
(constructor shared: tests/trtllm_stub_shared/parameter.py); ``.value`` is a symbolic Tensor."""

from trtllm_stub_shared import parameter as _shared


class Parameter(_shared.Parameter):
    def __init__(self, value=None, shape=None, dtype=None, is_buffer=False, prefer_managed=False):
        super().__init__(value, shape, dtype, is_buffer, prefer_managed)
        self._inited = value is not None

    def is_inited(self):  # PretrainedModel.load skips inited parameters (RoPE buffers)
        return self._inited

    @property
    def value(self):
        from .functional import Tensor

        return Tensor(op="parameter", args=(self,), dtype=self.dtype, shape=self.shape)
