"""trt_neg.config: both checkpoint layouts, derived figures, and invalid configs."""

from __future__ import annotations

import json

import pytest

from trt_neg.checkpoint.synthetic import preset_config
from trt_neg.config import ConfigError, config_from_dict, load_config


def write(tmp_path, data, neg=None):
    (tmp_path / "config.json").write_text(json.dumps(data))
    if neg is not None:
        (tmp_path / "neg_config.json").write_text(json.dumps(neg))
    return tmp_path


def text_layout(preset="tiny"):
    """The same model as a plain text config (model_type qwen3_5_text, fields at top level)."""
    vl = preset_config(preset)
    return {**vl["text_config"], "architectures": ["Qwen3_5ForCausalLM"], "neg_config": vl["neg_config"]}


def test_published_and_text_layouts_describe_the_same_model(tmp_path):
    (tmp_path / "vl").mkdir()
    (tmp_path / "text").mkdir()
    vl = load_config(write(tmp_path / "vl", preset_config("tiny")))
    text = load_config(write(tmp_path / "text", text_layout()))
    assert vl.backbone == text.backbone
    assert vl.neg == text.neg
    assert vl.architecture == "Qwen3_5ForConditionalGeneration"


def test_9b_derived_figures_match_the_design_card():
    cfg = config_from_dict(preset_config("9b"))
    b = cfg.backbone
    assert b.layer_types == ("linear_attention",) * 3 + ("full_attention",) + b.layer_types[4:]
    assert len(b.full_attention_layers) == 8 and len(b.linear_attention_layers) == 24
    assert b.rotary_dim == 64
    assert (b.linear_key_dim, b.linear_value_dim, b.linear_conv_dim) == (2048, 4096, 8192)
    # DESIGN.md section 3: 8.95B parameters; 2 MiB of fp32 state per layer, 48 MiB per sequence.
    assert round(b.num_parameters / 1e9, 2) == 8.95
    assert b.recurrent_state_bytes_per_sequence == 48 * 2**20
    assert b.kv_cache_bytes_per_token("bfloat16") == 8 * 2 * 4 * 256 * 2
    assert b.conv_state_bytes_per_sequence("float32") == 24 * 3 * 8192 * 4
    # ~4.2M NEG parameters for d = 1024.
    assert cfg.neg.num_parameters(b.hidden_size) == 4096 * 1024 + 2 * 1024 + 2


def test_parameter_count_matches_transformers(tiny_checkpoint):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    expected = sum(p.numel() for p in model.parameters())
    assert load_config(tiny_checkpoint).backbone.num_parameters == expected


def test_parameter_count_with_attention_bias_matches_transformers():
    """attention_bias adds q/k/v/o biases to the full-attention layers (the 9B has none, so the
    count above cannot see a wrong formula for them)."""
    import transformers

    data = text_layout()
    data["attention_bias"] = True
    cfg = config_from_dict(data)
    fields = {k: v for k, v in data.items() if k not in ("neg_config", "architectures")}
    model = transformers.Qwen3_5ForCausalLM(transformers.Qwen3_5TextConfig(**fields))
    assert cfg.backbone.num_parameters == sum(p.numel() for p in model.parameters())
    # one full-attention layer: q_proj (query | gate) 2 * 4 * 16, k_proj and v_proj 2 * 2 * 16, o_proj 64
    unbiased = config_from_dict(text_layout()).backbone.num_parameters
    assert cfg.backbone.num_parameters == unbiased + 2 * 4 * 16 + 2 * 2 * 16 + 64


def test_full_attention_interval_expands_to_layer_types(tmp_path):
    data = text_layout()
    del data["layer_types"]
    data["num_hidden_layers"] = 6
    data["full_attention_interval"] = 3
    cfg = load_config(write(tmp_path, data))
    assert cfg.backbone.layer_types == ("linear_attention", "linear_attention", "full_attention") * 2


def test_neg_config_json_beside_config(tmp_path):
    data = text_layout()
    neg = data.pop("neg_config")
    neg["top_k"] = 16
    cfg = load_config(write(tmp_path, data, neg))
    assert cfg.neg.top_k == 16 and cfg.neg.temperature == 1.0 and cfg.neg.seed == 0


def test_neg_defaults(tmp_path):
    data = text_layout()
    data["neg_config"] = {"head_hidden_size": 32}
    neg = load_config(write(tmp_path, data)).neg
    assert (neg.activation, neg.top_k, neg.temperature, neg.seed, neg.enabled) == ("silu", 8, 1.0, 0, True)


@pytest.mark.parametrize("given, canonical", [("swish", "silu"), ("gelu_new", "gelu_tanh"),
                                              ("gelu_pytorch_tanh", "gelu_tanh"), ("SiLU", "silu"), ("gelu", "gelu")])
