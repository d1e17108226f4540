"""Numeric stand-ins of the ``tensorrt_llm.functional`` names trt_neg/trtllm uses.

``Tensor`` wraps a torch tensor (``.t``); each op computes its torch equivalent eagerly.
Semantics followed (TensorRT-LLM 1.x functional.py):
* ``cast(x, dtype)``: element type conversion; ``view(x, shape)``: reshape (no -1 inference
  needed here); ``permute``; ``sigmoid``; ``index_select(x, dim, idx)``; ``expand(x, shape)``;
  ``slice(x, starts, sizes)`` (per-dim start / size); ``concat(list, dim)`` where ints in
  the list are 1-element shape tensors (TensorRT-LLM builds shape vectors that way).
* ``shape(x, dim)``: the size as a 0-d int tensor.
* ``gather_last_token_logits(h, last_token_ids, remove_input_padding=True)``:
  ``index_select(h, 0, last_token_ids - 1)`` (last_token_ids are 1-based cumulative
  token counts in the packed layout).
* ``rms_norm(input, normalized_shape, num_groups=1, weight=None, eps=1e-06)`` (functional.py
  @0071496d): under ``precision("float32")`` ``x32 = cast(input, float32)``,
  ``y = x32 / sqrt(mean(x32^2, last len(normalized_shape) dims) + eps)``, ``cast(y, input.dtype)``;
  then ``y * weight`` when a weight is given -- an elementwise product in the input dtype.
* ``mamba_conv1d``: see its docstring.
* ``allreduce(tensor, group, ...)``: the sum over the ranks of ``group`` (NCCL sum); ``allgather(tensor,
  group, gather_dim=0)``: the ranks' tensors concatenated along ``gather_dim`` in ``group`` order (what
  ``Linear.collect_and_bias`` relies on: "[dim0, local_dim] -> ... -> [dim0, local_dim * tp_size]",
  tensorrt_llm/layers/linear.py @03961722). Both run as rendezvous of the lockstep rank threads
  (``_common.TensorParallelWorld``); summed in rank order, so every rank gets the same bits.
* ``send(tensor, tgt)`` / ``recv(tensor, src)`` (pipeline parallelism): point-to-point hand-offs
  between the lockstep rank threads (``_common.TensorParallelWorld.send`` / ``recv``); see their
  docstrings.
* ``_create_tensor(trt_tensor, layer)`` wraps a plugin output.

The enums are shared with the recording stub (tests/trtllm_stub_shared/functional_enums.py).

Data types (what a TensorRT build of the network would reject, raised here as :class:`DTypeError`):
TensorRT-LLM builds *strongly typed* networks (builder.py ``BuildConfig.strongly_typed = True``,
index id 205252225; the project's build.py does not change it), where TensorRT inserts no implicit
casts, so every dtype in the graph is the one the network code produced. Rules enforced, with sources:
* elementwise binary ops (``Tensor`` ``+ - * /`` and ``add``/``sub``/``mul``/``div``): both inputs of
  one dtype (IElementWiseLayer, no promotion). Python scalars become constants as
  ``functional.broadcast_helper`` / ``constant_to_tensor_`` make them in a strongly typed network
  (functional.py, index id 720191209): a float takes the other operand's dtype (asserted to be a
  float type), an int is always an ``int32`` constant.
* ``matmul`` / the Gemm plugin behind ``Linear`` (layers/linear.py @03961722 ``multiply_and_lora``):
  input and weight of one dtype; the bias is ``cast(self.bias.value, x.dtype)`` there, so it may differ.
* ``concat``: all inputs of one dtype (IConcatenationLayer); Python ints in a shape vector are
  ``dims_array`` constants (int64, as ``shape()``).
* ``constant(ndarray)``: the array's numpy dtype (``np_bfloat16`` -> bf16, see ``_utils``); ``cast``
  converts; shape-only ops (view, permute, slice, expand, split, index_select) keep the dtype.
* ``rms_norm``: input a float type; ``y * weight`` is an elementwise op, so the weight must have the
  input's dtype (an fp32 weight needs an fp32 input: model.py's ``ZeroCentredRmsNorm`` casts x first).
* ``mamba_conv1d``: the plugin's ``type_id`` is ``dtype``; input, weight, bias (and the paged conv
  state pool) in it, ``host_request_types`` / ``last_token_ids`` / ``host_context_lengths`` /
  ``slot_mapping`` int32, the state pointer int64 (TensorRT-LLM's mambaConv1dPlugin
  ``supportsFormatCombination``: every non-index input/output is ``mType``).
* ``Tensor.mark_output(name, dtype)``: TensorRT-LLM casts to ``dtype`` when given; the outputs in
  :data:`REQUIRED_OUTPUT_DTYPES` (the executor reads fp32 ``logits``) must be marked in that dtype.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from trtllm_stub_shared.functional_enums import AttentionMaskType, LayerNormType, PositionEmbeddingType  # noqa: F401

from ._utils import dtype_name, str_dtype_to_torch, to_torch_dtype

FLOATS = (torch.float32, torch.float16, torch.bfloat16)
# Outputs the runtime reads in a fixed dtype (the executor reads fp32 logits).
REQUIRED_OUTPUT_DTYPES = {"logits": torch.float32}


class DTypeError(TypeError):
    """A dtype combination a (strongly typed) TensorRT network build rejects."""


def _name(dtype) -> str:
    return dtype_name(dtype)


def require_dtype(where: str, tensor, want) -> None:
    """Raise :class:`DTypeError` unless ``tensor`` (Tensor or torch tensor) has dtype ``want`` (or one of them)."""
    got = _t(tensor).dtype
    wants = tuple(want) if isinstance(want, (tuple, list, set)) else (want,)
    wants = tuple(to_torch_dtype(w) for w in wants)
    if got not in wants:
        raise DTypeError(f"{where}: got {_name(got)}, needs {' or '.join(_name(w) for w in wants)}")


def require_same_dtype(op: str, *tensors) -> torch.dtype:
    dtypes = [_t(x).dtype for x in tensors]
    if len(set(dtypes)) > 1:
        raise DTypeError(f"{op}: input dtypes differ ({', '.join(_name(d) for d in dtypes)}); TensorRT has no "
                         f"implicit promotion in a strongly typed network -- cast one side")
    return dtypes[0]


def _scalar(value, like: torch.dtype, op: str):
    """``constant_to_tensor_(value, like)`` of a strongly typed network."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _t(value)
    if isinstance(value, int):
        return torch.tensor([value], dtype=torch.int32)
    if like not in FLOATS:
        raise DTypeError(f"{op}: a float constant ({value}) next to a {_name(like)} tensor "
                         f"(constant_to_tensor_ asserts a float dtype)")
    return torch.tensor([value], dtype=like)


