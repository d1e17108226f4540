"""One validated description of a Darwin-NEG model: the Qwen3.5 text backbone plus NEG.

Read from an HF checkpoint directory (``config.json``, optionally ``neg_config.json``).
Both the text layout (``model_type: qwen3_5_text``, fields at top level) and the published
vision-language layout (``model_type: qwen3_5``, fields under ``text_config``) are accepted.
Every other part of the project (reference model, converter, engine, runners) takes its
dimensions from here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import strict_json

LINEAR_ATTENTION = "linear_attention"
FULL_ATTENTION = "full_attention"
LAYER_TYPES = (LINEAR_ATTENTION, FULL_ATTENTION)

INT32_MAX = 2**31 - 1
# Far above any model's (Qwen3.5-9B: 32 layers, 32 value heads), far below what would make the
# converter's per-layer and per-head planning hang on a corrupt count.
MAX_LAYERS_OR_HEADS = 4096
BACKBONE_ACTIVATIONS = ("silu",)
# Other names transformers' ACT2FN gives the same function: "swish" is nn.SiLU. A config naming one is the
# same model; it is read as the canonical name, so everything downstream (converted config, engine) sees "silu".
BACKBONE_ACTIVATION_ALIASES = {"swish": "silu"}

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

# transformers' Qwen3_5TextConfig default (``head_dim: int = 256``), not hidden_size // num_attention_heads:
# save_pretrained writes only non-default fields, so a saved config may leave it out.
QWEN3_5_DEFAULT_HEAD_DIM = 256
# Generation ids that GenerationConfig.from_model_config reads from the outer config first and from
# text_config only where the outer config has none (None).
GENERATION_TOKEN_FIELDS = ("eos_token_id", "bos_token_id", "pad_token_id")

# transformers' model_type of each layout: Qwen3_5Config keeps the text model under text_config,
# Qwen3_5TextConfig at the top level.
PUBLISHED_MODEL_TYPE = "qwen3_5"
TEXT_MODEL_TYPE = "qwen3_5_text"
# transformers' classes of the dense Qwen3.5. Another Qwen* class (Qwen3_5Moe*, Qwen3Next*, Qwen3*) is another
# model family; names outside the Qwen family (a Darwin class) are left to model_type and the tensors.
QWEN3_5_ARCHITECTURES = ("Qwen3_5ForConditionalGeneration", "Qwen3_5ForCausalLM", "Qwen3_5Model", "Qwen3_5TextModel")
OTHER_FAMILIES = "Qwen3.5-MoE, Qwen3-Next and Qwen3 checkpoints are not supported"

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """An invalid or inconsistent model config; the message names the file and field."""

    def __init__(self, source: str | Path | None, field_name: str, problem: str):
        self.source = str(source) if source is not None else "<dict>"
        self.field_name = field_name
        super().__init__(f"{self.source}: field '{field_name}': {problem}")


@dataclass(frozen=True)
class BackboneConfig:
    """The Qwen3.5 text backbone (DESIGN.md section 3)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    layer_types: tuple[str, ...]
    # gated full attention
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    partial_rotary_factor: float
    rope_theta: float
    max_position_embeddings: int
    attention_bias: bool
    # Gated DeltaNet (linear attention)
    linear_num_key_heads: int
    linear_num_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int
    linear_conv_kernel_dim: int
    # shared
    hidden_act: str
    rms_norm_eps: float
    tie_word_embeddings: bool
    eos_token_id: tuple[int, ...] = ()
    bos_token_id: int | None = None
    pad_token_id: int | None = None

    # --- derived figures -------------------------------------------------------------
    @property
    def rotary_dim(self) -> int:
        """Dims of each head that RoPE rotates: int(head_dim * partial_rotary_factor)."""
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def linear_key_dim(self) -> int:
        return self.linear_num_key_heads * self.linear_key_head_dim

    @property
    def linear_value_dim(self) -> int:
        return self.linear_num_value_heads * self.linear_value_head_dim

    @property
    def linear_conv_dim(self) -> int:
        """Channels of the causal conv1d: q, k and v projections concatenated."""
        return 2 * self.linear_key_dim + self.linear_value_dim

    @property
    def full_attention_layers(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types) if t == FULL_ATTENTION)

    @property
    def linear_attention_layers(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.layer_types) if t == LINEAR_ATTENTION)

    @property
    def recurrent_state_bytes_per_sequence(self) -> int:
        """fp32 Gated DeltaNet state S [Hv, dk, dv] over all linear-attention layers."""
        per_layer = self.linear_num_value_heads * self.linear_key_head_dim * self.linear_value_head_dim * 4
        return per_layer * len(self.linear_attention_layers)

    def conv_state_bytes_per_sequence(self, dtype: str = "float32") -> int:
        """The last (kernel-1) conv inputs of every linear-attention layer."""
        per_layer = (self.linear_conv_kernel_dim - 1) * self.linear_conv_dim * DTYPE_BYTES[dtype]
        return per_layer * len(self.linear_attention_layers)

    def kv_cache_bytes_per_token(self, dtype: str = "bfloat16") -> int:
        """K and V of every full-attention layer for one token."""
        per_layer = 2 * self.num_key_value_heads * self.head_dim * DTYPE_BYTES[dtype]
        return per_layer * len(self.full_attention_layers)

    @property
    def num_parameters(self) -> int:
        """Parameters of the text backbone (embeddings and LM head included, once if tied)."""
        h = self.hidden_size
        norm = h
        mlp = 3 * h * self.intermediate_size
        attn = (
            h * self.num_attention_heads * self.head_dim * 2  # q_proj: query and output gate
            + 2 * h * self.num_key_value_heads * self.head_dim  # k_proj, v_proj
            + self.num_attention_heads * self.head_dim * h  # o_proj
            + 2 * self.head_dim  # q_norm, k_norm
        )
        if self.attention_bias:
            attn += self.num_attention_heads * self.head_dim * 2 + 2 * self.num_key_value_heads * self.head_dim + h
        hv = self.linear_num_value_heads
        lin = (
            h * self.linear_conv_dim  # in_proj_qkv
            + h * self.linear_value_dim  # in_proj_z
            + 2 * h * hv  # in_proj_b, in_proj_a
            + self.linear_conv_dim * self.linear_conv_kernel_dim  # conv1d
            + 2 * hv  # A_log, dt_bias
            + self.linear_value_head_dim  # gated output norm
            + self.linear_value_dim * h  # out_proj
        )
        total = self.vocab_size * h + norm  # embeddings + final norm
        if not self.tie_word_embeddings:
            total += self.vocab_size * h
        for kind in self.layer_types:
            total += 2 * norm + mlp + (attn if kind == FULL_ATTENTION else lin)
        return total


