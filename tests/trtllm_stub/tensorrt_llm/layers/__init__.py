"""Recording layer stand-ins whose parameters have the real 1.2.x names and per-rank shapes.

The constructors (parameter names and shapes, with the TensorRT-LLM sources they were checked
against) are shared with the numeric stub: tests/trtllm_stub_shared/layers.py. Here: each
layer's recording ``forward`` and the RoPE buffers as 1-element stand-ins.
"""

import numpy as np

from trtllm_stub_shared import layers as _shared
from trtllm_stub_shared.layers import AttentionParams  # noqa: F401

from ..functional import LayerNormType, Tensor
from ..module import Module
from ..parameter import Parameter


class KeyValueCacheParams:
    # The keyword list of 1.x layers/attention.py ``KeyValueCacheParams.__init__`` (index id 1178835378):
    # a misspelt keyword is a TypeError there, so it is one here.
    _FIELDS = ("host_past_key_value_lengths", "host_max_attention_window_sizes", "host_sink_token_length",
               "kv_cache_block_offsets", "host_kv_cache_block_offsets", "host_kv_cache_pool_pointers",
               "host_kv_cache_pool_mapping", "cache_indirection", "past_key_value_length",
               "cross_kv_cache_block_offsets", "host_cross_kv_cache_block_offsets",
               "host_cross_kv_cache_pool_pointers", "host_cross_kv_cache_pool_mapping")

    def __init__(self, past_key_value=None, **kwargs):
        unknown = sorted(set(kwargs) - set(self._FIELDS))
        if unknown:
            raise TypeError(f"KeyValueCacheParams.__init__() got unexpected keyword argument(s) {unknown}")
        self.past_key_value = past_key_value
        for k, v in kwargs.items():
            setattr(self, k, v)

    def __getattr__(self, name):  # unset optional members read as None
        return None


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, dtype=None, tp_group=None, tp_size=1,
                 gather_output=True, share_weight=None, strict_dtype=False, pad_lda=0, pad_ldc=0,
                 prefer_managed_weight=True, is_qkv=False):
        super().__init__()
        _shared.linear_parameters(self, in_features, out_features // tp_size, bias, dtype, Parameter)  # out / tp

    def forward(self, x, *args, **kwargs):
        return Tensor(op="linear", args=(x, self))


ColumnLinear = Linear


class RowLinear(Module):
    def __init__(self, in_features, out_features, bias=True, dtype=None, tp_group=None, tp_size=1,
                 strict_dtype=False, pad_lda=0, prefer_managed_weight=True, is_expert=False):
        super().__init__()
        _shared.linear_parameters(self, in_features // tp_size, out_features, bias, dtype, Parameter)  # in / tp

    def forward(self, x, *args, **kwargs):
        return Tensor(op="row_linear", args=(x, self))


class RmsNorm(Module):
    def __init__(self, normalized_shape, num_groups=1, eps=1e-06, elementwise_affine=True, dtype=None, bias=False):
        super().__init__()
        self.eps = eps
        _shared.norm_parameters(self, normalized_shape, elementwise_affine, bias, dtype, Parameter)

    def forward(self, x, *args, **kwargs):
        return Tensor(op="rmsnorm", args=(x, self))


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, dtype=None, tp_size=1, tp_group=None, sharding_dim=0,
                 tp_rank=None):
        super().__init__()
        assert tp_size == 1, "stub: parallel embedding not modelled (the contract does not use it)"
        self.weight = Parameter(shape=(num_embeddings, embedding_dim), dtype=dtype)

    def forward(self, x, *args, **kwargs):
        return Tensor(op="embedding", args=(x, self))


class MLP(_shared.MLP):
    _column_linear, _row_linear = ColumnLinear, RowLinear


class GatedMLP(_shared.GatedMLP):
    _column_linear, _row_linear = ColumnLinear, RowLinear

    def forward(self, x, *args, **kwargs):
        return Tensor(op="gated_mlp", args=(x, self))


_LN = {LayerNormType.RmsNorm: RmsNorm}


class Attention(_shared.Attention):
    _column_linear, _row_linear, _layernorms = ColumnLinear, RowLinear, _LN

    @staticmethod
    def create_attention_const_params(model_cls, config):
        rotary_dim = getattr(config, "rotary_dim", int(config.head_size * getattr(config, "rotary_pct", 1.0)))
        model_cls.rope_table_dim = rotary_dim  # recorded for the tests
        n = config.max_position_embeddings
        for name, shape in (("embed_positions", (n, rotary_dim)), ("rotary_inv_freq", (rotary_dim // 2,)),
                            ("embed_positions_for_gpt_attention", (n, rotary_dim))):
            # the real tables are numpy arrays; a 1-element stand-in keeps the stub light
            p = Parameter(value=np.zeros(1, np.float32), shape=shape, dtype="float32", is_buffer=True)
            model_cls.register_parameter(name, p)

    @staticmethod
    def fill_attention_params(model_cls, attention_params):
        return attention_params

    def forward(self, hidden_states, **kwargs):
        context = Tensor(op="gpt_attention", args=(hidden_states,))
        out = self.dense(context)
        return (out, None) if kwargs.get("use_cache") else out
