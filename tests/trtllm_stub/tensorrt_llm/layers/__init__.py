"""Layer stand-ins whose parameters have the real 1.2.x names and per-rank shapes.

Checked against (index ids / commits of the versions read, see docs/trtllm_network.md):
* linear.py (NVIDIA/TensorRT-LLM@2a9abd95): ``LinearBase.__init__`` creates
  ``weight = Parameter(shape=(out_features, in_features))`` and, with bias,
  ``bias = Parameter(shape=(out_features,))`` from its *local* features;
  ``Linear(in, out, ..., tp_size)`` passes ``local_out_features = out_features // tp_size``;
  ``ColumnLinear = Linear``; ``RowLinear(in, out, ..., tp_size)`` passes
  ``local_in_features = in_features // tp_size`` (bias unsplit).
* attention.py (index id 1178835378, post-Gemma3 1.x): ``Attention.__init__`` builds
  ``qkv = ColumnLinear(hidden, tp*Hq_r*hd + 2*tp*Hkv_r*hd, bias=bias, is_qkv=True)`` with
  ``Hq_r = Hq // tp``, ``Hkv_r = (Hkv + tp - 1) // tp``; ``dense = RowLinear(tp*Hq_r*hd, hidden,
  bias=dense_bias)``; with ``qk_layernorm`` and ``layernorm_share`` (default True)
  ``q_layernorm = k_layernorm = ln_type(head_size, eps=eps, dtype=dtype)``;
  ``create_attention_const_params`` registers the RoPE buffers ``embed_positions``,
  ``rotary_inv_freq``, ``embed_positions_for_gpt_attention`` (``is_buffer=True``, inited).
* mlp.py (index id 2617668057): ``MLP`` builds ``fc = ColumnLinear(hidden, ffn)`` then
  ``proj = RowLinear(ffn, hidden)``; ``GatedMLP`` adds ``gate = ColumnLinear(hidden, ffn)``.
* normalization.py ``RmsNorm(normalized_shape, num_groups=1, eps=1e-06, elementwise_affine=True,
  dtype=None, bias=False)``: ``weight`` of ``normalized_shape``, no bias (not re-read this
  session: from the 1.x API; verify in the container).
* embedding.py ``Embedding(num_embeddings, embedding_dim, dtype=None, tp_size=1, ...)``:
  ``weight [num_embeddings, embedding_dim]`` when not tensor-parallel (1.x API; verify).
"""

import numpy as np

from ..functional import LayerNormType, Tensor
from ..module import Module
from ..parameter import Parameter


class AttentionParams:
    def __init__(self, sequence_length=None, context_lengths=None, host_context_lengths=None,
                 max_context_length=None, host_request_types=None, encoder_input_lengths=None,
                 encoder_max_input_length=None, host_runtime_perf_knobs=None, host_context_progress=None):
        self.host_context_lengths, self.host_request_types = host_context_lengths, host_request_types


class KeyValueCacheParams:
    def __init__(self, past_key_value=None, **kwargs):
        self.past_key_value = past_key_value
        for k, v in kwargs.items():
            setattr(self, k, v)

    def __getattr__(self, name):  # unset optional members read as None
        return None