def test_neg_activation_aliases_are_accepted_as_neg_py_accepts_them(given, canonical):
    from trt_neg.neg import canonical_activation

    data = preset_config("tiny")
    data["neg_config"]["activation"] = given
    assert config_from_dict(data, "cfg.json").neg.activation == canonical == canonical_activation(given)


@pytest.mark.parametrize("given, expected", [("silu", "silu"), ("swish", "silu"), ("gelu", None), ("SiLU", None)])
def test_backbone_hidden_act_accepts_what_transformers_runs_as_silu(given, expected):
    """transformers' ACT2FN maps "swish" to nn.SiLU (the same model: MLP and conv activation); names are
    case-sensitive there, and other functions are not implemented here."""
    data = preset_config("tiny")
    data["text_config"]["hidden_act"] = given
    if expected is None:
        with pytest.raises(ConfigError, match=rf"field 'text_config.hidden_act': must be one of silu \(or an "
                                              rf"alias: swish\); got '{given}'"):
            config_from_dict(data, "cfg.json")
    else:
        assert config_from_dict(data, "cfg.json").backbone.hidden_act == expected


def test_neg_limits_at_the_edges_are_accepted():
    data = preset_config("tiny")
    data["neg_config"].update(top_k=2**31 - 1, temperature=1e-38)  # float32 keeps 1e-38 (> 0)
    neg = config_from_dict(data, "cfg.json").neg
    assert (neg.top_k, neg.temperature) == (2**31 - 1, 1e-38)


def test_legacy_top_level_rope_fields(tmp_path):
    data = text_layout()
    del data["rope_parameters"]
    data["rope_theta"] = 5e6
    data["partial_rotary_factor"] = 0.5
    b = load_config(write(tmp_path, data)).backbone
    assert (b.rope_theta, b.rotary_dim) == (5e6, 8)


def _mutations():
    def drop(field):
        return lambda d: d["text_config"].pop(field)

    def setf(field, value):
        return lambda d: d["text_config"].__setitem__(field, value)

    def setneg(field, value):
        return lambda d: d["neg_config"].__setitem__(field, value)

    return {
        "missing hidden_size": (drop("hidden_size"), "text_config.hidden_size", "missing"),
        "negative vocab": (setf("vocab_size", -5), "text_config.vocab_size", ">= 1"),
        "one position": (setf("max_position_embeddings", 1), "text_config.max_position_embeddings", ">= 2, got 1"),
        "string heads": (setf("num_attention_heads", "16"), "text_config.num_attention_heads", "integer"),
        "GQA does not divide": (setf("num_key_value_heads", 3), "text_config.num_key_value_heads", "divide"),
        "linear heads do not divide": (setf("linear_num_key_heads", 3), "text_config.linear_num_key_heads", "divide"),
        "layer_types length": (setf("layer_types", ["linear_attention"] * 3), "text_config.layer_types", "entries"),
        "unknown layer type": (setf("layer_types", ["linear_attention"] * 3 + ["sliding"]),
                               "text_config.layer_types", "sliding"),
        "odd rotary dims": (lambda d: d["text_config"]["rope_parameters"].__setitem__("partial_rotary_factor", 0.2),
                            "partial_rotary_factor", "rotary dims"),
        "unsupported rope": (lambda d: d["text_config"]["rope_parameters"].__setitem__("rope_type", "yarn"),
                             "text_config.rope_parameters.rope_type", "yarn"),
        "eos outside vocab": (setf("eos_token_id", 100000), "text_config.eos_token_id", "outside the vocabulary"),
        "neg temperature zero": (setneg("temperature", 0), "neg_config.temperature", "positive"),
        "neg top_k zero": (setneg("top_k", 0), "neg_config.top_k", ">= 1"),
        "neg activation": (setneg("activation", "tanh"), "neg_config.activation", "one of"),
        "neg activation not a string": (setneg("activation", 1), "neg_config.activation", "one of"),
        "neg temperature 0 in float32": (setneg("temperature", 1e-50), "neg_config.temperature",
                                         "must be a finite positive number in float32 (the NEG op's precision), "
                                         "got 1e-50 (0.0 in float32)"),
        "neg temperature inf in float32": (setneg("temperature", 1e39), "neg_config.temperature",
                                           "got 1e+39 (inf in float32)"),
        "neg top_k beyond int32": (setneg("top_k", 2**40), "neg_config.top_k",
                                   "must be <= 2147483647 (the NEG plugin's INT32 field), got 1099511627776"),
        "neg unknown field": (setneg("topk", 8), "neg_config.topk", "unknown NEG field"),
        "neg threshold in config": (setneg("threshold", 0.5), "neg_config.threshold", "neg_gate.threshold"),
        "bos outside vocab": (setf("bos_token_id", 512), "text_config.bos_token_id", "outside the vocabulary"),
        "neg missing": (lambda d: d.pop("neg_config"), "neg_config", "missing"),
        "pad outside vocab": (setf("pad_token_id", 512), "'text_config.pad_token_id'", "outside the vocabulary"),
        "rotary factor above one": (
            lambda d: d["text_config"]["rope_parameters"].__setitem__("partial_rotary_factor", 1.5),
            "text_config.rope_parameters.partial_rotary_factor", "must be in (0, 1], got 1.5"),
        "top-level rotary factor above one": (
            lambda d: (d["text_config"]["rope_parameters"].pop("partial_rotary_factor"),
                       d["text_config"].__setitem__("partial_rotary_factor", 2.0)),
            "field 'text_config.partial_rotary_factor'", "must be in (0, 1], got 2.0"),
        "layer_types not strings": (setf("layer_types", ["linear_attention"] * 3 + [1]), "text_config.layer_types",
                                    "must be a list of strings"),
        "text_config not an object": (lambda d: d.__setitem__("text_config", [1]), "field 'text_config'",
                                      "expected a JSON object"),
    }


