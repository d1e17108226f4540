"""The constructors of the layer stand-ins both stubs share: parameter names and per-rank shapes
of the real 1.2.x layers. Each stub subclasses them with its ``forward`` (recording vs torch).

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

The stub classes these constructors need (its ``Parameter``, ``ColumnLinear``, ``RowLinear``,
layer-norm classes) come in as arguments or as class attributes of the stub's subclass.
"""

from .functional_enums import LayerNormType, PositionEmbeddingType
from .module import Module


class AttentionParams:
    """1.x ``AttentionParams`` constructor; ``fill_attention_const_params_for_rope`` stores the RoPE tables."""

    def __init__(self, sequence_length=None, context_lengths=None, host_context_lengths=None,
                 max_context_length=None, host_request_types=None, encoder_input_lengths=None,
                 encoder_max_input_length=None, host_runtime_perf_knobs=None, host_context_progress=None):
        self.sequence_length, self.context_lengths = sequence_length, context_lengths
        self.host_context_lengths, self.max_context_length = host_context_lengths, max_context_length
        self.host_request_types = host_request_types
        self.host_runtime_perf_knobs, self.host_context_progress = host_runtime_perf_knobs, host_context_progress
        self.embed_positions = self.rotary_inv_freq = self.embed_positions_for_gpt_attention = None

    def fill_attention_const_params_for_rope(self, embed_positions=None, rotary_inv_freq=None,
                                             embed_positions_for_gpt_attention=None, *unused):
        self.embed_positions = embed_positions
        self.rotary_inv_freq = rotary_inv_freq
        self.embed_positions_for_gpt_attention = embed_positions_for_gpt_attention
        return self


def linear_parameters(layer, in_features, out_features, bias, dtype, parameter):
    """weight [out, in] and an unsplit bias [out], as both real linear layers declare them."""
    layer.in_features, layer.out_features, layer.dtype = in_features, out_features, dtype
    layer.weight = parameter(shape=(out_features, in_features), dtype=dtype)
    if bias:
        layer.bias = parameter(shape=(out_features,), dtype=dtype)
    else:
        layer.register_parameter("bias", None)


