"""The TensorRT-LLM network definition (trt_neg/trtllm) against the checkpoint contract.

CPU tests run the real ``trt_neg/trtllm`` code over a recording stub of the tensorrt /
tensorrt_llm 1.2.x APIs (tests/trtllm_stub, put on sys.path per test, never installed).
Tests marked ``trtllm`` need real TensorRT-LLM 1.2.x and a GPU (docker self-test).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

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


def test_an_engine_configs_pretrained_config_reads_back_as_the_same_model(trtllm_stub):
    """The engine's config.json names the runtime alias as architecture: the description still comes from
    trt_neg_architecture; the RoPE fraction is recomputed (rotary 4 of head 16), never read back or written."""
    from trt_neg.trtllm.config import RUNTIME_ARCHITECTURE_ALIAS, DarwinNegConfig, config_for

    desc = _description("tiny")
    cfg = config_for(desc, contract.Mapping(2, 1), "bfloat16", 0)
    assert (cfg.rotary_dim, cfg.rotary_pct, cfg.qk_layernorm) == (4, 0.25, True)
    assert cfg.position_embedding_type.name == "rope_gpt_neox"
    assert cfg.layer_types == list(cfg.layer_types) and cfg.neg_enabled is True
    engine = {**cfg.to_dict(), **cfg.engine_config_overrides(), "rotary_pct": 1.0, "rotary_dim": 16}
    assert "rotary_pct" not in cfg.to_dict() and "rotary_dim" not in cfg.to_dict()
    again = DarwinNegConfig.from_dict(engine)
    assert (again.architecture, again.trt_neg_architecture) == (RUNTIME_ARCHITECTURE_ALIAS, contract.ARCHITECTURE)
    assert (again.rotary_dim, again.rotary_pct) == (4, 0.25)
    back, mapping, dtype = again.description()
    assert back.backbone == desc.backbone and back.neg == desc.neg
    assert (mapping.tp_size, mapping.pp_size, dtype) == (2, 1, "bfloat16")


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


def test_attention_takes_every_dimension_from_the_config(trtllm_stub):
    """Found by mutation testing: with a head size that is not hidden / heads (TensorRT-LLM's default
    for attention_head_size) and a non-default RoPE base, the layer's attention is configured from the
    config -- not from Attention's defaults, which equal the tiny and 9B values -- and its parameters
    are still the contract's."""
    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    data = preset_config("tiny")
    data["text_config"].update(head_dim=8, rope_parameters={"rope_type": "default", "rope_theta": 500000.0,
                                                            "partial_rotary_factor": 0.5})
    desc = config_from_dict(data)
    mapping = contract.Mapping(2, 1)
    for rank in range(2):
        model = DarwinNegForCausalLM(config_for(desc, mapping, "float32", rank))
        attn = model.transformer.layers[3].attention
        assert attn.attention_head_size == 8 and attn.rotary_embedding_dim == 4
        assert attn.rotary_embedding_base == 500000.0 and attn.position_embedding_type.is_rope()
        assert (attn.num_attention_heads, attn.num_attention_kv_heads) == (2, 1)
        assert _engine_params(model) == _contract_params(desc, mapping, rank, "float32")


def _prepare(model, **kwargs):
    args = dict(max_batch_size=2, max_input_len=8, max_seq_len=16, max_num_tokens=16, use_cache=True)
    return model.prepare_inputs(**{**args, **kwargs})


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_beam_width=2), "beam width 1 only"),
    (dict(max_draft_len=1), "speculative decoding is not supported"),
    (dict(speculative_decoding_draft_tokens_external=True), "speculative decoding is not supported"),
    (dict(prompt_embedding_table_size=4), "prompt tuning and LoRA are not supported"),
    (dict(lora_target_modules=["attn_qkv"]), "prompt tuning and LoRA are not supported"),
])
def test_prepare_inputs_refuses_what_the_recurrent_engine_cannot_do(trtllm_stub, kwargs, message):
    """Found by mutation testing: each refusal of prepare_inputs, one at a time (the defaults build)."""
    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    model = DarwinNegForCausalLM(config_for(_description("tiny"), contract.Mapping(1, 1), "float32", 0))
    _prepare(model)
    with pytest.raises(ValueError, match=message):
        _prepare(model, **kwargs)