def _binary(op: str, a, b, fn):
    if isinstance(a, (int, float)) and not isinstance(a, Tensor):
        a = _scalar(a, _t(b).dtype, op)
    if isinstance(b, (int, float)) and not isinstance(b, Tensor):
        b = _scalar(b, _t(a).dtype, op)
    a, b = _t(a), _t(b)
    require_same_dtype(op, a, b)
    out = fn(a, b)
    assert out.dtype == a.dtype
    return Tensor(out)


def add(a, b):
    return _binary("add", a, b, torch.add)


def sub(a, b):
    return _binary("sub", a, b, torch.sub)


def mul(a, b):
    return _binary("mul", a, b, torch.mul)


def div(a, b):
    return _binary("div", a, b, lambda x, y: x / y if x.is_floating_point() else torch.div(x, y, rounding_mode="floor"))


def matmul(a, b, transa=False, transb=False):
    a, b = _t(a), _t(b)
    require_same_dtype("matmul", a, b)
    a = a.transpose(-1, -2) if transa else a
    b = b.transpose(-1, -2) if transb else b
    return Tensor(a @ b)


def _t(x):
    if isinstance(x, Tensor):
        return x.t
    if isinstance(x, torch.Tensor):
        return x
    return torch.as_tensor(x)


class Tensor:
    """A computed tensor. ``Tensor(name=..., dtype=..., shape=..., dim_range=...)`` (how networks
    declare inputs) makes an unbound input; ``bind`` gives it a value."""

    def __init__(self, value=None, name=None, dtype=None, shape=None, dim_range=None, **kwargs):
        self.t = value if value is None or isinstance(value, torch.Tensor) else torch.as_tensor(value)
        self.name, self.declared_dtype, self.declared_shape, self.dim_range = name, dtype, shape, dim_range

    def bind(self, value, profile: int = 0):
        """Give a declared engine input (``Tensor(name=, dtype=, shape=, dim_range=)``) its runtime
        value, checked as TensorRT's ``setInputShape`` / binding would: the declared dtype, the
        declared rank, every fixed dim equal, every dynamic (-1) dim within ``[min, max]`` of its
        ``dim_range`` entry for ``profile`` (one entry per dim, in order; a fixed dim's entry is the
        size itself, a dynamic one's ``[min, opt, max]``). Raises ``ValueError`` naming the input."""
        from ._utils import dtype_name, to_torch_dtype

        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)
        if self.name is None or self.declared_shape is None:
            raise ValueError("bind: not a declared input")
        where = f"input {self.name!r}"
        if value.dtype != to_torch_dtype(self.declared_dtype):
            raise ValueError(f"{where}: dtype {dtype_name(value.dtype)}, declared {dtype_name(self.declared_dtype)}")
        shape = list(self.declared_shape)
        if value.dim() != len(shape):
            raise ValueError(f"{where}: rank {value.dim()} {tuple(value.shape)}, declared {shape}")
        ranges = list((self.dim_range or {}).items())
        if len(ranges) != len(shape):
            raise ValueError(f"{where}: dim_range {ranges} does not name every dim of {shape}")
        for axis, (want, got, (dim_name, per_profile)) in enumerate(zip(shape, value.shape, ranges)):
            r = per_profile[profile]
            lo, hi = (r[0], r[-1]) if isinstance(r, (list, tuple)) else (r, r)
            if want != -1 and (got != want or lo != hi or lo != want):
                raise ValueError(f"{where}: dim {axis} ({dim_name}) is {got}, declared {want} (range {r})")
            if not lo <= got <= hi:
                raise ValueError(f"{where}: dim {axis} ({dim_name}) is {got}, outside its profile range {r}")
        self.t = value
        return self

    # --- TensorRT-LLM Tensor API bits used by the network ---------------------------------
    @property
    def trt_tensor(self):
        return self.t

    @property
    def shape(self):
        return tuple(self.t.shape)

    @property
    def dtype(self):
        return self.t.dtype

    def ndim(self):
        return self.t.dim()

    def rank(self):
        return self.t.dim()

    def view(self, shape, zero_is_placeholder=True):
        return view(self, shape)

    def mark_output(self, name=None, dtype=None):
        """TensorRT-LLM ``Tensor.mark_output(name, dtype)``: a cast to ``dtype`` when given (strongly
        typed); records (computed dtype, output dtype) in ``default_net().output_dtypes``."""
        from ._common import default_net

        want = None if dtype is None else to_torch_dtype(dtype)
        required = REQUIRED_OUTPUT_DTYPES.get(name)
        marked = self.t.dtype if want is None else want
        if required is not None and marked != required:
            raise DTypeError(f"mark_output({name!r}): marked {_name(marked)}, the runtime reads {_name(required)}")
        net = default_net()
        net.outputs[name] = self.t if want is None else self.t.to(want)
        if not hasattr(net, "output_dtypes"):
            net.output_dtypes = {}
        net.output_dtypes[name] = (self.t.dtype, marked)

    # --- arithmetic (IElementWiseLayer: one dtype, see the module docstring) ------------------
    def __add__(self, o):
        return add(self, o)

    def __radd__(self, o):
        return add(o, self)

    def __sub__(self, o):
        return sub(self, o)

    def __rsub__(self, o):
        return sub(o, self)

    def __mul__(self, o):
        return mul(self, o)

    def __rmul__(self, o):
        return mul(o, self)

    def __truediv__(self, o):
        return div(self, o)

    def __repr__(self):
        return f"Tensor({tuple(self.t.shape)}, {self.t.dtype})"


