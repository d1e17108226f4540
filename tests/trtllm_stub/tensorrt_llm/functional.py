"""Recording stand-ins for the functional API (no graph is built). The enums are shared with the
numeric stub (tests/trtllm_stub_shared/functional_enums.py)."""

from trtllm_stub_shared.functional_enums import AttentionMaskType, LayerNormType, PositionEmbeddingType  # noqa: F401


class Tensor:
    """A symbolic tensor: records the op that made it."""

    def __init__(self, name=None, dtype=None, shape=None, dim_range=None, op="input", args=(), **kwargs):
        self.name, self.dtype, self.shape, self.dim_range, self.op, self.args = name, dtype, shape, dim_range, op, args
        self.profiles = []

    def _bin(self, op, other):
        return Tensor(op=op, args=(self, other))

    def __add__(self, o):
        return self._bin("add", o)

    __radd__ = __add__

    def __sub__(self, o):
        return self._bin("sub", o)

    def __rsub__(self, o):
        return Tensor(op="sub", args=(o, self))

    def __mul__(self, o):
        return self._bin("mul", o)

    __rmul__ = __mul__

    def mark_output(self, name=None, dtype=None):
        from ._common import default_net

        default_net().outputs[name] = (self, dtype)


def _op(name):
    def f(*args, **kwargs):
        return Tensor(op=name, args=args)
    f.__name__ = name
    return f


for _name in ("cast", "concat", "constant", "expand", "gather_last_token_logits", "index_select", "log", "permute",
              "recv", "send", "shape", "sigmoid", "slice", "view"):
    globals()[_name] = _op(_name)


def split(tensor, split_size_or_sections, dim=0):
    # functional.split(tensor, split_size_or_sections: int | Sequence[int], dim=0) -> list of Tensors.
    n = len(split_size_or_sections) if isinstance(split_size_or_sections, (list, tuple)) else None
    return [Tensor(op="split", args=(tensor, i, dim)) for i in range(n if n is not None else 1)]


def rms_norm(input, normalized_shape, num_groups=1, weight=None, eps=1e-06):
    # Signature of tensorrt_llm/functional.py::rms_norm (NVIDIA/TensorRT-LLM@0071496d): num_groups is the
    # third positional parameter, so a weight passed positionally would land there.
    assert isinstance(num_groups, int) and num_groups >= 1, f"rms_norm num_groups={num_groups!r}"
    return Tensor(op="rms_norm", args=(input, normalized_shape, num_groups, weight, eps))


def mamba_conv1d(input, conv_state_or_ptr, conv_weight, conv_bias, host_request_types, last_token_ids, dim, dconv,
                 dtype, pre_stride=0, post_stride=0, host_context_lengths=None, slot_mapping=None, apply_silu=True):
    # Signature of tensorrt_llm/functional.py::mamba_conv1d (NVIDIA/TensorRT-LLM@0071496d, also radna0/TensorRT-LLM@3b9703d8).
    return Tensor(op="mamba_conv1d", args=(input, dim, dconv, dtype)), None


def _create_tensor(trt_tensor, producer):
    return Tensor(op="plugin_output", args=(trt_tensor, producer))


def _add_plugin_info(layer, creator, name, pfc):
    # functional.py@0071496d: dora_plugin (IPluginV3) and mamba_conv1d (V2) both call
    # _add_plugin_info(layer, plugin_creator, plugin_name, pfc) after adding the layer.
    layer.plugin_info = (creator, name, pfc)