@dataclass(frozen=True)
class NegConfig:
    """NEG head and gate hyper-parameters (DESIGN.md section 4)."""

    head_hidden_size: int
    activation: str = "silu"
    top_k: int = 8
    temperature: float = 1.0
    seed: int = 0
    enabled: bool = True

    def num_parameters(self, hidden_size: int) -> int:
        """fc1 weight + bias, fc2 weight + bias, gate threshold."""
        return hidden_size * self.head_hidden_size + 2 * self.head_hidden_size + 2


@dataclass(frozen=True)
class DarwinNegConfig:
    backbone: BackboneConfig
    neg: NegConfig
    source: str = ""
    architecture: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_parameters(self) -> int:
        return self.backbone.num_parameters + self.neg.num_parameters(self.backbone.hidden_size)

    def summary(self) -> dict[str, Any]:
        """Every field and derived figure, as plain JSON-able values (for CLIs and metadata)."""
        b = self.backbone
        return {
            "source": self.source,
            "architecture": self.architecture,
            "backbone": dataclasses.asdict(b),
            "neg": dataclasses.asdict(self.neg),
            "derived": {
                "rotary_dim": b.rotary_dim,
                "full_attention_layers": list(b.full_attention_layers),
                "linear_attention_layers": list(b.linear_attention_layers),
                "linear_key_dim": b.linear_key_dim,
                "linear_value_dim": b.linear_value_dim,
                "linear_conv_dim": b.linear_conv_dim,
                "backbone_parameters": b.num_parameters,
                "neg_parameters": self.neg.num_parameters(b.hidden_size),
                "total_parameters": self.num_parameters,
                "recurrent_state_bytes_per_sequence": b.recurrent_state_bytes_per_sequence,
                "conv_state_bytes_per_sequence_fp32": b.conv_state_bytes_per_sequence("float32"),
                "kv_cache_bytes_per_token_bf16": b.kv_cache_bytes_per_token("bfloat16"),
            },
        }


