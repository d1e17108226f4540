"""Run a converted (sharded) TensorRT-LLM checkpoint on CPU, simulating tensor and pipeline parallelism.

:class:`ShardedCheckpoint` loads ``config.json`` and every ``rank{N}.safetensors``,
checking each file against the contract (``contract.rank_plan``: names, shapes, dtypes).
:meth:`ShardedCheckpoint.forward` runs the Qwen3.5 + NEG maths on the shards exactly as
the ranks of an engine would: each tp rank computes its partial result from its own
tensors (column-parallel GEMMs on its heads / channels, row-parallel GEMMs giving partial
sums) and the partial sums are added in-process where the engine all-reduces; pipeline
stages hand the hidden state on; the LM head is column-parallel over the (padded)
vocabulary and gathered. Comparing its logits with the unsharded HF model checks the
converter, the split rules and the contract in one go.

The maths is a compact functional forward over the contract's tensor names (it knows
nothing of HF names), in fp32 by default or fp64.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import contract as C
from .safetensors_io import CheckpointError, SafetensorsFile


@dataclass
class _Rank:
    rank: int
    tp_rank: int
    pp_rank: int
    tensors: dict[str, torch.Tensor]


class ShardedCheckpoint:
    def __init__(self, directory: str | Path, dtype: torch.dtype = torch.float32):
        self.directory = Path(directory)
        config_path = self.directory / "config.json"
        if not config_path.exists():
            raise CheckpointError(config_path, "not found (expected a converted checkpoint directory)")
        data = json.loads(config_path.read_text())
        self.config, self.mapping, self.dtype_name = C.config_from_checkpoint(data, str(config_path))
        self.raw_config = data
        self.compute_dtype = dtype
        b = self.config.backbone
        model_dtype = getattr(torch, self.dtype_name)
        hf_shapes = C.hf_shapes_for(self.config)
        self.ranks: list[_Rank] = []
        for rank in range(self.mapping.world_size):
            path = self.directory / f"rank{rank}.safetensors"
            if not path.exists():
                raise CheckpointError(path, "missing rank file")
            handle = SafetensorsFile(path)
            plan = C.rank_plan(self.config, self.mapping, rank, model_dtype, hf_shapes)
            expected = {t.name: t for t in plan}
            extra = sorted(set(handle.keys()) - set(expected))
            if extra:
                raise CheckpointError(path, "tensor not in the checkpoint contract", extra[0])
            tensors = {}
            for name, t in expected.items():
                if name not in handle.header:
                    raise CheckpointError(path, "missing tensor required by the checkpoint contract", name)
                if handle.shape(name) != t.shape:
                    raise CheckpointError(path, f"shape {list(handle.shape(name))}, contract says {list(t.shape)}",
                                          name)
                if handle.dtype(name) != t.dtype:
                    raise CheckpointError(path, f"dtype {handle.dtype(name)}, contract says {t.dtype}", name)
                tensors[name] = handle.get(name).to(dtype)
            self.ranks.append(_Rank(rank, self.mapping.tp_rank(rank), self.mapping.pp_rank(rank), tensors))
        self.backbone = b

    # --------------------------------------------------------------------------------
    def stage(self, pp_rank: int) -> list[_Rank]:
        return [r for r in self.ranks if r.pp_rank == pp_rank]

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, return_hidden: bool = False):
        """Logits [B, T, vocab] (fp32/fp64) of ``input_ids`` [B, T] (or [T])."""
        b, m = self.backbone, self.mapping
        squeeze = input_ids.dim() == 1
        ids = input_ids.unsqueeze(0) if squeeze else input_ids
        T = ids.shape[1]
        positions = torch.arange(T)
        x = None
        for pp_rank in range(m.pp_size):
            ranks = self.stage(pp_rank)
            if pp_rank == 0:
                x = ranks[0].tensors["transformer.vocab_embedding.weight"][ids]
            layers = m.pp_layers(b.num_hidden_layers, pp_rank)
            for local, layer in enumerate(layers):
                p = f"transformer.layers.{local}."
                kind = b.layer_types[layer]
                partials = []
                for r in ranks:
                    h = _rms_norm(x, r.tensors[p + "input_layernorm.weight"], b.rms_norm_eps)
                    if kind == C.FULL_ATTENTION:
                        partials.append(self._attention(r.tensors, p + "attention.", h, positions))
                    else:
                        partials.append(self._gated_delta_net(r.tensors, p + "recurrent.", h))
                x = x + _all_reduce(partials)
                if kind == C.FULL_ATTENTION and b.attention_bias:
                    x = x + ranks[0].tensors[p + "attention.dense.bias"]
                partials = []
                for r in ranks:
                    h = _rms_norm(x, r.tensors[p + "post_layernorm.weight"], b.rms_norm_eps)
                    t = r.tensors
                    inter = F.silu(h @ t[p + "mlp.fc.weight"].T) * (h @ t[p + "mlp.gate.weight"].T)
                    partials.append(inter @ t[p + "mlp.proj.weight"].T)
                x = x + _all_reduce(partials)
        last = self.stage(m.pp_size - 1)
        hidden = [_rms_norm(x, r.tensors["transformer.ln_f.weight"], b.rms_norm_eps) for r in last]
        logits = torch.cat([h @ r.tensors["lm_head.weight"].T for h, r in zip(hidden, last)], dim=-1)
        logits = logits[..., : b.vocab_size]  # all-gather, then drop the vocabulary padding
        if squeeze:
            logits, hidden = logits[0], [h[0] for h in hidden]
        return (logits, hidden[0]) if return_hidden else logits

    __call__ = forward

    # --------------------------------------------------------------------------------
    def _attention(self, t: dict, p: str, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        b, tp = self.backbone, self.mapping.tp_size
        hd = b.head_dim
        hq, hkv = b.num_attention_heads // tp, C.kv_heads_per_rank(b, tp)
        B, T, _ = h.shape
        qkv = h @ t[p + "qkv.weight"].T
        gate = h @ t[p + "output_gate.weight"].T
        if b.attention_bias:
            qkv, gate = qkv + t[p + "qkv.bias"], gate + t[p + "output_gate.bias"]
        q, k, v = qkv.split([hq * hd, hkv * hd, hkv * hd], dim=-1)
        q = _rms_norm(q.reshape(B, T, hq, hd), t[p + "q_layernorm.weight"], b.rms_norm_eps)
        k = _rms_norm(k.reshape(B, T, hkv, hd), t[p + "k_layernorm.weight"], b.rms_norm_eps)
        v = v.reshape(B, T, hkv, hd)
        q, k = _rope(q, k, positions, b.rotary_dim, b.rope_theta)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # [B, heads, T, hd]
        k = k.repeat_interleave(hq // hkv, dim=1)
        v = v.repeat_interleave(hq // hkv, dim=1)
        scores = (q @ k.transpose(-1, -2)) * hd ** -0.5
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
        o = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, hq * hd)
        o = o * torch.sigmoid(gate)
        return o @ t[p + "dense.weight"].T

    def _gated_delta_net(self, t: dict, p: str, h: torch.Tensor) -> torch.Tensor:
        b, tp = self.backbone, self.mapping.tp_size
        hk, hv = C.linear_key_heads_per_rank(b, tp), b.linear_num_value_heads // tp
        dk, dv, K = b.linear_key_head_dim, b.linear_value_head_dim, b.linear_conv_kernel_dim
        B, T, _ = h.shape
        mixed = h @ t[p + "in_proj_qkv.weight"].T  # [B, T, conv channels of this rank]
        w = t[p + "conv1d.weight"].reshape(mixed.shape[-1], K)
        mixed = F.conv1d(mixed.transpose(1, 2), w.unsqueeze(1), padding=K - 1, groups=w.shape[0])[..., :T]
        mixed = F.silu(mixed).transpose(1, 2)
        q, k, v = mixed.split([hk * dk, hk * dk, hv * dv], dim=-1)
        q = _l2norm(q.reshape(B, T, hk, dk)) * dk ** -0.5
        k = _l2norm(k.reshape(B, T, hk, dk))
        v = v.reshape(B, T, hv, dv)
        q, k = q.repeat_interleave(hv // hk, dim=2), k.repeat_interleave(hv // hk, dim=2)
        z = (h @ t[p + "in_proj_z.weight"].T).reshape(B, T, hv, dv)
        beta = torch.sigmoid(h @ t[p + "in_proj_b.weight"].T)
        g = -torch.exp(t[p + "A_log"]) * F.softplus(h @ t[p + "in_proj_a.weight"].T + t[p + "dt_bias"])
        state = torch.zeros(B, hv, dk, dv, dtype=h.dtype)
        out = torch.empty(B, T, hv, dv, dtype=h.dtype)
        for i in range(T):
            state = state * g[:, i].exp()[..., None, None]
            kt = k[:, i]  # [B, hv, dk]
            delta = beta[:, i, :, None] * (v[:, i] - torch.einsum("bhkv,bhk->bhv", state, kt))
            state = state + kt[..., None] * delta[..., None, :]
            out[:, i] = torch.einsum("bhkv,bhk->bhv", state, q[:, i])
        o = _rms_norm(out, t[p + "norm.weight"], b.rms_norm_eps) * F.silu(z)
        return o.reshape(B, T, hv * dv) @ t[p + "out_proj.weight"].T


def _all_reduce(partials: list[torch.Tensor]) -> torch.Tensor:
    total = partials[0]
    for part in partials[1:]:
        total = total + part
    return total


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm with an already folded weight (the contract stores 1 + w for zero-centred norms)."""
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _l2norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def _rope(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, rotary_dim: int, base: float):
    """NeoX (rotate-half) RoPE on the first ``rotary_dim`` dims of each head; q, k: [B, T, heads, hd]."""
    inv_freq = 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.float64) / rotary_dim))
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    cos = torch.cat([angles.cos(), angles.cos()], -1).to(q.dtype)[None, :, None, :]
    sin = torch.cat([angles.sin(), angles.sin()], -1).to(q.dtype)[None, :, None, :]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
        half = rotary_dim // 2
        rotated = torch.cat([-rot[..., half:], rot[..., :half]], -1)
        return torch.cat([rot * cos + rotated * sin, rest], -1)

    return rotate(q), rotate(k)


