"""The TensorRT / TensorRT-LLM stand-ins refuse what the real libraries refuse.

The stubs (tests/trtllm_stub, tests/trtllm_numeric_stub, tests/trtllm_stub_shared) are only as
good as their signatures: a stub that accepts a call the real binding rejects lets a bug through
to the container. Each case names the real source it mirrors.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest


def test_plugin_field_needs_a_buffer(trtllm_stub):
    # TensorRT 10.13 python/src/infer/pyPlugin.cpp plugin_field_constructor: data is a py::buffer.
    trt = importlib.import_module("tensorrt")
    field = trt.PluginField("seed", np.array([7], dtype=np.int64), trt.PluginFieldType.INT64)
    assert field.data.tolist() == [7]
    for bad in ([7], 7, 7.0):
        with pytest.raises(TypeError, match="buffer protocol"):
            trt.PluginField("seed", bad, trt.PluginFieldType.INT64)


def test_v3_create_plugin_needs_the_phase(trtllm_stub):
    # pyPlugin.cpp: IPluginCreatorV3One.create_plugin(name, field_collection, phase) -- phase has no default;
    # IPluginRegistry.get_creator(type, version, plugin_namespace="").
    trt = importlib.import_module("tensorrt")
    registry = trt.get_plugin_registry()
    registry.register("NegGatedSampling", "1", "trt_neg")
    creator = registry.get_creator(type="NegGatedSampling", version="1", plugin_namespace="trt_neg")
    pfc = trt.PluginFieldCollection([])
    with pytest.raises(TypeError):
        creator.create_plugin("neg", pfc)
    plugin = creator.create_plugin(name="neg", field_collection=pfc, phase=trt.TensorRTPhase.BUILD)
    assert plugin.phase == trt.TensorRTPhase.BUILD


def test_numeric_stub_create_plugin_needs_the_phase(monkeypatch):
    import sys
    from pathlib import Path

    from conftest import purge_trtllm

    purge_trtllm()
    sys.modules.pop("trt_neg_numeric_plugins", None)
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "trtllm_numeric_stub"))
    try:
        trt = importlib.import_module("tensorrt")
        numeric = importlib.import_module("trt_neg_numeric_plugins")
        creator = numeric._Creator("NegGatedSampling", numeric.NegPlugin)
        with pytest.raises(TypeError):
            creator.create_plugin("neg", trt.PluginFieldCollection([]))
        assert trt.get_plugin_registry().get_creator(type="NegGatedSampling", version="1",
                                                     plugin_namespace="trt_neg") is None  # nothing registered
    finally:
        purge_trtllm()
        sys.modules.pop("trt_neg_numeric_plugins", None)


def test_mapping_world_size_must_match(trtllm_stub):
    # tensorrt_llm/mapping.py: "world_size must equal to pp_size * cp_size * tp_size" (world_size defaults to 1).
    mapping = importlib.import_module("tensorrt_llm.mapping")
    assert mapping.Mapping(world_size=4, rank=3, tp_size=2, pp_size=2).pp_rank == 1
    with pytest.raises(ValueError, match="world_size must equal"):
        mapping.Mapping(tp_size=2)
    with pytest.raises(ValueError, match="world_size must equal"):
        mapping.Mapping.from_dict({"world_size": 2, "tp_size": 1, "pp_size": 1})


def test_kv_cache_params_keywords(trtllm_stub):
    # layers/attention.py KeyValueCacheParams.__init__: a fixed keyword list.
    layers = importlib.import_module("tensorrt_llm.layers")
    kv = layers.KeyValueCacheParams(past_key_value=[None], host_kv_cache_pool_mapping="m")
    assert kv.host_kv_cache_pool_mapping == "m" and kv.cache_indirection is None
    with pytest.raises(TypeError, match="host_kv_cache_pool_maping"):
        layers.KeyValueCacheParams(host_kv_cache_pool_maping="m")


def test_from_checkpoint_keywords(trtllm_stub):
    # models/modeling_utils.py PretrainedModel.from_checkpoint(ckpt_dir, rank=None, config=None, *,
    # preprocess_weights_hook=None)
    utils = importlib.import_module("tensorrt_llm.models.modeling_utils")
    with pytest.raises(TypeError):
        utils.PretrainedModel.from_checkpoint("ckpt", 0, None, dtype="float16")


def test_sampling_config_bounds(trtllm_stub):
    # executor/samplingConfig.cpp: checkTopP requires 0 < top_p <= 1; checkTemperature requires >= 0.
    tle = importlib.import_module("tensorrt_llm.bindings.executor")
    tle.SamplingConfig(1, top_k=1, top_p=1.0, temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        tle.SamplingConfig(1, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        tle.SamplingConfig(1, temperature=-0.5)


def test_pretrained_config_to_dict_writes_the_whole_quant_config(trtllm_stub):
    # models/modeling_utils.py (NVIDIA/TensorRT-LLM@01ea6d79): PretrainedConfig.__init__ turns a dict
    # into QuantConfig.from_dict(...) (cls(**config)); to_dict() writes quantization.to_dict(), i.e.
    # dataclasses.asdict(QuantConfig): every field, not only the two a converted config.json gives.
    utils = importlib.import_module("tensorrt_llm.models.modeling_utils")
    cfg = utils.PretrainedConfig(architecture="X", dtype="float32", hidden_size=8, num_hidden_layers=1,
                                 num_attention_heads=1, quantization={"quant_algo": None, "kv_cache_quant_algo": None})
    assert cfg.to_dict()["quantization"] == {
        "quant_algo": None, "kv_cache_quant_algo": None, "group_size": 128, "smoothquant_val": 0.5, "clamp_val": None,
        "use_meta_recipe": False, "has_zero_point": False, "pre_quant_scale": False, "exclude_modules": None}
    with pytest.raises(TypeError):
        utils.PretrainedConfig(architecture="X", dtype="float32", hidden_size=8, num_hidden_layers=1,
                               num_attention_heads=1, quantization={"quant_algorithm": None})


def test_a_parameter_without_a_value_needs_a_shape(trtllm_stub):
    # tensorrt_llm/parameter.py (1.x): Parameter(value=None) asserts that shape is a list or tuple
    # (the stub took a missing shape as a scalar, so a dropped shape=() passed unnoticed).
    Parameter = importlib.import_module("tensorrt_llm.parameter").Parameter
    assert Parameter(shape=(), dtype="float32").shape == ()
    assert Parameter(np.zeros((2, 3), np.float32)).shape == (2, 3)
    with pytest.raises(AssertionError, match="shape must be list or tuple, receive <class 'NoneType'>"):
        Parameter(dtype="float32")
