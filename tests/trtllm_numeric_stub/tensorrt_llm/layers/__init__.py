"""Numeric layer stand-ins with the 1.2.x constructor signatures, parameter names and semantics.

The constructors (parameter names and per-rank shapes) are shared with the recording stub:
tests/trtllm_stub_shared/layers.py (sources cited there). Forward semantics, from the
TensorRT-LLM sources read for this stub:
* linear.py (NVIDIA/TensorRT-LLM tensorrt_llm/layers/linear.py @03961722, ``collect_and_bias``):
  ``Linear``/``ColumnLinear`` y = x W^T + b on its [out/tp, in] shard, then, when
  ``gather_output and tp_size > 1 and tp_group is not None``, ``allgather(y, tp_group,
  gather_dim=-1)`` (the bias is added to each rank's slice BEFORE the gather); ``RowLinear``
  y = x W^T on its [out, in/tp] shard, then, when ``tp_size > 1 and tp_group is not None``,
  ``allreduce(y, tp_group)`` and the (unsplit) bias added once AFTER the all-reduce (not fused:
  ``reduce_fusion`` is off in our plugin config); at tp 1 simply + bias. The collectives are
  ``functional.allreduce`` / ``allgather`` (rank threads in lockstep, see ``_common.py``).
* normalization.py ``RmsNorm.forward(x, normalized_shape=None)`` -> functional ``rms_norm``:
  fp32 ``y = x / sqrt(mean(x^2, last dims) + eps)``, cast back to x's dtype, times ``weight``
  (plain weight: no ``1 + w``).
* embedding.py ``Embedding``: ``weight[ids]`` (tp 1 only: the contract writes
  ``use_parallel_embedding: False``, a replicated table, and model.py builds it without tp_size).
* mlp.py ``GatedMLP.forward``: ``inter = ACT2FN[hidden_act](self.fc(x)); gate = self.gate(x);
  self.proj(inter * gate)`` -- the activation goes on ``fc`` (read in mlp.py, index ids
  601018076 / 5234116500).
* attention.py (1.x, index id 1178835378) ``Attention.forward`` with the gpt_attention plugin:
  qkv GEMM; with ``qk_layernorm`` the qkv row is viewed per head -- when the rank's q and kv
  head counts differ as [.., Hq + 2 Hkv, hd] split into (Hq, Hkv, Hkv) sections, when they
  are equal as [.., H, 3, hd] split along the 3 (TensorRT-LLM's own code; it assumes a
  per-head interleaved q|k|v layout there) -- ``q_layernorm`` / ``k_layernorm`` applied per
  head, then concatenated back to [q | k | v] BEFORE the plugin; the plugin applies RoPE
  and attention; ``self.dense(context, lora_runtime_params=..., all_reduce_params=...)``;
  returns ``(context, past_key_value)`` when use_cache.
* gpt_attention plugin stand-in (:func:`_gpt_attention`), assumptions (not read in the CUDA
  sources): rotary position of a token = the number of tokens of its sequence already in
  the KV cache + its index in this step (the plugin does not read position_ids);
  ``rope_gpt_neox`` rotates the first ``rotary_embedding_dim`` dims of q and k in halves
  (x1 = d[:r/2], x2 = d[r/2:r]: [x1 cos - x2 sin, x2 cos + x1 sin]), the rest pass through,
  with angles pos * ``attention_params.rotary_inv_freq`` (the table
  ``create_attention_const_params`` built from config.rotary_base / rotary_dim); scores
  scaled by 1 / (q_scaling * sqrt(head_size)); causal; GQA: query head h reads KV head
  h // (Hq / Hkv); K is cached after RoPE. Packed batch: context requests first, sequence b
  has ``host_context_lengths[b]`` tokens (context) or 1 (generation) and its cache holds
  ``sequence_length[b] - tokens`` earlier tokens. The KV cache is a Python dict in the object
  whose address is ``kv_cache_params.host_kv_cache_pool_pointers``, keyed by
  (``local_layer_idx``, ``kv_cache_block_offsets[0, b, 0, 0]`` of the engine's [pools, batch, 2,
  blocks] input): a per-sequence id in the first K block stands in for the block table.

Data types (see functional.py's docstring for the op rules; DTypeError on a violation):
* ``Parameter`` constants take the dtype of the value loaded into them (1.x parameter.py: the
  ``value`` setter warns "Parameter was initialized as X but set to Y" and adopts Y; the layers
  declare ``dtype=`` for weight and bias -- linear.py ``LinearBase``, normalization.py ``RmsNorm``,
  embedding.py ``Embedding``). ``parameter.DTYPE_WARNINGS`` lists each such mismatch.
* ``Linear``: ``matmul(x, weight)`` (or the Gemm plugin, type = the weight's dtype here) needs x
  and weight of one dtype; the bias is ``cast(bias, x.dtype)`` before the add (linear.py
  ``collect_and_bias``), so it is the one place a parameter is cast implicitly.
* ``RmsNorm`` -> functional ``rms_norm`` (functional.py @0071496d): ``with precision("float32")``
  casts the input to fp32, normalises, casts back to the input dtype, then ``y * weight`` -- an
  elementwise product in the input dtype, so the weight must have the input's dtype.
* ``Embedding``: a gather (ids int32) of the table, output in the table's dtype.
* gpt_attention plugin: ``type_id`` = ``plugin_config.gpt_attention_plugin`` (``"auto"`` is the
  model dtype: build.py sets "auto"); qkv and the output in it, ``rotary_inv_freq`` /
  ``rotary_cos_sin`` fp32, sequence_length / context lengths / request types / block offsets
  int32, pool pointers int64. RoPE and softmax arithmetic in fp32, K/V cached in the plugin
  dtype (assumption for the CUDA kernels, not read).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from trtllm_stub_shared import layers as _shared
from trtllm_stub_shared.layers import AttentionParams

from .._common import default_net, resolve_pointer
from .._utils import to_torch_dtype
from ..functional import (ACT2FN, LayerNormType, PositionEmbeddingType, Tensor, _t, allgather, allreduce,
                          cast, concat, matmul, require_dtype, rms_norm, shape, split)
from ..module import Module
from ..parameter import Parameter


class KeyValueCacheParams:
    def __init__(self, past_key_value=None, host_past_key_value_lengths=None, host_max_attention_window_sizes=None,
                 host_sink_token_length=None, kv_cache_block_offsets=None, host_kv_cache_block_offsets=None,
                 host_kv_cache_pool_pointers=None, host_kv_cache_pool_mapping=None, cache_indirection=None,
                 past_key_value_length=None, cross_kv_cache_block_offsets=None,
                 host_cross_kv_cache_block_offsets=None, host_cross_kv_cache_pool_pointers=None,
                 host_cross_kv_cache_pool_mapping=None):
        self.past_key_value = past_key_value
        self.host_past_key_value_lengths = host_past_key_value_lengths
        self.host_max_attention_window_sizes = host_max_attention_window_sizes
        self.host_sink_token_length = host_sink_token_length
        self.kv_cache_block_offsets = kv_cache_block_offsets
        self.host_kv_cache_block_offsets = host_kv_cache_block_offsets
        self.host_kv_cache_pool_pointers = host_kv_cache_pool_pointers
        self.host_kv_cache_pool_mapping = host_kv_cache_pool_mapping
        self.cache_indirection = cache_indirection

    def get_first_past_key_value(self):
        return None if self.past_key_value is None else self.past_key_value[0]


def _tp1(tp_size):
    assert tp_size == 1, "numeric stub: only tp_size 1 is modelled"


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, dtype=None, tp_group=None, tp_size=1,
                 gather_output=True, share_weight=None, strict_dtype=False, pad_lda=0, pad_ldc=0,
                 prefer_managed_weight=True, is_qkv=False):
        super().__init__()
        assert share_weight is None, "numeric stub: shared weights not modelled"
        assert out_features % tp_size == 0, f"out_features {out_features} not divisible by tp {tp_size}"
        _shared.linear_parameters(self, in_features, out_features // tp_size, bias, dtype, Parameter)
        self.tp_size, self.tp_group, self.gather_output = tp_size, tp_group, gather_output

    def _gemm(self, x):
        return matmul(x, self.weight.value, transb=True).t

    def _bias(self, y):  # linear.py collect_and_bias: x + cast(self.bias.value, x.dtype)
        return y if self.bias is None else (Tensor(y) + cast(self.bias.value, y.dtype)).t

    def forward(self, x, lora_runtime_params=None, lora_hidden_state=None, **kwargs):
        y = Tensor(self._bias(self._gemm(x)))
        if self.gather_output and self.tp_size > 1 and self.tp_group is not None:
            y = allgather(y, self.tp_group, gather_dim=-1)
        return y


ColumnLinear = Linear


class RowLinear(Linear):
    def __init__(self, in_features, out_features, bias=True, dtype=None, tp_group=None, tp_size=1,
                 strict_dtype=False, pad_lda=0, prefer_managed_weight=True, is_expert=False):
        assert in_features % tp_size == 0, f"in_features {in_features} not divisible by tp {tp_size}"
        super().__init__(in_features // tp_size, out_features, bias=bias, dtype=dtype, gather_output=False)
        self.tp_size, self.tp_group = tp_size, tp_group

    def forward(self, x, lora_runtime_params=None, all_reduce_params=None, **kwargs):
        y = self._gemm(x)
        if self.tp_size > 1 and self.tp_group is not None:
            y = allreduce(Tensor(y), self.tp_group).t
        return Tensor(self._bias(y))


class RmsNorm(Module):
    def __init__(self, normalized_shape, num_groups=1, eps=1e-06, elementwise_affine=True, dtype=None, bias=False):
        super().__init__()
        self.eps = eps
        assert num_groups == 1 and not bias
        _shared.norm_parameters(self, normalized_shape, elementwise_affine, bias, dtype, Parameter)

    def forward(self, x, normalized_shape=None):
        # normalization.py: functional rms_norm over the layer's normalized_shape, weight in the input dtype.
        return rms_norm(x, self.normalized_shape, weight=None if self.weight is None else self.weight.value,
                        eps=self.eps)


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, dtype=None, tp_size=1, tp_group=None, sharding_dim=0,
                 tp_rank=None):
        super().__init__()
        _tp1(tp_size)
        self.weight = Parameter(shape=(num_embeddings, embedding_dim), dtype=dtype)

    def forward(self, x, *args, **kwargs):
        require_dtype("Embedding ids", x, (torch.int32, torch.int64))
        return Tensor(self.weight.value.t[x.t.to(torch.int64)])


class MLP(_shared.MLP):
    _column_linear, _row_linear = ColumnLinear, RowLinear

    def __init__(self, *args, inner_layernorm=False, **kwargs):  # the shared 1.x signature
        assert not inner_layernorm
        super().__init__(*args, inner_layernorm=inner_layernorm, **kwargs)


class GatedMLP(_shared.GatedMLP, MLP):
    def forward(self, hidden_states, lora_layer_params=None, all_reduce_params=None):
        inter = Tensor(ACT2FN[self.hidden_act](self.fc(hidden_states).t))
        gate = self.gate(hidden_states)
        return self.proj(inter * gate, all_reduce_params=all_reduce_params)


_LN = {LayerNormType.RmsNorm: RmsNorm}


class KVCachePool:
    """The paged KV cache stand-in: (layer, sequence id) -> (K [S, Hkv, hd], V [S, Hkv, hd])."""

    def __init__(self):
        self.kv = {}


class Attention(_shared.Attention):
    """The shared 1.x constructor (tests/trtllm_stub_shared/layers.py), refusing what is not modelled."""

    _column_linear, _row_linear, _layernorms = ColumnLinear, RowLinear, _LN

    def __init__(self, *, tp_size=1, inner_layernorm=False, layernorm_share=True, clip_qkv=None, cross_attention=False,
                 rotary_embedding_scaling=None, **kwargs):
        # tp_size > 1: the shared constructor gives the rank Hq/tp query and ceil(Hkv/tp) KV heads
        # (replicated when tp > Hkv) and builds qkv / dense column / row parallel; the plugin
        # stand-in works on the rank's heads only (query head h of the rank reads its KV head
        # h // (Hq_r / Hkv_r)), dense all-reduces.
        assert not inner_layernorm and layernorm_share and clip_qkv is None and not cross_attention
        assert rotary_embedding_scaling is None, "numeric stub: RoPE scaling not modelled"
        super().__init__(tp_size=tp_size, inner_layernorm=inner_layernorm, layernorm_share=layernorm_share,
                         clip_qkv=clip_qkv, cross_attention=cross_attention,
                         rotary_embedding_scaling=rotary_embedding_scaling, **kwargs)

    @staticmethod
    def create_attention_const_params(model_cls, config):
        """1.x: rotary_base / rotary_scaling / rotary_pct / rotary_dim read from the config with
        getattr defaults; tables from RopeEmbeddingUtils.create_sinusoidal_positions_for_attention_plugin:
        inv_freq = 1 / base^(arange(0, dim, 2) / dim) (scale type none)."""
        if not config.position_embedding_type.is_rope():
            return
        base = getattr(config, "rotary_base", 10000.0)
        assert getattr(config, "rotary_scaling", None) is None
        head = config.head_size
        dim = getattr(config, "rotary_dim", int(head * getattr(config, "rotary_pct", 1.0)))
        inv_freq = (1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))).astype(np.float32)
        n = config.max_position_embeddings
        ang = np.arange(n, dtype=np.float32)[:, None] * inv_freq[None, :]
        embed = np.concatenate([np.sin(ang), np.cos(ang)], axis=1).astype(np.float32)
        cos_sin = np.stack([np.cos(ang), np.sin(ang)], axis=-1).reshape(n, dim).astype(np.float32)
        model_cls.rope_table_dim = dim
        model_cls.register_parameter("embed_positions", Parameter(embed, dtype="float32", is_buffer=True))
        model_cls.register_parameter("rotary_inv_freq", Parameter(inv_freq.reshape(1, -1), dtype="float32",
                                                                  is_buffer=True))
        model_cls.register_parameter("embed_positions_for_gpt_attention",
                                     Parameter(cos_sin.reshape(1, -1), dtype="float32", is_buffer=True))

    @staticmethod
    def fill_attention_params(model_cls, attention_params):
        if model_cls.position_embedding_type.is_rope():
            if attention_params is None:
                attention_params = AttentionParams()
            return attention_params.fill_attention_const_params_for_rope(
                model_cls.embed_positions.value, model_cls.rotary_inv_freq.value,
                model_cls.embed_positions_for_gpt_attention.value)
        return attention_params

    def forward(self, hidden_states, attention_mask=None, attention_packed_mask=None, use_cache=False,
                spec_decoding_params=None, mrope_params=None, kv_cache_params=None, attention_params=None,
                encoder_output=None, position_embedding=None, norm_before_bmm1=False, lora_layer_params=None,
                cross_kv_cache_gen=None, cross_kv_reuse=None, all_reduce_params=None, skip_attn=None):
        assert default_net().plugin_config.gpt_attention_plugin and default_net().plugin_config.remove_input_padding
        qkv = self.qkv(hidden_states, None)
        assert qkv.ndim() == 2
        if self.qk_layernorm:
            hd = self.attention_head_size
            base = shape(qkv, 0)
            sections = [self.num_attention_heads, self.num_attention_kv_heads, self.num_attention_kv_heads]
            total = sum(sections)
            if self.num_attention_heads != self.num_attention_kv_heads:
                qkv = qkv.view(concat([base, total, hd]))
                query, key, value = split(qkv, sections, dim=qkv.ndim() - 2)
            else:  # TensorRT-LLM's branch for equal head counts (see the module docstring)
                qkv = qkv.view(concat([base, self.num_attention_heads, 3, hd]))
                query, key, value = split(qkv, [1, 1, 1], dim=qkv.ndim() - 2)
                q_shape = concat([base, self.num_attention_heads, hd])
                query, key, value = query.view(q_shape), key.view(q_shape), value.view(q_shape)
            query = self.q_layernorm(query, normalized_shape=None)
            key = self.k_layernorm(key, normalized_shape=None)
            qkv = concat([query, key, value], dim=query.ndim() - 2)
            qkv = qkv.view(concat([base, total * hd]))
        context = self._gpt_attention(qkv, kv_cache_params, attention_params)
        context = self.dense(context, lora_runtime_params=None, all_reduce_params=all_reduce_params)
        return (context, None) if use_cache else context

    def _gpt_attention(self, qkv, kv, params):
        assert self.attention_mask_type == 1 and self.position_embedding_type == PositionEmbeddingType.rope_gpt_neox
        hq, hkv, hd, r = self.num_attention_heads, self.num_attention_kv_heads, self.attention_head_size, \
            self.rotary_embedding_dim
        assert params.rotary_inv_freq is not None and params.embed_positions_for_gpt_attention is not None
        plugin_dtype = to_torch_dtype(default_net().plugin_config.gpt_attention_plugin)
        require_dtype(f"gpt_attention({plugin_dtype}) qkv", qkv, plugin_dtype)
        for where, t in (("rotary_inv_freq", params.rotary_inv_freq),
                         ("rotary_cos_sin", params.embed_positions_for_gpt_attention)):
            require_dtype(f"gpt_attention {where}", t.t, torch.float32)
        for where, t in (("sequence_length", params.sequence_length), ("host_context_lengths",
                         params.host_context_lengths), ("host_request_types", params.host_request_types),
                         ("context_lengths", params.context_lengths),
                         ("kv_cache_block_offsets", kv.kv_cache_block_offsets)):
            if t is not None:
                require_dtype(f"gpt_attention {where}", t, torch.int32)
        require_dtype("gpt_attention host_kv_cache_pool_pointers", kv.host_kv_cache_pool_pointers, torch.int64)
        inv_freq = params.rotary_inv_freq.t.reshape(-1).float()
        assert inv_freq.numel() == r // 2, "RoPE table and rotary_embedding_dim disagree"
        pool = resolve_pointer(_t(kv.host_kv_cache_pool_pointers))
        offsets = _t(kv.kv_cache_block_offsets)
        # The engine input is [pools, batch, 2 (K/V), max_blocks_per_seq]: the first K block of
        # sequence b (pool 0) stands in for its block table. A [batch] tensor is accepted too.
        seq_ids = (offsets[0, :, 0, 0] if offsets.dim() == 4 else offsets.reshape(-1)).tolist()
        types = _t(params.host_request_types).tolist()
        ctx_len = _t(params.host_context_lengths).tolist()
        seq_len = _t(params.sequence_length).tolist()
        x = qkv.t
        out = x.new_empty(x.shape[0], hq * hd)
        start = 0
        for b, typ in enumerate(types):
            n = ctx_len[b] if typ == 0 else 1
            past = seq_len[b] - n
            rows = x[start:start + n]
            q = rows[:, :hq * hd].reshape(n, hq, hd)
            k = rows[:, hq * hd:(hq + hkv) * hd].reshape(n, hkv, hd)
            v = rows[:, (hq + hkv) * hd:].reshape(n, hkv, hd)
            pos = torch.arange(past, past + n, dtype=torch.float32)
            q, k = _rope_neox(q, pos, inv_freq, r), _rope_neox(k, pos, inv_freq, r)
            key = (self.local_layer_idx, seq_ids[b])
            if typ == 0:
                assert past == 0
                pool.kv[key] = (k, v)
            else:
                old_k, old_v = pool.kv[key]
                assert old_k.shape[0] == past, f"KV cache holds {old_k.shape[0]} tokens, expected {past}"
                pool.kv[key] = (torch.cat([old_k, k]), torch.cat([old_v, v]))
            keys, values = pool.kv[key]
            group = hq // hkv
            keys, values = keys.repeat_interleave(group, dim=1), values.repeat_interleave(group, dim=1)
            scores = torch.einsum("qhd,khd->hqk", q.float(), keys.float()) / (self.q_scaling * math.sqrt(hd))
            allowed = torch.arange(past + n)[None, :] <= (past + torch.arange(n))[:, None]
            scores = scores.masked_fill(~allowed[None], float("-inf"))
            ctx = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values.float())
            out[start:start + n] = ctx.reshape(n, hq * hd).to(x.dtype)
            start += n
        assert start == x.shape[0]
        return Tensor(out)


def _rope_neox(x, pos, inv_freq, r):
    """In fp32, rounded back to x's dtype (fp32 networks: bit-for-bit what it was)."""
    ang = pos[:, None] * inv_freq[None, :]  # [n, r/2]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    x32 = x.float()
    x1, x2, rest = x32[..., :r // 2], x32[..., r // 2:r], x32[..., r:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1).to(x.dtype)
