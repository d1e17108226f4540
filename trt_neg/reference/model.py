"""A readable torch Qwen3.5 text backbone plus the NEG weights (the reference model).

Read top to bottom: norms, rotary embedding, gated full attention, Gated DeltaNet, MLP,
decoder layer, text model, and ``DarwinNegForCausalLM`` with ``from_state_dict`` and
``from_pretrained``. The
architecture is DESIGN.md section 3; parameter names are the HF text-layout names, so the
state dict *is* the checkpoint (``checkpoint/hf.py`` ``hf_text_weight_shapes``).

Two ways to run it:

* ``DarwinNegForCausalLM.forward(input_ids [B, T])``: whole sequences, no cache (parity
  tests against transformers).
* ``model.model(input_ids, ctx)`` with a :class:`BatchContext` holding a :class:`SlotCache`
  and the slots of the rows: the per-sequence state (KV cache of full-attention layers,
  conv and fp32 recurrent state of Gated DeltaNet layers) is read from and written to
  those slots. ``model_runner.ReferenceModelRunner`` drives this (prefill, batched decode
  of slots with different lengths, release).

dtypes: parameters, activations and the residual stream are in the model dtype (fp32,
bf16 or fp16), as in transformers; every norm, the rotary angles, the decay/gate maths
and the recurrent state are fp32; logits are returned in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint.hf import NEG_ANY_SHAPE, HFCheckpoint, hf_text_weight_shapes, neg_weight_shapes
from ..checkpoint.safetensors_io import CheckpointError
from ..config import FULL_ATTENTION, BackboneConfig, DarwinNegConfig
from .ops import gated_delta_rule, l2norm


# ------------------------------------------------------------------------------------
# Per-sequence state slots and the description of one forward batch
# ------------------------------------------------------------------------------------

class SlotCache:
    """Per-slot state of every layer, preallocated for ``max_slots`` sequences.

    full attention:  key/value [max_slots, H_kv, max_seq_len, head_dim] (model dtype)
    Gated DeltaNet:  conv [max_slots, conv_dim, kernel-1] (model dtype; the last inputs of
                     the causal conv) and recurrent [max_slots, H_v, d_k, d_v] (fp32)
    """

    def __init__(self, config: BackboneConfig, max_slots: int, max_seq_len: int,
                 dtype: torch.dtype, device: torch.device | str):
        self.max_slots, self.max_seq_len = max_slots, max_seq_len
        self.key: dict[int, torch.Tensor] = {}
        self.value: dict[int, torch.Tensor] = {}
        self.conv: dict[int, torch.Tensor] = {}
        self.recurrent: dict[int, torch.Tensor] = {}
        c = config
        for i, kind in enumerate(c.layer_types):
            if kind == FULL_ATTENTION:
                shape = (max_slots, c.num_key_value_heads, max_seq_len, c.head_dim)
                self.key[i] = torch.zeros(shape, dtype=dtype, device=device)
                self.value[i] = torch.zeros(shape, dtype=dtype, device=device)
            else:
                self.conv[i] = torch.zeros(max_slots, c.linear_conv_dim, c.linear_conv_kernel_dim - 1,
                                           dtype=dtype, device=device)
                self.recurrent[i] = torch.zeros(max_slots, c.linear_num_value_heads, c.linear_key_head_dim,
                                                c.linear_value_head_dim, dtype=torch.float32, device=device)

    def reset(self, slots: torch.Tensor) -> None:
        """Zero the recurrent and conv state of ``slots`` (a new sequence starts there).

        The KV cache is not cleared: a batched step gathers each slot's keys up to the longest
        row, so a shorter row sees a previous occupant's stale entries, but attention zeroes
        every key and value at or past the row's own length before the masked product (a
        stale NaN or inf would otherwise turn the row into NaN: 0 * NaN is NaN).
        """
        for tensor in (*self.conv.values(), *self.recurrent.values()):
            tensor[slots] = 0


@dataclass
class BatchContext:
    """What one forward needs to know besides the token ids [B, T].

    positions:  [B, T] absolute position of each token in its sequence.
    num_tokens: [B] real tokens per row; the rest of the row is right padding, which
                neither writes the cache nor moves the recurrent state.
    cache, slots: the slot cache and the slot of each row [B]; None for a cache-less
                forward over whole sequences (state starts at zero, nothing is kept).
    """

    positions: torch.Tensor
    num_tokens: torch.Tensor
    cache: SlotCache | None = None
    slots: torch.Tensor | None = None

    @classmethod
    def whole_sequences(cls, input_ids: torch.Tensor) -> "BatchContext":
        batch, length = input_ids.shape
        positions = torch.arange(length, device=input_ids.device).expand(batch, length)
        return cls(positions, torch.full((batch,), length, device=input_ids.device))

    @property
    def valid(self) -> torch.Tensor:
        """[B, T] True for real tokens."""
        t = torch.arange(self.positions.shape[1], device=self.positions.device)
        return t[None, :] < self.num_tokens[:, None]


# ------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------

class Qwen3_5RMSNorm(nn.Module):
    """Zero-centred RMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + w), computed in fp32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).to(x.dtype)


