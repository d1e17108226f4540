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
* ``mamba_conv1d``: see its docstring.
* ``allreduce(tensor, group, ...)``: the sum over the ranks of ``group`` (NCCL sum); ``allgather(tensor,
  group, gather_dim=0)``: the ranks' tensors concatenated along ``gather_dim`` in ``group`` order (what
  ``Linear.collect_and_bias`` relies on: "[dim0, local_dim] -> ... -> [dim0, local_dim * tp_size]",
  tensorrt_llm/layers/linear.py @03961722). Both run as rendezvous of the lockstep rank threads
  (``_common.TensorParallelWorld``); summed in rank order, so every rank gets the same bits.
* ``_create_tensor(trt_tensor, layer)`` wraps a plugin output.

The enums are shared with the recording stub (tests/trtllm_stub_shared/functional_enums.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trtllm_stub_shared.functional_enums import AttentionMaskType, LayerNormType, PositionEmbeddingType  # noqa: F401

from ._utils import str_dtype_to_torch


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
        from ._common import default_net

        value = self.t if dtype is None else self.t.to(str_dtype_to_torch(dtype))
        default_net().outputs[name] = value

    # --- arithmetic ------------------------------------------------------------------------
    def __add__(self, o):
        return Tensor(self.t + _t(o))

    def __radd__(self, o):
        return Tensor(_t(o) + self.t)

    def __sub__(self, o):
        return Tensor(self.t - _t(o))

    def __rsub__(self, o):
        return Tensor(_t(o) - self.t)

    def __mul__(self, o):
        return Tensor(self.t * _t(o))

    def __rmul__(self, o):
        return Tensor(_t(o) * self.t)

    def __repr__(self):
        return f"Tensor({tuple(self.t.shape)}, {self.t.dtype})"


def _shape_list(s):
    if isinstance(s, (list, tuple)):
        return [int(_t(v).reshape(-1)[0]) if not isinstance(v, int) else v for v in s]
    return [int(v) for v in _t(s).reshape(-1).tolist()]


def cast(x, dtype):
    return Tensor(x.t.to(str_dtype_to_torch(dtype) if isinstance(dtype, str) else dtype))


def concat(inputs, dim=0):
    parts = [_t(v).reshape(-1) if (isinstance(v, int) or _t(v).dim() == 0) else _t(v) for v in inputs]
    if all(p.dim() == 1 and not p.is_floating_point() for p in parts):
        parts = [p.to(torch.int64) for p in parts]
    return Tensor(torch.cat(parts, dim=dim))


def constant(ndarray):
    return Tensor(torch.as_tensor(ndarray).clone())


def expand(x, expand_shape):
    return Tensor(x.t.expand(*_shape_list(expand_shape)))


def index_select(x, dim, index):
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


def recv(*args, **kwargs):
    raise NotImplementedError("numeric stub: pipeline parallelism is not modelled")


send = recv


def shape(x, dim=None):
    if dim is None:
        return Tensor(torch.tensor(list(x.t.shape), dtype=torch.int64))
    return Tensor(torch.tensor(x.t.shape[dim], dtype=torch.int64))


def sigmoid(x):
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
    """
    assert pre_stride == 0 and post_stride == 0, "numeric stub: strides not modelled"
    pool = __import__("tensorrt_llm._common", fromlist=["resolve_pointer"]).resolve_pointer(_t(conv_state_or_ptr))
    x, w = input.t, conv_weight.t.reshape(dconv, dim)
    bias = _t(conv_bias).to(x.dtype)
    assert x.dim() == 2 and x.shape[1] == dim and tuple(pool.shape[1:]) == (dconv - 1, dim)
    last = _t(last_token_ids).tolist()
    types = _t(host_request_types).tolist()
    slots = _t(slot_mapping).tolist()
    out = torch.empty_like(x)
    start = 0
    for b, end in enumerate(last):
        seq = x[start:end]
        history = pool[slots[b]].to(x.dtype) if types[b] == 1 else x.new_zeros(dconv - 1, dim)
        window = torch.cat([history, seq], dim=0)  # [K-1+L, D]
        y = torch.stack([(window[t:t + dconv] * w).sum(0) for t in range(seq.shape[0])]) + bias
        out[start:end] = F.silu(y) if apply_silu else y
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


split_sections = split