def mutated_config_error(tmp_path, mutate) -> str:
    """The ConfigError message of loading the tiny preset's config.json after ``mutate(config)``."""
    data = preset_config("tiny")
    mutate(data)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    return str(info.value)


@pytest.mark.parametrize("case", sorted(_mutations()))
def test_invalid_config_names_field_and_file(tmp_path, case):
    mutate, field, words = _mutations()[case]
    message = mutated_config_error(tmp_path, mutate)
    assert str(tmp_path / "config.json") in message
    assert field in message and words in message


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path)


@pytest.mark.parametrize("name", ["config.json", "neg_config.json", "generation_config.json"])
def test_json_files_that_are_not_utf8_are_named(tmp_path, name):
    data = preset_config("tiny")
    write(tmp_path, data) if name != "neg_config.json" else write(tmp_path, {**data, "neg_config": None}, {})
    (tmp_path / name).write_bytes(b"\xff\xfe{}")  # UTF-16
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == (f"{tmp_path / name}: field '<file>': is not UTF-8 (invalid start byte at byte 0); "
                               "JSON files must be UTF-8")


def test_a_config_json_that_is_a_directory_is_named(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'config.json'}: field '<file>': cannot be read"):
        load_config(tmp_path)


def test_inspect_names_a_config_that_is_not_utf8(tmp_path):
    from click.testing import CliRunner

    from trt_neg.inspect import main

    (tmp_path / "config.json").write_bytes(b"\xff\xfe{}")
    result = CliRunner().invoke(main, [str(tmp_path)])
    assert result.exit_code == 1 and not isinstance(result.exception, UnicodeDecodeError)
    assert f"{tmp_path / 'config.json'}: field '<file>': is not UTF-8" in result.output


def test_neg_config_given_twice(tmp_path):
    data = preset_config("tiny")
    with pytest.raises(ConfigError, match="given twice"):
        load_config(write(tmp_path, data, {"head_hidden_size": 8}))