def _shape_list(s):
    if isinstance(s, (list, tuple)):
        return [int(_t(v).reshape(-1)[0]) if not isinstance(v, int) else v for v in s]
    return [int(v) for v in _t(s).reshape(-1).tolist()]


def cast(x, dtype):
    return Tensor(_t(x).to(to_torch_dtype(dtype)))


def concat(inputs, dim=0):
    """Ints are ``dims_array`` (int64) shape entries, 0-d tensors become 1-element vectors; all inputs
    must share one dtype (IConcatenationLayer)."""
    parts = [torch.tensor([v], dtype=torch.int64) if isinstance(v, int)
             else (_t(v).reshape(-1) if _t(v).dim() == 0 else _t(v)) for v in inputs]
    require_same_dtype("concat", *parts)
    return Tensor(torch.cat(parts, dim=dim))


def constant(ndarray):
    """A constant of the array's dtype (``_utils.np_bfloat16`` arrays are bf16 bit patterns)."""
    if isinstance(ndarray, torch.Tensor):
        return Tensor(ndarray.clone())
    arr = np.ascontiguousarray(ndarray)
    if to_torch_dtype(arr.dtype) == torch.bfloat16:
        return Tensor(torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16))
    return Tensor(torch.from_numpy(arr.copy()))


def expand(x, expand_shape):
    return Tensor(x.t.expand(*_shape_list(expand_shape)))