class Qwen3_5RMSNormGated(nn.Module):
    """The Gated DeltaNet output norm: plain w * rmsnorm(o) (per head), times silu(z)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        y = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        # transformers rounds the normalised value to the model dtype before the weight.
        return (self.weight * y * F.silu(z.float())).to(x.dtype)


class Qwen3_5RotaryEmbedding(nn.Module):
    """NeoX (rotate-half) RoPE angles for the first ``rotary_dim`` dims of each head.

    Text-only M-RoPE (the published model's three position streams all equal) is plain
    RoPE, so one position per token is enough.
    """

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.rotary_dim = config.rotary_dim
        # Computed on the CPU in fp32 exactly like transformers, then cached per device.
        self._inv_freq_cpu = 1.0 / (config.rope_theta ** (
            torch.arange(0, self.rotary_dim, 2, dtype=torch.float32, device="cpu") / self.rotary_dim))
        self._inv_freq: dict[torch.device, torch.Tensor] = {}

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, T] -> cos, sin [B, T, rotary_dim] in ``dtype``."""
        inv_freq = self._inv_freq.get(positions.device)
        if inv_freq is None:
            inv_freq = self._inv_freq[positions.device] = self._inv_freq_cpu.to(positions.device)
        freqs = positions[..., None].float() * inv_freq
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, heads, head_dim]; cos/sin [B, T, rotary_dim]; rotates the leading dims."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot], x[..., rot:]
    x1, x2 = x_rot[..., : rot // 2], x_rot[..., rot // 2:]
    rotated = torch.cat((-x2, x1), dim=-1)
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    return torch.cat((x_rot * cos + rotated * sin, x_pass), dim=-1)


class Qwen3_5GatedAttention(nn.Module):
    """Full attention with an output gate: o_proj(attention * sigmoid(gate)).

    q_proj yields, per head, [query_h | gate_h]; q_norm/k_norm (zero-centred, over
    head_dim) come before RoPE; GQA shares each KV head between consecutive query heads.
    """

    def __init__(self, config: BackboneConfig, layer_idx: int):
        super().__init__()
        c = config
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        bias = c.attention_bias
        self.q_proj = nn.Linear(c.hidden_size, 2 * self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(c.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(c.hidden_size, self.num_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, c.hidden_size, bias=bias)
        self.q_norm = Qwen3_5RMSNorm(self.head_dim, c.rms_norm_eps)
        self.k_norm = Qwen3_5RMSNorm(self.head_dim, c.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], ctx: BatchContext) -> torch.Tensor:
        batch, length, _ = x.shape
        query, gate = self.q_proj(x).view(batch, length, self.num_heads, 2 * self.head_dim).chunk(2, dim=-1)
        query = apply_rotary(self.q_norm(query), *rope)
        key = apply_rotary(self.k_norm(self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim)), *rope)
        value = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim)

        if ctx.cache is None:  # the new tokens are the whole sequence
            key_pos = ctx.positions
            key, value = key.transpose(1, 2), value.transpose(1, 2)  # [B, H_kv, T, D]
        else:  # write the new tokens into the slots, attend over each slot's prefix
            k_cache, v_cache = ctx.cache.key[self.layer_idx], ctx.cache.value[self.layer_idx]
            rows, cols = ctx.valid.nonzero(as_tuple=True)
            slot, pos = ctx.slots[rows], ctx.positions[rows, cols]
            k_cache[slot, :, pos] = key[rows, cols]
            v_cache[slot, :, pos] = value[rows, cols]
            lengths = ctx.positions[:, 0] + ctx.num_tokens
            span = int(lengths.max())
            key, value = k_cache[ctx.slots, :, :span], v_cache[ctx.slots, :, :span]
            key_pos = torch.arange(span, device=x.device).expand(batch, span)
            # Past a row's own length lie a previous occupant's entries (or nothing written):
            # masked below, but a non-finite one would still poison the product, so zero them.
            stale = (key_pos >= lengths[:, None])[:, None, :, None]
            key, value = key.masked_fill(stale, 0), value.masked_fill(stale, 0)
        # Causal by absolute position: token at p sees keys at positions <= p of its row.
        mask = key_pos[:, None, None, :] <= ctx.positions[:, None, :, None]  # [B, 1, T, S]
        groups = self.num_heads // self.num_kv_heads
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key, value, attn_mask=mask,
                                             scale=self.head_dim ** -0.5)
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.o_proj(out * torch.sigmoid(gate.reshape(batch, length, -1)))