@pytest.mark.parametrize("flag, value, message", [
    ("remove_input_padding", False, "needs remove_input_padding, paged_kv_cache, paged_state"),
    ("paged_kv_cache", False, "needs remove_input_padding, paged_kv_cache, paged_state"),
    ("paged_state", False, "needs remove_input_padding, paged_kv_cache, paged_state"),
    ("gpt_attention_plugin", None, "needs remove_input_padding, paged_kv_cache, paged_state"),
    ("mamba_conv1d_plugin", None, "needs remove_input_padding, paged_kv_cache, paged_state"),
    ("multiple_profiles", True, "supports one optimization profile"),
])
def test_prepare_inputs_refuses_plugin_configs_without_in_flight_batching(trtllm_stub, flag, value, message):
    from tensorrt_llm._common import default_net

    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    model = DarwinNegForCausalLM(config_for(_description("tiny"), contract.Mapping(1, 1), "float32", 0))
    setattr(default_net().plugin_config, flag, value)
    with pytest.raises(ValueError, match=message):
        _prepare(model)


def test_recurrent_layer_and_neg_refuse_inputs_they_cannot_use(trtllm_stub):
    from tensorrt_llm._common import default_net

    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM, _last_token_values

    model = DarwinNegForCausalLM(config_for(_description("tiny"), contract.Mapping(1, 1), "float32", 0))
    gdn = model.transformer.layers[0].recurrent
    for flag, value in (("mamba_conv1d_plugin", None), ("paged_state", False)):
        saved = getattr(default_net().plugin_config, flag)
        setattr(default_net().plugin_config, flag, value)
        with pytest.raises(ValueError, match="need the mamba_conv1d plugin and paged_state"):
            gdn.forward(None, None, None, None, None, None, None)
        setattr(default_net().plugin_config, flag, saved)
    with pytest.raises(ValueError, match="NEG needs position_ids"):
        model._neg(None, None, None)
    with pytest.raises(ValueError, match="needs remove_input_padding"):
        _last_token_values(None, None, False)


def test_prepare_inputs_refuses_a_stage_whose_attention_layers_are_not_the_even_split(trtllm_stub):
    """9B at pp 3: stages of 11/11/10 layers hold 2/3/3 of the 8 attention layers, while TensorRT-LLM
    sizes each stage's KV-cache inputs as the even split 3/3/2: stages 0 and 2 have attention layers
    and still may not build; stage 1 (3 and 3) may."""
    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    def model(rank):
        return DarwinNegForCausalLM(config_for(_description("9b"), contract.Mapping(1, 3), "bfloat16", rank))
    for rank, held in ((0, 2), (2, 3)):
        with pytest.raises(ValueError, match=f"pp stage {rank} holds {held} of the 8 attention layers"):
            _prepare(model(rank))
    _prepare(model(1))


def test_prepare_inputs_names_exactly_the_forward_arguments(trtllm_stub):
    """TensorRT-LLM binds prepare_inputs' dict to forward by keyword: every key is a forward parameter
    (a misspelt key would silently fall into **unused and the default would be used)."""
    import inspect

    from trt_neg.trtllm.config import config_for
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    model = DarwinNegForCausalLM(config_for(_description("tiny"), contract.Mapping(1, 1), "float32", 0))
    inputs = _prepare(model)
    params = set(inspect.signature(model.forward).parameters) - {"unused"}
    assert set(inputs) <= params
    assert set(inputs) >= {"input_ids", "position_ids", "use_cache", "last_token_ids", "attention_mask",
                           "kv_cache_params", "attention_params", "conv_states", "rnn_states", "host_request_types",
                           "host_context_lengths", "slot_mapping"}
    assert inputs["slot_mapping"].dim_range["batch_size"]
    assert inputs["conv_states"][0].dim_range == {"buffer_count": [1]}


