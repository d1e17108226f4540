"""The HF Darwin-NEG checkpoint: its tensor names and shapes, and a lazy reader.

``hf_text_weight_shapes`` is the one list of the backbone's HF tensor names and shapes
(in the text layout, ``model.layers.*``); the synthetic generator writes it, the reader
validates against it, the reference model and the converter consume it.
The published vision-language layout stores the same tensors under
``model.language_model.*`` beside ``model.visual.*`` and ``mtp.*``, which are ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Iterator, Mapping

import torch

from .. import strict_json
from ..config import FULL_ATTENTION, BackboneConfig, DarwinNegConfig, NegConfig, load_config
from .safetensors_io import INDEX_FILE, CheckpointError, SafetensorsFile, open_checkpoint_files

log = logging.getLogger(__name__)

PUBLISHED_PREFIX = "model.language_model."
TEXT_PREFIX = "model."
IGNORED_PREFIXES = ("model.visual.", "mtp.")
# The NEG head's own file, beside the backbone's: read even when a shard index does not list it.
NEG_FILE = "neg.safetensors"

NEG_TENSORS = ("neg_head.fc1.weight", "neg_head.fc1.bias", "neg_head.fc2.weight", "neg_head.fc2.bias",
               "neg_gate.threshold")


def hf_text_weight_shapes(b: BackboneConfig) -> dict[str, tuple[int, ...]]:
    """Every backbone tensor of an HF Qwen3.5 text checkpoint, by canonical (text-layout) name."""
    h = b.hidden_size
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (b.vocab_size, h)}
    for i, kind in enumerate(b.layer_types):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
        if kind == FULL_ATTENTION:
            a = p + "self_attn."
            q_out, kv_out = b.num_attention_heads * b.head_dim, b.num_key_value_heads * b.head_dim
            shapes[a + "q_proj.weight"] = (2 * q_out, h)  # per head [query | output gate]
            shapes[a + "k_proj.weight"] = (kv_out, h)
            shapes[a + "v_proj.weight"] = (kv_out, h)
            shapes[a + "o_proj.weight"] = (h, q_out)
            if b.attention_bias:
                shapes[a + "q_proj.bias"] = (2 * q_out,)
                shapes[a + "k_proj.bias"] = (kv_out,)
                shapes[a + "v_proj.bias"] = (kv_out,)
                shapes[a + "o_proj.bias"] = (h,)
            shapes[a + "q_norm.weight"] = (b.head_dim,)
            shapes[a + "k_norm.weight"] = (b.head_dim,)
        else:
            a = p + "linear_attn."
            shapes[a + "in_proj_qkv.weight"] = (b.linear_conv_dim, h)
            shapes[a + "in_proj_z.weight"] = (b.linear_value_dim, h)
            shapes[a + "in_proj_b.weight"] = (b.linear_num_value_heads, h)
            shapes[a + "in_proj_a.weight"] = (b.linear_num_value_heads, h)
            shapes[a + "conv1d.weight"] = (b.linear_conv_dim, 1, b.linear_conv_kernel_dim)
            shapes[a + "dt_bias"] = (b.linear_num_value_heads,)
            shapes[a + "A_log"] = (b.linear_num_value_heads,)
            shapes[a + "norm.weight"] = (b.linear_value_head_dim,)
            shapes[a + "out_proj.weight"] = (h, b.linear_value_dim)
        m = p + "mlp."
        shapes[m + "gate_proj.weight"] = (b.intermediate_size, h)
        shapes[m + "up_proj.weight"] = (b.intermediate_size, h)
        shapes[m + "down_proj.weight"] = (h, b.intermediate_size)
    shapes["model.norm.weight"] = (h,)
    if not b.tie_word_embeddings:
        shapes["lm_head.weight"] = (b.vocab_size, h)
    return shapes


# NEG tensors stored in any shape holding the right number of elements: DESIGN.md section 4 gives
# w2 as [d] and b2 / tau as scalars, nn.Linear(d, 1) stores [1, d] and [1], and [1] is a common
# way to store a scalar. Every reader (HFCheckpoint.get / .shape, hence the reference model and
# the converter) hands them on in the canonical shapes of ``neg_weight_shapes``.
NEG_ANY_SHAPE = ("neg_head.fc2.weight", "neg_head.fc2.bias", "neg_gate.threshold")


def neg_weight_shapes(b: BackboneConfig, n: NegConfig) -> dict[str, tuple[int, ...]]:
    """The NEG tensors' canonical shapes (those of the converted checkpoint and of every reader)."""
    d = n.head_hidden_size
    return {
        "neg_head.fc1.weight": (d, b.hidden_size),
        "neg_head.fc1.bias": (d,),
        "neg_head.fc2.weight": (1, d),
        "neg_head.fc2.bias": (1,),
        "neg_gate.threshold": (),
    }