class Qwen3_5GatedDeltaNet(nn.Module):
    """Gated DeltaNet (linear attention) with a causal depthwise conv in front.

    in_proj_qkv -> conv1d (kernel K, causal, depthwise) + SiLU -> split q | k | v;
    q, k L2-normalised (q scaled by dk^-0.5) and repeated to the value heads;
    beta = sigmoid(b), g = -exp(A_log) * softplus(a + dt_bias);
    gated delta rule (fp32 state) -> gated RMSNorm with silu(z) -> out_proj.
    """

    def __init__(self, config: BackboneConfig, layer_idx: int):
        super().__init__()
        c = config
        self.layer_idx = layer_idx
        self.num_k_heads, self.num_v_heads = c.linear_num_key_heads, c.linear_num_value_heads
        self.head_k_dim, self.head_v_dim = c.linear_key_head_dim, c.linear_value_head_dim
        self.key_dim, self.value_dim, self.conv_dim = c.linear_key_dim, c.linear_value_dim, c.linear_conv_dim
        self.kernel = c.linear_conv_kernel_dim
        self.in_proj_qkv = nn.Linear(c.hidden_size, self.conv_dim, bias=False)
        self.in_proj_z = nn.Linear(c.hidden_size, self.value_dim, bias=False)
        self.in_proj_b = nn.Linear(c.hidden_size, self.num_v_heads, bias=False)
        self.in_proj_a = nn.Linear(c.hidden_size, self.num_v_heads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, self.kernel, groups=self.conv_dim, bias=False)
        self.dt_bias = nn.Parameter(torch.ones(self.num_v_heads))
        self.A_log = nn.Parameter(torch.zeros(self.num_v_heads))
        self.norm = Qwen3_5RMSNormGated(self.head_v_dim, c.rms_norm_eps)
        self.out_proj = nn.Linear(self.value_dim, c.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> torch.Tensor:
        batch, length, _ = x.shape
        valid = ctx.valid

        # Causal depthwise conv over [previous K-1 inputs | new inputs] (channels first).
        mixed = self.in_proj_qkv(x).transpose(1, 2)  # [B, C, T]
        if ctx.cache is None:
            history = mixed.new_zeros(batch, self.conv_dim, self.kernel - 1)
        else:
            history = ctx.cache.conv[self.layer_idx][ctx.slots]
        window = torch.cat((history, mixed), dim=-1)  # [B, C, K-1+T]
        mixed = F.silu(F.conv1d(window, self.conv1d.weight, groups=self.conv_dim))  # [B, C, T]
        if ctx.cache is not None:  # keep the last K-1 real inputs of each row
            idx = ctx.num_tokens[:, None] + torch.arange(self.kernel - 1, device=x.device)
            ctx.cache.conv[self.layer_idx][ctx.slots] = window.gather(
                2, idx[:, None, :].expand(batch, self.conv_dim, -1))
        q, k, v = mixed.transpose(1, 2).split([self.key_dim, self.key_dim, self.value_dim], dim=-1)

        # fp32 from here to the output norm.
        q = l2norm(q.float().reshape(batch, length, self.num_k_heads, self.head_k_dim))
        k = l2norm(k.float().reshape(batch, length, self.num_k_heads, self.head_k_dim))
        q = q * self.head_k_dim ** -0.5
        v = v.float().reshape(batch, length, self.num_v_heads, self.head_v_dim)
        groups = self.num_v_heads // self.num_k_heads  # consecutive value heads share a key head
        q, k = q.repeat_interleave(groups, dim=2), k.repeat_interleave(groups, dim=2)
        beta = torch.sigmoid(self.in_proj_b(x)).float()
        g = -self.A_log.float().exp() * F.softplus(self.in_proj_a(x).float() + self.dt_bias.float())
        # Right padding: g = 0 and beta = 0 leave the state untouched.
        beta, g = beta * valid[..., None], g * valid[..., None]

        if ctx.cache is None:
            state = q.new_zeros(batch, self.num_v_heads, self.head_k_dim, self.head_v_dim)
        else:
            state = ctx.cache.recurrent[self.layer_idx][ctx.slots]
        out, state = gated_delta_rule(q, k, v, g, beta, state)
        if ctx.cache is not None:
            ctx.cache.recurrent[self.layer_idx][ctx.slots] = state

        z = self.in_proj_z(x).reshape(batch, length, self.num_v_heads, self.head_v_dim)
        out = self.norm(out.to(x.dtype), z)
        return self.out_proj(out.reshape(batch, length, self.value_dim))


class Qwen3_5MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), no bias."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen3_5DecoderLayer(nn.Module):
    """Pre-norm residual block: token mixer (attention or Gated DeltaNet), then MLP."""

    def __init__(self, config: BackboneConfig, layer_idx: int):
        super().__init__()
        self.layer_type = config.layer_types[layer_idx]
        if self.layer_type == FULL_ATTENTION:
            self.self_attn = Qwen3_5GatedAttention(config, layer_idx)
        else:
            self.linear_attn = Qwen3_5GatedDeltaNet(config, layer_idx)
        self.input_layernorm = Qwen3_5RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = Qwen3_5RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = Qwen3_5MLP(config)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], ctx: BatchContext) -> torch.Tensor:
        h = self.input_layernorm(x)
        if self.layer_type == FULL_ATTENTION:
            h = self.self_attn(h, rope, ctx)
        else:
            h = self.linear_attn(h, ctx)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3_5TextModel(nn.Module):
    """Embeddings, decoder layers, final norm. Returns the final-norm hidden states."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Qwen3_5DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Qwen3_5RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = Qwen3_5RotaryEmbedding(config)

    def forward(self, input_ids: torch.Tensor, ctx: BatchContext | None = None) -> torch.Tensor:
        """input_ids [B, T] -> hidden [B, T, H] (after ``norm``: what the LM head sees)."""
        ctx = ctx or BatchContext.whole_sequences(input_ids)
        x = self.embed_tokens(input_ids)
        rope = self.rotary_emb(ctx.positions, x.dtype)
        for layer in self.layers:
            x = layer(x, rope, ctx)
        return self.norm(x)


# ------------------------------------------------------------------------------------
# The causal LM with NEG
# ------------------------------------------------------------------------------------

class DarwinNegForCausalLM(nn.Module):
    """Qwen3.5 text backbone + LM head, plus the NEG head/gate tensors (fp32).

    NEG maths lives in ``trt_neg.neg``; this model only holds its weights
    (``neg_state_dict``) and exposes the final-norm hidden state it reads.
    """

    def __init__(self, config: DarwinNegConfig):
        super().__init__()
        self.config = config
        b = config.backbone
        self.model = Qwen3_5TextModel(b)
        self.lm_head = nn.Linear(b.hidden_size, b.vocab_size, bias=False)
        if b.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self._neg: dict[str, torch.Tensor] = {}

    # --- loading ------------------------------------------------------------------------
    @classmethod
    def from_state_dict(cls, config: DarwinNegConfig, tensors: Mapping[str, torch.Tensor],
                        dtype: torch.dtype | str = torch.float32,
                        device: str | torch.device = "cpu") -> "DarwinNegForCausalLM":
        """The model holding ``tensors``: canonical HF text-layout names plus the five NEG names.

        Names and shapes are checked against the checkpoint table (``checkpoint/hf.py``
        ``hf_text_weight_shapes`` and ``neg_weight_shapes``); a tied model takes no
        ``lm_head.weight``. Each tensor is read from ``tensors`` once and copied into the
        preallocated parameter, so a lazy mapping keeps at most one source tensor alive.
        Backbone parameters take ``dtype`` (or its name); the NEG tensors stay fp32.
        """
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        b = config.backbone
        expected = hf_text_weight_shapes(b)
        expected_neg = neg_weight_shapes(b, config.neg)
        names = set(tensors)
        missing = [n for n in (*expected, *expected_neg) if n not in names]
        unexpected = sorted(names - set(expected) - set(expected_neg))
        if missing or unexpected:
            problem = "missing from the state dict" if missing else "not a tensor of this config"
            raise CheckpointError("<state dict>", problem, (missing or unexpected)[0])
        with torch.device("meta"):
            model = cls(config)
        model = model.to(dtype=dtype).to_empty(device=device)
        if b.tie_word_embeddings:  # to_empty unties shared parameters
            model.lm_head.weight = model.model.embed_tokens.weight
        params = dict(model.named_parameters())
        if set(params) != set(expected):  # the table in checkpoint/hf.py is the source of truth
            raise RuntimeError(f"reference model parameters differ from the checkpoint table: "
                               f"{sorted(set(params) ^ set(expected))[:5]}")

        def checked(name: str, shape: tuple[int, ...]) -> torch.Tensor:
            tensor = tensors[name]
            if name in NEG_ANY_SHAPE and tensor.numel() == math.prod(shape):
                return tensor.reshape(shape)  # DESIGN.md's [d] / scalar forms of the NEG vectors
            if tuple(tensor.shape) != tuple(shape):
                raise CheckpointError("<state dict>", f"shape {list(tensor.shape)}, the config needs {list(shape)}",
                                      name)
            return tensor

        with torch.no_grad():
            for name, shape in expected.items():
                params[name].copy_(checked(name, shape))
        model._neg = {name: checked(name, shape).to(device=device, dtype=torch.float32)
                      for name, shape in expected_neg.items()}
        return model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                        key_map: dict[str, str] | None = None) -> "DarwinNegForCausalLM":
        """Load an HF Darwin-NEG checkpoint (published or text key layout).

        ``dtype`` may also be a name ("bfloat16"); ``key_map`` renames stored NEG tensors.
        Tensors are read lazily, one at a time, through :meth:`from_state_dict`.
        """
        checkpoint = HFCheckpoint(path, key_map=key_map)
        return cls.from_state_dict(checkpoint.config, _LazyTensors(checkpoint), dtype=dtype, device=device)

    # --- properties -------------------------------------------------------------------
    @property
    def neg_state_dict(self) -> dict[str, torch.Tensor]:
        """The five NEG tensors (``checkpoint.hf.NEG_TENSORS``), fp32, on the model's device."""
        device = self.device
        for name, tensor in self._neg.items():
            if tensor.device != device:
                self._neg[name] = tensor.to(device)
        return dict(self._neg)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    # --- running ------------------------------------------------------------------------
    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden [..., H] -> logits [..., V] in fp32."""
        return self.lm_head(hidden).float()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Whole sequences without a cache: input_ids [B, T] -> logits [B, T, V] (fp32)."""
        return self.compute_logits(self.model(input_ids))

    def allocate_cache(self, max_slots: int, max_seq_len: int) -> SlotCache:
        return SlotCache(self.config.backbone, max_slots, max_seq_len, self.dtype, self.device)


class _LazyTensors(Mapping):
    """An HF checkpoint as a read-on-access mapping of canonical name -> tensor."""

    def __init__(self, checkpoint: HFCheckpoint):
        self._checkpoint = checkpoint
        self._names = dict.fromkeys(checkpoint.names())  # ordered, O(1) membership

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        return self._checkpoint.get(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