def test_generation_config_eos_ids_are_added(tmp_path):
    """HF generate stops on generation_config.json's eos ids too (chat checkpoints keep <|im_end|>
    there); every backend and the converted config must stop on the union, config.json's first."""
    data = preset_config("tiny")
    write(tmp_path, data)
    eos = load_config(tmp_path).backbone.eos_token_id
    assert eos  # the preset names one
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, eos[0], 7, 9]}))
    assert load_config(tmp_path).backbone.eos_token_id == eos + (7, 9)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": 10**9}))
    with pytest.raises(ConfigError, match=r"generation_config\.json.*eos_token_id.*outside the vocabulary"):
        load_config(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": "x"}))
    with pytest.raises(ConfigError, match=r"generation_config\.json.*eos_token_id"):
        load_config(tmp_path)


# ------------------------------------------------------------------------------------
# Fields transformers resolves in a particular way (each checked against the installed transformers)
# ------------------------------------------------------------------------------------

_ABSENT = "absent"


@pytest.mark.parametrize("outer", [_ABSENT, True, False])
@pytest.mark.parametrize("text", [_ABSENT, True, False])
def test_vl_tie_word_embeddings_follows_qwen3_5_for_conditional_generation(tmp_path, outer, text):
    """The published layout's architecture (Qwen3_5ForConditionalGeneration) ties by the OUTER
    tie_word_embeddings (default false); text_config's value is not read."""
    import transformers
    from transformers import AutoConfig, Qwen3_5ForConditionalGeneration

    transformers.logging.set_verbosity_error()
    data = preset_config("tiny")
    data.pop("tie_word_embeddings", None)
    data["text_config"].pop("tie_word_embeddings", None)
    if outer != _ABSENT:
        data["tie_word_embeddings"] = outer
    if text != _ABSENT:
        data["text_config"]["tie_word_embeddings"] = text
    write(tmp_path, data)
    hf = Qwen3_5ForConditionalGeneration(AutoConfig.from_pretrained(tmp_path))
    hf_tied = hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()
    assert load_config(tmp_path).backbone.tie_word_embeddings == hf_tied == (outer is True)


def test_text_layout_tie_word_embeddings_is_its_own(tmp_path):
    for value in (True, False):
        data = text_layout()
        data["tie_word_embeddings"] = value
        assert load_config(write(tmp_path, data)).backbone.tie_word_embeddings is value
    data = text_layout()
    del data["tie_word_embeddings"]
    assert load_config(write(tmp_path, data)).backbone.tie_word_embeddings is False


@pytest.mark.parametrize("outer, inner", [(509, None), (509, 508), (None, 508), ([509, 3], 508), (None, None)])
def test_vl_generation_ids_outer_config_first(tmp_path, outer, inner):
    """GenerationConfig.from_model_config: the outer config's eos/bos/pad where not null, else text_config's."""
    import transformers
    from transformers import AutoConfig, GenerationConfig

    transformers.logging.set_verbosity_error()
    data = preset_config("tiny")
    single = outer[0] if isinstance(outer, list) else outer  # bos / pad: one id (transformers refuses lists)
    for name, value in (("eos_token_id", outer), ("bos_token_id", single), ("pad_token_id", single)):
        data[name] = value
        data["text_config"][name] = inner
    write(tmp_path, data)
    hf = GenerationConfig.from_model_config(AutoConfig.from_pretrained(tmp_path))
    b = load_config(tmp_path).backbone
    expected = outer if outer is not None else inner
    assert hf.eos_token_id == expected
    assert b.eos_token_id == (() if expected is None else tuple(expected if isinstance(expected, list) else [expected]))
    expected = single if single is not None else inner
    for name in ("bos_token_id", "pad_token_id"):
        assert getattr(hf, name) == getattr(b, name) == expected


def test_vl_outer_eos_only_and_generation_config_merge(tmp_path):
    """eos on the wrapper only (no text_config eos): kept, and generation_config.json's ids still merge after it."""
    data = preset_config("tiny")
    data["eos_token_id"] = data["text_config"].pop("eos_token_id")
    write(tmp_path, data)
    assert load_config(tmp_path).backbone.eos_token_id == (509,)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 509]}))
    assert load_config(tmp_path).backbone.eos_token_id == (509, 7)


def test_vl_outer_token_id_errors_name_the_outer_field(tmp_path):
    data = preset_config("tiny")
    data["eos_token_id"] = 100000
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    assert str(tmp_path / "config.json") in str(info.value)
    assert "field 'eos_token_id'" in str(info.value) and "outside the vocabulary" in str(info.value)
    data["eos_token_id"] = "x"
    with pytest.raises(ConfigError, match=r"field 'eos_token_id'.*token id"):
        load_config(write(tmp_path, data))
    data["eos_token_id"] = 509
    data["tie_word_embeddings"] = "yes"
    with pytest.raises(ConfigError, match=r"field 'tie_word_embeddings'.*true or false"):
        load_config(write(tmp_path, data))


@pytest.mark.parametrize("layout", ["vl", "text"])
def test_head_dim_defaults_to_transformers_default(tmp_path, layout):
    """A config without head_dim: transformers' Qwen3_5TextConfig default (256), not hidden // heads."""
    import transformers
    from transformers import AutoConfig

    transformers.logging.set_verbosity_error()
    data = preset_config("tiny") if layout == "vl" else {**text_layout(), "model_type": "qwen3_5_text"}
    text = data["text_config"] if layout == "vl" else data
    del text["head_dim"]
    write(tmp_path, data)
    hf = AutoConfig.from_pretrained(tmp_path)
    hf = hf.text_config if layout == "vl" else hf
    b = load_config(tmp_path).backbone
    assert b.head_dim == hf.head_dim == 256
    assert b.rotary_dim == int(256 * 0.25)


def _rope(theta, partial, kind="default"):
    return {"rope_type": kind, "rope_theta": theta, "partial_rotary_factor": partial}


def test_rope_scaling_and_rope_parameters_that_disagree_are_refused(tmp_path):
    data = preset_config("tiny")
    data["text_config"]["rope_scaling"] = _rope(5e5, 0.5)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    message = str(info.value)
    assert str(tmp_path / "config.json") in message
    assert "text_config.rope_scaling" in message and "text_config.rope_parameters" in message


@pytest.mark.parametrize("case", ["equal", "scaling only", "parameters empty"])
def test_rope_scaling_agreeing_or_alone_is_read_as_transformers_does(tmp_path, case):
    import transformers
    from transformers import AutoConfig

    transformers.logging.set_verbosity_error()
    data = preset_config("tiny")
    text = data["text_config"]
    if case == "equal":
        text["rope_parameters"] = text["rope_scaling"] = _rope(5e5, 0.5)
    elif case == "scaling only":
        text["rope_scaling"] = text.pop("rope_parameters") | {"rope_theta": 5e5, "partial_rotary_factor": 0.5}
    else:
        text["rope_parameters"] = {}
        text["rope_scaling"] = _rope(5e5, 0.5)
    write(tmp_path, data)
    hf = AutoConfig.from_pretrained(tmp_path).text_config.rope_parameters
    b = load_config(tmp_path).backbone
    assert (b.rope_theta, b.partial_rotary_factor) == (hf["rope_theta"], hf["partial_rotary_factor"]) == (5e5, 0.5)