def index_select(x, dim, index):
    require_dtype("index_select indices", index, (torch.int32, torch.int64))
    return Tensor(torch.index_select(x.t, dim, _t(index).to(torch.int64).reshape(-1)))


def permute(x, dims):
    return Tensor(x.t.permute(*dims))


def allreduce(tensor, group, strategy=None, config=None, reduce_fusion_params=None, **unused):
    from ._common import current_tp_world

    assert reduce_fusion_params is None, "numeric stub: all-reduce fusion not modelled (reduce_fusion is off)"
    parts = current_tp_world().exchange("allreduce", group, tensor.t)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return Tensor(total)


def allgather(tensor, group, gather_dim=0):
    from ._common import current_tp_world

    return Tensor(torch.cat(current_tp_world().exchange("allgather", group, tensor.t), dim=gather_dim))


def send(tensor, tgt):
    """``send(tensor, tgt)`` (functional.py @0071496d): ``tensor.cast(nccl_plugin dtype)`` into the
    Send plugin (``tgt_rank``), its output ``.cast(tensor.dtype)``. SendPlugin::enqueue
    (cpp/tensorrt_llm/plugins/ncclPlugin/sendPlugin.cpp) only ``ncclSend``s its input and never writes
    its output (dims and type of the input): the value is undefined, so it is NaN here (no stage may
    compute with it; model.py only marks it as ``hidden_states_output``)."""
    from ._common import current_tp_world, default_net

    x = cast(tensor, default_net().plugin_config.nccl_plugin)
    current_tp_world().send(int(tgt), x.t)
    return cast(torch.full_like(x.t, float("nan")), tensor.dtype)


def recv(tensor, src):
    """``recv(tensor, src)`` (functional.py @0071496d): ``tensor.cast(nccl_plugin dtype)`` into the Recv
    plugin (``src_rank``), its output ``.cast(tensor.dtype)``; the input only gives the output's dims
    and type (RecvPlugin ``getOutputDimensions`` = inputs[0]; ``ncclRecv`` of that many elements into
    the output). Here the sent tensor must have exactly the placeholder's shape and dtype
    (``_common.TensorParallelWorld.recv``)."""
    from ._common import current_tp_world, default_net

    x = cast(tensor, default_net().plugin_config.nccl_plugin)
    return cast(current_tp_world().recv(int(src), x.t), tensor.dtype)


def shape(x, dim=None):
    if dim is None:
        return Tensor(torch.tensor(list(x.t.shape), dtype=torch.int64))
    return Tensor(torch.tensor(x.t.shape[dim], dtype=torch.int64))


def sigmoid(x):
    require_dtype("sigmoid", x, FLOATS)
    return Tensor(torch.sigmoid(x.t))


def slice(x, starts, sizes, strides=None):
    out = x.t
    for d, (s, n) in enumerate(zip(_shape_list(starts), _shape_list(sizes))):
        out = out.narrow(d, s, n)
    return Tensor(out)


def view(x, shape, zero_is_placeholder=True):
    return Tensor(x.t.reshape(_shape_list(shape)))


def gather_last_token_logits(hidden_states, last_token_ids, remove_input_padding):
    if last_token_ids is None:
        return hidden_states
    assert remove_input_padding, "numeric stub: only the packed layout is modelled"
    return index_select(hidden_states, 0, last_token_ids - 1)


def rms_norm(input, normalized_shape, num_groups=1, weight=None, eps=1e-06):
    """TensorRT-LLM's functional ``rms_norm`` (signature and body: functional.py @0071496d; see the
    module docstring). Grouped normalisation (``num_groups > 1``) is not modelled."""
    assert isinstance(num_groups, int) and num_groups == 1, f"numeric stub: rms_norm num_groups={num_groups!r}"
    require_dtype("rms_norm input", input, FLOATS)
    shape = [normalized_shape] if isinstance(normalized_shape, int) else list(normalized_shape)
    x = _t(input)
    assert list(x.shape[x.dim() - len(shape):]) == shape, f"rms_norm: input {tuple(x.shape)}, normalized {shape}"
    dims = tuple(range(-len(shape), 0))
    x32 = x.float()
    y = Tensor((x32 / torch.sqrt(x32.pow(2).mean(dims, keepdim=True) + eps)).to(x.dtype))
    if weight is not None:
        y = y * weight  # elementwise mul: weight and input of one dtype
    return y


