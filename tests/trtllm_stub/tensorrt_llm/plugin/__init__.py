"""tensorrt_llm.plugin stand-in: ``PluginConfig`` with the 1.2.x field names and defaults used by
trt_neg/trtllm/build.py (tensorrt_llm/plugin/plugin.py, index id 196834873: a pydantic model
with ``validate_assignment``; an unknown field raises, as pydantic does on assignment)."""

_DEFAULTS = {
    "dtype": "float16",
    "bert_attention_plugin": "auto",
    "gpt_attention_plugin": "auto",
    "gemm_plugin": None,
    "nccl_plugin": "auto",
    "moe_plugin": "auto",
    "mamba_conv1d_plugin": "auto",
    "context_fmha": True,
    "paged_kv_cache": None,
    "remove_input_padding": True,
    "tokens_per_block": 32,
    "use_paged_context_fmha": True,
    "use_fp8_context_fmha": True,
    "multiple_profiles": False,
    "paged_state": True,
    "streamingllm": False,
    "manage_weights": False,
    "use_fused_mlp": True,
    "reduce_fusion": False,
}


class PluginConfig:
    def __init__(self, **kwargs):
        object.__setattr__(self, "_values", dict(_DEFAULTS))
        for key, value in kwargs.items():
            setattr(self, key, value)

    def __getattr__(self, name):
        values = object.__getattribute__(self, "_values")
        if name not in values:
            raise AttributeError(name)
        value = values[name]
        return values["dtype"] if value == "auto" and name != "dtype" else value  # "auto" resolves to dtype

    def __setattr__(self, name, value):
        if name not in self._values:
            raise ValueError(f"PluginConfig has no field {name!r}")
        self._values[name] = value

    def __deepcopy__(self, memo):
        return PluginConfig(**self._values)

    def model_dump(self):
        return dict(self._values)
