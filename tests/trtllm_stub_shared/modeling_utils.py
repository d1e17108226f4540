"""modeling_utils.py stand-ins: PretrainedConfig (keyword __init__, kwargs become attributes),
DecoderLayerList (layers of mapping.pp_layers), PretrainedModel/DecoderModelForCausalLM
(__init__ registers the RoPE buffers via Attention.create_attention_const_params). Read in
the 1.x modeling_utils.py (index id 1189552800).

Each stub subclasses ``PretrainedModel`` (recording: ``prepare_inputs``; numeric:
``from_checkpoint`` loads ``rank{N}.safetensors``) and ``DecoderModelForCausalLM``, whose
``_stub_attention_cls`` names that stub's ``layers.Attention``."""

import copy
import dataclasses
from types import SimpleNamespace

from .functional_enums import PositionEmbeddingType
from .mapping import Mapping
from .module import Module, ModuleList


@dataclasses.dataclass
class QuantConfig:
    """1.x modeling_utils.py (NVIDIA/TensorRT-LLM@01ea6d79) ``QuantConfig``: ``from_dict`` is
    ``cls(**config)`` (an unknown key is a TypeError) and ``to_dict`` is ``dataclasses.asdict``, so
    ``PretrainedConfig.to_dict()`` writes every field below, not only the two a checkpoint gives."""
    quant_algo: object = None
    kv_cache_quant_algo: object = None
    group_size: int = 128
    smoothquant_val: float = 0.5
    clamp_val: object = None
    use_meta_recipe: bool = False
    has_zero_point: bool = False
    pre_quant_scale: bool = False
    exclude_modules: object = None

    @classmethod
    def from_dict(cls, config):
        return cls(**config)

    def to_dict(self):
        return dataclasses.asdict(self)


class PretrainedConfig:
    def __init__(self, *, architecture, dtype, hidden_size, num_hidden_layers, num_attention_heads, vocab_size=None,
                 hidden_act="gelu", logits_dtype="float32", norm_epsilon=1e-5,
                 position_embedding_type=PositionEmbeddingType.learned_absolute, max_position_embeddings=None,
                 rotary_embedding_dim=None, num_key_value_heads=None, intermediate_size=None, mapping=None,
                 quantization=None, use_parallel_embedding=False, embedding_sharding_dim=0, head_size=None,
                 qk_layernorm=False, runtime_defaults=None, **kwargs):
        self.architecture, self.dtype, self.vocab_size = architecture, dtype, vocab_size
        self.hidden_size, self.num_hidden_layers, self.num_attention_heads = hidden_size, num_hidden_layers, \
            num_attention_heads
        self.hidden_act, self.logits_dtype, self.norm_epsilon = hidden_act, logits_dtype, norm_epsilon
        if isinstance(position_embedding_type, str):
            position_embedding_type = PositionEmbeddingType.from_string(position_embedding_type)
        self.position_embedding_type = position_embedding_type
        self.num_key_value_heads = num_key_value_heads or num_attention_heads
        self.intermediate_size = intermediate_size or 4 * hidden_size
        self.max_position_embeddings = max_position_embeddings
        mapping = Mapping() if mapping is None else mapping
        self.mapping = Mapping.from_dict(mapping) if isinstance(mapping, dict) else mapping
        # 1.x: None -> QuantConfig(), a dict -> QuantConfig.from_dict (to_dict writes it back whole)
        if quantization is None:
            quantization = QuantConfig()
        elif isinstance(quantization, dict):
            quantization = QuantConfig.from_dict(quantization)
        self.quantization = quantization
        self.use_parallel_embedding, self.embedding_sharding_dim = use_parallel_embedding, embedding_sharding_dim
        self.head_size = head_size or hidden_size // num_attention_heads
        self.qk_layernorm = qk_layernorm
        if rotary_embedding_dim is None:
            rotary_embedding_dim = kwargs.get("rotary_dim", int(self.head_size * kwargs.get("rotary_pct", 1.0)))
        self.rotary_embedding_dim = rotary_embedding_dim
        self.implicit = sorted(kwargs)  # the real class warns "Implicitly setting ..." for each
        for k, v in kwargs.items():
            setattr(self, k, v)

    @property
    def quant_mode(self):
        return SimpleNamespace(has_any_quant=lambda: False)

    @property
    def kv_dtype(self):
        return self.dtype

    def set_rank(self, rank):
        self.mapping.rank = rank

    def to_dict(self):
        out = copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "implicit"})
        out["position_embedding_type"] = str(self.position_embedding_type)
        out["mapping"] = self.mapping.to_dict()
        out["mapping"].pop("rank")
        out["quantization"] = self.quantization.to_dict()
        return out


class DecoderLayerList(ModuleList):
    def __init__(self, cls, config):
        self.num_hidden_layers = config.num_hidden_layers
        self.layer_list = config.mapping.pp_layers(config.num_hidden_layers)
        super().__init__([cls(config, idx) for idx in self.layer_list])


class PretrainedModel(Module):
    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def from_checkpoint(cls, ckpt_dir, rank=None, config=None, *, preprocess_weights_hook=None):
        # 1.x modeling_utils.py (index id 1189552800): (ckpt_dir, rank=None, config=None, *,
        # preprocess_weights_hook=None); any other keyword is a TypeError there.
        if rank is not None:
            config.set_rank(rank)
        return cls(config)


class DecoderModelForCausalLM(PretrainedModel):
    _stub_attention_cls = None  # set by each stub's subclass: its layers.Attention

    def __init__(self, config, transformer, lm_head):
        super().__init__(config)
        self.transformer = transformer
        self.lm_head = lm_head
        self._stub_attention_cls.create_attention_const_params(self, config)
        self.position_embedding_type = config.position_embedding_type
