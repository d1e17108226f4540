"""modeling_utils.py stand-ins: PretrainedConfig, DecoderLayerList, PretrainedModel and
DecoderModelForCausalLM are shared with the recording stub (tests/trtllm_stub_shared/modeling_utils.py);
this stub's PretrainedModel ``from_checkpoint`` reads ``rank{N}.safetensors`` and ``load`` sets every
not-yet-inited parameter, refusing missing, unexpected or mis-shaped tensors, as 1.x
``PretrainedModel.load`` requires (each value keeps its stored dtype, see parameter.py); DecoderModelForCausalLM registers the RoPE tables of this stub's
Attention. ``PretrainedModel.prepare_inputs`` declares the engine inputs (names, dtypes, shapes,
dim ranges) as 1.x does for the in-flight-batching build (see there)."""

import os

from trtllm_stub_shared import modeling_utils as _shared
from trtllm_stub_shared.modeling_utils import DecoderLayerList, PretrainedConfig  # noqa: F401

from ..layers import Attention


class PretrainedModel(_shared.PretrainedModel):
    @classmethod
    def from_checkpoint(cls, ckpt_dir, rank=None, config=None, *, preprocess_weights_hook=None):
        from safetensors.torch import load_file

        model = super().from_checkpoint(ckpt_dir, rank=rank, config=config,
                                        preprocess_weights_hook=preprocess_weights_hook)
        model.load(load_file(os.path.join(ckpt_dir, f"rank{config.mapping.rank}.safetensors")))
        return model

    def prepare_inputs(self, max_batch_size, max_input_len, max_seq_len, max_num_tokens, use_cache,
                       max_beam_width=1, opt_num_tokens=None, prompt_embedding_table_size=0,
                       position_encoding_2d=False, max_draft_len=0, speculative_decoding_draft_tokens_external=False,
                       spec_decoding_is_generation_length_variable=False, gather_context_logits=False,
                       lora_target_modules=None, opt_batch_size=0, num_hidden_layers=None,
                       mrope_rotary_cos_sin_size=None):
        """1.x ``PretrainedModel.prepare_inputs`` -> ``GenerationMixin.prepare_basic_inputs`` /
        ``prepare_attention_inputs`` (generation_mixin.py, index id 83493268; modeling_utils.py,
        index id 1189552800), the one branch Darwin-NEG builds: remove_input_padding, gpt_attention
        plugin, paged KV cache, beam 1, no draft tokens / prompt tuning / LoRA, one optimization
        profile (``has_ctx_gen_opt_profiles`` is False under in-flight batching, multiple_profiles
        off). Every input is a declared ``functional.Tensor`` (no value until ``bind``); dim ranges
        are one ``[min, opt, max]`` (or fixed size) per profile, as TensorRT-LLM writes them.
        input_ids / position_ids only on the first pp stage, ``hidden_states_input`` on the others,
        ``last_token_ids`` only on the last stage (and not with gather_context_logits)."""
        from collections import OrderedDict

        import tensorrt as trt

        from ..functional import Tensor
        from ..layers import AttentionParams, KeyValueCacheParams
        from .generation_mixin import GenerationMixin
        from .._common import default_net

        pc = default_net().plugin_config
        unsupported = dict(max_beam_width=max_beam_width != 1, max_draft_len=bool(max_draft_len),
                           prompt_embedding_table_size=bool(prompt_embedding_table_size),
                           position_encoding_2d=position_encoding_2d, lora_target_modules=bool(lora_target_modules),
                           mrope=mrope_rotary_cos_sin_size is not None, use_cache=not use_cache,
                           multiple_profiles=bool(getattr(pc, "multiple_profiles", False)),
                           plugins=not (pc.remove_input_padding and pc.gpt_attention_plugin and pc.paged_kv_cache))
        if any(unsupported.values()):
            raise NotImplementedError(f"numeric stub prepare_inputs: not modelled {[k for k, v in unsupported.items() if v]}")
        mapping, cfg = self.config.mapping, self.config
        default_range = GenerationMixin.default_range
        # get_profiles_ranges, one profile, no draft tokens.
        bb_range = [default_range(max_batch_size * max_beam_width)]
        if opt_batch_size:
            bb_range = [[1, opt_batch_size * max_beam_width, max_batch_size * max_beam_width]]
        if opt_num_tokens is None:
            opt_num_tokens = min(max_num_tokens, max_batch_size * max_beam_width)
        num_tokens_range = [[1, opt_num_tokens, max_num_tokens]]
        i32, i64 = trt.int32, trt.int64

        def t(name, dtype, shape, *dims):
            return Tensor(name=name, dtype=dtype, shape=shape, dim_range=OrderedDict(dims))

        input_ids = position_ids = hidden_states = last_token_ids = None
        if mapping.is_first_pp_rank():
            input_ids = t("input_ids", i32, [-1], ("num_tokens", num_tokens_range))
            position_ids = t("position_ids", i32, [-1], ("position_ids_num_tokens_range", num_tokens_range))
        else:
            hidden_states = t("hidden_states_input", _trt_dtype(cfg.dtype), [-1, cfg.hidden_size],
                              ("num_tokens", num_tokens_range), ("hidden_size", [cfg.hidden_size]))
        if mapping.is_last_pp_rank() and not gather_context_logits:
            last_token_ids = t("last_token_ids", i32, [-1], ("batch_size_last_token_ids", bb_range))
        # prepare_attention_inputs (paged, gpt_attention plugin, remove_input_padding).
        num_layers = num_hidden_layers if num_hidden_layers is not None else cfg.num_hidden_layers
        layers_range = mapping.pp_layers(num_layers)
        local_attn_layers = list(layers_range)  # attn_layer_idx None: every layer counted
        _ = list(range(num_layers)).index(local_attn_layers[0])  # IndexError for an empty stage, as in 1.x
        num_attn_layers = len(local_attn_layers)
        num_layers_prev_rank = layers_range[0] // mapping.pp_rank if mapping.pp_rank != 0 else len(layers_range)
        kv_cache_range = [default_range(max_seq_len)]
        tpb = pc.tokens_per_block
        blocks = [[-(-r // tpb) for r in kv_cache_range[0]]]
        pools = [[1, 1, num_attn_layers]]
        bs_range, beam_range, max_len_range = [default_range(max_batch_size)], [default_range(max_beam_width)], \
            [default_range(max_seq_len)]
        kv = KeyValueCacheParams(
            past_key_value=[None] * num_layers_prev_rank,
            host_past_key_value_lengths=t("host_past_key_value_lengths", i32, [-1], ("batch_size_beam_width", bb_range)),
            host_max_attention_window_sizes=t("host_max_attention_window_sizes", i32, [num_attn_layers],
                                              ("num_layers", [num_attn_layers])),
            host_sink_token_length=t("host_sink_token_length", i32, [1], ("scalar", [1])),
            kv_cache_block_offsets=t("kv_cache_block_offsets", i32, [-1, -1, 2, -1], ("num_kv_cache_pools", pools),
                                     ("batch_size_beam_width", bb_range), ("kv", [2]), ("max_blocks_per_seq", blocks)),
            host_kv_cache_block_offsets=t("host_kv_cache_block_offsets", i32, [-1, -1, 2, -1],
                                          ("num_kv_cache_pools", pools), ("batch_size_beam_width", bb_range),
                                          ("kv", [2]), ("max_blocks_per_seq", blocks)),
            host_kv_cache_pool_pointers=t("host_kv_cache_pool_pointers", i64, [-1, 2], ("num_pools_layers", pools),
                                          ("num_pools_kv", [2])),
            host_kv_cache_pool_mapping=t("host_kv_cache_pool_mapping", i32, [num_attn_layers, 2],
                                         ("pools_mapping", [num_attn_layers]), ("layer_cache_pool_locator", [2])),
            cache_indirection=t("cache_indirection", i32, [-1, -1, -1], ("batch_size_cache", bs_range),
                                ("beam_width", beam_range), ("max_seq_len", max_len_range)))
        attention = AttentionParams(
            sequence_length=t("sequence_length", i32, [-1], ("batch_size_beam_width", bb_range)),
            context_lengths=t("context_lengths", i32, [-1], ("batch_size_beam_width", bb_range)),
            host_context_lengths=t("host_context_lengths", i32, [-1], ("batch_size_beam_width", bb_range)),
            max_context_length=max_input_len,
            host_request_types=t("host_request_types", i32, [-1], ("batch_size_beam_width", bb_range)),
            host_runtime_perf_knobs=t("host_runtime_perf_knobs", i64, [16], ("perf_knob_size", [16])),
            host_context_progress=t("host_context_progress", i64, [1], ("context_progress_size", [1])))
        result = {"input_ids": input_ids, "position_ids": position_ids, "use_cache": True,
                  "last_token_ids": last_token_ids, "attention_mask": None, "kv_cache_params": kv,
                  "attention_params": attention}
        if hidden_states is not None:
            result["hidden_states"] = hidden_states
        return result

    def load(self, weights):
        required = {n: p for n, p in self.named_parameters() if not p.is_inited()}
        missing = sorted(set(required) - set(weights))
        unexpected = sorted(set(weights) - set(required))
        if missing or unexpected:
            raise RuntimeError(f"load: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, p in required.items():
            p.set_value(weights[name], name=name)


class DecoderModelForCausalLM(_shared.DecoderModelForCausalLM, PretrainedModel):
    _stub_attention_cls = Attention


def _trt_dtype(name):
    from .._utils import str_dtype_to_trt

    return str_dtype_to_trt(name)