def published_name(canonical: str) -> str:
    """Canonical text-layout name -> name in the published vision-language layout."""
    if canonical.startswith(TEXT_PREFIX):
        return PUBLISHED_PREFIX + canonical[len(TEXT_PREFIX):]
    return canonical


def canonical_name(stored: str) -> str | None:
    """Stored name (either layout) -> canonical text-layout name; None for ignored tensors."""
    if stored.startswith(IGNORED_PREFIXES):
        return None
    if stored.startswith(PUBLISHED_PREFIX):
        return TEXT_PREFIX + stored[len(PUBLISHED_PREFIX):]
    return stored


class HFCheckpoint:
    """An HF Darwin-NEG checkpoint directory, read lazily tensor by tensor.

    ``key_map`` renames stored NEG tensors (``{"my.head.w1": "neg_head.fc1.weight"}``) for
    checkpoints that name them differently.
    """

    def __init__(self, directory: str | Path, key_map: dict[str, str] | None = None):
        self.directory = Path(directory)
        self.config: DarwinNegConfig = load_config(self.directory)
        self._where: dict[str, tuple[SafetensorsFile, str]] = {}
        self.ignored: list[str] = []
        # Whether the backbone is stored under model.language_model.*: errors about tensors the
        # checkpoint lacks name them as it would store them.
        self.published_layout = False
        key_map = dict(key_map or {})
        self.files = open_checkpoint_files(self.directory, always_read=(NEG_FILE,))
        for handle in self.files.files:
            for stored in handle.keys():
                renamed = key_map.get(stored, stored)
                name = canonical_name(renamed)
                if name is None:
                    self.ignored.append(stored)
                    continue
                self.published_layout |= name != renamed
                if name in self._where:
                    other = self._where[name][0].path
                    raise CheckpointError(handle.path, f"duplicate tensor (also in {other.name})", stored)
                self._where[name] = (handle, stored)
        if self.ignored:
            log.info("%s: ignoring %d vision/MTP tensors (text-only model)", self.directory, len(self.ignored))
        self.config = resolve_tied_head(self.config, self._where)
        self.expected = hf_text_weight_shapes(self.config.backbone)
        self.expected_neg = neg_weight_shapes(self.config.backbone, self.config.neg)
        self.validate_names()

    def validate_names(self) -> None:
        b = self.config.backbone
        missing = [self.stored_name(n) for n in (*self.expected, *self.expected_neg) if n not in self._where]
        if missing:
            unread = (f"; not read: {', '.join(self.files.unlisted)}, which {INDEX_FILE} does not list"
                      if self.files.unlisted else "")
            raise CheckpointError(self.directory, f"missing {len(missing)} tensor(s), first: {missing[:3]}{unread}",
                                  missing[0])
        unexpected = [n for n in self._where if n not in self.expected and n not in self.expected_neg
                      and not (n == "lm_head.weight" and b.tie_word_embeddings)]
        if unexpected:
            handle, stored = self._where[unexpected[0]]
            raise CheckpointError(handle.path, f"unexpected tensor for this config ({len(unexpected)} in all)",
                                  stored)
        for name, shape in {**self.expected, **self.expected_neg}.items():
            handle, stored = self._where[name]
            got = handle.shape(stored)
            if name in NEG_ANY_SHAPE:
                if _numel(got) != _numel(shape):
                    raise CheckpointError(handle.path, f"shape {list(got)} does not match config: {name} needs "
                                                       f"{_numel(shape)} element(s) (shape {list(shape)}, or any "
                                                       f"shape of that many elements), not {_numel(got)}", stored)
            elif got != shape:
                raise CheckpointError(handle.path, f"shape {list(got)} does not match config ({list(shape)})",
                                      stored)
            if not handle.dtype(stored).is_floating_point:
                raise CheckpointError(handle.path, f"dtype {handle.dtype(stored)} is not a float type", stored)

    def names(self) -> list[str]:
        return [*self.expected, *self.expected_neg]

    def stored_name(self, name: str) -> str:
        """Canonical ``name`` as this checkpoint's layout stores it."""
        return published_name(name) if self.published_layout else name

    def source(self, name: str) -> tuple[Path, str]:
        handle, stored = self._where[name]
        return handle.path, stored

    def shape(self, name: str) -> tuple[int, ...]:
        """The canonical shape of tensor ``name`` (its stored bytes, row-major, have this shape)."""
        if name in self.expected_neg:
            return self.expected_neg[name]
        if name in self.expected:
            return self.expected[name]
        handle, stored = self._where[name]  # e.g. the ignored lm_head.weight of a tied model
        return handle.shape(stored)

    def get(self, name: str, check_finite: bool = False) -> torch.Tensor:
        """Tensor ``name`` in its canonical shape (NEG tensors stored as e.g. [d] or [] are reshaped)."""
        handle, stored = self._where[name]
        tensor = handle.get(stored).reshape(self.shape(name))
        if check_finite and not torch.isfinite(tensor).all():
            raise CheckpointError(handle.path, "holds non-finite values (NaN or inf)", stored)
        return tensor

    def items(self, check_finite: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.names():
            yield name, self.get(name, check_finite)

    def neg_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: self.get(name) for name in self.expected_neg}


