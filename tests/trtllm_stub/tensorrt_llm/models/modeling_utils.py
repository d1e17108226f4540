"""modeling_utils.py stand-ins: PretrainedConfig (keyword __init__, kwargs become attributes),
DecoderLayerList (layers of mapping.pp_layers), PretrainedModel/DecoderModelForCausalLM
(__init__ registers the RoPE buffers via Attention.create_attention_const_params). Read in
the 1.x modeling_utils.py (index id 1189552800)."""

import copy
from types import SimpleNamespace

from ..functional import PositionEmbeddingType
from ..layers import Attention, AttentionParams, KeyValueCacheParams
from ..mapping import Mapping
from ..module import Module, ModuleList


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
        self.quantization = quantization or {}
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
    def from_checkpoint(cls, ckpt_dir, rank=None, config=None, **kwargs):
        if rank is not None:
            config.set_rank(rank)
        return cls(config)


    def prepare_inputs(self, max_batch_size, max_input_len, max_seq_len, max_num_tokens, use_cache,
                       max_beam_width=1, opt_num_tokens=None, prompt_embedding_table_size=0,
                       position_encoding_2d=False, max_draft_len=0, speculative_decoding_draft_tokens_external=False,
                       spec_decoding_is_generation_length_variable=False, gather_context_logits=False,
                       lora_target_modules=None, opt_batch_size=0, num_hidden_layers=None,
                       mrope_rotary_cos_sin_size=None):
        """The paged-KV branch of 1.x ``PretrainedModel.prepare_inputs`` -> ``prepare_basic_inputs`` ->
        ``GenerationMixin.prepare_attention_inputs`` (modeling_utils.py NVIDIA/TensorRT-LLM@01ea6d79,
        generation_mixin.py @03ec464e): ``num_layers`` (``num_hidden_layers`` or the config's) is split
        over the pp stages with ``mapping.pp_layers(num_layers)``; this stage gets
        ``num_attn_layers_prev_rank`` past_key_value slots (all None when paged) and the per-layer
        host tensors are sized by it."""
        from collections import OrderedDict

        from ..functional import Tensor

        mapping = self.config.mapping
        num_layers = num_hidden_layers if num_hidden_layers is not None else self.config.num_hidden_layers
        layers_range = mapping.pp_layers(num_layers)
        attn_layer_idx = list(range(num_layers))
        local_attn_layers = [i for i in layers_range if i in attn_layer_idx]
        lower = attn_layer_idx.index(local_attn_layers[0])  # IndexError for an empty stage, as in 1.x
        per_stage = lower // mapping.pp_rank if mapping.pp_rank != 0 else len(layers_range)
        t = lambda name, shape: Tensor(name=name, dtype="int32", shape=shape, dim_range=OrderedDict())  # noqa: E731
        host = dict(host_request_types=t("host_request_types", [-1]),
                    host_context_lengths=t("host_context_lengths", [-1]))
        kv = KeyValueCacheParams(past_key_value=[None] * per_stage,
                                 host_kv_cache_pool_mapping=t("host_kv_cache_pool_mapping", [per_stage, 2]),
                                 host_max_attention_window_sizes=t("host_max_attention_window_sizes", [per_stage]))
        return {"input_ids": t("input_ids", [-1]) if mapping.is_first_pp_rank() else None,
                "position_ids": t("position_ids", [-1]) if mapping.is_first_pp_rank() else None,
                "use_cache": True, "last_token_ids": t("last_token_ids", [-1]), "attention_mask": None,
                "kv_cache_params": kv, "attention_params": AttentionParams(**host),
                **({} if mapping.is_first_pp_rank() else {"hidden_states": t("hidden_states_input", [-1, -1])})}


class DecoderModelForCausalLM(PretrainedModel):
    def __init__(self, config, transformer, lm_head):
        super().__init__(config)
        self.transformer = transformer
        self.lm_head = lm_head
        Attention.create_attention_const_params(self, config)
        self.position_embedding_type = config.position_embedding_type