def norm_parameters(layer, normalized_shape, elementwise_affine, bias, dtype, parameter):
    """RmsNorm's ``weight`` (and ``bias`` when asked) of ``normalized_shape``."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    layer.normalized_shape = shape
    if elementwise_affine:
        layer.weight = parameter(shape=shape, dtype=dtype)
    else:
        layer.register_parameter("weight", None)
    layer.register_parameter("bias", parameter(shape=shape, dtype=dtype) if bias else None)


class MLP(Module):
    _column_linear = _row_linear = None  # the stub's ColumnLinear / RowLinear (set by its subclass)

    def __init__(self, hidden_size, ffn_hidden_size, hidden_act, bias=True, dtype=None, tp_group=None, tp_size=1,
                 quant_mode=None, inner_layernorm=False, eps=1e-05):
        super().__init__()
        self.fc = self._column_linear(hidden_size, ffn_hidden_size, bias=bias, dtype=dtype, tp_group=tp_group,
                                      tp_size=tp_size, gather_output=False)
        self.proj = self._row_linear(ffn_hidden_size, hidden_size, bias=bias, dtype=dtype, tp_group=tp_group,
                                     tp_size=tp_size)
        self.hidden_act = hidden_act


class GatedMLP(MLP):
    def __init__(self, hidden_size, ffn_hidden_size, hidden_act, bias=True, dtype=None, tp_group=None, tp_size=1,
                 quant_mode=None, inner_layernorm=False, eps=1e-05):
        super().__init__(hidden_size, ffn_hidden_size, hidden_act, bias=bias, dtype=dtype, tp_group=tp_group,
                         tp_size=tp_size, quant_mode=quant_mode, inner_layernorm=inner_layernorm, eps=eps)
        self.gate = self._column_linear(hidden_size, ffn_hidden_size, bias=bias, dtype=dtype, tp_group=tp_group,
                                        tp_size=tp_size, gather_output=False)


class Attention(Module):
    """Constructor keywords of the 1.x ``Attention`` (keyword-only, ``local_layer_idx`` first)."""

    _column_linear = _row_linear = None  # the stub's ColumnLinear / RowLinear (set by its subclass)
    _layernorms = None  # dict LayerNormType -> the stub's norm class (set by its subclass)

    def __init__(self, *, local_layer_idx, hidden_size, num_attention_heads, num_kv_heads=None,
                 max_position_embeddings=1024, num_layers=1, apply_query_key_layer_scaling=False,
                 attention_head_size=None, qk_layernorm=False, layernorm_type=LayerNormType.LayerNorm,
                 layernorm_share=True, inner_layernorm=False, eps=1e-05, attention_mask_type=None, bias=True,
                 dtype=None, position_embedding_type=PositionEmbeddingType.learned_absolute,
                 rotary_embedding_base=10000.0, rotary_embedding_base_local=1.0, rotary_embedding_scaling=None,
                 rotary_embedding_percentage=1.0, rope_scaling_short_factors=None, rope_scaling_long_factors=None,
                 rope_scaling_short_mscale=None, rope_scaling_long_mscale=None, original_max_position_embeddings=1024,
                 tp_group=None, tp_size=1, tp_rank=0, quant_mode=None, q_scaling=1.0, cross_attention=False,
                 relative_attention=False, max_distance=0, num_buckets=0, dense_bias=None, clip_qkv=None,
                 alibi_bias_max=8, skip_cross_kv=False, max_attn_value=0.0, block_sparse_params=None,
                 use_implicit_relative_attention=False, reorder=False, enable_qkv=True, cp_group=[0], cp_size=1,
                 cp_rank=0, max_seqlen_for_logn_scaling=8192, use_logn_scaling=False, is_local=False):
        super().__init__()
        self.local_layer_idx = local_layer_idx
        self.attention_mask_type = attention_mask_type
        self.attention_head_size = hidden_size // num_attention_heads if attention_head_size is None \
            else attention_head_size
        assert num_attention_heads % tp_size == 0
        self.num_attention_heads = num_attention_heads // tp_size
        self.num_attention_kv_heads = (num_kv_heads + tp_size - 1) // tp_size if num_kv_heads is not None \
            else self.num_attention_heads
        self.q_scaling = q_scaling
        self.position_embedding_type = position_embedding_type
        self.rotary_embedding_base = rotary_embedding_base
        self.rotary_embedding_dim = 0
        if position_embedding_type is not None and position_embedding_type.is_rope():
            self.rotary_embedding_dim = int(self.attention_head_size * rotary_embedding_percentage)
        dense_bias = bias if dense_bias is None else dense_bias
        for name in ("kv_cache_scaling_factor", "attention_output_orig_quant_scale", "attention_output_sf_scale"):
            self.register_parameter(name, None)
        hd = self.attention_head_size
        self.qkv = self._column_linear(hidden_size, tp_size * self.num_attention_heads * hd
                                       + 2 * tp_size * self.num_attention_kv_heads * hd, bias=bias, dtype=dtype,
                                       tp_group=tp_group, tp_size=tp_size, gather_output=False, is_qkv=True)
        self.dense = self._row_linear(tp_size * self.num_attention_heads * hd, hidden_size, bias=dense_bias,
                                      dtype=dtype, tp_group=tp_group, tp_size=tp_size)
        self.qk_layernorm = qk_layernorm
        if qk_layernorm:
            assert layernorm_share
            self.q_layernorm = self._layernorms[layernorm_type](hd, eps=eps, dtype=dtype)
            self.k_layernorm = self._layernorms[layernorm_type](hd, eps=eps, dtype=dtype)