ACT2FN = {"silu": F.silu, "swish": F.silu, "gelu": F.gelu, "relu": F.relu,
          "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}


def mamba_conv1d(input, conv_state_or_ptr, conv_weight, conv_bias, host_request_types, last_token_ids, dim, dconv,
                 dtype, pre_stride=0, post_stride=0, host_context_lengths=None, slot_mapping=None, apply_silu=True):
    """TensorRT-LLM's mamba_conv1d plugin (signature: functional.py @0071496d), paged state only.

    input [T, pre_stride + dim + post_stride] packed; ``conv_weight`` [1, dconv, dim] (the
    ``MambaConv1d.forward`` layout); ``conv_state_or_ptr``: int64 [1] address of the pool
    [slots, dconv-1, dim] (the plugin's [B, W, D] state layout, paged by ``slot_mapping``).
    Per sequence b (tokens ``last_token_ids[b-1] .. last_token_ids[b]-1``): history = zeros
    for a context request (host_request_types 0), the pool row for generation (1);
    ``out[t] = sum_k w[k] * [history | x][t + k] + bias`` (the OOTB branch of
    ``MambaConv1d.forward``: concat([conv_state, x]) then a grouped conv2d with weight
    [D,1,K,1], i.e. w[K-1] multiplies the current token); SiLU when ``apply_silu``; the pool
    row becomes the last dconv-1 inputs of [history | x]. Returns (output, None) (paged).

    Dtypes (the plugin's ``supportsFormatCombination``): input, weight, bias, output and the paged
    state pool in ``dtype`` (its ``type_id``); index inputs int32, the state pointer int64.
    Arithmetic in fp32, rounded to ``dtype`` on output and in the state (assumption: the CUDA
    kernel accumulates in float).
    """
    assert pre_stride == 0 and post_stride == 0, "numeric stub: strides not modelled"
    want = to_torch_dtype(dtype)
    for where, t in (("input", input), ("conv_weight", conv_weight), ("conv_bias", conv_bias)):
        require_dtype(f"mamba_conv1d({_name(want)}) {where}", t, want)
    require_dtype("mamba_conv1d conv_state_ptr", conv_state_or_ptr, torch.int64)
    for where, t in (("host_request_types", host_request_types), ("last_token_ids", last_token_ids),
                     ("host_context_lengths", host_context_lengths), ("slot_mapping", slot_mapping)):
        if t is not None:
            require_dtype(f"mamba_conv1d {where}", t, torch.int32)
    pool = __import__("tensorrt_llm._common", fromlist=["resolve_pointer"]).resolve_pointer(_t(conv_state_or_ptr))
    require_dtype("mamba_conv1d paged conv state pool", pool, want)
    x, w = input.t, conv_weight.t.reshape(dconv, dim).float()
    bias = _t(conv_bias).float()
    assert x.dim() == 2 and x.shape[1] == dim and tuple(pool.shape[1:]) == (dconv - 1, dim)
    last = _t(last_token_ids).tolist()
    types = _t(host_request_types).tolist()
    slots = _t(slot_mapping).tolist()
    out = torch.empty_like(x)
    start = 0
    for b, end in enumerate(last):
        seq = x[start:end].float()
        history = pool[slots[b]].float() if types[b] == 1 else seq.new_zeros(dconv - 1, dim)
        window = torch.cat([history, seq], dim=0)  # [K-1+L, D]
        y = torch.stack([(window[t:t + dconv] * w).sum(0) for t in range(seq.shape[0])]) + bias
        out[start:end] = (F.silu(y) if apply_silu else y).to(x.dtype)
        pool[slots[b]] = window[-(dconv - 1):].to(pool.dtype)
        start = end
    return Tensor(out), None


def _create_tensor(trt_tensor, producer):
    return Tensor(trt_tensor)


def _add_plugin_info(layer, creator, name, pfc):
    layer.plugin_info = (creator, name, pfc)


def split(tensor, split_size_or_sections, dim=0):
    """functional.split(tensor, split_size_or_sections: int | Sequence[int], dim=0)."""
    sizes = list(split_size_or_sections) if isinstance(split_size_or_sections, (list, tuple)) \
        else split_size_or_sections
    return [Tensor(p) for p in torch.split(tensor.t, sizes, dim=dim)]