def load_sharded(directory: str | Path, dtype: torch.dtype = torch.float32) -> ShardedCheckpoint:
    return ShardedCheckpoint(directory, dtype)


# ------------------------------------------------------------------------------------
# The inverse: a converted checkpoint back to HF tensors (for the reference model)
# ------------------------------------------------------------------------------------

def _inverse_transform(entry: C.Entry, tensor: torch.Tensor) -> torch.Tensor:
    if entry.transform == "fold_norm":
        return tensor - 1.0
    if entry.transform == "conv_weight":
        return tensor.squeeze(-1)
    return tensor


def unshard(directory: str | Path, dtype: torch.dtype = torch.float32):
    """(model description, HF canonical tensors) rebuilt from a converted checkpoint of any tp/pp.

    Every rank's tensor is scattered back to the HF rows it came from (``contract.pieces``)
    after inverting its transform; rows held by several ranks (replicated tensors, KV and
    key heads replicated when tp exceeds them) must agree, or :class:`CheckpointError`.
    Round-trips are exact in fp32 up to the rounding of ``1 + w`` and ``-exp``/``log``.
    """
    sharded = ShardedCheckpoint(directory, dtype)
    config, mapping = sharded.config, sharded.mapping
    hf_shapes = C.hf_shapes_for(config)
    model_dtype = getattr(torch, sharded.dtype_name)
    out: dict[str, torch.Tensor] = {}
    filled: dict[str, torch.Tensor] = {}
    for r in sharded.ranks:
        for t in C.rank_plan(config, mapping, r.rank, model_dtype, hf_shapes):
            value = _inverse_transform(t.entry, r.tensors[t.name])
            if not t.shape:
                _scatter(out, filled, t.sources[0], (), value, slice(None), None, r.rank, t.name)
                continue
            row = 0
            for part in t.parts:
                rows = value[row:row + part.rows]
                row += part.rows
                if part.source is None:
                    continue
                source = part.source
                shape = hf_shapes[source]
                _scatter(out, filled, source, shape, rows, slice(part.start, part.stop), part.cols, r.rank, t.name)
    missing = [name for name, mask in filled.items() if not bool(mask.all())]
    if missing or set(out) != set(hf_shapes):
        raise CheckpointError(sharded.directory, "the shards do not cover every HF tensor",
                              (missing or sorted(set(hf_shapes) - set(out)))[0])
    return config, out