def test_neg_plugin_takes_the_checkpoints_neg_config_and_the_next_position(trtllm_stub, monkeypatch):
    """The NEG plugin gets top_k, T_neg, seed and activation from neg_config (here none of them the
    defaults), and the Philox offset of the token being generated: last input position + 1."""
    from tensorrt_llm.functional import Tensor

    import trt_neg.trtllm.model as model_py
    from trt_neg.trtllm.config import config_for

    data = preset_config("tiny")
    data["neg_config"].update(top_k=3, temperature=0.5, seed=11, activation="gelu")
    model = model_py.DarwinNegForCausalLM(config_for(config_from_dict(data), contract.Mapping(1, 1), "float32", 0))
    calls = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return Tensor(op="guided"), Tensor(op="token"), Tensor(op="entropy"), Tensor(op="fired")
    monkeypatch.setattr(model_py, "neg_sample", record)
    positions = Tensor(name="positions")
    guided, entropy, fired, token = model._neg(Tensor(name="hidden"), Tensor(name="logits"), positions)
    assert (guided.op, entropy.op, fired.op, token.op) == ("guided", "entropy", "fired", "token")
    (args, kwargs), = calls
    offsets = args[7]
    assert offsets.op == "add" and offsets.args == (positions, 1)
    assert kwargs == dict(hidden_size=64, head_hidden_size=32, vocab_size=512, top_k=3, temperature=0.5, seed=11,
                          activation="gelu")


def test_zero_centred_norm_passes_its_eps(trtllm_stub):
    from tensorrt_llm.functional import Tensor

    from trt_neg.trtllm.model import ZeroCentredRmsNorm

    norm = ZeroCentredRmsNorm(8, eps=1e-5)
    out = norm.forward(Tensor(name="x", dtype="bfloat16"))
    (normed, dtype) = out.args
    assert normed.op == "rms_norm" and normed.args[1] == 8 and normed.args[4] == 1e-5


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


def test_plugin_libraries_load_once_each_from_the_variable_list_or_the_first_default(no_trtllm, monkeypatch, tmp_path):
    """A real shared library (the NEG host build) stands in for libtrt_neg_plugins.so: every entry of
    TRT_NEG_PLUGIN_LIB is loaded, once; without it, only the first default location that exists; a file
    that is not a library is named."""
    import os
    import shutil

    from trt_neg.kernels import host
    from trt_neg.trtllm import plugins

    monkeypatch.setattr(plugins, "_LOADED", {})
    first, second = tmp_path / "a" / plugins.PLUGIN_LIBRARY, tmp_path / "b" / "libdep.so"
    for path in (first, second):
        path.parent.mkdir()
        shutil.copy(host.library_path(), path)
    monkeypatch.setenv("TRT_NEG_PLUGIN_LIB", os.pathsep.join(["", str(first), str(second)]))  # the documented name
    assert plugins.plugin_library_candidates() == [first, second]
    assert plugins.load_plugin_library() == [first.resolve(), second.resolve()]
    assert plugins.load_plugin_library() == [first.resolve(), second.resolve()] and len(plugins._LOADED) == 2
    monkeypatch.delenv(plugins.PLUGIN_LIBRARY_ENV)
    root = Path(plugins.__file__).resolve().parents[2]
    assert plugins.plugin_library_candidates() == [  # the build locations docs/engine_build.md names, in order
        root / "build" / "plugins" / plugins.PLUGIN_LIBRARY, root / "plugins" / "build" / plugins.PLUGIN_LIBRARY,
        root / "build" / plugins.PLUGIN_LIBRARY, root / "trt_neg" / "trtllm" / "lib" / plugins.PLUGIN_LIBRARY]
    missing = tmp_path / "none" / plugins.PLUGIN_LIBRARY
    monkeypatch.setattr(plugins, "plugin_library_candidates", lambda: [missing, second, first])
    assert plugins.load_plugin_library() == [second.resolve()]
    monkeypatch.setattr(plugins, "plugin_library_candidates", lambda: [missing])
    with pytest.raises(plugins.PluginLibraryError,
                       match=rf"{plugins.PLUGIN_LIBRARY} not found \(looked in {missing}\)"):
        plugins.load_plugin_library()
    junk = tmp_path / "junk.so"
    junk.write_text("not a library")
    with pytest.raises(plugins.PluginLibraryError, match=rf"cannot load {junk}: "):
        plugins.load_plugin_library(junk)


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