def test_rope_scaling_errors_name_rope_scaling(tmp_path):
    data = preset_config("tiny")
    data["text_config"]["rope_scaling"] = _rope(1e4, 0.25, "yarn")
    del data["text_config"]["rope_parameters"]
    with pytest.raises(ConfigError, match=r"field 'text_config\.rope_scaling\.rope_type'.*yarn"):
        load_config(write(tmp_path, data))


def test_inspect_cli_has_short_help_and_names_a_missing_config(tmp_path, tiny_checkpoint):
    from click.testing import CliRunner

    from trt_neg import inspect as inspect_cli

    r = CliRunner().invoke(inspect_cli.main, ["-h"])
    assert r.exit_code == 0 and "Usage:" in r.output and "--json" in r.output
    r = CliRunner().invoke(inspect_cli.main, [str(tmp_path)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    assert f"{tmp_path / 'config.json'}: not found (expected an HF checkpoint directory" in r.output
    assert "field '<file>'" not in r.output
    r = CliRunner().invoke(inspect_cli.main, [str(tiny_checkpoint), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["tensors"] > 0


# ------------------------------------------------------------------------------------
# Other model families and layouts transformers reads differently are refused, never read as Qwen3.5
# ------------------------------------------------------------------------------------

def _moe_fields(text):
    text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)


def _family_cases():
    def qwen3_next(d):
        d.pop("text_config")
        d.update(preset_config("tiny")["text_config"], model_type="qwen3_next", architectures=["Qwen3NextForCausalLM"])
        _moe_fields(d)

    def qwen3_5_moe(d):
        d.update(model_type="qwen3_5_moe", architectures=["Qwen3_5MoeForConditionalGeneration"])
        d["text_config"]["model_type"] = "qwen3_5_moe_text"
        _moe_fields(d["text_config"])
        del d["text_config"]["intermediate_size"]  # as transformers' Qwen3_5MoeTextConfig has none

    def qwen3(d):
        d.pop("text_config")
        d.update(preset_config("tiny")["text_config"], model_type="qwen3", architectures=["Qwen3ForCausalLM"])

    def moe_text_config(d):
        d.pop("model_type")
        d.pop("architectures")
        d["text_config"]["model_type"] = "qwen3_5_moe_text"

    def experts_without_model_type(d):
        d.pop("model_type")
        d.pop("architectures")
        d["text_config"].pop("model_type")
        _moe_fields(d["text_config"])

    def qwen3_next_architecture_only(d):
        d.pop("model_type")
        d["architectures"] = ["Qwen3NextForCausalLM"]

    families = "Qwen3.5-MoE, Qwen3-Next and Qwen3 checkpoints are not supported"
    return {
        "qwen3_next": (qwen3_next, "field 'model_type': is 'qwen3_next', not a dense Qwen3.5 model", families),
        "qwen3_5_moe": (qwen3_5_moe, "field 'model_type': is 'qwen3_5_moe', not a dense Qwen3.5 model", families),
        "qwen3": (qwen3, "field 'model_type': is 'qwen3', not a dense Qwen3.5 model", families),
        "moe text_config": (moe_text_config, "field 'text_config.model_type': is 'qwen3_5_moe_text', not a dense",
                            families),
        "experts without model_type": (experts_without_model_type,
                                       "field 'text_config.num_experts': is 4: a mixture-of-experts model",
                                       "the dense Qwen3.5 (one MLP per layer), the only one trt_neg implements"),
        "qwen3_next architecture": (qwen3_next_architecture_only,
                                    "field 'architectures': names 'Qwen3NextForCausalLM', not a dense Qwen3.5 model",
                                    families),
    }


@pytest.mark.parametrize("case", sorted(_family_cases()))
def test_other_model_families_are_refused_by_name(tmp_path, case):
    """Qwen3-Next, Qwen3.5-MoE and Qwen3 configs carry most Qwen3.5 fields; none may load as a Qwen3.5."""
    mutate, start, end = _family_cases()[case]
    message = mutated_config_error(tmp_path, mutate)
    assert message.startswith(f"{tmp_path / 'config.json'}: {start}") and message.endswith(end)


@pytest.mark.parametrize("architectures", [["Qwen3_5ForConditionalGeneration"], ["Qwen3_5ForCausalLM"],
                                           ["Qwen3_5Model"], ["Qwen3_5TextModel"],
                                           ["DarwinNegForCausalLM"], "Qwen3_5ForCausalLM", None, []])
def test_qwen3_5_architectures_and_custom_names_load(architectures):
    data = preset_config("tiny")
    data["architectures"] = architectures
    data["text_config"]["num_experts"] = 0  # no experts: the dense model
    expected = architectures if isinstance(architectures, str) else (architectures or [""])[0]
    assert config_from_dict(data).architecture == expected


@pytest.mark.parametrize("layout", ["vl", "text"])
def test_a_model_type_outside_the_qwen_family_is_left_to_the_fields(layout):
    """A Darwin checkpoint may name its own model_type: only another Qwen family's is refused."""
    data = preset_config("tiny") if layout == "vl" else text_layout()
    data["model_type"] = "darwin_neg"
    assert config_from_dict(data).backbone.hidden_size == preset_config("tiny")["text_config"]["hidden_size"]


def test_architectures_must_be_names():
    data = preset_config("tiny")
    data["architectures"] = [1]
    with pytest.raises(ConfigError, match=r"field 'architectures': must be a list of class names, got \[1\]"):
        config_from_dict(data, "config.json")


def test_qwen3_5_model_type_needs_text_config():
    """transformers builds Qwen3_5Config's default (9B) text config when text_config is absent, whatever the
    top-level fields say."""
    data = {**text_layout(), "model_type": "qwen3_5"}
    with pytest.raises(ConfigError, match=r"config.json: field 'text_config': is missing; model_type 'qwen3_5' "):
        config_from_dict(data, "config.json")


def test_qwen3_5_text_model_type_refuses_a_text_config():
    """transformers reads a qwen3_5_text config's top-level fields; a text_config beside them is not read."""
    data = {**text_layout(), "model_type": "qwen3_5_text", "text_config": preset_config("tiny")["text_config"]}
    with pytest.raises(ConfigError, match=r"config.json: field 'text_config': model_type 'qwen3_5_text' "):
        config_from_dict(data, "config.json")


def test_text_config_model_type_qwen3_5_text_loads(tmp_path):
    data = preset_config("tiny")
    assert data["text_config"]["model_type"] == "qwen3_5_text" and data["model_type"] == "qwen3_5"
    assert load_config(write(tmp_path, data)).backbone == config_from_dict(text_layout()).backbone


def test_rope_parameters_per_layer_type_are_refused():
    """transformers 5.23's Qwen3.5 fails on rope parameters nested by layer type (KeyError 'rope_type');
    reading the top-level rope_theta instead would silently drop the nested yarn scaling."""
    data = preset_config("tiny")
    text = data["text_config"]
    text["rope_theta"] = 1e4
    text["rope_parameters"] = {"full_attention": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                                                  "original_max_position_embeddings": 512}}
    with pytest.raises(ConfigError, match=r"config.json: field 'text_config.rope_parameters.full_attention': "
                                          r"per-layer-type rope parameters are not supported"):
        config_from_dict(data, "config.json")


@pytest.mark.parametrize("where", ["top", "text_config"])
def test_a_quantized_checkpoint_is_refused_by_its_quantization_config(where):
    data = preset_config("tiny")
    (data if where == "top" else data["text_config"])["quantization_config"] = {"quant_method": "fp8",
                                                                               "weight_block_size": [128, 128]}
    field = "quantization_config" if where == "top" else "text_config.quantization_config"
    with pytest.raises(ConfigError, match=rf"config.json: field '{field}': the checkpoint is quantized "
                                          r"\(quant_method 'fp8'\); trt_neg converts bf16, fp16 or fp32 weights"):
        config_from_dict(data, "config.json")


# ------------------------------------------------------------------------------------
# TensorRT-LLM outputs given where an HF checkpoint is expected are named for what they are
# ------------------------------------------------------------------------------------

def test_a_converted_checkpoint_is_named_with_the_hf_checkpoint_it_came_from(tiny_checkpoint, tmp_path):
    from trt_neg.checkpoint.convert import convert_checkpoint

    convert_checkpoint(tiny_checkpoint, tmp_path / "ckpt", tp_size=2)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "ckpt")
    assert str(info.value) == (
        f"{tmp_path / 'ckpt' / 'config.json'}: field 'architecture': a TensorRT-LLM checkpoint written by "
        f"build_engine.py (tp 2), not an HF checkpoint; give the HF checkpoint it was converted from: "
        f"{tiny_checkpoint.resolve() / 'config.json'}")


@pytest.mark.parametrize("trt_neg, mapping, says", [
    (None, {"tp_size": 1, "pp_size": 2}, "a TensorRT-LLM checkpoint (tp 1, pp 2)"),
    (None, {"pp_size": 2}, "a TensorRT-LLM checkpoint (tp ?, pp 2)"),
    ({"contract_version": 1}, {"tp_size": 2}, "a TensorRT-LLM checkpoint written by build_engine.py (tp 2)"),
    ({"source": "/m/config.json"}, {"tp_size": 4, "pp_size": 1}, "a TensorRT-LLM checkpoint written by build_engine.py "
                                                                  "(tp 4)"),
])
def test_a_foreign_or_partial_trtllm_checkpoint_config_is_named_with_its_layout(trt_neg, mapping, says):
    data = {"architecture": "DarwinNegForCausalLM", "mapping": mapping}
    if trt_neg is not None:
        data["trt_neg"] = trt_neg
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "c.json")
    origin = f": {trt_neg['source']}" if trt_neg and "source" in trt_neg else ""
    assert str(info.value) == (f"c.json: field 'architecture': {says}, not an HF checkpoint; give the HF checkpoint it "
                               f"was converted from{origin}")


