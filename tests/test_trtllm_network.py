"""The TensorRT-LLM network definition (trt_neg/trtllm) against the checkpoint contract.

CPU tests run the real ``trt_neg/trtllm`` code over a recording stub of the tensorrt /
tensorrt_llm 1.2.x APIs (tests/trtllm_stub, put on sys.path per test, never installed).
Tests marked ``trtllm`` need real TensorRT-LLM 1.2.x and a GPU (docker self-test).
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch

from trt_neg.checkpoint import contract
from trt_neg.checkpoint.synthetic import preset_config
from trt_neg.config import ConfigError, config_from_dict


def _description(preset):
    return config_from_dict(preset_config(preset))


def _engine_params(model) -> dict[str, tuple[tuple[int, ...], str]]:
    # What PretrainedModel.load requires: parameters not already initialised (RoPE buffers are).
    return {name: (tuple(p.shape), p.dtype) for name, p in model.named_parameters() if not p.is_inited()}


def _contract_params(desc, mapping, rank, dtype) -> dict[str, tuple[tuple[int, ...], str]]:
    plan = contract.rank_plan(desc, mapping, rank, getattr(torch, dtype), contract.hf_shapes_for(desc))
    return {t.name: (tuple(t.shape), str(t.dtype).replace("torch.", "")) for t in plan}


CASES = [("tiny", 1, 1), ("tiny", 2, 1), ("tiny", 1, 2), ("tiny", 2, 2), ("9b", 1, 1), ("9b", 2, 2), ("9b", 2, 1),
         ("9b", 1, 2)]


@pytest.mark.parametrize("preset,tp,pp", CASES)
def test_parameters_equal_the_checkpoint_contract(trtllm_stub, preset, tp, pp):
    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    desc = _description(preset)
    dtype = "float32" if preset == "tiny" else "bfloat16"
    mapping = contract.Mapping(tp, pp)
    for rank in range(mapping.world_size):
        model = DarwinNegForCausalLM(config_for(desc, mapping, dtype, rank))
        got, want = _engine_params(model), _contract_params(desc, mapping, rank, dtype)
        assert sorted(set(got) - set(want)) == [] and sorted(set(want) - set(got)) == [], f"rank {rank}"
        bad = {n: (got[n], want[n]) for n in want if got[n] != want[n]}
        assert not bad, f"rank {rank}: shape/dtype mismatches {bad}"


def test_attention_bias_variant_matches_contract(trtllm_stub):
    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    data = preset_config("tiny")
    data["text_config"]["attention_bias"] = True
    desc = config_from_dict(data)
    mapping = contract.Mapping(2, 1)
    for rank in range(2):
        got = _engine_params(DarwinNegForCausalLM(config_for(desc, mapping, "float32", rank)))
        assert got == _contract_params(desc, mapping, rank, "float32")


def test_rope_tables_cover_only_the_rotated_dims_and_attention_is_configured(trtllm_stub):
    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    desc = _description("9b")
    model = DarwinNegForCausalLM(config_for(desc, contract.Mapping(2, 2), "bfloat16", 1))
    assert model.rope_table_dim == desc.backbone.rotary_dim == 64
    layers = list(model.transformer.layers)
    attn = [layer for layer in layers if layer.layer_type == "attention"]
    # stage 0 holds global layers 0..15: attention at 3, 7, 11, 15 -> local KV-cache indices 0..3
    assert [layer.layer_idx for layer in attn] == [3, 7, 11, 15]
    assert [layer.attention.local_layer_idx for layer in attn] == [0, 1, 2, 3]
    a = attn[0].attention
    assert a.rotary_embedding_dim == 64 and a.attention_head_size == 256
    assert a.num_attention_heads == 8 and a.num_attention_kv_heads == 2
    rec = [layer.recurrent for layer in layers if layer.layer_type == "recurrent"]
    assert rec[0].num_k_heads == 8 and rec[0].num_v_heads == 16 and rec[0].conv_dim == 4096
    assert not hasattr(model.transformer, "ln_f") and hasattr(model.transformer, "vocab_embedding")


@pytest.mark.parametrize("tp,pp", [(1, 1), (1, 2), (2, 2), (1, 4)])
def test_prepare_inputs_sizes_the_kv_cache_inputs_per_stage(trtllm_stub, tp, pp):
    # 1.x prepare_attention_inputs splits the layer count it is given over the pp stages itself
    # (mapping.pp_layers(num_layers)); each stage's host_kv_cache_pool_mapping must have one row per
    # attention layer of that stage (what the C++ runtime feeds).
    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    desc = _description("9b")
    for rank in range(tp * pp):
        config = config_for(desc, contract.Mapping(tp, pp), "bfloat16", rank)
        model = DarwinNegForCausalLM(config)
        inputs = model.prepare_inputs(max_batch_size=4, max_input_len=64, max_seq_len=128, max_num_tokens=256,
                                      use_cache=True)
        local = config.mapping.pp_layers(config.num_hidden_layers)
        local_types = [config.layer_types[i % len(config.layer_types)] for i in local]
        n_attn = local_types.count("attention")
        kv = inputs["kv_cache_params"]
        assert kv.host_kv_cache_pool_mapping.shape == [n_attn, 2]
        assert kv.host_max_attention_window_sizes.shape == [n_attn]
        assert kv.past_key_value == [None] * len(local)  # one slot per local layer (paged: all None)
        names = [t.name for t in inputs["rnn_states"] if t is not None]
        assert names == [f"rnn_state_ptr_{i}" for i, typ in zip(local, local_types) if typ == "recurrent"]
        assert [t.name for t in inputs["conv_states"] if t is not None] == [n.replace("rnn", "conv") for n in names]


def test_prepare_inputs_refuses_a_pp_split_the_kv_cache_inputs_cannot_express(trtllm_stub):
    # tiny = [lin, lin, lin, full]: with pp 2 stage 0 has no attention layer at all.
    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    model = DarwinNegForCausalLM(config_for(_description("tiny"), contract.Mapping(1, 2), "float32", 0))
    with pytest.raises(ValueError, match="pp stage 0 holds 0 of the 1 attention layers"):
        model.prepare_inputs(max_batch_size=2, max_input_len=8, max_seq_len=16, max_num_tokens=16, use_cache=True)


def test_config_round_trip_and_description(trtllm_stub):
    from trt_neg.trtllm.config import RUNTIME_ARCHITECTURE_ALIAS, DarwinNegConfig, config_for

    desc = _description("tiny")
    cfg = config_for(desc, contract.Mapping(2, 1), "float32", 1)
    assert cfg.architecture == contract.ARCHITECTURE and cfg.mapping.tp_rank == 1
    assert cfg.implicit == []  # every config.json field is consumed explicitly (no "Implicitly setting")
    again = DarwinNegConfig.from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    back, mapping, dtype = again.description()
    assert back.backbone == desc.backbone and back.neg == desc.neg and (mapping.tp_size, dtype) == (2, "float32")
    assert cfg.engine_config_overrides()["architecture"] == RUNTIME_ARCHITECTURE_ALIAS


def test_registered_in_model_map(trtllm_stub):
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    assert trtllm_stub.models.MODEL_MAP[contract.ARCHITECTURE] is DarwinNegForCausalLM
    assert DarwinNegForCausalLM.config_class.__name__ == "DarwinNegConfig"


def test_refuses_impossible_tp(trtllm_stub):
    from trt_neg.trtllm.config import DarwinNegConfig
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    data = contract.checkpoint_config(_description("tiny"), contract.Mapping(1, 1), "float32")
    data["mapping"] = {"world_size": 8, "tp_size": 8, "pp_size": 1}
    # the layout comes from the config, so the error names its field
    with pytest.raises(ConfigError, match="field 'mapping': tensor parallel size 8"):
        DarwinNegForCausalLM(DarwinNegConfig.from_dict(data))


# ------------------------------------------------------------------------------------
# Without tensorrt_llm
# ------------------------------------------------------------------------------------

def test_package_imports_and_fails_cleanly_without_tensorrt_llm(no_trtllm):
    import trt_neg
    import trt_neg.trtllm as trtllm

    assert trt_neg.__version__
    with pytest.raises(trtllm.TensorRTLLMUnavailable) as info:
        trtllm.DarwinNegForCausalLM  # noqa: B018
    message = str(info.value)
    assert "tensorrt_llm 1.2.x" in message and "NGC container" in message
    with pytest.raises(trtllm.TensorRTLLMUnavailable):
        importlib.import_module("trt_neg.trtllm.config")
    # the plugin field lists need neither tensorrt nor tensorrt_llm
    from trt_neg.trtllm import plugins

    assert plugins.neg_plugin_fields(hidden_size=4, head_hidden_size=2, vocab_size=8)[0][0] == "hidden_size"


def test_wrong_tensorrt_llm_version_is_refused(no_trtllm, monkeypatch):
    import types

    fake = types.ModuleType("tensorrt_llm")
    fake.__version__ = "1.3.0"
    monkeypatch.setitem(sys.modules, "tensorrt_llm", fake)
    import trt_neg.trtllm as trtllm

    with pytest.raises(trtllm.TensorRTLLMUnavailable, match="found tensorrt_llm 1.3.0"):
        trtllm.require_tensorrt_llm()


def test_plugin_library_missing_is_a_clear_error(no_trtllm, monkeypatch, tmp_path):
    from trt_neg.trtllm import plugins

    monkeypatch.setenv(plugins.PLUGIN_LIBRARY_ENV, str(tmp_path / "libtrt_neg_plugins.so"))
    with pytest.raises(plugins.PluginLibraryError, match="does not exist"):
        plugins.load_plugin_library()


# ------------------------------------------------------------------------------------
# Plugin wrappers (stub tensorrt records the creator calls)
# ------------------------------------------------------------------------------------

def _fields(pfc):
    return {f.name: (f.data.dtype.name, f.data.tolist(), f.type.name) for f in pfc}


def test_neg_sample_builds_the_plugin_with_its_fields(trtllm_stub):
    import tensorrt as trt

    from tensorrt_llm._common import default_trtnet
    from tensorrt_llm.functional import Tensor
    from trt_neg.trtllm import plugins

    creator = trt.get_plugin_registry().register("NegGatedSampling", "1", "trt_neg")
    inputs = [Tensor(name=n) for n in ("hidden", "logits", "w1", "b1", "w2", "b2", "tau", "positions")]
    for t in inputs:
        t.trt_tensor = t.name
    outs = plugins.neg_sample(*inputs, hidden_size=64, head_hidden_size=32, vocab_size=512, top_k=8,
                              temperature=0.7, seed=2**64 - 1, activation="gelu_tanh")
    assert len(outs) == 4
    (plugin,) = creator.created
    assert plugin.phase == trt.TensorRTPhase.BUILD and plugin.name == "NegGatedSampling"
    assert _fields(plugin.pfc) == {
        "hidden_size": ("int32", [64], "INT32"), "head_hidden_size": ("int32", [32], "INT32"),
        "vocab_size": ("int32", [512], "INT32"), "top_k": ("int32", [8], "INT32"),
        "temperature": ("float32", [pytest.approx(0.7)], "FLOAT32"), "seed": ("int64", [-1], "INT64"),
        "activation": ("int32", [3], "INT32")}
    (layer,) = default_trtnet().plugin_layers
    assert layer.inputs == ["hidden", "logits", "w1", "b1", "w2", "b2", "tau", "positions"]
    assert layer.shape_inputs == [] and layer.plugin is plugin


def test_gated_delta_rule_builds_the_plugin_with_its_fields(trtllm_stub):
    import tensorrt as trt

    from tensorrt_llm._common import default_trtnet
    from tensorrt_llm.functional import Tensor
    from trt_neg.trtllm import plugins

    creator = trt.get_plugin_registry().register("TrtNegGatedDeltaRule", "1", "trt_neg")
    names = ["qkv", "a", "b", "A_log", "dt_bias", "rnn_state_ptr", "host_request_types", "last_token_ids",
             "slot_mapping", "z", "norm_weight"]
    inputs = [Tensor(name=n) for n in names]
    for t in inputs:
        t.trt_tensor = t.name
    plugins.gated_delta_rule(*inputs, num_k_heads=8, num_v_heads=16, head_k_dim=128, head_v_dim=128,
                             dtype="bfloat16", norm_eps=1e-6)
    (plugin,) = creator.created
    got = _fields(plugin.pfc)
    assert list(got) == ["num_k_heads", "num_v_heads", "head_k_dim", "head_v_dim", "type_id",
                         "remove_input_padding", "gated_norm", "norm_eps", "continue_context"]
    assert got["type_id"] == ("int32", [7], "INT32") and got["gated_norm"] == ("int32", [1], "INT32")
    assert got["norm_eps"][2] == "FLOAT32" and all(len(v[1]) == 1 for v in got.values())
    assert default_trtnet().plugin_layers[0].inputs == names
    # without z: 9 inputs, gated_norm 0
    plugins.gated_delta_rule(*inputs[:9], num_k_heads=1, num_v_heads=2, head_k_dim=4, head_v_dim=4, dtype="float32")
    assert default_trtnet().plugin_layers[1].inputs == names[:9]
    assert _fields(creator.created[1].pfc)["gated_norm"] == ("int32", [0], "INT32")


def test_missing_creator_names_the_library(trtllm_stub):
    from tensorrt_llm.functional import Tensor
    from trt_neg.trtllm import plugins

    t = Tensor(name="x")
    t.trt_tensor = "x"
    with pytest.raises(plugins.PluginLibraryError, match="libtrt_neg_plugins.so"):
        plugins.neg_sample(*[t] * 8, hidden_size=4, head_hidden_size=2, vocab_size=8)


def test_field_validation():
    from trt_neg.trtllm import plugins

    with pytest.raises(ValueError, match="activation"):
        plugins.neg_plugin_fields(hidden_size=4, head_hidden_size=2, vocab_size=8, activation="tanh")
    with pytest.raises(ValueError, match="multiple"):
        plugins.gdn_plugin_fields(num_k_heads=3, num_v_heads=4, head_k_dim=4, head_v_dim=4, dtype="float32")
    with pytest.raises(ValueError, match="dtype"):
        plugins.gdn_plugin_fields(num_k_heads=1, num_v_heads=1, head_k_dim=4, head_v_dim=4, dtype="int8")


# ------------------------------------------------------------------------------------
# Real TensorRT-LLM 1.2.x + GPU (docker self-test)
# ------------------------------------------------------------------------------------

@pytest.mark.trtllm
def test_tiny_engine_builds_through_the_project_build_flow(tiny_checkpoint, tmp_path):
    """Convert tiny and build its engine with build_engine.py's flow (our BuildConfig subclass keeps
    paged_state on), then check the engine directory the runtime will read, and decode one request.
    Token-by-token agreement with the reference backend is tests/test_trtllm_executor.py's job.
    Needs tensorrt_llm 1.2.x, a GPU and libtrt_neg_plugins.so (TRT_NEG_PLUGIN_LIB or build/plugins)."""
    import json

    from trt_neg.checkpoint.convert import convert_checkpoint
    from trt_neg.runtime.request import Request
    from trt_neg.trtllm.build import BuildOptions, build_engines, check_engine_config, find_plugin_library
    from trt_neg.trtllm.engine_dir import read_engine_dir
    from trt_neg.trtllm.executor import TrtllmExecutorEngine

    ckpt = tmp_path / "ckpt"
    convert_checkpoint(tiny_checkpoint, ckpt, dtype="float32")
    options = BuildOptions(max_batch_size=4, max_input_len=64, max_seq_len=128, max_num_tokens=256)
    report = build_engines(ckpt, tmp_path / "engine", options, plugin_library=find_plugin_library(),
                           hf_model_dir=tiny_checkpoint)
    config = json.loads((report.output / "config.json").read_text())
    assert check_engine_config(config) == []
    assert (report.output / "rank0.engine").stat().st_size > 0
    info = read_engine_dir(report.output)
    assert info.neg_enabled and info.hf_model_dir is not None
    with TrtllmExecutorEngine(report.output) as engine:
        (result,) = engine.generate([Request([1, 17, 33, 250, 7], max_new_tokens=8, ignore_eos=True)])
    assert result.error is None and len(result.tokens) == 8
