"""modeling_utils.py stand-ins: PretrainedConfig, DecoderLayerList, PretrainedModel and
DecoderModelForCausalLM are shared with the numeric stub (tests/trtllm_stub_shared/modeling_utils.py);
this stub adds ``PretrainedModel.prepare_inputs`` (symbolic input tensors) and binds its Attention."""

from trtllm_stub_shared import modeling_utils as _shared
from trtllm_stub_shared.modeling_utils import DecoderLayerList, PretrainedConfig  # noqa: F401

from ..layers import Attention, AttentionParams, KeyValueCacheParams


class PretrainedModel(_shared.PretrainedModel):
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


class DecoderModelForCausalLM(_shared.DecoderModelForCausalLM, PretrainedModel):
    _stub_attention_cls = Attention