def test_an_engine_config_is_named_as_such(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"version": "1.2.1", "pretrained_config": {"architecture": "DarwinNegForCausalLM"},
                                "build_config": {"max_batch_size": 8}}))
    with pytest.raises(ConfigError, match=r"field 'pretrained_config': a TensorRT-LLM engine directory's config, "
                                          r"not an HF checkpoint; give the HF checkpoint it was built from"):
        load_config(tmp_path)


def test_an_error_in_a_config_given_as_a_dict_names_dict_as_its_source():
    data = text_layout()
    data["hidden_size"] = 0
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value) == "<dict>: field 'hidden_size': must be >= 1, got 0"
    assert config_from_dict(text_layout()).source == ""  # not "None": converters record it as a path


def test_null_fields_take_their_defaults():
    """transformers writes unset fields as null; a null boolean reads as false there (no bias, untied)."""
    data = text_layout()
    data.update(attention_bias=None, tie_word_embeddings=None, eos_token_id=None)
    data["neg_config"].update(top_k=None)
    cfg = config_from_dict(data)
    b = cfg.backbone
    assert (b.attention_bias, b.tie_word_embeddings, b.eos_token_id) == (False, False, ())
    assert cfg.neg.top_k == 8


@pytest.mark.parametrize("field, value, problem", [
    ("rms_norm_eps", "1e-6", "must be a number, got '1e-6'"),
    ("rms_norm_eps", True, "must be a number, got True"),
    ("rms_norm_eps", 0, "must be a finite positive number, got 0.0"),
    ("rms_norm_eps", -1e-6, "must be a finite positive number, got -1e-06"),
    ("rope_theta", float("inf"), "must be a finite positive number, got inf"),
    ("rope_theta", float("nan"), "must be a finite positive number, got nan"),
    ("eos_token_id", -1, "must be a token id or a list of token ids, got -1"),
    ("eos_token_id", [1, "2"], "must be a token id or a list of token ids, got [1, '2']"),
    ("bos_token_id", True, "must be a token id or a list of token ids, got True"),
    ("layer_types", "linear_attention", "must be a list of strings"),
    ("linear_conv_kernel_dim", 1, "must be >= 2, got 1"),
])
def test_a_field_of_the_wrong_type_or_range_is_named(field, value, problem):
    data = text_layout()
    data.pop("rope_parameters")
    data.update(rope_theta=1e4, partial_rotary_factor=0.25)  # legacy top-level rope fields: read by f.float
    data[field] = value
    with pytest.raises(ConfigError) as info:
        config_from_dict(data, "config.json")
    assert str(info.value) == f"config.json: field '{field}': {problem}"


