"""tensorrt_llm/parameter.py stand-in base: Parameter(value=None, shape=None, dtype=None, is_buffer=False, ...).

Each stub subclasses it with how it holds the value (recording: only whether it is inited;
numeric: a torch tensor) and what ``.value`` returns (its own ``functional.Tensor``).
"""

import numpy as np


class Parameter:
    def __init__(self, value=None, shape=None, dtype=None, is_buffer=False, prefer_managed=False):
        if value is not None:
            shape = tuple(np.shape(value)) if shape is None else tuple(shape)
        else:  # tensorrt_llm/parameter.py (1.x, with is_buffer/prefer_managed): no shape, no parameter
            assert isinstance(shape, (list, tuple)), f"shape must be list or tuple, receive {(type(shape))}"
        self.shape = tuple(shape) if shape is not None else ()
        self.dtype = dtype
        self.is_buffer = is_buffer

    def is_inited(self):  # PretrainedModel.load skips inited parameters (RoPE buffers)
        raise NotImplementedError