HEAD, EMBEDDING = "lm_head.weight", "model.embed_tokens.weight"
COMPARE_CHUNK_BYTES = 64 * 2**20


def resolve_tied_head(config: DarwinNegConfig,
                      where: Mapping[str, tuple[SafetensorsFile, str]]) -> DarwinNegConfig:
    """The description with the LM head transformers would load: a tied config whose checkpoint
    still stores ``lm_head.weight`` is tied only if that tensor equals ``model.embed_tokens.weight``.

    transformers 5.23 (``PreTrainedModel.tie_weights`` during ``from_pretrained``) does not tie two
    tensors that are both in the checkpoint with different values (``torch.equal`` after loading):
    it keeps the stored head and warns. This does the same, comparing the stored values row block
    by row block, and returns an untied description in that case (so the converted config says
    untied and every reader, the reference model included, takes the stored head).
    ``where``: canonical name -> (file, stored name)."""
    b = config.backbone
    if not b.tie_word_embeddings or HEAD not in where or EMBEDDING not in where:
        return config
    (head_file, head_name), (emb_file, emb_name) = where[HEAD], where[EMBEDDING]
    if _stored_tensors_equal(head_file, head_name, emb_file, emb_name):
        log.info("%s: tied config; the stored %s equals %s and is ignored", head_file.path, head_name, emb_name)
        return config
    log.warning("%s: tie_word_embeddings is true but the checkpoint stores %s (in %s) with values different "
                "from %s (in %s); as transformers does, they are NOT tied: the stored %s is the LM head. Set "
                "tie_word_embeddings to false in %s to silence this warning.", config.source or head_file.path,
                head_name, head_file.path.name, emb_name, emb_file.path.name, head_name,
                config.source or "config.json")
    return dataclasses.replace(config, backbone=dataclasses.replace(b, tie_word_embeddings=False))


def load_model_config(directory: str | Path) -> DarwinNegConfig:
    """The description an :class:`HFCheckpoint` of ``directory`` would have, without validating every
    tensor: ``load_config`` plus the tied-head rule of :func:`resolve_tied_head`."""
    config = load_config(directory)
    if not config.backbone.tie_word_embeddings:
        return config
    where: dict[str, tuple[SafetensorsFile, str]] = {}
    for handle in open_checkpoint_files(directory, always_read=(NEG_FILE,)).files:
        for stored in handle.keys():
            name = canonical_name(stored)
            if name in (HEAD, EMBEDDING) and name not in where:
                where[name] = (handle, stored)
    return resolve_tied_head(config, where)


def _stored_tensors_equal(a: SafetensorsFile, a_name: str, b: SafetensorsFile, b_name: str) -> bool:
    """``torch.equal`` of two stored tensors, read in row blocks (values compared exactly, in float64
    when the stored dtypes differ; NaN never equals)."""
    shape = a.shape(a_name)
    if shape != b.shape(b_name) or not a.dtype(a_name).is_floating_point or not b.dtype(b_name).is_floating_point:
        return False
    if not shape:
        return _equal(a.get(a_name), b.get(b_name))
    row_bytes = max(1, math.prod(shape[1:])) * max(a.dtype(a_name).itemsize, b.dtype(b_name).itemsize)
    step = max(1, COMPARE_CHUNK_BYTES // row_bytes)
    for start in range(0, shape[0], step):
        stop = min(shape[0], start + step)
        if not _equal(a.rows(a_name, start, stop), b.rows(b_name, start, stop)):
            return False
    return True


def _equal(x: torch.Tensor, y: torch.Tensor) -> bool:
    if x.dtype != y.dtype:
        x, y = x.double(), y.double()
    return torch.equal(x, y)


def read_key_map(path: str | Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = strict_json.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the key map ({exc.strerror or exc})") from None
    except strict_json.JsonError as exc:
        raise ValueError(f"{path}: a key map must be a JSON object of stored name -> expected name; "
                         f"this {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f"{path}: a key map must be a JSON object of stored name -> expected name")
    return data


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for size in shape:
        n *= size
    return n