def test_layer_types_null_or_absent_follow_full_attention_interval_4():
    """transformers' Qwen3_5TextConfig default (full_attention_interval 4): every fourth layer is full attention."""
    data = text_layout()
    data.update(layer_types=None, num_hidden_layers=8)
    assert config_from_dict(data).backbone.layer_types == ("linear_attention",) * 3 + ("full_attention",) \
        + ("linear_attention",) * 3 + ("full_attention",)


@pytest.mark.parametrize("rope_type", ["default", "mrope"])
def test_full_rotary_and_text_only_mrope_are_accepted(rope_type):
    """partial_rotary_factor 1 rotates the whole head; rope_type mrope (the published VL config's M-RoPE)
    acts on text as default RoPE."""
    data = text_layout()
    data["rope_parameters"].update(partial_rotary_factor=1.0, rope_type=rope_type)
    assert config_from_dict(data).backbone.rotary_dim == 16


def test_absent_fields_take_transformers_defaults():
    """Qwen3_5TextConfig's defaults for fields save_pretrained may leave out: head_dim 256, rms_norm_eps 1e-6,
    linear_conv_kernel_dim 4, partial_rotary_factor 0.25; a conv kernel of 2 (one state step) is allowed."""
    import transformers

    data = text_layout()
    for name in ("head_dim", "rms_norm_eps", "linear_conv_kernel_dim", "hidden_act"):
        data.pop(name)
    data["rope_parameters"].pop("partial_rotary_factor")
    b = config_from_dict(data).backbone
    reference = transformers.Qwen3_5TextConfig()
    assert (b.head_dim, b.rms_norm_eps, b.linear_conv_kernel_dim, b.partial_rotary_factor) == (
        reference.head_dim, reference.rms_norm_eps, reference.linear_conv_kernel_dim, 0.25) == (256, 1e-6, 4, 0.25)
    data["linear_conv_kernel_dim"] = 2
    assert config_from_dict(data).backbone.linear_conv_kernel_dim == 2
    assert b.hidden_act == "silu"


