"""``DarwinNegForCausalLM``: the TensorRT-LLM 1.2.x network of Darwin-NEG.

Qwen3.5 text backbone (gated full attention + Gated DeltaNet + SwiGLU) with the NEG
plugin at the end. Parameter names and per-rank shapes are those of
``trt_neg/checkpoint/contract.py`` (checked without tensorrt_llm by
tests/test_trtllm_network.py). How each piece maps onto TensorRT-LLM, the recurrent-state
wiring and the runtime alias: docs/trtllm_network.md.

Build with ``build_engine.py`` (``trt_neg/trtllm/build.py``): plain ``BuildConfig`` (and so
``trtllm-build --model_cls_file``) is not enough, because 1.2.x ``build()`` calls
``BuildConfig.update_kv_cache_type(architecture)``, which turns ``paged_state`` off for every
architecture but Mamba/RecurrentGemma; ``build.make_build_config`` applies RecurrentGemma's rule
to Darwin-NEG. Load the plugin library first (:func:`trt_neg.trtllm.plugins.load_plugin_library`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, List, Optional

from trt_neg.trtllm import require_tensorrt_llm

require_tensorrt_llm()

import numpy as np  # noqa: E402
import tensorrt as trt  # noqa: E402
from tensorrt_llm._common import default_net  # noqa: E402
from tensorrt_llm._utils import pad_vocab_size, str_dtype_to_np, str_dtype_to_trt  # noqa: E402
from tensorrt_llm.functional import (AttentionMaskType, LayerNormType, PositionEmbeddingType, Tensor, cast,  # noqa: E402
                                     concat, constant, expand, gather_last_token_logits, index_select,
                                     permute, recv, rms_norm, send, shape, sigmoid, slice, split, view)
from tensorrt_llm.layers import (Attention, AttentionParams, ColumnLinear, Embedding, GatedMLP,  # noqa: E402
                                 KeyValueCacheParams, RmsNorm, RowLinear)
from tensorrt_llm.models.generation_mixin import GenerationMixin  # noqa: E402
from tensorrt_llm.models.modeling_utils import (DecoderLayerList, DecoderModelForCausalLM,  # noqa: E402
                                                PretrainedConfig)
from tensorrt_llm.module import Module  # noqa: E402
from tensorrt_llm.parameter import Parameter  # noqa: E402

from trt_neg.checkpoint import contract  # noqa: E402
from trt_neg.trtllm.config import DarwinNegConfig  # noqa: E402
from trt_neg.trtllm.plugins import gated_delta_rule, neg_sample  # noqa: E402

ATTENTION, RECURRENT = "attention", "recurrent"  # TensorRT-LLM layer_types vocabulary
NEG_ENTROPY_OUTPUT, NEG_FIRED_OUTPUT, NEG_TOKEN_OUTPUT = "neg_entropy", "neg_fired", "neg_token"


def _local_layer_types(config: PretrainedConfig) -> list[str]:
    types = config.layer_types
    return [types[i % len(types)] for i in config.mapping.pp_layers(config.num_hidden_layers)]


# ------------------------------------------------------------------------------------
# Qwen3.5's zero-centred RMSNorm
# ------------------------------------------------------------------------------------

class ZeroCentredRmsNorm(Module):
    """Qwen3.5's zero-centred RMSNorm computed as HF does: ``(rmsnorm(x.float()) * (1 + w)).type_as(x)``.

    The converter stores the folded weight ``1 + w`` in fp32 (contract transform ``fold_norm``),
    as the parameter ``weight`` [n] -- the name ``RmsNorm`` gives it, so checkpoint names are
    those of a plain ``RmsNorm``. Forward: ``cast(rms_norm(cast(x, "float32"), n, weight=w, eps=eps),
    x.dtype)`` with TensorRT-LLM's functional ``rms_norm(input, normalized_shape, num_groups=1,
    weight=None, eps=1e-06)`` (tensorrt_llm/functional.py @0071496dc625910229bf433821453636ef3770eb:
    normalises in fp32 under ``precision("float32")``, casts back to the input's dtype -- fp32 here,
    so no rounding --, then ``y * weight``); ``weight`` and ``eps`` by keyword, as ``num_groups`` is
    the third positional parameter. The only rounding is the final cast to x's dtype, like HF.
    (``layers.RmsNorm`` on the same function would round the normalised activations to x's
    dtype and multiply by a weight stored in x's dtype: two extra roundings in bf16 / fp16.)
    """

    def __init__(self, normalized_shape: int, eps: float):
        super().__init__()
        self.normalized_shape = normalized_shape
        self.eps = eps
        self.weight = Parameter(shape=(normalized_shape,), dtype="float32")

    def forward(self, x: Tensor) -> Tensor:
        y = rms_norm(cast(x, "float32"), self.normalized_shape, weight=self.weight.value, eps=self.eps)
        return cast(y, x.dtype)


# ------------------------------------------------------------------------------------
# Full attention with Qwen3.5's output gate
# ------------------------------------------------------------------------------------

class GatedDense(RowLinear):
    """``attention.dense`` (o_proj) applied to ``attn * gate``.

    TensorRT-LLM's ``Attention.forward`` ends with ``self.dense(context, ...)`` and exposes no
    pre-dense output, so the gate is multiplied in here: ``DarwinNegAttention`` sets
    :attr:`gate` (``sigmoid(output_gate(h))``, [T, Hq/tp*hd]) for the duration of its forward.
    Same constructor and parameters as ``RowLinear`` (names ``dense.weight``/``dense.bias``).
    """

    gate: Optional[Tensor] = None

    def forward(self, x, *args, **kwargs):
        if self.gate is not None:
            x = x * self.gate
        return super().forward(x, *args, **kwargs)


class HeadNormedQKV(ColumnLinear):
    """``attention.qkv`` (the fused q|k|v GEMM) followed by the per-head q / k RMSNorm
    (:class:`ZeroCentredRmsNorm` over ``head_size``).

    Why not ``Attention(qk_layernorm=True)``: when a rank holds as many query as KV heads,
    TensorRT-LLM's ``Attention.forward`` views the GEMM output as per-head interleaved
    ``[q_h | k_h | v_h]`` (``tensorrt_llm/layers/attention.py``, index id 1178835378, its
    ``qk_layernorm`` block), while the checkpoint contract writes ``[q | k | v]`` sections for
    every mapping (tiny at tp 4, or any equal-heads config, would normalise the wrong rows).
    Normalising here, by sections, keeps one layout. ``DarwinNegAttention`` sets
    :attr:`head_norms` for the duration of its forward (the norms stay its own parameters,
    ``attention.q_layernorm.weight`` / ``attention.k_layernorm.weight``).
    """

    head_norms: Optional[tuple] = None  # (q_layernorm, k_layernorm, q heads, kv heads, head size) of this rank

    def forward(self, x, *args, **kwargs):
        qkv = super().forward(x, *args, **kwargs)
        q_norm, k_norm, q_heads, kv_heads, head_size = self.head_norms
        rows = shape(qkv, 0) if qkv.ndim() == 2 else concat([shape(qkv, 0), shape(qkv, 1)])
        heads = qkv.view(concat([rows, q_heads + 2 * kv_heads, head_size]))
        query, key, value = split(heads, [q_heads, kv_heads, kv_heads], dim=heads.ndim() - 2)
        heads = concat([q_norm(query), k_norm(key), value], dim=heads.ndim() - 2)
        return heads.view(concat([rows, (q_heads + 2 * kv_heads) * head_size]))


class DarwinNegAttention(Attention):
    """Qwen3.5 gated full attention on TensorRT-LLM's ``Attention`` (gpt_attention plugin, paged KV).

    q/k RMSNorm: one :class:`ZeroCentredRmsNorm` over ``head_size`` each for q and k (fp32
    weight ``1 + w``, folded by the converter), applied by :class:`HeadNormedQKV` to the qkv GEMM output,
    hence before the gpt_attention plugin, which applies RoPE and writes K to the cache itself
    (keyword-only ``Attention.__init__`` with ``layernorm_type, eps, dense_bias,
    rotary_embedding_percentage``: ``tensorrt_llm/layers/attention.py``, index id 1178835378);
    partial NeoX RoPE = ``rope_gpt_neox`` with ``rotary_embedding_percentage = rotary_dim /
    head_size``; output gate = separate column-parallel ``output_gate`` GEMM + :class:`GatedDense`.
    """

    def __init__(self, config: PretrainedConfig, local_attention_idx: int):
        m = config.mapping
        super().__init__(
            local_layer_idx=local_attention_idx,
            hidden_size=config.hidden_size,
            num_attention_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads,
            attention_head_size=config.head_size,
            max_position_embeddings=config.max_position_embeddings,
            qk_layernorm=False,  # done by HeadNormedQKV (see there)
            layernorm_type=LayerNormType.RmsNorm,
            eps=config.norm_epsilon,
            attention_mask_type=AttentionMaskType.causal,
            bias=config.attention_bias,
            dense_bias=config.attention_bias,
            dtype=config.dtype,
            position_embedding_type=PositionEmbeddingType.rope_gpt_neox,
            rotary_embedding_base=config.rotary_base,
            rotary_embedding_scaling=config.rotary_scaling,
            rotary_embedding_percentage=config.rotary_embedding_dim / config.head_size,
            tp_group=m.tp_group,
            tp_size=m.tp_size,
            tp_rank=m.tp_rank,
            quant_mode=config.quant_mode,
        )
        if self.rotary_embedding_dim != config.rotary_embedding_dim:
            raise ValueError(f"rotary dims: Attention computed {self.rotary_embedding_dim}, "
                             f"config has {config.rotary_embedding_dim}")
        hd = self.attention_head_size
        q_out = m.tp_size * self.num_attention_heads * hd  # Hq * hd
        # The same GEMM as Attention's own qkv (its per-rank Hq_r, Hkv_r), plus the head norms.
        self.qkv = HeadNormedQKV(config.hidden_size, q_out + 2 * m.tp_size * self.num_attention_kv_heads * hd,
                                 bias=config.attention_bias, dtype=config.dtype, tp_group=m.tp_group,
                                 tp_size=m.tp_size, gather_output=False, is_qkv=True)
        self.q_layernorm = ZeroCentredRmsNorm(hd, eps=config.norm_epsilon)
        self.k_layernorm = ZeroCentredRmsNorm(hd, eps=config.norm_epsilon)
        self.dense = GatedDense(q_out, config.hidden_size, bias=config.attention_bias, dtype=config.dtype,
                                tp_group=m.tp_group, tp_size=m.tp_size)
        self.output_gate = ColumnLinear(config.hidden_size, q_out, bias=config.attention_bias, dtype=config.dtype,
                                        tp_group=m.tp_group, tp_size=m.tp_size, gather_output=False)

    def forward(self, hidden_states: Tensor, **kwargs):
        self.dense.gate = sigmoid(self.output_gate(hidden_states))
        self.qkv.head_norms = (self.q_layernorm, self.k_layernorm, self.num_attention_heads,
                               self.num_attention_kv_heads, self.attention_head_size)
        try:
            return super().forward(hidden_states, **kwargs)
        finally:
            self.dense.gate = None
            self.qkv.head_norms = None


# ------------------------------------------------------------------------------------
# Gated DeltaNet
# ------------------------------------------------------------------------------------

class ConvWeight(Module):
    """Depthwise causal conv1d weight, [C, 1, K, 1] (``MambaConv1d``'s layout); no bias (Qwen3.5)."""

    def __init__(self, channels: int, kernel: int, dtype: Any):
        super().__init__()
        self.channels, self.kernel = channels, kernel
        self.weight = Parameter(shape=(channels, 1, kernel, 1), dtype=dtype)

    def plugin_weight(self) -> Tensor:
        """[1, K, C]: the ``mamba_conv1d`` plugin's weight layout (as ``MambaConv1d.forward`` builds it)."""
        return permute(view(self.weight.value, shape=[self.channels, 1, self.kernel]), (1, 2, 0))


class GatedDeltaNet(Module):
    """One Gated DeltaNet mixer on a tensor-parallel rank.

    in_proj_{qkv,z,b,a} (column-parallel, split by heads as the contract's ``gdn_qkv`` /
    ``value_heads`` rules) -> ``mamba_conv1d`` plugin (paged conv state, fused SiLU) ->
    ``TrtNegGatedDeltaRule`` (paged fp32 state, gated RMSNorm fused) -> out_proj (row-parallel).
    """

    def __init__(self, config: PretrainedConfig, layer_idx: int):
        super().__init__()
        m = config.mapping
        tp = m.tp_size
        b = _backbone_dims(config)
        self.layer_idx = layer_idx
        self.dtype = config.dtype
        self.num_k_heads = max(1, b["hk"] // tp)  # contract.linear_key_heads_per_rank
        self.num_v_heads = b["hv"] // tp
        self.head_k_dim, self.head_v_dim = b["dk"], b["dv"]
        self.conv_dim = 2 * self.num_k_heads * self.head_k_dim + self.num_v_heads * self.head_v_dim
        self.conv_kernel = config.conv_kernel
        self.norm_eps = config.norm_epsilon
        h = config.hidden_size
        lin = dict(bias=False, dtype=config.dtype, tp_group=m.tp_group, tp_size=tp, gather_output=False)
        # ColumnLinear(in, out, tp) holds out/tp rows: pass tp * (rank's rows) so replicated key heads fit.
        self.in_proj_qkv = ColumnLinear(h, tp * self.conv_dim, **lin)
        self.in_proj_z = ColumnLinear(h, tp * self.num_v_heads * self.head_v_dim, **lin)
        self.in_proj_b = ColumnLinear(h, tp * self.num_v_heads, **lin)
        self.in_proj_a = ColumnLinear(h, tp * self.num_v_heads, **lin)
        self.conv1d = ConvWeight(self.conv_dim, self.conv_kernel, config.dtype)
        self.A_log = Parameter(shape=(self.num_v_heads,), dtype="float32")
        self.dt_bias = Parameter(shape=(self.num_v_heads,), dtype="float32")
        # Weight holder of the gated output norm, fused into the gated-delta-rule plugin (fp32 input).
        self.norm = RmsNorm(normalized_shape=self.head_v_dim, eps=config.norm_epsilon, dtype="float32")
        self.out_proj = RowLinear(tp * self.num_v_heads * self.head_v_dim, h, bias=False, dtype=config.dtype,
                                  tp_group=m.tp_group, tp_size=tp)

    def forward(self, hidden_states: Tensor, conv_state: Tensor, rnn_state: Tensor, host_request_types: Tensor,
                last_token_ids: Tensor, host_context_lengths: Optional[Tensor], slot_mapping: Tensor) -> Tensor:
        plugin_config = default_net().plugin_config
        if not (plugin_config.mamba_conv1d_plugin and plugin_config.paged_state):
            raise ValueError("Darwin-NEG's Gated DeltaNet layers need the mamba_conv1d plugin and paged_state")
        qkv = self.in_proj_qkv(hidden_states)
        z = self.in_proj_z(hidden_states)
        b = self.in_proj_b(hidden_states)
        a = self.in_proj_a(hidden_states)
        zero_bias = constant(np.zeros((self.conv_dim,), dtype=str_dtype_to_np(self.dtype)))
        qkv, _ = _mamba_conv1d(qkv, conv_state, self.conv1d.plugin_weight(), zero_bias, host_request_types,
                               last_token_ids, self.conv_dim, self.conv_kernel, self.dtype,
                               host_context_lengths=host_context_lengths, slot_mapping=slot_mapping)
        y = gated_delta_rule(qkv, a, b, self.A_log.value, self.dt_bias.value, rnn_state, host_request_types,
                             last_token_ids, slot_mapping, z, self.norm.weight.value,
                             num_k_heads=self.num_k_heads, num_v_heads=self.num_v_heads,
                             head_k_dim=self.head_k_dim, head_v_dim=self.head_v_dim, dtype=self.dtype,
                             remove_input_padding=plugin_config.remove_input_padding, norm_eps=self.norm_eps)
        return self.out_proj(y)


def _mamba_conv1d(*args, **kwargs):
    from tensorrt_llm.functional import mamba_conv1d

    # mamba_conv1d(input, conv_state_or_ptr, conv_weight, conv_bias, host_request_types,
    # last_token_ids, dim, dconv, dtype, pre_stride=0, post_stride=0, host_context_lengths=None,
    # slot_mapping=None, apply_silu=True) (tensorrt_llm/functional.py @0071496d); keywords after
    # dtype keep us off the positional order. Paged state: returns (output, None).
    return mamba_conv1d(*args, pre_stride=0, post_stride=0, apply_silu=True, **kwargs)


def _backbone_dims(config: PretrainedConfig) -> dict[str, int]:
    return {"hk": config.linear_num_key_heads, "hv": config.linear_num_value_heads,
            "dk": config.linear_key_head_dim, "dv": config.linear_value_head_dim}


# ------------------------------------------------------------------------------------
# Decoder layers and the model
# ------------------------------------------------------------------------------------

class DarwinNegDecoderLayer(Module):
    """Pre-norm residual block: (gated attention | Gated DeltaNet) then SwiGLU ``GatedMLP``; both
    norms are :class:`ZeroCentredRmsNorm` (fp32 weights, one rounding to the model dtype)."""

    def __init__(self, config: PretrainedConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        layers = config.mapping.pp_layers(config.num_hidden_layers)
        self.local_layer_idx = layers.index(layer_idx) if layer_idx in layers else layer_idx - layers[0]
        self.layer_type = config.layer_types[layer_idx % len(config.layer_types)]
        self.input_layernorm = ZeroCentredRmsNorm(config.hidden_size, eps=config.norm_epsilon)
        if self.layer_type == ATTENTION:
            # KV-cache index: the layer's position among this stage's attention layers.
            local_attention_idx = _local_layer_types(config)[:self.local_layer_idx].count(ATTENTION)
            self.attention = DarwinNegAttention(config, local_attention_idx)
        elif self.layer_type == RECURRENT:
            self.recurrent = GatedDeltaNet(config, layer_idx)
        else:
            raise ValueError(f"layer {layer_idx}: unsupported layer type {self.layer_type!r} "
                             f"(expected {ATTENTION!r} or {RECURRENT!r})")
        self.post_layernorm = ZeroCentredRmsNorm(config.hidden_size, eps=config.norm_epsilon)
        self.mlp = GatedMLP(hidden_size=config.hidden_size, ffn_hidden_size=config.intermediate_size,
                            hidden_act=config.hidden_act, bias=False, dtype=config.dtype,
                            tp_group=config.mapping.tp_group, tp_size=config.mapping.tp_size,
                            quant_mode=config.quant_mode)

    def forward(self, hidden_states, *, use_cache=False, attention_mask=None, kv_cache_params=None,
                attention_params=None, conv_state=None, rnn_state=None, host_request_types=None,
                last_token_ids=None, host_context_lengths=None, slot_mapping=None):
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        present_kv = None
        if self.layer_type == ATTENTION:
            out = self.attention(hidden_states, attention_mask=attention_mask, use_cache=use_cache,
                                 kv_cache_params=kv_cache_params, attention_params=attention_params)
            if use_cache:
                out, present_kv = out
        else:
            out = self.recurrent(hidden_states, conv_state, rnn_state, host_request_types, last_token_ids,
                                 host_context_lengths, slot_mapping)
        hidden_states = residual + out
        residual = hidden_states
        hidden_states = self.mlp(self.post_layernorm(hidden_states))
        return residual + hidden_states, present_kv


class DarwinNegDecoderLayers(DecoderLayerList):
    """``DecoderLayerList`` (builds this stage's layers, ``pp_layers``) with a hybrid forward."""

    def forward(self, hidden_states, *, use_cache, attention_mask, kv_cache_params, attention_params,
                conv_states, rnn_states, host_request_types, last_token_ids, host_context_lengths, slot_mapping):
        presents = []
        for local, layer in enumerate(self):
            past = kv_cache_params.past_key_value[local] if kv_cache_params.past_key_value else None
            layer_kv = KeyValueCacheParams(
                past_key_value=[past],
                host_past_key_value_lengths=kv_cache_params.host_past_key_value_lengths,
                host_max_attention_window_sizes=kv_cache_params.host_max_attention_window_sizes,
                host_sink_token_length=kv_cache_params.host_sink_token_length,
                kv_cache_block_offsets=kv_cache_params.kv_cache_block_offsets,
                host_kv_cache_block_offsets=kv_cache_params.host_kv_cache_block_offsets,
                host_kv_cache_pool_pointers=kv_cache_params.host_kv_cache_pool_pointers,
                host_kv_cache_pool_mapping=kv_cache_params.host_kv_cache_pool_mapping,
                cache_indirection=kv_cache_params.cache_indirection)
            hidden_states, present = layer(
                hidden_states, use_cache=use_cache, attention_mask=attention_mask, kv_cache_params=layer_kv,
                attention_params=attention_params, conv_state=conv_states[local], rnn_state=rnn_states[local],
                host_request_types=host_request_types, last_token_ids=last_token_ids,
                host_context_lengths=host_context_lengths, slot_mapping=slot_mapping)
            presents.append(present)
        return hidden_states, presents


class DarwinNegModel(Module):
    """``transformer``: embedding (first stage), this stage's layers, final norm (last stage,
    :class:`ZeroCentredRmsNorm`)."""

    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.mapping = config.mapping
        if self.mapping.is_first_pp_rank():
            self.vocab_embedding = Embedding(config.vocab_size, config.hidden_size, dtype=config.dtype)
        self.layers = DarwinNegDecoderLayers(DarwinNegDecoderLayer, config)
        if self.mapping.is_last_pp_rank():
            self.ln_f = ZeroCentredRmsNorm(config.hidden_size, eps=config.norm_epsilon)

    def forward(self, input_ids, *, hidden_states=None, **layer_inputs):
        if self.mapping.is_first_pp_rank():
            hidden_states = self.vocab_embedding(input_ids)
        else:
            hidden_states = recv(hidden_states, self.mapping.prev_pp_rank())
        hidden_states, presents = self.layers(hidden_states, **layer_inputs)
        if self.mapping.is_last_pp_rank():
            hidden_states = self.ln_f(hidden_states)
        else:
            hidden_states = send(hidden_states, self.mapping.next_pp_rank())
        return hidden_states, presents


class _Affine(Module):
    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        self.weight = Parameter(shape=(out_features, in_features), dtype="float32")
        self.bias = Parameter(shape=(out_features,), dtype="float32")


class NegHead(Module):
    """NEG-Head weights (fp32, replicated): fc1 [d, H] + [d], fc2 [1, d] + [1]; consumed by the NEG plugin."""

    def __init__(self, hidden_size: int, head_hidden_size: int):
        super().__init__()
        self.fc1 = _Affine(head_hidden_size, hidden_size)
        self.fc2 = _Affine(1, head_hidden_size)


class NegGate(Module):
    def __init__(self):
        super().__init__()
        self.threshold = Parameter(shape=(), dtype="float32")


class DarwinNegForCausalLM(DecoderModelForCausalLM):
    """Darwin-NEG on TensorRT-LLM: outputs ``logits`` (NEG-guided, fp32), ``neg_entropy``, ``neg_fired``."""

    config_class = DarwinNegConfig

    def __init__(self, config: DarwinNegConfig):
        m = config.mapping
        contract.check_mapping(config.description()[0].backbone, contract.Mapping(m.tp_size, m.pp_size))
        transformer = DarwinNegModel(config)
        lm_head = None
        if m.is_last_pp_rank():
            lm_head = ColumnLinear(config.hidden_size, pad_vocab_size(config.vocab_size, m.tp_size), bias=False,
                                   dtype=config.dtype, tp_group=m.tp_group, tp_size=m.tp_size, gather_output=True)
        super().__init__(config, transformer, lm_head)  # also registers the RoPE tables
        neg = config.neg_config
        # Every rank holds the NEG tensors (contract scope every_rank); only the last stage uses them.
        self.neg_head = NegHead(config.hidden_size, neg["head_hidden_size"])
        self.neg_gate = NegGate()
        self.layer_types = [config.layer_types[i % len(config.layer_types)] for i in range(config.num_hidden_layers)]

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str, rank: Optional[int] = None, config: Optional[DarwinNegConfig] = None,
                        **kwargs):
        if config is None:
            config = DarwinNegConfig.from_checkpoint(ckpt_dir)
        return super().from_checkpoint(ckpt_dir, rank, config, **kwargs)

    # --- forward -------------------------------------------------------------------
    def forward(self, input_ids, position_ids=None, use_cache=False, last_token_ids=None, attention_mask=None,
                kv_cache_params=None, attention_params=None, conv_states=None, rnn_states=None,
                host_request_types=None, host_context_lengths=None, slot_mapping=None, hidden_states=None,
                **unused):
        attention_params = Attention.fill_attention_params(self, attention_params)
        m = self.config.mapping
        hidden_states, presents = self.transformer(
            input_ids, hidden_states=hidden_states, use_cache=use_cache, attention_mask=attention_mask,
            kv_cache_params=kv_cache_params, attention_params=attention_params, conv_states=conv_states,
            rnn_states=rnn_states, host_request_types=host_request_types, last_token_ids=last_token_ids,
            host_context_lengths=host_context_lengths, slot_mapping=slot_mapping)
        if not m.is_last_pp_rank():
            hidden_states.mark_output("hidden_states_output", self.config.dtype)
            return hidden_states
        remove_padding = default_net().plugin_config.remove_input_padding
        gathered = hidden_states
        positions = position_ids
        if not getattr(self, "gather_context_logits", False):
            gathered = gather_last_token_logits(hidden_states, last_token_ids, remove_padding)
            if position_ids is not None:
                positions = _last_token_values(position_ids, last_token_ids, remove_padding)
        logits = cast(self.lm_head(gathered), "float32")  # [N, Vp]
        if self.config.neg_enabled:
            logits, entropy, fired, token = self._neg(gathered, logits, positions)
            entropy.mark_output(NEG_ENTROPY_OUTPUT, "float32")
            fired.mark_output(NEG_FIRED_OUTPUT, "int32")
            token.mark_output(NEG_TOKEN_OUTPUT, "int32")
        logits.mark_output("logits", self.config.logits_dtype)
        if use_cache and not default_net().plugin_config.paged_kv_cache:
            for i, present in zip(self.transformer.layers.layer_list, presents):
                if present is not None:
                    present.mark_output(f"present_key_value_{i}", self.config.kv_dtype)
        return logits

    def _neg(self, hidden: Tensor, logits: Tensor, positions: Optional[Tensor]):
        """NEG plugin on the gathered rows; returns (guided logits [N, Vp], entropy, fired, token)."""
        if positions is None:
            raise ValueError("NEG needs position_ids (the Philox offset is the generated token's position)")
        v, vp = self.config.vocab_size, pad_vocab_size(self.config.vocab_size, self.config.mapping.tp_size)
        n = shape(logits, 0)
        real = logits if vp == v else slice(logits, concat([0, 0]), concat([n, v]))
        neg = self.config.neg_config
        guided, token, entropy, fired = neg_sample(
            cast(hidden, "float32"), real, self.neg_head.fc1.weight.value, self.neg_head.fc1.bias.value,
            self.neg_head.fc2.weight.value, self.neg_head.fc2.bias.value, self.neg_gate.threshold.value,
            positions + 1,  # position of the token being generated = last input position + 1
            hidden_size=self.config.hidden_size, head_hidden_size=neg["head_hidden_size"], vocab_size=v,
            top_k=neg.get("top_k", 8), temperature=neg.get("temperature", 1.0), seed=neg.get("seed", 0),
            activation=neg.get("activation", "silu"))
        if vp != v:  # keep the runtime's padded width; padding columns can never be chosen
            pad = expand(constant(np.full((1, vp - v), -np.inf, dtype=np.float32)), concat([n, vp - v]))
            guided = concat([guided, pad], dim=1)
        return guided, entropy, fired, token

    # --- inputs --------------------------------------------------------------------
    def prepare_inputs(self, max_batch_size, max_input_len, max_seq_len, max_num_tokens, use_cache,
                       max_beam_width: int = 1, opt_num_tokens: int = None, prompt_embedding_table_size: int = 0,
                       max_draft_len: int = 0, gather_context_logits: bool = False,
                       lora_target_modules: List[str] = None, opt_batch_size: int = 0,
                       speculative_decoding_draft_tokens_external: bool = False, **unused):
        """The engine inputs: the standard decoder inputs plus the recurrent-state inputs.

        Modelled on 1.2.x ``RecurrentGemmaForCausalLM.prepare_recurrent_inputs`` (paged state:
        ``conv_state_ptr_{i}`` / ``rnn_state_ptr_{i}`` int64 [1] host pointers for every
        recurrent layer ``i`` — global layer index, as ``RnnStateManager::getPtrBuffers`` names
        them — and ``slot_mapping`` int32 [batch]).
        """
        if max_beam_width != 1:
            raise ValueError("Darwin-NEG's recurrent state supports beam width 1 only")
        if speculative_decoding_draft_tokens_external or max_draft_len:
            raise ValueError("speculative decoding is not supported with recurrent layers")
        if prompt_embedding_table_size or lora_target_modules:
            raise ValueError("prompt tuning and LoRA are not supported by Darwin-NEG's engine")
        self.gather_context_logits = gather_context_logits
        pc = default_net().plugin_config
        if not (pc.remove_input_padding and pc.paged_state and pc.mamba_conv1d_plugin and pc.gpt_attention_plugin
                and pc.paged_kv_cache):
            raise ValueError("Darwin-NEG needs remove_input_padding, paged_kv_cache, paged_state, "
                             "gpt_attention_plugin and mamba_conv1d_plugin (in-flight batching)")
        if getattr(pc, "multiple_profiles", False):
            raise ValueError("Darwin-NEG's engine supports one optimization profile (multiple_profiles off): "
                             "its recurrent-state inputs are declared for a single profile")
        mapping = self.config.mapping
        local_layers = mapping.pp_layers(self.config.num_hidden_layers)
        attention_layers = [i for i in local_layers if self.layer_types[i] == ATTENTION]
        # PretrainedModel.prepare_inputs builds input_ids, position_ids, last_token_ids and the
        # attention inputs. 1.x prepare_attention_inputs splits the count it is given over the pp
        # stages itself (mapping.pp_layers(num_layers)), so it gets the *global* attention-layer
        # count; its share for this stage must equal the stage's own attention layers, which is
        # what the C++ runtime sizes host_kv_cache_pool_mapping by.
        num_attention = self.layer_types.count(ATTENTION)
        if not attention_layers or len(mapping.pp_layers(num_attention)) != len(attention_layers):
            raise ValueError(
                f"pp stage {mapping.pp_rank} holds {len(attention_layers)} of the {num_attention} attention layers; "
                f"TensorRT-LLM sizes each stage's KV-cache inputs as an even split "
                f"({len(mapping.pp_layers(num_attention))}): choose a pp size that spreads the attention "
                f"layers evenly (and gives every stage at least one)")
        inputs = super().prepare_inputs(
            max_batch_size=max_batch_size, max_input_len=max_input_len, max_seq_len=max_seq_len,
            max_num_tokens=max_num_tokens, use_cache=use_cache, max_beam_width=max_beam_width,
            opt_num_tokens=opt_num_tokens, gather_context_logits=gather_context_logits,
            opt_batch_size=opt_batch_size, num_hidden_layers=num_attention)
        # One past_key_value slot per local layer (None for recurrent layers; all None when paged).
        kv = inputs["kv_cache_params"]
        past = list(kv.past_key_value or [None] * len(attention_layers))
        per_layer, it = [], iter(past)
        for i in local_layers:
            per_layer.append(next(it) if self.layer_types[i] == ATTENTION else None)
        kv.past_key_value = per_layer

        batch_range = [GenerationMixin.default_range(max_batch_size)]
        num_profiles = len(inputs["input_ids"].profiles) if getattr(inputs["input_ids"], "profiles", None) else 1
        batch_range = batch_range * num_profiles
        one = OrderedDict([("buffer_count", [1] * num_profiles)])
        conv_states, rnn_states = [], []
        for i in local_layers:
            if self.layer_types[i] == RECURRENT:
                conv_states.append(Tensor(name=f"conv_state_ptr_{i}", dtype=str_dtype_to_trt("int64"), shape=[1],
                                          dim_range=one))
                rnn_states.append(Tensor(name=f"rnn_state_ptr_{i}", dtype=str_dtype_to_trt("int64"), shape=[1],
                                         dim_range=one))
            else:
                conv_states.append(None)
                rnn_states.append(None)
        slot_mapping = Tensor(name="slot_mapping", dtype=trt.int32, shape=[-1],
                              dim_range=OrderedDict([("batch_size", batch_range)]))
        attention_params = inputs["attention_params"]
        return {
            "input_ids": inputs["input_ids"],
            "position_ids": inputs["position_ids"],
            "use_cache": inputs["use_cache"],
            "last_token_ids": inputs["last_token_ids"],
            "attention_mask": inputs["attention_mask"],
            "kv_cache_params": kv,
            "attention_params": attention_params,
            "conv_states": conv_states,
            "rnn_states": rnn_states,
            "host_request_types": attention_params.host_request_types,
            "host_context_lengths": attention_params.host_context_lengths,
            "slot_mapping": slot_mapping,
            **({"hidden_states": inputs["hidden_states"]} if "hidden_states" in inputs else {}),
        }


def _last_token_values(values: Tensor, last_token_ids: Tensor, remove_input_padding: bool) -> Tensor:
    """values[last token of each sequence] for packed [T] (or padded [B, L]) per-token int values."""
    if remove_input_padding:
        return index_select(values, 0, last_token_ids - 1)
    raise ValueError("Darwin-NEG's engine needs remove_input_padding")


def register_with_tensorrt_llm() -> None:
    """Make ``tensorrt_llm.models.MODEL_MAP`` know the architecture (``PretrainedConfig.from_dict``,
    ``trtllm-build`` and ``from_checkpoint`` look classes up there)."""
    from tensorrt_llm import models

    models.MODEL_MAP.setdefault(contract.ARCHITECTURE, DarwinNegForCausalLM)


register_with_tensorrt_llm()

__all__ = ["DarwinNegAttention", "DarwinNegDecoderLayer", "DarwinNegForCausalLM", "DarwinNegModel",
           "GatedDeltaNet", "GatedDense", "NEG_ENTROPY_OUTPUT", "NEG_FIRED_OUTPUT", "NEG_TOKEN_OUTPUT",
           "ZeroCentredRmsNorm", "register_with_tensorrt_llm"]
