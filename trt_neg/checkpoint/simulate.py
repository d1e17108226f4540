"""Run a converted (sharded) TensorRT-LLM checkpoint on CPU, simulating tensor and pipeline parallelism.

:class:`ShardedCheckpoint` loads ``config.json`` and every ``rank{N}.safetensors``,
checking each file against the contract (``contract.rank_plan``: names, shapes, dtypes).
:meth:`ShardedCheckpoint.forward` runs the **reference model's own modules**
(``trt_neg.reference.model``) on the shards exactly as the ranks of an engine would:

* each tp rank gets a *rank view* of the backbone config (:func:`rank_config`: its share of
  the query, KV, Gated DeltaNet key/value heads, MLP channels and padded vocabulary) and
  reference modules built from it, loaded from its own tensors mapped back to HF names
  through the contract (:func:`rank_state_dict`, the same inverse as :func:`unshard`);
* every layer runs piecewise: norm, token mixer on each rank, the partial outputs summed
  (the all-reduce), residual; norm, MLP on each rank, summed, residual. Row-parallel
  biases (``o_proj`` with ``attention_bias``) are added once, after the sum;
* pipeline stages hand the hidden state on; the LM head is column-parallel over the
  padded vocabulary, gathered and cut to ``vocab_size``.

Comparing its logits with the unsharded HF model checks the converter, the split rules
and the contract in one go; the maths is the reference model's (no second copy here).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from ..config import FULL_ATTENTION, BackboneConfig, read_json_object
from . import contract as C
from .safetensors_io import CheckpointError


def rank_config(b: BackboneConfig, tp: int) -> BackboneConfig:
    """The backbone as one of ``tp`` ranks sees it (its share of every split dimension).

    KV heads and Gated DeltaNet key heads are replicated when tp exceeds them, as the
    converter does (``contract.kv_heads_per_rank``, ``contract.linear_key_heads_per_rank``);
    ``vocab_size`` is the rank's slice of the padded LM head.
    """
    return replace(b, num_attention_heads=b.num_attention_heads // tp,
                   num_key_value_heads=C.kv_heads_per_rank(b, tp),
                   linear_num_key_heads=C.linear_key_heads_per_rank(b, tp),
                   linear_num_value_heads=b.linear_num_value_heads // tp,
                   intermediate_size=b.intermediate_size // tp,
                   vocab_size=C.padded_vocab_size(b.vocab_size, tp) // tp)


@dataclass
class _Rank:
    rank: int
    tp_rank: int
    pp_rank: int
    tensors: dict[str, torch.Tensor]  # the rank file, by contract name
    # The reference modules of this rank (rank view of the config), filled by ShardedCheckpoint.
    embed: torch.Tensor | None = None
    layers: dict[int, nn.Module] = field(default_factory=dict)  # global layer index -> Qwen3_5DecoderLayer
    norm: nn.Module | None = None
    lm_head: nn.Module | None = None


class ShardedCheckpoint:
    def __init__(self, directory: str | Path, dtype: torch.dtype = torch.float32):
        self.directory = Path(directory)
        config_path = self.directory / "config.json"
        if not config_path.exists():
            raise CheckpointError(config_path, "not found (expected a converted checkpoint directory)")
        data = read_json_object(config_path)
        self.config, self.mapping, self.dtype_name = C.config_from_checkpoint(data, str(config_path))
        self.raw_config = data
        self.compute_dtype = dtype
        self.backbone = self.config.backbone
        self.model_dtype = getattr(torch, self.dtype_name)
        self.hf_shapes = C.hf_shapes_for(self.config)
        self.ranks: list[_Rank] = []
        for rank in range(self.mapping.world_size):
            plan = self.plan(rank)
            handle = C.check_rank_file(self.directory, self.mapping, rank, plan)
            tensors = {t.name: handle.get(t.name).to(dtype) for t in plan}
            self.ranks.append(_Rank(rank, self.mapping.tp_rank(rank), self.mapping.pp_rank(rank), tensors))
        self._modules_built = False

    def plan(self, rank: int) -> list[C.PlannedTensor]:
        return C.rank_plan(self.config, self.mapping, rank, self.model_dtype, self.hf_shapes)

    def stage(self, pp_rank: int) -> list[_Rank]:
        return [r for r in self.ranks if r.pp_rank == pp_rank]

    # --------------------------------------------------------------------------------
    def _build_modules(self) -> None:
        """Reference modules of every rank, in the rank view, loaded from its tensors."""
        from ..reference.model import Qwen3_5DecoderLayer, Qwen3_5RMSNorm, Qwen3_5RotaryEmbedding

        b, m = self.backbone, self.mapping
        view = rank_config(b, m.tp_size)
        self.rotary = Qwen3_5RotaryEmbedding(b)
        self.row_bias: dict[int, torch.Tensor] = {}  # layer -> o_proj bias, added once after the all-reduce
        for r in self.ranks:
            local = rank_state_dict(self, r)
            if r.pp_rank == 0:
                r.embed = local.pop("model.embed_tokens.weight")
            for layer in m.pp_layers(b.num_hidden_layers, r.pp_rank):
                prefix = f"model.layers.{layer}."
                with torch.device("meta"):
                    module = Qwen3_5DecoderLayer(view, layer)
                module.load_state_dict({k[len(prefix):]: local.pop(k) for k in list(local) if k.startswith(prefix)},
                                       strict=True, assign=True)
                if module.layer_type == FULL_ATTENTION and b.attention_bias:
                    self.row_bias[layer] = module.self_attn.o_proj.bias  # replicated: the same on every rank
                    module.self_attn.o_proj.bias = None  # each rank gives a partial sum without it
                r.layers[layer] = module.eval()
            if r.pp_rank == m.pp_size - 1:
                with torch.device("meta"):
                    r.norm = Qwen3_5RMSNorm(b.hidden_size, b.rms_norm_eps)
                    r.lm_head = nn.Linear(b.hidden_size, view.vocab_size, bias=False)
                r.norm.load_state_dict({"weight": local.pop("model.norm.weight")}, assign=True)
                r.lm_head.load_state_dict({"weight": local.pop("lm_head.weight")}, assign=True)
            unused = sorted(name for name in local if not name.startswith(("neg_head.", "neg_gate.")))
            if unused:  # every backbone tensor of the rank must feed a module
                raise AssertionError(f"rank {r.rank}: tensors not loaded into a module: {unused[:5]}")
        self._modules_built = True

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, return_hidden: bool = False):
        """Logits [B, T, vocab] (in the compute dtype) of ``input_ids`` [B, T] (or [T])."""
        from ..reference.model import BatchContext

        if not self._modules_built:
            self._build_modules()
        b, m = self.backbone, self.mapping
        squeeze = input_ids.dim() == 1
        ids = input_ids.unsqueeze(0) if squeeze else input_ids
        ctx = BatchContext.whole_sequences(ids)
        x = rope = None
        for pp_rank in range(m.pp_size):
            ranks = self.stage(pp_rank)  # x arrives from the previous stage (pipeline send/recv)
            if pp_rank == 0:
                x = ranks[0].embed[ids]  # replicated embedding table
                rope = self.rotary(ctx.positions, x.dtype)
            for layer in m.pp_layers(b.num_hidden_layers, pp_rank):
                partials = []
                for r in ranks:
                    block = r.layers[layer]
                    h = block.input_layernorm(x)
                    if block.layer_type == FULL_ATTENTION:
                        partials.append(block.self_attn(h, rope, ctx))
                    else:
                        partials.append(block.linear_attn(h, ctx))
                x = x + _all_reduce(partials)
                if layer in self.row_bias:
                    x = x + self.row_bias[layer]
                partials = [r.layers[layer].mlp(r.layers[layer].post_attention_layernorm(x)) for r in ranks]
                x = x + _all_reduce(partials)
        last = self.stage(m.pp_size - 1)
        hidden = [r.norm(x) for r in last]
        logits = torch.cat([r.lm_head(h) for h, r in zip(hidden, last)], dim=-1)  # all-gather
        logits = logits[..., : b.vocab_size]  # drop the vocabulary padding
        if squeeze:
            logits, hidden = logits[0], [h[0] for h in hidden]
        return (logits, hidden[0]) if return_hidden else logits

    __call__ = forward


def _all_reduce(partials: list[torch.Tensor]) -> torch.Tensor:
    total = partials[0]
    for part in partials[1:]:
        total = total + part
    return total


def load_sharded(directory: str | Path, dtype: torch.dtype = torch.float32) -> ShardedCheckpoint:
    return ShardedCheckpoint(directory, dtype)


# ------------------------------------------------------------------------------------
# The inverse: a converted checkpoint back to HF tensors (per rank, or whole)
# ------------------------------------------------------------------------------------

def _inverse_transform(entry: C.Entry, tensor: torch.Tensor) -> torch.Tensor:
    if entry.transform == "fold_norm":
        return tensor - 1.0
    if entry.transform == "conv_weight":
        return tensor.squeeze(-1)
    return tensor


def _inverted_parts(sharded: ShardedCheckpoint, r: _Rank) -> Iterator[tuple[C.PlannedTensor, C.Piece, torch.Tensor]]:
    """(planned tensor, piece, the piece's rows with the transform inverted) of every tensor of rank ``r``.

    ``fuse_qkv`` and ``gate_rows`` pieces are per-head row ranges of q_proj (plus k_proj,
    v_proj), so the pieces of one HF tensor, ordered by row, re-interleave [q_h | gate_h].
    """
    for t in sharded.plan(r.rank):
        value = _inverse_transform(t.entry, r.tensors[t.name])
        if not t.shape:
            yield t, t.parts[0], value
            continue
        row = 0
        for part in t.parts:
            yield t, part, value[row:row + part.rows]
            row += part.rows


def rank_state_dict(sharded: ShardedCheckpoint, r: _Rank) -> dict[str, torch.Tensor]:
    """Rank ``r``'s tensors under HF canonical names, holding only that rank's share.

    Each HF tensor is the rank's rows of it, in HF row order (its heads, channels or
    vocabulary slice, the zero padding rows of the LM head last), or its column slice for
    row-parallel weights: what the reference modules built with :func:`rank_config`
    expect. The LM head keeps its own name when tied (its rows come from the embedding).
    """
    groups: dict[str, list[tuple[tuple, torch.Tensor]]] = defaultdict(list)
    for t, part, rows in _inverted_parts(sharded, r):
        untied = dict(zip(t.sources, t.entry.source_names(t.layer)))  # lm_head.weight stays lm_head.weight
        name = untied[part.source] if part.source is not None else t.entry.source_names(t.layer)[0]
        groups[name].append(((part.source is None, part.start, part.cols or ()), rows))
    out = {}
    for name, rows in groups.items():
        ordered = [value for _, value in sorted(rows, key=lambda item: item[0])]
        out[name] = ordered[0] if len(ordered) == 1 else torch.cat(ordered)
    return out


def unshard(directory: str | Path, dtype: torch.dtype = torch.float32):
    """(model description, HF canonical tensors) rebuilt from a converted checkpoint of any tp/pp.

    Every rank's tensor is scattered back to the HF rows it came from (``contract.pieces``)
    after inverting its transform; rows held by several ranks (replicated tensors, KV and
    key heads replicated when tp exceeds them) must agree, or :class:`CheckpointError`.
    Round-trips are exact in fp32 up to the rounding of ``1 + w`` and ``-exp``/``log``.
    """
    sharded = ShardedCheckpoint(directory, dtype)
    hf_shapes = sharded.hf_shapes
    out: dict[str, torch.Tensor] = {}
    filled: dict[str, torch.Tensor] = {}
    for r in sharded.ranks:
        for t, part, rows in _inverted_parts(sharded, r):
            if part.source is None:  # vocabulary padding
                continue
            shape = hf_shapes[part.source]
            where = slice(part.start, part.stop) if shape else slice(None)
            _scatter(out, filled, part.source, shape, rows, where, part.cols, r.rank, t.name)
    missing = [name for name, mask in filled.items() if not bool(mask.all())]
    if missing or set(out) != set(hf_shapes):
        raise CheckpointError(sharded.directory, "the shards do not cover every HF tensor",
                              (missing or sorted(set(hf_shapes) - set(out)))[0])
    return sharded.config, out


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
    return DarwinNegForCausalLM.from_state_dict(config, tensors, dtype=dtype)
