"""The TensorRT-LLM checkpoint contract: one table of every tensor, and the mapping rules.

This module is the single source of truth for the converted (TensorRT-LLM 1.2.x style)
checkpoint of Darwin-NEG. The converter (``convert.py``) writes what it describes, the
simulation loader (``simulate.py``) validates and reads what it describes, and the
engine's network definition names its parameters after it. ``docs/checkpoint_contract.md``
explains every entry.

A checkpoint is a directory with ``config.json`` and one ``rank{N}.safetensors`` per rank
(``N = pp_rank * tp_size + tp_rank``, TensorRT-LLM's ``Mapping``). Layer names use the
*local* layer index of their pipeline stage, as TensorRT-LLM's converters do.

Each entry of :data:`CONTRACT` names a checkpoint tensor, the HF tensor(s) it comes from,
its transform and its tensor-parallel split rule. :func:`pieces` turns (entry, rank) into
the row ranges of the HF tensors that make up that rank's tensor, so sharding and
de-interleaving are one mechanism that streams (rows are contiguous bytes in safetensors).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping as TMapping

import torch

from ..config import FULL_ATTENTION, LINEAR_ATTENTION, BackboneConfig, DarwinNegConfig

ARCHITECTURE = "DarwinNegForCausalLM"
CONTRACT_VERSION = 1
DTYPES = ("bfloat16", "float16", "float32")

# HF layer kinds -> TensorRT-LLM's layer_types vocabulary (cpp/tensorrt_llm/runtime/gptJsonConfig.cpp).
LAYER_TYPE_TO_TRTLLM = {FULL_ATTENTION: "attention", LINEAR_ATTENTION: "recurrent"}
LAYER_TYPE_FROM_TRTLLM = {v: k for k, v in LAYER_TYPE_TO_TRTLLM.items()}


class ShardingError(ValueError):
    """A tensor/pipeline-parallel layout the model's dimensions do not allow."""


# ------------------------------------------------------------------------------------
# Mapping (TensorRT-LLM's rank layout, tp fastest)
# ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mapping:
    tp_size: int = 1
    pp_size: int = 1

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size

    def rank(self, tp_rank: int, pp_rank: int) -> int:
        return pp_rank * self.tp_size + tp_rank

    def tp_rank(self, rank: int) -> int:
        return rank % self.tp_size

    def pp_rank(self, rank: int) -> int:
        return rank // self.tp_size

    def pp_layers(self, num_layers: int, pp_rank: int) -> list[int]:
        """Global layer indices of a stage: ``torch.tensor_split`` semantics (first stages get one more)."""
        base, extra = divmod(num_layers, self.pp_size)
        start = pp_rank * base + min(pp_rank, extra)
        return list(range(start, start + base + (1 if pp_rank < extra else 0)))

    def to_dict(self) -> dict[str, int]:
        return {"world_size": self.world_size, "tp_size": self.tp_size, "pp_size": self.pp_size}


def check_mapping(b: BackboneConfig, m: Mapping) -> None:
    """Raise :class:`ShardingError` (naming the dimension) unless ``b`` can be split as ``m``."""
    if m.tp_size < 1 or m.pp_size < 1:
        raise ShardingError(f"tp_size and pp_size must be >= 1; got tp {m.tp_size}, pp {m.pp_size}")
    tp = m.tp_size
    problems = []
    if b.num_attention_heads % tp:
        problems.append(f"num_attention_heads ({b.num_attention_heads}) is not divisible by tp {tp}")
    if b.num_key_value_heads % tp and tp % b.num_key_value_heads:
        problems.append(f"num_key_value_heads ({b.num_key_value_heads}) neither divides nor is divisible by tp {tp}")
    if b.linear_num_value_heads % tp:
        problems.append(f"linear_num_value_heads ({b.linear_num_value_heads}) is not divisible by tp {tp}")
    elif b.linear_num_key_heads % tp and tp % b.linear_num_key_heads:
        problems.append(f"linear_num_key_heads ({b.linear_num_key_heads}) neither divides nor is divisible by tp "
                        f"{tp} (a Gated DeltaNet key head must sit on the rank of every value head that shares it)")
    if b.intermediate_size % tp:
        problems.append(f"intermediate_size ({b.intermediate_size}) is not divisible by tp {tp}")
    if problems:
        raise ShardingError(f"tensor parallel size {tp} is not possible for this model: " + "; ".join(problems))
    if m.pp_size > b.num_hidden_layers:
        raise ShardingError(f"pipeline parallel size {m.pp_size} exceeds the number of layers ({b.num_hidden_layers})")