def _scatter(out, filled, source, shape, rows, where, cols, rank, name) -> None:
    if source not in out:
        out[source] = torch.zeros(shape, dtype=rows.dtype)
        filled[source] = torch.zeros(shape[:2] if len(shape) >= 2 else shape, dtype=torch.bool)
    target, mask = out[source], filled[source]
    if not shape:
        region, seen = (target, mask)
    else:
        region = target[where] if cols is None else target[where, cols[0]:cols[1]]
        seen = mask[where] if cols is None or mask.dim() < 2 else mask[where, cols[0]:cols[1]]
    if bool(seen.any()) and not torch.equal(region[seen], rows[seen]):
        raise CheckpointError(f"rank{rank}.safetensors", "replicated rows disagree with another rank's copy", name)
    if not shape:
        out[source] = rows.clone()
        filled[source] = torch.ones((), dtype=torch.bool)
        return
    region.copy_(rows)
    seen.fill_(True)


def reference_model_from_converted(directory: str | Path, dtype: torch.dtype = torch.float32):
    """The reference backend (``trt_neg.reference.model.DarwinNegForCausalLM``) on a converted checkpoint."""
    from ..reference.model import DarwinNegForCausalLM

    config, tensors = unshard(directory, torch.float32)
    with torch.device("meta"):
        model = DarwinNegForCausalLM(config)
    model = model.to(dtype=dtype).to_empty(device="cpu")
    if config.backbone.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])
    model._neg = {name: tensors[name].float() for name in _NEG}
    return model.eval().requires_grad_(False)


_NEG = ("neg_head.fc1.weight", "neg_head.fc1.bias", "neg_head.fc2.weight", "neg_head.fc2.bias", "neg_gate.threshold")