def _linear_parameters(layer, in_features, out_features, bias, dtype):
    """weight [out, in] and an unsplit bias [out], as both real linear layers declare them."""
    layer.in_features, layer.out_features, layer.dtype = in_features, out_features, dtype
    layer.weight = Parameter(shape=(out_features, in_features), dtype=dtype)
    if bias:
        layer.bias = Parameter(shape=(out_features,), dtype=dtype)
    else:
        layer.register_parameter("bias", None)


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, dtype=None, tp_group=None, tp_size=1,
                 gather_output=True, share_weight=None, strict_dtype=False, pad_lda=0, pad_ldc=0,
                 prefer_managed_weight=True, is_qkv=False):
        super().__init__()
        _linear_parameters(self, in_features, out_features // tp_size, bias, dtype)  # column-parallel: out / tp

    def forward(self, x, *args, **kwargs):
        return Tensor(op="linear", args=(x, self))


ColumnLinear = Linear


class RowLinear(Module):
    def __init__(self, in_features, out_features, bias=True, dtype=None, tp_group=None, tp_size=1,
                 strict_dtype=False, pad_lda=0, prefer_managed_weight=True, is_expert=False):
        super().__init__()
        _linear_parameters(self, in_features // tp_size, out_features, bias, dtype)  # row-parallel: in / tp

    def forward(self, x, *args, **kwargs):
        return Tensor(op="row_linear", args=(x, self))


class RmsNorm(Module):
    def __init__(self, normalized_shape, num_groups=1, eps=1e-06, elementwise_affine=True, dtype=None, bias=False):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps = eps
        self.weight = Parameter(shape=shape, dtype=dtype) if elementwise_affine else None
        if self.weight is None:
            self.register_parameter("weight", None)
        self.register_parameter("bias", Parameter(shape=shape, dtype=dtype) if bias else None)

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


class MLP(Module):
    def __init__(self, hidden_size, ffn_hidden_size, hidden_act, bias=True, dtype=None, tp_group=None, tp_size=1,
                 quant_mode=None, inner_layernorm=False, eps=1e-05):
        super().__init__()
        self.fc = ColumnLinear(hidden_size, ffn_hidden_size, bias=bias, dtype=dtype, tp_group=tp_group,
                               tp_size=tp_size, gather_output=False)
        self.proj = RowLinear(ffn_hidden_size, hidden_size, bias=bias, dtype=dtype, tp_group=tp_group,
                              tp_size=tp_size)
        self.hidden_act = hidden_act


class GatedMLP(MLP):
    def __init__(self, hidden_size, ffn_hidden_size, hidden_act, bias=True, dtype=None, tp_group=None, tp_size=1,
                 quant_mode=None, inner_layernorm=False, eps=1e-05):
        super().__init__(hidden_size, ffn_hidden_size, hidden_act, bias=bias, dtype=dtype, tp_group=tp_group,
                         tp_size=tp_size, quant_mode=quant_mode, inner_layernorm=inner_layernorm, eps=eps)
        self.gate = ColumnLinear(hidden_size, ffn_hidden_size, bias=bias, dtype=dtype, tp_group=tp_group,
                                 tp_size=tp_size, gather_output=False)

    def forward(self, x, *args, **kwargs):
        return Tensor(op="gated_mlp", args=(x, self))


_LN = {LayerNormType.RmsNorm: RmsNorm}


class Attention(Module):
    """Constructor keywords of the 1.x ``Attention`` (keyword-only, ``local_layer_idx`` first)."""

    def __init__(self, *, local_layer_idx, hidden_size, num_attention_heads, num_kv_heads=None,
                 max_position_embeddings=1024, num_layers=1, apply_query_key_layer_scaling=False,
                 attention_head_size=None, qk_layernorm=False, layernorm_type=LayerNormType.LayerNorm,
                 layernorm_share=True, inner_layernorm=False, eps=1e-05, attention_mask_type=None, bias=True,
                 dtype=None, position_embedding_type=None, rotary_embedding_base=10000.0,
                 rotary_embedding_base_local=1.0, rotary_embedding_scaling=None, rotary_embedding_percentage=1.0,
                 rope_scaling_short_factors=None, rope_scaling_long_factors=None, rope_scaling_short_mscale=None,
                 rope_scaling_long_mscale=None, original_max_position_embeddings=1024, tp_group=None, tp_size=1,
                 tp_rank=0, quant_mode=None, q_scaling=1.0, cross_attention=False, relative_attention=False,
                 max_distance=0, num_buckets=0, dense_bias=None, clip_qkv=None, alibi_bias_max=8,
                 skip_cross_kv=False, max_attn_value=0.0, block_sparse_params=None,
                 use_implicit_relative_attention=False, reorder=False, enable_qkv=True, cp_group=[0], cp_size=1,
                 cp_rank=0, max_seqlen_for_logn_scaling=8192, use_logn_scaling=False, is_local=False):
        super().__init__()
        self.local_layer_idx = local_layer_idx
        self.attention_head_size = hidden_size // num_attention_heads if attention_head_size is None \
            else attention_head_size
        assert num_attention_heads % tp_size == 0
        self.num_attention_heads = num_attention_heads // tp_size
        self.num_attention_kv_heads = (num_kv_heads + tp_size - 1) // tp_size if num_kv_heads is not None \
            else self.num_attention_heads
        self.rotary_embedding_dim = 0
        if position_embedding_type is not None and position_embedding_type.is_rope():
            self.rotary_embedding_dim = int(self.attention_head_size * rotary_embedding_percentage)
        dense_bias = bias if dense_bias is None else dense_bias
        for name in ("kv_cache_scaling_factor", "attention_output_orig_quant_scale", "attention_output_sf_scale"):
            self.register_parameter(name, None)
        hd = self.attention_head_size
        self.qkv = ColumnLinear(hidden_size, tp_size * self.num_attention_heads * hd
                                + 2 * tp_size * self.num_attention_kv_heads * hd, bias=bias, dtype=dtype,
                                tp_group=tp_group, tp_size=tp_size, gather_output=False, is_qkv=True)
        self.dense = RowLinear(tp_size * self.num_attention_heads * hd, hidden_size, bias=dense_bias, dtype=dtype,
                               tp_group=tp_group, tp_size=tp_size)
        self.qk_layernorm = qk_layernorm
        if qk_layernorm:
            assert layernorm_share
            self.q_layernorm = _LN[layernorm_type](hd, eps=eps, dtype=dtype)
            self.k_layernorm = _LN[layernorm_type](hd, eps=eps, dtype=dtype)

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