# ------------------------------------------------------------------------------------
# Parsing and validation
# ------------------------------------------------------------------------------------

_MISSING = object()


class JsonFields:
    """Typed access to one JSON object; every error names the file and the field."""

    def __init__(self, data: Mapping[str, Any], source: str | Path | None, prefix: str = ""):
        if not isinstance(data, Mapping):
            raise ConfigError(source, prefix.rstrip(".") or "<root>", f"expected a JSON object, got {type(data).__name__}")
        self.data, self.source, self.prefix = data, source, prefix

    def error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.source, self.prefix + name, problem)

    def get(self, name: str, default: Any = _MISSING) -> Any:
        if name in self.data and self.data[name] is not None:
            return self.data[name]
        if default is _MISSING:
            raise self.error(name, "is required but missing")
        return default

    def int(self, name: str, default: Any = _MISSING, minimum: int | None = 1, maximum: int | None = None,
            why_maximum: str = "") -> int:
        """An integer in [minimum, maximum]; without a ``maximum``, one that fits in int32 (TensorRT's and
        the plugins' sizes are int32, and a huge declared size must not drive work before it is refused)."""
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be >= {minimum}, got {value}")
        if maximum is None:
            maximum, why_maximum = INT32_MAX, " (an int32 size)"
        if value > maximum:
            raise self.error(name, f"must be <= {maximum}{why_maximum}, got {value}")
        return value

    def count(self, name: str, default: Any = _MISSING) -> int:
        """A number of layers or heads: the converter and the checks plan per layer and per head, so a
        corrupt count is refused here rather than planned for."""
        return self.int(name, default, maximum=MAX_LAYERS_OR_HEADS, why_maximum=" (trt_neg's limit on layer and "
                                                                                 "head counts)")

    def float(self, name: str, default: Any = _MISSING, positive: bool = True) -> float:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(name, f"must be a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer literal beyond the float range
            raise self.error(name, "must be a finite number, got an integer too large for a float") from None
        if not math.isfinite(value) or (positive and value <= 0):
            raise self.error(name, f"must be a finite {'positive ' if positive else ''}number, got {value}")
        return value

    def bool(self, name: str, default: Any = _MISSING) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise self.error(name, f"must be true or false, got {value!r}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: Any = _MISSING) -> str:
        value = self.get(name, default)
        if value not in choices:
            raise self.error(name, f"must be one of {', '.join(choices)}; got {value!r}")
        return value


def read_token_ids(fields: JsonFields, name: str) -> tuple[int, ...]:
    value = fields.get(name, None)
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise fields.error(name, f"must be a token id or a list of token ids, got {value!r}")
    return tuple(values)


def special_token_ids(fields: JsonFields) -> dict[str, Any]:
    """BackboneConfig's eos (every id listed), bos and pad (the first id, or None) token fields."""
    return {"eos_token_id": read_token_ids(fields, "eos_token_id"),
            "bos_token_id": (read_token_ids(fields, "bos_token_id") or (None,))[0],
            "pad_token_id": (read_token_ids(fields, "pad_token_id") or (None,))[0]}


def parse_backbone(text: Mapping[str, Any], source: str | Path | None = None, prefix: str = "") -> BackboneConfig:
    f = JsonFields(text, source, prefix)
    _refuse_experts(f)
    num_layers = f.count("num_hidden_layers")
    if "layer_types" in text and text["layer_types"] is not None:
        layer_types = text["layer_types"]
        if not isinstance(layer_types, list) or not all(isinstance(t, str) for t in layer_types):
            raise f.error("layer_types", "must be a list of strings")
        bad = sorted({t for t in layer_types if t not in LAYER_TYPES})
        if bad:
            raise f.error("layer_types", f"unknown layer type(s) {bad}; expected {' or '.join(LAYER_TYPES)}")
        if len(layer_types) != num_layers:
            raise f.error(
                "layer_types", f"has {len(layer_types)} entries but num_hidden_layers is {num_layers}"
            )
    else:
        interval = f.int("full_attention_interval", 4)
        layer_types = [FULL_ATTENTION if (i + 1) % interval == 0 else LINEAR_ATTENTION for i in range(num_layers)]

    # rope_parameters (transformers 5), the legacy rope_scaling dict, or legacy top-level rope_theta /
    # partial_rotary_factor. transformers (PreTrainedConfig.convert_rope_params_to_dict:
    # ``rope_scaling or rope_parameters``) lets a non-empty rope_scaling win; two that disagree are refused.
    params, scaling = text.get("rope_parameters"), text.get("rope_scaling")
    if params and scaling and params != scaling:
        raise f.error("rope_scaling", f"{scaling!r} disagrees with {prefix}rope_parameters {params!r} "
                                      "(transformers would use rope_scaling); keep one of the two fields")
    rope_field = "rope_scaling" if scaling else "rope_parameters"
    rope = scaling or params or {}
    rf = JsonFields(rope, source, prefix + rope_field + ".")
    _refuse_nested_rope(rf)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ("default", "mrope"):
        raise rf.error("rope_type", f"only default (and text-only M-RoPE) rotary embeddings are supported, got {rope_type!r}")
    if "rope_theta" in rope:
        rope_theta = rf.float("rope_theta")
    else:
        rope_theta = f.float("rope_theta")
    if "partial_rotary_factor" in rope:
        partial = rf.float("partial_rotary_factor")
    else:
        partial = f.float("partial_rotary_factor", 0.25)
    if partial > 1:
        raise (rf if "partial_rotary_factor" in rope else f).error(
            "partial_rotary_factor", f"must be in (0, 1], got {partial}"
        )

    cfg = BackboneConfig(
        vocab_size=f.int("vocab_size"),
        hidden_size=f.int("hidden_size"),
        intermediate_size=f.int("intermediate_size"),
        num_hidden_layers=num_layers,
        layer_types=tuple(layer_types),
        num_attention_heads=f.count("num_attention_heads"),
        num_key_value_heads=f.count("num_key_value_heads"),
        head_dim=f.int("head_dim", QWEN3_5_DEFAULT_HEAD_DIM),
        partial_rotary_factor=partial,
        rope_theta=rope_theta,
        # A sequence holds at least its prompt's one token and one generated token.
        max_position_embeddings=f.int("max_position_embeddings", minimum=2),
        attention_bias=f.bool("attention_bias", False),
        linear_num_key_heads=f.count("linear_num_key_heads"),
        linear_num_value_heads=f.count("linear_num_value_heads"),
        linear_key_head_dim=f.int("linear_key_head_dim"),
        linear_value_head_dim=f.int("linear_value_head_dim"),
        linear_conv_kernel_dim=f.int("linear_conv_kernel_dim", 4, minimum=2),
        hidden_act=_backbone_activation(f),
        rms_norm_eps=f.float("rms_norm_eps", 1e-6),
        tie_word_embeddings=f.bool("tie_word_embeddings", False),
        **special_token_ids(f),
    )
    check_backbone(cfg, source, prefix)
    return cfg


def _backbone_activation(f: JsonFields) -> str:
    """``hidden_act`` as its canonical name (an alias of the same function, e.g. swish, becomes silu)."""
    value = f.get("hidden_act", "silu")
    canonical = BACKBONE_ACTIVATION_ALIASES.get(value, value) if isinstance(value, str) else value
    if canonical not in BACKBONE_ACTIVATIONS:
        raise f.error("hidden_act", f"must be one of {', '.join(BACKBONE_ACTIVATIONS)} (or an alias: "
                                    f"{', '.join(BACKBONE_ACTIVATION_ALIASES)}); got {value!r}")
    return canonical


def _refuse_experts(f: JsonFields) -> None:
    """A mixture-of-experts config (Qwen3.5-MoE, Qwen3-Next) is not the dense backbone implemented here."""
    experts = f.get("num_experts", 0)
    if experts != 0:
        raise f.error("num_experts", f"is {experts!r}: a mixture-of-experts model; Darwin-NEG's backbone is the "
                                     "dense Qwen3.5 (one MLP per layer), the only one trt_neg implements")


def _refuse_nested_rope(rf: JsonFields) -> None:
    """Rope parameters nested by layer type: transformers 5.23's Qwen3.5 reads one flat object (and fails on
    these), so reading the flat fields instead would drop whatever scaling the nested ones ask for."""
    for key, value in rf.data.items():
        if isinstance(value, Mapping):
            raise rf.error(key, "per-layer-type rope parameters are not supported: give rope_type, rope_theta and "
                                "partial_rotary_factor in one object")


def check_backbone(cfg: BackboneConfig, source: str | Path | None = None, prefix: str = "") -> None:
    """Cross-field consistency of a backbone description (ConfigError naming file and field)."""
    f = JsonFields({}, source, prefix)
    if cfg.num_attention_heads % cfg.num_key_value_heads:
        raise f.error(
            "num_key_value_heads",
            f"must divide num_attention_heads ({cfg.num_attention_heads}); got {cfg.num_key_value_heads}",
        )
    if cfg.linear_num_value_heads % cfg.linear_num_key_heads:
        raise f.error(
            "linear_num_key_heads",
            f"must divide linear_num_value_heads ({cfg.linear_num_value_heads}); got {cfg.linear_num_key_heads}",
        )
    rotary = cfg.rotary_dim
    if rotary < 2 or rotary % 2:
        raise f.error(
            "partial_rotary_factor",
            f"head_dim {cfg.head_dim} x {cfg.partial_rotary_factor} gives {rotary} rotary dims; need an even number >= 2",
        )
    if FULL_ATTENTION not in cfg.layer_types and LINEAR_ATTENTION not in cfg.layer_types:
        raise f.error("layer_types", "is empty")
    if len(cfg.layer_types) != cfg.num_hidden_layers:
        raise f.error("layer_types", f"has {len(cfg.layer_types)} entries but num_hidden_layers is {cfg.num_hidden_layers}")
    for name, tokens in (("eos_token_id", cfg.eos_token_id), ("bos_token_id", (cfg.bos_token_id,)),
                         ("pad_token_id", (cfg.pad_token_id,))):
        for token in tokens:
            if token is not None and token >= cfg.vocab_size:
                raise f.error(name, f"token id {token} is outside the vocabulary (vocab_size {cfg.vocab_size})")


def parse_neg(data: Mapping[str, Any], source: str | Path | None, prefix: str, hidden_size: int) -> NegConfig:
    f = JsonFields(data, source, prefix)
    for name in ("threshold", "tau"):
        if name in data:
            raise f.error(name, "the gate threshold is the checkpoint tensor neg_gate.threshold, not a config "
                                "field (two values could disagree); remove it")
    known = {"head_hidden_size", "activation", "top_k", "temperature", "seed", "enabled"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise f.error(unknown[0], f"unknown NEG field; expected some of {sorted(known)}")
    seed = f.int("seed", 0, minimum=0, maximum=2**64 - 1, why_maximum=" (64 bits)")
    return NegConfig(
        head_hidden_size=f.int("head_hidden_size"),
        activation=_neg_activation(f),
        top_k=f.int("top_k", 8, maximum=INT32_MAX, why_maximum=" (the NEG plugin's INT32 field)"),
        temperature=_neg_temperature(f),
        seed=seed,
        enabled=f.bool("enabled", True),
    )


def _neg_activation(f: JsonFields) -> str:
    """The canonical name of ``activation``: the aliases neg.py accepts (e.g. swish) become its names."""
    from .neg import ACTIVATION_ALIASES, ACTIVATIONS, canonical_activation  # the one table of names

    value = f.get("activation", "silu")
    if isinstance(value, str):
        try:
            return canonical_activation(value)
        except ValueError:
            pass
    raise f.error("activation", f"must be one of {', '.join(ACTIVATIONS)} (or an alias: "
                                f"{', '.join(ACTIVATION_ALIASES)}); got {value!r}")


def _neg_temperature(f: JsonFields) -> float:
    """``temperature``, which the NEG op divides by in float32: it must stay finite and > 0 there."""
    value = f.float("temperature", 1.0)
    as_float32 = to_float32(value)
    if as_float32 == 0 or math.isinf(as_float32):
        raise f.error("temperature", f"must be a finite positive number in float32 (the NEG op's precision), got "
                                     f"{value} ({as_float32} in float32)")
    return value


def to_float32(value: float) -> float:
    """``value`` rounded to float32 as the NEG op sees it (inf beyond float32's range)."""
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:  # beyond the float32 range: rounds to inf
        return math.copysign(math.inf, value)


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; ConfigError naming the file if it is missing, unreadable, not UTF-8,
    not JSON (strict_json's rules) or not an object."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "<file>", "not found") from None
    except OSError as exc:  # a directory, unreadable, ...
        raise ConfigError(path, "<file>", f"cannot be read ({exc.strerror or exc})") from None
    try:
        data = strict_json.loads(raw)
    except strict_json.JsonError as exc:
        raise ConfigError(path, "<file>", str(exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(path, "<root>", "expected a JSON object")
    return data


def config_from_dict(data: Mapping[str, Any], source: str | Path | None = None,
                     neg_data: Mapping[str, Any] | None = None,
                     neg_source: str | Path | None = None) -> DarwinNegConfig:
    """Build the description from a parsed ``config.json`` (text or vision-language layout)."""
    _refuse_trtllm_outputs(data, source)
    published = _is_published_layout(data, source)
    architecture = _architecture(data, source)
    _refuse_quantized(data, source)
    if published:
        text = data["text_config"]
        if not isinstance(text, Mapping):
            raise ConfigError(source, "text_config", "expected a JSON object")
        _check_model_type(text, source, "text_config.", (TEXT_MODEL_TYPE, PUBLISHED_MODEL_TYPE))
        backbone = _vl_backbone(data, text, source)
    else:
        backbone = parse_backbone(data, source, "")

    if neg_data is None:
        neg_data = data.get("neg_config")
        neg_source, neg_prefix = source, "neg_config."
    else:
        neg_prefix = ""
    if neg_data is None:
        raise ConfigError(source, "neg_config", "is missing and there is no neg_config.json beside it")
    neg = parse_neg(neg_data, neg_source, neg_prefix, backbone.hidden_size)
    return DarwinNegConfig(
        backbone=backbone, neg=neg, source=str(source or ""), architecture=architecture, extra=dict(data)
    )


def _refuse_trtllm_outputs(data: Mapping[str, Any], source: str | Path | None) -> None:
    """A converted TensorRT-LLM checkpoint or an engine directory given where an HF checkpoint is expected:
    say what it is and which HF checkpoint to give instead (its fields would fail as unknown layer types)."""
    if isinstance(data.get("pretrained_config"), Mapping) and isinstance(data.get("build_config"), Mapping):
        raise ConfigError(source, "pretrained_config", "a TensorRT-LLM engine directory's config, not an HF "
                                                       "checkpoint; give the HF checkpoint it was built from "
                                                       "(build_info.json's hf_model_dir)")
    mapping = data.get("mapping")
    if not isinstance(data.get("architecture"), str) or not isinstance(mapping, Mapping):
        return
    layout = f"tp {mapping.get('tp_size', '?')}" + (f", pp {mapping['pp_size']}" if mapping.get("pp_size", 1) != 1
                                                    else "")
    ours = data.get("trt_neg") if isinstance(data.get("trt_neg"), Mapping) else None
    writer = "written by build_engine.py " if ours is not None else ""
    origin = f": {ours['source']}" if ours is not None and ours.get("source") else ""
    raise ConfigError(source, "architecture", f"a TensorRT-LLM checkpoint {writer}({layout}), not an HF checkpoint; "
                                              f"give the HF checkpoint it was converted from{origin}")


def _refuse_quantized(data: Mapping[str, Any], source: str | Path | None) -> None:
    """A quantized checkpoint (FP8 blocks with scales, AWQ, GPTQ...) stores tensors the converter cannot
    read as weights; say so here rather than with an unknown dtype or an unexpected ``weight_scale`` tensor."""
    for prefix, fields in (("", data), ("text_config.", data.get("text_config"))):
        q = fields.get("quantization_config") if isinstance(fields, Mapping) else None
        if q is not None:
            method = q.get("quant_method", "?") if isinstance(q, Mapping) else q
            raise ConfigError(source, prefix + "quantization_config",
                              f"the checkpoint is quantized (quant_method {method!r}); trt_neg converts bf16, fp16 or "
                              "fp32 weights: use the unquantized checkpoint")


def _check_model_type(data: Mapping[str, Any], source: str | Path | None, prefix: str,
                      accepted: tuple[str, ...]) -> None:
    """A Qwen model type of another family is refused; a type outside the Qwen family (a Darwin
    checkpoint's own) is left to the fields and the tensors, as for ``architectures``."""
    model_type = data.get("model_type")
    if isinstance(model_type, str) and model_type.lower().startswith("qwen") and model_type not in accepted:
        raise ConfigError(source, prefix + "model_type", f"is {model_type!r}, not a dense Qwen3.5 model "
                                                         f"({' or '.join(accepted)}); {OTHER_FAMILIES}")


def _is_published_layout(data: Mapping[str, Any], source: str | Path | None) -> bool:
    """Whether the text model's fields are under ``text_config``: transformers decides by ``model_type``
    (Qwen3_5Config builds its default text config when text_config is absent, whatever the top level says;
    Qwen3_5TextConfig reads the top level and not text_config), so the two must agree; without a
    ``model_type``, by the presence of ``text_config``."""
    _check_model_type(data, source, "", (PUBLISHED_MODEL_TYPE, TEXT_MODEL_TYPE))
    model_type, has_text_config = data.get("model_type"), data.get("text_config") is not None
    if model_type == PUBLISHED_MODEL_TYPE and not has_text_config:
        raise ConfigError(source, "text_config", f"is missing; model_type {PUBLISHED_MODEL_TYPE!r} keeps the text "
                                                 "model's fields there (transformers would ignore the top-level "
                                                 f"ones), or use model_type {TEXT_MODEL_TYPE!r} for fields at the "
                                                 "top level")
    if model_type == TEXT_MODEL_TYPE and has_text_config:
        raise ConfigError(source, "text_config", f"model_type {TEXT_MODEL_TYPE!r} has its fields at the top level "
                                                 "and transformers does not read text_config; remove one of the two")
    return has_text_config


def _architecture(data: Mapping[str, Any], source: str | Path | None) -> str:
    """The first of ``architectures`` (one name or a list; "" if none); a Qwen class of another family is refused."""
    names = data.get("architectures") or []
    names = [names] if isinstance(names, str) else names
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(source, "architectures", f"must be a list of class names, got {data['architectures']!r}")
    for name in names:
        if name.startswith("Qwen") and name not in QWEN3_5_ARCHITECTURES:
            raise ConfigError(source, "architectures", f"names {name!r}, not a dense Qwen3.5 model "
                                                       f"({' or '.join(QWEN3_5_ARCHITECTURES)}); {OTHER_FAMILIES}")
    return names[0] if names else ""


def _vl_backbone(data: Mapping[str, Any], text: Mapping[str, Any], source: str | Path | None) -> BackboneConfig:
    """The backbone of the vision-language layout, resolving fields given at both levels as transformers does.

    * ``tie_word_embeddings``: Qwen3_5ForConditionalGeneration (the layout's architecture) ties by the
      OUTER config's value, whose default is false; text_config's value is not read (transformers 5.23
      ``get_expanded_tied_weights_keys`` reads ``self.config``, the Qwen3_5Config).
    * ``eos_token_id`` / ``bos_token_id`` / ``pad_token_id``: ``GenerationConfig.from_model_config`` takes
      the outer config's value where it is not null, text_config's otherwise.
    """
    backbone = parse_backbone(text, source, "text_config.")
    outer = JsonFields(data, source)
    tie = outer.bool("tie_word_embeddings", False)
    if text.get("tie_word_embeddings") is not None and text["tie_word_embeddings"] != tie:
        log.warning("%s: text_config.tie_word_embeddings (%s) is ignored: Qwen3_5ForConditionalGeneration ties "
                    "by the top-level tie_word_embeddings (%s)", source or "<dict>",
                    text["tie_word_embeddings"], "absent: false" if data.get("tie_word_embeddings") is None
                    else tie)
    overrides: dict[str, Any] = {"tie_word_embeddings": tie}
    for name in GENERATION_TOKEN_FIELDS:
        if data.get(name) is None:
            continue
        ids = read_token_ids(outer, name)
        for token in ids:
            if token >= backbone.vocab_size:
                raise outer.error(name, f"token id {token} is outside the vocabulary "
                                        f"(text_config.vocab_size {backbone.vocab_size})")
        overrides[name] = ids if name == "eos_token_id" else (ids or (None,))[0]
    return dataclasses.replace(backbone, **overrides)


def load_config(path: str | Path) -> DarwinNegConfig:
    """Read and validate a Darwin-NEG description from a checkpoint directory or config.json."""
    path = Path(path)
    config_path = path / "config.json" if path.is_dir() else path
    if not config_path.exists():
        raise ConfigError(config_path, "<file>", "not found (expected an HF checkpoint directory with config.json)")
    data = read_json_object(config_path)
    neg_path = config_path.parent / "neg_config.json"
    if neg_path.exists():
        if data.get("neg_config") is not None:
            raise ConfigError(neg_path, "<file>", "NEG config given twice: in config.json's neg_config and here")
        config = config_from_dict(data, config_path, read_json_object(neg_path), neg_path)
    else:
        config = config_from_dict(data, config_path)
    return _with_generation_eos(config, config_path.parent / "generation_config.json")


def _with_generation_eos(config: DarwinNegConfig, path: Path) -> DarwinNegConfig:
    """Add generation_config.json's ``eos_token_id`` (one id or a list) to the end-of-sequence ids.

    HF ``generate`` stops on those (chat checkpoints put ``<|im_end|>`` there while config.json
    may name only ``<|endoftext|>``), so every backend and the engine config stop on the union,
    config.json's ids first."""
    if not path.exists():
        return config
    extra = read_token_ids(JsonFields(read_json_object(path), path), "eos_token_id")
    b = config.backbone
    merged = b.eos_token_id + tuple(t for t in dict.fromkeys(extra) if t not in b.eos_token_id)
    if merged == b.eos_token_id:
        return config
    for token in merged:
        if token >= b.vocab_size:
            raise ConfigError(path, "eos_token_id", f"token id {token} is outside the vocabulary "
                              f"(vocab_size {b.vocab_size})")
    return dataclasses.replace(config, backbone=dataclasses.replace(b, eos_token_id=merged))