def padded_vocab_size(vocab_size: int, tp_size: int) -> int:
    """``lm_head`` rows: the vocabulary padded to a multiple of tp (TensorRT-LLM's ``pad_vocab_size``)."""
    return -(-vocab_size // tp_size) * tp_size


def kv_heads_per_rank(b: BackboneConfig, tp: int) -> int:
    """KV heads on one rank; when tp > num_key_value_heads each KV head is replicated (as TensorRT-LLM does)."""
    return max(1, b.num_key_value_heads // tp)


def first_kv_head(b: BackboneConfig, tp: int, tp_rank: int) -> int:
    if b.num_key_value_heads >= tp:
        return tp_rank * (b.num_key_value_heads // tp)
    return tp_rank // (tp // b.num_key_value_heads)


def linear_key_heads_per_rank(b: BackboneConfig, tp: int) -> int:
    """Gated DeltaNet key heads on one rank; replicated like KV heads when tp > linear_num_key_heads."""
    return max(1, b.linear_num_key_heads // tp)


def first_linear_key_head(b: BackboneConfig, tp: int, tp_rank: int) -> int:
    if b.linear_num_key_heads >= tp:
        return tp_rank * (b.linear_num_key_heads // tp)
    return tp_rank // (tp // b.linear_num_key_heads)


def recurrent_state_sizes(num_k_heads: int, num_v_heads: int, head_k_dim: int, head_v_dim: int,
                          tp: int) -> dict[str, int]:
    """The RNN-config fields of config.json for ONE rank's Gated DeltaNet layers (DESIGN.md
    section 2): rnn_state [Hv/tp, dk, dv] fp32, conv_state [K-1, rank's q|k|v channels].
    TensorRT-LLM's RnnStateManager sizes every rank's pools with these values as read (no
    division by tp), so global sizes would allocate tp x the state each rank uses."""
    k_heads = max(1, num_k_heads // tp)  # replicated like KV heads when tp > num_k_heads
    v_heads = num_v_heads // tp
    return {"state_size": head_k_dim, "rnn_head_size": head_v_dim, "rnn_hidden_size": v_heads * head_v_dim,
            "rnn_conv_dim_size": 2 * k_heads * head_k_dim + v_heads * head_v_dim}


def linear_conv_dim_per_rank(b: BackboneConfig, tp: int) -> int:
    """Conv channels (= conv_state width) of one rank: its q, k and v channels."""
    return recurrent_state_sizes(b.linear_num_key_heads, b.linear_num_value_heads, b.linear_key_head_dim,
                                 b.linear_value_head_dim, tp)["rnn_conv_dim_size"]


# ------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------

# Scopes: where a tensor lives.
FIRST_STAGE, LAST_STAGE, EVERY_RANK, EVERY_LAYER, ATTENTION_LAYER, RECURRENT_LAYER = (
    "first_pp_stage", "last_pp_stage", "every_rank", "every_layer", "attention_layer", "recurrent_layer")


@dataclass(frozen=True)
class Entry:
    """One tensor of the converted checkpoint.

    ``name`` and ``sources`` may hold ``{i}`` (local layer index in the checkpoint) and
    ``{j}`` (global HF layer index). ``transform``: see :data:`TRANSFORMS`; ``split``: see
    :data:`SPLIT_RULES`. ``dtype`` is ``"model"`` (the conversion dtype) or a fixed dtype.
    """

    name: str
    sources: tuple[str, ...]
    transform: str
    split: str
    scope: str
    dtype: str = "model"
    optional: str = ""  # "attention_bias": present only when the config has it

    def checkpoint_name(self, local: int | None = None) -> str:
        return self.name.format(i=local)

    def source_names(self, layer: int | None = None, tied: bool = False) -> tuple[str, ...]:
        if self.name == "lm_head.weight" and tied:
            return ("model.embed_tokens.weight",)
        return tuple(s.format(j=layer) for s in self.sources)


L = "transformer.layers.{i}."
HF = "model.layers.{j}."

CONTRACT: tuple[Entry, ...] = (
    Entry("transformer.vocab_embedding.weight", ("model.embed_tokens.weight",), "copy", "replicated", FIRST_STAGE),
    # --- every decoder layer -----------------------------------------------------------
    # Folded zero-centred norms (1 + w) stay fp32: the network multiplies them into the fp32-normalised
    # activations and rounds once to the model dtype, as HF's Qwen3.5 RMSNorm does (model.py ZeroCentredRmsNorm).
    Entry(L + "input_layernorm.weight", (HF + "input_layernorm.weight",), "fold_norm", "replicated", EVERY_LAYER,
          "float32"),
    Entry(L + "post_layernorm.weight", (HF + "post_attention_layernorm.weight",), "fold_norm", "replicated",
          EVERY_LAYER, "float32"),
    # --- full (gated) attention: TensorRT-LLM Attention naming ---------------------------
    Entry(L + "attention.qkv.weight", (HF + "self_attn.q_proj.weight", HF + "self_attn.k_proj.weight",
                                       HF + "self_attn.v_proj.weight"), "fuse_qkv", "qkv_heads", ATTENTION_LAYER),
    Entry(L + "attention.qkv.bias", (HF + "self_attn.q_proj.bias", HF + "self_attn.k_proj.bias",
                                     HF + "self_attn.v_proj.bias"), "fuse_qkv", "qkv_heads", ATTENTION_LAYER,
          optional="attention_bias"),
    Entry(L + "attention.output_gate.weight", (HF + "self_attn.q_proj.weight",), "gate_rows", "query_heads",
          ATTENTION_LAYER),
    Entry(L + "attention.output_gate.bias", (HF + "self_attn.q_proj.bias",), "gate_rows", "query_heads",
          ATTENTION_LAYER, optional="attention_bias"),
    Entry(L + "attention.q_layernorm.weight", (HF + "self_attn.q_norm.weight",), "fold_norm", "replicated",
          ATTENTION_LAYER, "float32"),
    Entry(L + "attention.k_layernorm.weight", (HF + "self_attn.k_norm.weight",), "fold_norm", "replicated",
          ATTENTION_LAYER, "float32"),
    Entry(L + "attention.dense.weight", (HF + "self_attn.o_proj.weight",), "copy", "row", ATTENTION_LAYER),
    Entry(L + "attention.dense.bias", (HF + "self_attn.o_proj.bias",), "copy", "replicated", ATTENTION_LAYER,
          optional="attention_bias"),
    # --- Gated DeltaNet (recurrent) ------------------------------------------------------
    Entry(L + "recurrent.in_proj_qkv.weight", (HF + "linear_attn.in_proj_qkv.weight",), "copy", "gdn_qkv",
          RECURRENT_LAYER),
    Entry(L + "recurrent.in_proj_z.weight", (HF + "linear_attn.in_proj_z.weight",), "copy", "value_heads",
          RECURRENT_LAYER),
    Entry(L + "recurrent.in_proj_b.weight", (HF + "linear_attn.in_proj_b.weight",), "copy", "value_heads",
          RECURRENT_LAYER),
    Entry(L + "recurrent.in_proj_a.weight", (HF + "linear_attn.in_proj_a.weight",), "copy", "value_heads",
          RECURRENT_LAYER),
    Entry(L + "recurrent.conv1d.weight", (HF + "linear_attn.conv1d.weight",), "conv_weight", "gdn_qkv",
          RECURRENT_LAYER),
    # A_log, dt_bias and the gated norm stay fp32: the gated-delta-rule plugin reads them in fp32.
    Entry(L + "recurrent.A_log", (HF + "linear_attn.A_log",), "copy", "value_heads", RECURRENT_LAYER, "float32"),
    Entry(L + "recurrent.dt_bias", (HF + "linear_attn.dt_bias",), "copy", "value_heads", RECURRENT_LAYER,
          "float32"),
    Entry(L + "recurrent.norm.weight", (HF + "linear_attn.norm.weight",), "copy", "replicated", RECURRENT_LAYER,
          "float32"),
    Entry(L + "recurrent.out_proj.weight", (HF + "linear_attn.out_proj.weight",), "copy", "row", RECURRENT_LAYER),
    # --- SwiGLU MLP: TensorRT-LLM GatedMLP (fc gets the activation, gate is multiplied) ---
    Entry(L + "mlp.fc.weight", (HF + "mlp.gate_proj.weight",), "copy", "column", EVERY_LAYER),
    Entry(L + "mlp.gate.weight", (HF + "mlp.up_proj.weight",), "copy", "column", EVERY_LAYER),
    Entry(L + "mlp.proj.weight", (HF + "mlp.down_proj.weight",), "copy", "row", EVERY_LAYER),
    # --- final norm, LM head ------------------------------------------------------------
    Entry("transformer.ln_f.weight", ("model.norm.weight",), "fold_norm", "replicated", LAST_STAGE, "float32"),
    Entry("lm_head.weight", ("lm_head.weight",), "copy", "vocab", LAST_STAGE),
    # --- NEG (DESIGN.md section 4): fp32, on every rank ---------------------------------
    Entry("neg_head.fc1.weight", ("neg_head.fc1.weight",), "copy", "replicated", EVERY_RANK, "float32"),
    Entry("neg_head.fc1.bias", ("neg_head.fc1.bias",), "copy", "replicated", EVERY_RANK, "float32"),
    Entry("neg_head.fc2.weight", ("neg_head.fc2.weight",), "copy", "replicated", EVERY_RANK, "float32"),
    Entry("neg_head.fc2.bias", ("neg_head.fc2.bias",), "copy", "replicated", EVERY_RANK, "float32"),
    Entry("neg_gate.threshold", ("neg_gate.threshold",), "copy", "replicated", EVERY_RANK, "float32"),
)

TRANSFORMS: dict[str, str] = {
    "copy": "unchanged (cast to the entry's dtype)",
    "fold_norm": "zero-centred RMSNorm weight folded: w' = 1 + w, computed and stored in fp32",
    "fuse_qkv": "q_proj de-interleaved (per head [query | gate] -> query rows), fused with k_proj and v_proj "
                "as [q | k | v] of the rank's heads",
    "gate_rows": "q_proj de-interleaved: the output-gate rows of each head",
    "conv_weight": "depthwise conv [C, 1, K] -> [C, 1, K, 1] (TensorRT-LLM MambaConv1d layout)",
}

SPLIT_RULES: dict[str, str] = {
    "replicated": "the full tensor on every tp rank",
    "column": "dim 0 split in tp equal contiguous parts",
    "row": "dim 1 split in tp equal contiguous parts (row-parallel; all-reduce after the GEMM)",
    "vocab": "dim 0 padded with zero rows to a multiple of tp, then split like column",
    "query_heads": "rank r holds query heads [r*Hq/tp, (r+1)*Hq/tp)",
    "qkv_heads": "[q | k | v] of rank r: its query heads, then its KV heads (KV head r // (tp/Hkv) when tp > Hkv)",
    "value_heads": "rank r holds Gated DeltaNet value heads [r*Hv/tp, (r+1)*Hv/tp) (rows per head: dv, or 1)",
    "gdn_qkv": "the [q | k | v] channel sections each split by heads (q, k by key heads, v by value heads) "
               "and concatenated per rank, so key head g stays with value heads g*Hv/Hk .. (g+1)*Hv/Hk-1 "
               "(key head r // (tp/Hk) replicated when tp > Hk)",
}


def entry_applies(e: Entry, b: BackboneConfig, layer_type: str | None) -> bool:
    if e.optional == "attention_bias" and not b.attention_bias:
        return False
    if e.scope == ATTENTION_LAYER:
        return layer_type == FULL_ATTENTION
    if e.scope == RECURRENT_LAYER:
        return layer_type == LINEAR_ATTENTION
    if e.scope == EVERY_LAYER:
        return layer_type is not None
    return layer_type is None


# ------------------------------------------------------------------------------------
# Pieces: which HF rows make up a rank's tensor
# ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of HF tensor ``source`` (columns ``cols`` if set); ``source=None``: zero rows."""

    source: str | None
    start: int
    stop: int
    cols: tuple[int, int] | None = None

    @property
    def rows(self) -> int:
        return self.stop - self.start


def _heads(first: int, count: int, rows_per_head: int, source: str, offset: int = 0,
           within: tuple[int, int] | None = None) -> list[Piece]:
    """Contiguous rows of heads ``[first, first+count)``; ``within`` selects a row range of each head."""
    if within is None:
        return [Piece(source, offset + first * rows_per_head, offset + (first + count) * rows_per_head)]
    a, z = within
    return [Piece(source, offset + h * rows_per_head + a, offset + h * rows_per_head + z)
            for h in range(first, first + count)]


def pieces(e: Entry, sources: tuple[str, ...], b: BackboneConfig, shape: tuple[int, ...], tp: int,
           tp_rank: int) -> list[Piece]:
    """The HF row ranges (in order) that make up tp rank ``tp_rank``'s share of entry ``e``.

    ``shape`` is the HF shape of ``sources[0]``.
    """
    rule = e.split
    if not shape:  # scalars
        return [Piece(sources[0], 0, 1)]
    if rule == "replicated":
        if e.transform == "gate_rows":
            raise AssertionError("gate rows are never replicated")
        return [Piece(sources[0], 0, shape[0])]
    if rule in ("column", "value_heads"):
        n = shape[0] // tp
        return [Piece(sources[0], tp_rank * n, (tp_rank + 1) * n)]
    if rule == "row":
        n = shape[1] // tp
        return [Piece(sources[0], 0, shape[0], (tp_rank * n, (tp_rank + 1) * n))]
    if rule == "vocab":
        n = padded_vocab_size(b.vocab_size, tp) // tp
        start, stop = tp_rank * n, (tp_rank + 1) * n
        out = [Piece(sources[0], start, min(stop, b.vocab_size))] if start < b.vocab_size else []
        if stop > b.vocab_size:
            out.append(Piece(None, 0, stop - max(start, b.vocab_size)))
        return out
    hd = b.head_dim
    hq = b.num_attention_heads // tp
    if rule == "query_heads":  # output gate: second half of each head's 2*hd rows of q_proj
        return _heads(tp_rank * hq, hq, 2 * hd, sources[0], within=(hd, 2 * hd))
    if rule == "qkv_heads":
        hkv, kv_first = kv_heads_per_rank(b, tp), first_kv_head(b, tp, tp_rank)
        q = _heads(tp_rank * hq, hq, 2 * hd, sources[0], within=(0, hd))
        k = _heads(kv_first, hkv, hd, sources[1])
        v = _heads(kv_first, hkv, hd, sources[2])
        return q + k + v
    if rule == "gdn_qkv":
        hk, k_first = linear_key_heads_per_rank(b, tp), first_linear_key_head(b, tp, tp_rank)
        hv = b.linear_num_value_heads // tp
        dk, dv, kd = b.linear_key_head_dim, b.linear_value_head_dim, b.linear_key_dim
        src = sources[0]
        return (_heads(k_first, hk, dk, src) + _heads(k_first, hk, dk, src, offset=kd)
                + _heads(tp_rank * hv, hv, dv, src, offset=2 * kd))
    raise AssertionError(f"unknown split rule {rule!r}")


def rank_shape(e: Entry, hf_shape: tuple[int, ...], parts: list[Piece]) -> tuple[int, ...]:
    """Shape of a rank's tensor built from ``parts`` (HF shape of the first source given)."""
    if not hf_shape:
        return ()
    rows = sum(p.rows for p in parts)
    tail = list(hf_shape[1:])
    if parts and parts[0].cols is not None:
        tail[0] = parts[0].cols[1] - parts[0].cols[0]
    shape = (rows, *tail)
    if e.transform == "conv_weight":
        shape = (*shape, 1)
    return shape


def apply_transform(e: Entry, chunk: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Elementwise part of a transform on a chunk of rows (row selection is done by :func:`pieces`)."""
    if e.transform == "fold_norm":
        return (1.0 + chunk.float()).to(out_dtype)
    if e.transform == "conv_weight":
        return chunk.to(out_dtype).unsqueeze(-1)
    return chunk.to(out_dtype)


# ------------------------------------------------------------------------------------
# The plan of one rank
# ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedTensor:
    name: str  # checkpoint name on this rank (local layer index)
    entry: Entry
    sources: tuple[str, ...]  # HF canonical names
    layer: int | None  # global layer index
    shape: tuple[int, ...]
    dtype: torch.dtype
    parts: tuple[Piece, ...]


def entry_dtype(e: Entry, model_dtype: torch.dtype) -> torch.dtype:
    return model_dtype if e.dtype == "model" else getattr(torch, e.dtype)


def rank_plan(config: DarwinNegConfig, mapping: Mapping, rank: int, model_dtype: torch.dtype,
              hf_shapes: TMapping[str, tuple[int, ...]]) -> list[PlannedTensor]:
    """Every tensor of ``rank{rank}.safetensors``, in file order."""
    b = config.backbone
    tp, tp_rank, pp_rank = mapping.tp_size, mapping.tp_rank(rank), mapping.pp_rank(rank)
    first, last = pp_rank == 0, pp_rank == mapping.pp_size - 1
    out: list[PlannedTensor] = []

    def add(e: Entry, local: int | None, layer: int | None) -> None:
        srcs = e.source_names(layer, b.tie_word_embeddings)
        hf_shape = tuple(hf_shapes[srcs[0]])
        parts = pieces(e, srcs, b, hf_shape, tp, tp_rank)
        if e.transform == "fuse_qkv":  # pieces refer to q, k and v; rows add up
            hf_shape = (sum(p.rows for p in parts), *hf_shape[1:])
        out.append(PlannedTensor(e.checkpoint_name(local), e, srcs, layer, rank_shape(e, hf_shape, parts),
                                 entry_dtype(e, model_dtype), tuple(parts)))

    globals_ = [e for e in CONTRACT if e.scope in (FIRST_STAGE, LAST_STAGE, EVERY_RANK)]
    for e in globals_:
        if e.scope == FIRST_STAGE and first and entry_applies(e, b, None):
            add(e, None, None)
    for local, layer in enumerate(mapping.pp_layers(b.num_hidden_layers, pp_rank)):
        for e in CONTRACT:
            if e.scope in (EVERY_LAYER, ATTENTION_LAYER, RECURRENT_LAYER) and entry_applies(e, b, b.layer_types[layer]):
                add(e, local, layer)
    for e in globals_:
        if (e.scope == LAST_STAGE and last) or e.scope == EVERY_RANK:
            add(e, None, None)
    return out


def hf_shapes_for(config: DarwinNegConfig) -> dict[str, tuple[int, ...]]:
    from .hf import hf_text_weight_shapes, neg_weight_shapes

    b = config.backbone
    return {**hf_text_weight_shapes(b), **neg_weight_shapes(b, config.neg)}


# ------------------------------------------------------------------------------------
# Rank files
# ------------------------------------------------------------------------------------

# The safetensors metadata key in which the converter records each file's rank.
RANK_METADATA_KEY = "rank"


def rank_file(directory: str | Path, rank: int) -> Path:
    return Path(directory) / f"rank{rank}.safetensors"


def check_rank_file(directory: str | Path, mapping: Mapping, rank: int, plan: list[PlannedTensor]):
    """The ``SafetensorsFile`` of ``rank``, its header checked against ``plan`` (``rank_plan``): the file
    complete (every tensor's bytes inside it), recorded for this rank, and holding exactly the planned
    tensors with their shapes and dtypes. Only the header is read. CheckpointError names file and tensor."""
    from .safetensors_io import CheckpointError, SafetensorsFile

    path = rank_file(directory, rank)
    if not path.is_file():
        last = mapping.world_size - 1
        files = f"one per rank: {rank_file('', 0)} .. {rank_file('', last)}" if last else f"one: {rank_file('', 0)}"
        raise CheckpointError(path, f"missing rank file (a tp {mapping.tp_size} pp {mapping.pp_size} checkpoint has "
                                    f"{files})")
    handle = SafetensorsFile(path)  # an unreadable or malformed file is a CheckpointError naming it
    recorded = handle.metadata.get(RANK_METADATA_KEY) if isinstance(handle.metadata, dict) else None
    if recorded is not None and recorded != str(rank):
        raise CheckpointError(path, f"its metadata says it was written for rank {recorded}, not rank {rank}")
    expected = {t.name: t for t in plan}
    extra = sorted(set(handle.keys()) - set(expected))
    if extra:
        raise CheckpointError(path, "tensor not in the checkpoint contract", extra[0])
    for name, t in expected.items():
        if name not in handle.header:
            raise CheckpointError(path, "missing tensor required by the checkpoint contract", name)
        if handle.shape(name) != t.shape:
            raise CheckpointError(path, f"shape {list(handle.shape(name))}, contract says {list(t.shape)}", name)
        if handle.dtype(name) != t.dtype:
            raise CheckpointError(path, f"dtype {handle.dtype(name)}, contract says {t.dtype}", name)
    return handle


def check_rank_files(directory: str | Path, config: DarwinNegConfig, mapping: Mapping, dtype: str) -> list[Path]:
    """Every rank file of a converted checkpoint checked by :func:`check_rank_file` (headers only, so
    milliseconds even for the 9B); their paths, in rank order."""
    from .safetensors_io import torch_dtype

    model_dtype, hf_shapes = torch_dtype(dtype), hf_shapes_for(config)
    for rank in range(mapping.world_size):
        check_rank_file(directory, mapping, rank, rank_plan(config, mapping, rank, model_dtype, hf_shapes))
    return [rank_file(directory, rank) for rank in range(mapping.world_size)]


# ------------------------------------------------------------------------------------
# config.json
# ------------------------------------------------------------------------------------

def checkpoint_config(config: DarwinNegConfig, mapping: Mapping, dtype: str) -> dict[str, Any]:
    """The converted checkpoint's ``config.json`` (TensorRT-LLM PretrainedConfig fields + model fields)."""
    b, n = config.backbone, config.neg
    return {
        "architecture": ARCHITECTURE,
        "dtype": dtype,
        "logits_dtype": "float32",
        "vocab_size": b.vocab_size,
        "hidden_size": b.hidden_size,
        "intermediate_size": b.intermediate_size,
        "num_hidden_layers": b.num_hidden_layers,
        "num_attention_heads": b.num_attention_heads,
        "num_key_value_heads": b.num_key_value_heads,
        "head_size": b.head_dim,
        "hidden_act": b.hidden_act,
        "norm_epsilon": b.rms_norm_eps,
        "position_embedding_type": "rope_gpt_neox",
        "rotary_base": b.rope_theta,
        "rotary_embedding_dim": b.rotary_dim,
        "rotary_scaling": None,
        "max_position_embeddings": b.max_position_embeddings,
        "qk_layernorm": True,
        "attn_output_gate": True,
        "attention_bias": b.attention_bias,
        "mapping": mapping.to_dict(),
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "share_embedding_table": False,
        "tie_word_embeddings": b.tie_word_embeddings,
        "bos_token_id": b.bos_token_id,
        "eos_token_id": list(b.eos_token_id),
        "pad_token_id": b.pad_token_id,
        # Layer kinds in TensorRT-LLM's vocabulary, one entry per layer.
        "layer_types": [LAYER_TYPE_TO_TRTLLM[t] for t in b.layer_types],
        # Recurrent state (DESIGN.md section 2): rnn_state [Hv, dk, dv] fp32, conv_state [K-1, conv_dim],
        # with ONE RANK's sizes: TensorRT-LLM's RnnStateManager sizes every rank's pools with these
        # values as read (no division by tp), and each rank's plugins use only its own heads.
        **recurrent_state_sizes(b.linear_num_key_heads, b.linear_num_value_heads, b.linear_key_head_dim,
                                b.linear_value_head_dim, mapping.tp_size),
        "conv_kernel": b.linear_conv_kernel_dim,
        "state_dtype": "float32",
        # Gated DeltaNet dimensions (global; per rank: heads / tp_size).
        "linear_num_key_heads": b.linear_num_key_heads,
        "linear_num_value_heads": b.linear_num_value_heads,
        "linear_key_head_dim": b.linear_key_head_dim,
        "linear_value_head_dim": b.linear_value_head_dim,
        "neg_config": {"head_hidden_size": n.head_hidden_size, "activation": n.activation, "top_k": n.top_k,
                       "temperature": n.temperature, "seed": n.seed, "enabled": n.enabled},
        "trt_neg": {"contract_version": CONTRACT_VERSION, "source": _absolute(config.source)},
    }


def _absolute(path: str) -> str:
    """``path`` made absolute (as build_info.json records paths): the checkpoint may be read from elsewhere."""
    return str(Path(path).resolve()) if path else ""


def config_from_checkpoint(data: TMapping[str, Any], source: str = "", *,
                           check_derived: bool = True) -> tuple[DarwinNegConfig, Mapping, str]:
    """Read back a converted checkpoint's ``config.json``: (model description, mapping, dtype).

    Every field read is type- and range-checked by config.py's field reader, so a hand-edited or
    corrupt file gives ``ConfigError`` naming the file and field (never a TypeError or ZeroDivisionError).
    ``check_derived``: also require every field derived from the model to be the contract's (for a file;
    TensorRT-LLM's own ``PretrainedConfig.to_dict()`` may write some in its own forms).
    """
    from ..config import BACKBONE_ACTIVATIONS, ConfigError, JsonFields, check_backbone, parse_neg, special_token_ids

    f = JsonFields(data, source)
    architecture = f.get("architecture")
    if architecture != ARCHITECTURE:
        raise f.error("architecture", f"expected {ARCHITECTURE}, got {architecture!r}")
    kinds = f.get("layer_types")
    if not isinstance(kinds, list) or not all(isinstance(k, str) for k in kinds):
        raise f.error("layer_types", f"must be a list of strings, got {kinds!r}")
    bad = sorted({k for k in kinds if k not in LAYER_TYPE_FROM_TRTLLM})
    if bad:
        raise f.error("layer_types", f"unknown layer type(s) {bad}; expected {' or '.join(LAYER_TYPE_FROM_TRTLLM)}")
    head = f.int("head_size")
    rotary = f.int("rotary_embedding_dim", minimum=2, maximum=head, why_maximum=" (head_size)")
    if rotary % 2:
        raise f.error("rotary_embedding_dim", f"must be even (RoPE rotates pairs of dims), got {rotary}")
    # BackboneConfig.rotary_dim is int(head_dim * partial_rotary_factor) (as in transformers); rotary / head
    # can round just below the ratio (30 / 104 * 104 = 29.99...), so step up to the smallest factor that
    # gives back exactly ``rotary``.
    partial = rotary / head
    while int(head * partial) < rotary:
        partial = math.nextafter(partial, math.inf)
    b = BackboneConfig(
        vocab_size=f.int("vocab_size"), hidden_size=f.int("hidden_size"),
        intermediate_size=f.int("intermediate_size"), num_hidden_layers=f.count("num_hidden_layers"),
        layer_types=tuple(LAYER_TYPE_FROM_TRTLLM[k] for k in kinds),
        num_attention_heads=f.count("num_attention_heads"), num_key_value_heads=f.count("num_key_value_heads"),
        head_dim=head, partial_rotary_factor=partial, rope_theta=f.float("rotary_base"),
        # as parse_backbone: a sequence holds at least one prompt token and one generated token
        max_position_embeddings=f.int("max_position_embeddings", minimum=2),
        attention_bias=f.bool("attention_bias", False),
        linear_num_key_heads=f.count("linear_num_key_heads"), linear_num_value_heads=f.count("linear_num_value_heads"),
        linear_key_head_dim=f.int("linear_key_head_dim"), linear_value_head_dim=f.int("linear_value_head_dim"),
        linear_conv_kernel_dim=f.int("conv_kernel", minimum=2), hidden_act=f.choice("hidden_act", BACKBONE_ACTIVATIONS),
        rms_norm_eps=f.float("norm_epsilon"), tie_word_embeddings=f.bool("tie_word_embeddings", False),
        **special_token_ids(f),
    )
    check_backbone(b, source)
    neg = parse_neg(f.get("neg_config"), source, "neg_config.", b.hidden_size)
    m = JsonFields(f.get("mapping"), source, "mapping.")
    mapping = Mapping(tp_size=m.int("tp_size"), pp_size=m.int("pp_size"))
    world_size = m.int("world_size", mapping.world_size)
    if world_size != mapping.world_size:
        raise m.error("world_size", f"is {world_size}, tp_size * pp_size is {mapping.world_size}")
    dtype = f.choice("dtype", DTYPES)
    if data.get("trt_neg") is not None:  # build_engine.py's record; another writer's checkpoint has none
        ours = JsonFields(data["trt_neg"], source, "trt_neg.")
        version = ours.int("contract_version", CONTRACT_VERSION)
        if version != CONTRACT_VERSION:
            raise ours.error("contract_version", f"is {version}, this trt_neg reads version {CONTRACT_VERSION}; "
                                                 "convert the HF checkpoint again")
    try:
        check_mapping(b, mapping)
    except ShardingError as exc:  # the layout comes from this file: a file error, not an option error
        raise ConfigError(source, "mapping", str(exc)) from None
    described = DarwinNegConfig(backbone=b, neg=neg, source=source, architecture=ARCHITECTURE)
    if check_derived:
        _check_derived_fields(data, checkpoint_config(described, mapping, dtype), source)
    return described, mapping, dtype


# Fields config_from_checkpoint reads itself (in forms checkpoint_config may write differently: a token
# id alone or in a list, an activation alias); every other field of checkpoint_config is derived.
_FIELDS_READ_IN_THEIR_OWN_FORM = frozenset({"trt_neg", "mapping", "neg_config", "eos_token_id", "bos_token_id",
                                            "pad_token_id"})


def _check_derived_fields(data: TMapping[str, Any], expected: dict[str, Any], source: str) -> None:
    """The fields derived from the model (TensorRT-LLM's flags, quantization, the recurrent-state sizes,
    ...) must be what the contract writes for it: TensorRT-LLM's build reads them, and a corrupt one
    (rnn_conv_dim_size "x", a quant_algo) would otherwise pass every check here and fail or mislead there."""
    from ..config import ConfigError

    for key, want in expected.items():
        if key in _FIELDS_READ_IN_THEIR_OWN_FORM:
            continue
        if key not in data:
            raise ConfigError(source, key, f"is required but missing (the contract writes {_json(want)} here)")
        if not (_same_quantization(data[key], want) if key == "quantization" else _same_json(data[key], want)):
            raise ConfigError(source, key, f"is {_json(data[key])}; the contract writes {_json(want)} for this model")


def _same_quantization(value: Any, want: dict[str, Any]) -> bool:
    """``quantization`` holds the contract's fields (no algorithm): TensorRT-LLM's ``PretrainedConfig.to_dict()``
    (which ``DarwinNegConfig.description`` reads back) writes its whole ``QuantConfig`` (``group_size``,
    ``smoothquant_val``, ... beside the two algorithms), none of which has any effect without an algorithm."""
    return isinstance(value, dict) and all(key in value and _same_json(value[key], v) for key, v in want.items())


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality that keeps true apart from 1 (Python's == does not) and 10000 equal to 10000.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b))
    comparable = type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float)))
    return comparable and a == b


def _json(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def first_difference(a: DarwinNegConfig, b: DarwinNegConfig) -> tuple[str, Any, Any] | None:
    """The first field (name, value in ``a``, value in ``b``) in which two model descriptions differ,
    backbone first, then NEG; None if they describe the same model. A converted checkpoint keeps
    only the rotary dims, so the rotary fraction is compared as ``rotary_dim``."""
    import dataclasses

    for f in dataclasses.fields(a.backbone):
        name = f.name
        if name == "partial_rotary_factor":
            name, x, y = "rotary_dim", a.backbone.rotary_dim, b.backbone.rotary_dim
        else:
            x, y = getattr(a.backbone, name), getattr(b.backbone, name)
        if x != y:
            return name, x, y
    for f in dataclasses.fields(a.neg):
        x, y = getattr(a.neg, f.name), getattr(b.neg, f.name)
        if x != y:
            return "neg_config." + f.name, x, y
    return None


def describe() -> list[dict[str, str]]:
    """The table as plain rows (for docs and tooling)."""
    return [{"name": e.name, "sources": ", ".join(e.sources), "transform": e.transform, "split": e.split,
             "scope": e.scope, "dtype": e.dtype, "optional": e.optional} for e in CONTRACT]


__all__ = ["ARCHITECTURE", "CONTRACT", "DTYPES", "Entry", "Mapping", "Piece", "PlannedTensor", "RANK_METADATA_KEY",
           "ShardingError", "SPLIT_RULES", "TRANSFORMS", "apply_transform", "check_mapping", "check_rank_file",
           "check_rank_files", "checkpoint_config",
           "config_from_checkpoint", "describe", "first_difference", "first_kv_head", "first_linear_key_head",
           "hf_shapes_for",
           "kv_heads_per_rank", "linear_conv_dim_per_rank", "recurrent_state_sizes", "linear_key_heads_per_rank", "padded_vocab_size",
           "pieces", "rank_file", "rank_plan"]