@pytest.mark.parametrize("factor, rotary_dim", [(0.125, 2), (0.01, None), (0.1, None)])
def test_rotary_dims_must_be_even_and_at_least_two(factor, rotary_dim):
    data = text_layout()  # head_dim 16
    data["rope_parameters"]["partial_rotary_factor"] = factor
    if rotary_dim is not None:
        assert config_from_dict(data).backbone.rotary_dim == rotary_dim
        return
    with pytest.raises(ConfigError, match=rf"head_dim 16 x {factor} gives {int(16 * factor)} rotary dims; need an "
                                          r"even number >= 2"):
        config_from_dict(data)


@pytest.mark.parametrize("kind", ["linear_attention", "full_attention"])
def test_a_model_of_one_layer_kind_is_described(kind):
    data = text_layout()
    data["layer_types"] = [kind] * 4
    b = config_from_dict(data).backbone
    assert (b.full_attention_layers, b.linear_attention_layers) == (((0, 1, 2, 3), ()) if kind == "full_attention"
                                                                    else ((), (0, 1, 2, 3)))


def test_neg_seed_enabled_and_their_limits_are_read():
    data = text_layout()
    data["neg_config"].update(seed=2**64 - 1, enabled=False, top_k=3, temperature=0.5, activation="gelu")
    neg = config_from_dict(data).neg
    assert (neg.seed, neg.enabled, neg.top_k, neg.temperature, neg.activation) == (2**64 - 1, False, 3, 0.5, "gelu")
    data["neg_config"]["seed"] = 2**64
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value) == "<dict>: field 'neg_config.seed': must be <= 18446744073709551615 (64 bits), got " \
                              "18446744073709551616"


def test_a_missing_config_json_says_what_directory_was_expected(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == (f"{tmp_path / 'config.json'}: field '<file>': not found (expected an HF checkpoint "
                               "directory with config.json)")


def test_a_generation_config_eos_equal_to_the_vocabulary_size_is_refused(tmp_path):
    """Token ids run 0 .. vocab_size - 1: vocab_size itself is outside (the boundary, by name of the file)."""
    write(tmp_path, text_layout())
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [509, 512]}))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == (f"{tmp_path / 'generation_config.json'}: field 'eos_token_id': token id 512 is outside "
                               "the vocabulary (vocab_size 512)")
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [509, 511]}))
    assert load_config(tmp_path).backbone.eos_token_id == (509, 511)


@pytest.mark.parametrize("outer, inner, warned", [
    (None, True, "text_config.tie_word_embeddings (True) is ignored: Qwen3_5ForConditionalGeneration ties by the "
                 "top-level tie_word_embeddings (absent: false)"),
    (True, False, "text_config.tie_word_embeddings (False) is ignored: Qwen3_5ForConditionalGeneration ties by the "
                  "top-level tie_word_embeddings (True)"),
    (False, False, None),
    (None, None, None),
])
def test_vl_text_config_tie_that_disagrees_with_the_outer_one_is_a_warning(caplog, outer, inner, warned):
    data = preset_config("tiny")
    data.pop("tie_word_embeddings")
    if outer is not None:
        data["tie_word_embeddings"] = outer
    data["text_config"]["tie_word_embeddings"] = inner
    with caplog.at_level("WARNING", logger="trt_neg.config"):
        cfg = config_from_dict(data, "c.json")
    assert cfg.backbone.tie_word_embeddings is bool(outer)
    messages = [r.getMessage() for r in caplog.records if r.name == "trt_neg.config"]
    assert messages == ([] if warned is None else [f"c.json: {warned}"])


def test_token_id_zero_is_a_token():
    data = text_layout()
    data.update(eos_token_id=[0, 511], bos_token_id=0, pad_token_id=0)
    b = config_from_dict(data).backbone
    assert (b.eos_token_id, b.bos_token_id, b.pad_token_id) == ((0, 511), 0, 0)


def test_the_checkpoint_dtype_in_config_json_is_the_conversion_default(tiny_checkpoint, tmp_path):
    """config.json's dtype (kept with the description) decides the converted dtype when none is asked for,
    whatever the stored weights' dtype (float32 here)."""
    import shutil

    from trt_neg.checkpoint.convert import resolve_dtype
    from trt_neg.checkpoint.hf import HFCheckpoint

    model = shutil.copytree(tiny_checkpoint, tmp_path / "m")
    data = json.loads((model / "config.json").read_text())
    data["dtype"] = "bfloat16"
    (model / "config.json").write_text(json.dumps(data))
    assert resolve_dtype(HFCheckpoint(model), None) == "bfloat16"
