"""``DarwinNegConfig``: TensorRT-LLM's ``PretrainedConfig`` for a converted Darwin-NEG checkpoint.

The converted checkpoint's ``config.json`` is written by ``trt_neg/checkpoint/contract.py``
(``checkpoint_config``); this class reads it back for the network definition. Validation is
the contract's: ``contract.config_from_checkpoint`` parses the same dict into the project's
model description (:meth:`DarwinNegConfig.description`), so dimensions have one source of
truth. Follows TensorRT-LLM's ``models/<family>/config.py`` convention (1.2.x
``models/modeling_utils.py::PretrainedConfig``: keyword-only ``__init__`` taking
``architecture, dtype, hidden_size, num_hidden_layers, num_attention_heads, vocab_size,
hidden_act, logits_dtype, norm_epsilon, position_embedding_type, max_position_embeddings,
rotary_embedding_dim, num_key_value_heads, intermediate_size, mapping, quantization,
use_parallel_embedding, embedding_sharding_dim, head_size, qk_layernorm, runtime_defaults,
**kwargs``; ``from_dict`` looks the class up in ``tensorrt_llm.models.MODEL_MAP``, which
does not know our architecture, hence the overrides below).
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from trt_neg.trtllm import require_tensorrt_llm

require_tensorrt_llm()

from tensorrt_llm.models.modeling_utils import PretrainedConfig  # noqa: E402

from trt_neg.checkpoint import contract  # noqa: E402

# The engine's config.json names this architecture so the C++ runtime (gptJsonConfig.cpp)
# treats the model as recurrent + attention (docs/trtllm_engine.md section 5). The TRT-LLM
# *checkpoint* keeps contract.ARCHITECTURE; only the engine config is rewritten.
RUNTIME_ARCHITECTURE_ALIAS = "RecurrentGemmaForCausalLM"

# Model fields of contract.checkpoint_config beyond PretrainedConfig's own arguments.
_MODEL_FIELDS: dict[str, Any] = {
    "layer_types": None,
    "state_size": None,
    "rnn_head_size": None,
    "rnn_hidden_size": None,
    "rnn_conv_dim_size": None,
    "conv_kernel": None,
    "state_dtype": "float32",
    "linear_num_key_heads": None,
    "linear_num_value_heads": None,
    "linear_key_head_dim": None,
    "linear_value_head_dim": None,
    "rotary_base": 10000.0,
    "rotary_scaling": None,
    "attn_output_gate": True,
    "attention_bias": False,
    "share_embedding_table": False,
    "tie_word_embeddings": False,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    "neg_config": None,
    "trt_neg": None,
    "trt_neg_architecture": None,
}


class DarwinNegConfig(PretrainedConfig):
    """TensorRT-LLM config of Darwin-NEG (Qwen3.5 text backbone + NEG)."""

    def __init__(self, **kwargs: Any):
        fields = {k: kwargs.pop(k, default) for k, default in _MODEL_FIELDS.items()}
        # Derived attributes written back by to_dict(); recomputed below.
        kwargs.pop("rotary_pct", None)
        kwargs.pop("rotary_dim", None)
        kwargs.setdefault("architecture", contract.ARCHITECTURE)
        kwargs.setdefault("qk_layernorm", True)
        kwargs.setdefault("position_embedding_type", "rope_gpt_neox")
        super().__init__(**kwargs)
        for key, value in fields.items():
            setattr(self, key, value)
        if self.layer_types is None:
            raise ValueError("DarwinNegConfig: 'layer_types' is required (one TensorRT-LLM layer type per layer)")
        self.layer_types = list(self.layer_types)
        if self.trt_neg_architecture is None:
            self.trt_neg_architecture = contract.ARCHITECTURE
        # Attention.create_attention_const_params sizes the RoPE tables from rotary_dim (else
        # head_size * rotary_pct, default 1.0): set both so the tables cover only the rotated dims.
        self.rotary_dim = int(self.rotary_embedding_dim)
        self.rotary_pct = self.rotary_dim / self.head_size
        if self.neg_config is None:
            raise ValueError("DarwinNegConfig: 'neg_config' is required")

    # --- construction ----------------------------------------------------------------
    @classmethod
    def from_dict(cls, config: dict) -> "DarwinNegConfig":
        return cls(**copy.deepcopy(dict(config)))

    @classmethod
    def from_json_file(cls, config_file: str | os.PathLike[str]) -> "DarwinNegConfig":
        with open(config_file, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str | os.PathLike[str]) -> "DarwinNegConfig":
        return cls.from_json_file(os.path.join(ckpt_dir, "config.json"))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.pop("rotary_pct", None)
        out.pop("rotary_dim", None)
        return out

    # --- the project's view -----------------------------------------------------------
    def description(self):
        """The validated model description (``trt_neg.config.DarwinNegConfig``), mapping and dtype."""
        data = self.to_dict()
        data["architecture"] = self.trt_neg_architecture
        data["mapping"] = {"world_size": self.mapping.world_size, "tp_size": self.mapping.tp_size,
                           "pp_size": self.mapping.pp_size}
        # The fields derived from the model were checked when build_engine.py read config.json;
        # TensorRT-LLM's to_dict() may write them in its own forms (quantization: its whole QuantConfig).
        return contract.config_from_checkpoint(data, source="<DarwinNegConfig>", check_derived=False)

    def engine_config_overrides(self) -> dict[str, Any]:
        """Fields the engine build writes into the engine's ``pretrained_config`` (runtime alias)."""
        return {"architecture": RUNTIME_ARCHITECTURE_ALIAS, "trt_neg_architecture": self.trt_neg_architecture}

    @property
    def neg_enabled(self) -> bool:
        return bool((self.neg_config or {}).get("enabled", True))


def config_for(description, mapping: "contract.Mapping", dtype: str, rank: int = 0,
               **overrides: Any) -> DarwinNegConfig:
    """A ``DarwinNegConfig`` straight from a model description (what conversion would write)."""
    data = contract.checkpoint_config(description, mapping, dtype)
    data.update(overrides)
    config = DarwinNegConfig.from_dict(data)
    config.set_rank(rank)
    return config


__all__ = ["DarwinNegConfig", "RUNTIME_ARCHITECTURE_ALIAS", "config_for"]

