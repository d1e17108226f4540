"""Corrupt JSON and corrupt declared sizes in the files trt_neg reads: each is one error naming the
file (and field or tensor), never a traceback, a hang on a declared size, or a file accepted here
that the safetensors library, transformers or TensorRT-LLM would refuse later.
(Found by fuzzing the readers with mutated checkpoints.)"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from trt_neg import strict_json
from trt_neg.checkpoint.safetensors_io import CheckpointError, read_header
from trt_neg.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("raw, reason", [
    (b"\xef\xbb\xbf{}", "starts with a byte-order mark; JSON files must be plain UTF-8"),
    ('{"a": 1}'.encode("utf-16"), "is not UTF-8 (invalid start byte at byte 0); JSON files must be UTF-8"),
    (DEEP, "is not valid JSON here (nested too deeply)"),
    (b'{"a": ' + b"9" * 5000 + b"}", "is not valid JSON here (Exceeds the limit (4300 digits)"),
    (b'{"a": "\\ud800"}', r"holds a string that is not valid Unicode (a lone surrogate escape, \ud800)"),
    (b'{"\\udfff": 1}', r"holds a string that is not valid Unicode (a lone surrogate escape, \udfff)"),
])
def test_strict_json_refuses_what_plain_json_loads_lets_through(raw, reason):
    with pytest.raises(strict_json.JsonError) as info:
        strict_json.loads(raw)
    assert str(info.value).startswith(reason), str(info.value)


def test_strict_json_reads_ordinary_json():
    assert strict_json.loads('{"a": ["\\u00e9", 1.5, null, {"b": "\\ud83d\\ude00"}]}'.encode()) == \
        {"a": ["é", 1.5, None, {"b": "😀"}]}


def test_strict_json_refuses_a_lone_surrogate_handed_over_as_str():
    with pytest.raises(strict_json.JsonError, match=r"a lone surrogate escape, \\udc80\)$"):
        strict_json.loads('["\udc80"]')


def test_strict_json_walks_the_strings_only_when_a_surrogate_escape_is_there(monkeypatch):
    """The walk over every string more than doubled the parse of a large safetensors header (100k tensors:
    ~0.25 s for json.loads, ~0.28 s more for the walk); text without a \\uD800-\\uDFFF escape cannot hold
    a lone surrogate, so it is not walked."""
    walked = []
    monkeypatch.setattr(strict_json, "_check_strings", walked.append)
    header = {f"model.layers.{i}.weight": {"dtype": "BF16", "shape": [4, 4], "data_offsets": [32 * i, 32 * i + 32]}
              for i in range(1000)}
    raw = json.dumps({"__metadata__": {"format": "pt"}, **header}).encode()
    assert strict_json.loads(raw)["__metadata__"] == {"format": "pt"} and walked == []
    for text in ('{"a": "\\u00e9\\u4e2d"}', '["\u00e9\U0001f600"]'):  # escapes, non-ASCII, emoji: not walked
        strict_json.loads(text)
    assert walked == []
    strict_json.loads('{"a": "\\uD83D\\ude00"}')  # a surrogate escape (here a valid pair): walked
    assert len(walked) == 1


# ------------------------------------------------------------------ config.json
@pytest.fixture
def model(tiny_checkpoint, tmp_path):
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "model"))


def set_config_text(model: Path, text: bytes | str) -> Path:
    path = model / "config.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("text, problem", [
    (DEEP, "field '<file>': is not valid JSON here (nested too deeply)"),
    (b'{"vocab_size": ' + b"1" * 5000 + b"}", "field '<file>': is not valid JSON here (Exceeds the limit"),
    (b'{"architectures": ["\\ud800"]}', "field '<file>': holds a string that is not valid Unicode"),
])
def test_config_json_that_json_loads_chokes_on_is_named(model, text, problem):
    path = set_config_text(model, text)
    with pytest.raises(ConfigError) as info:
        load_config(model)
    assert str(info.value).startswith(f"{path}: {problem}"), str(info.value)


def edit_text_config(model: Path, **fields) -> Path:
    """Set fields of the tiny checkpoint's text_config, writing integers too large for a float verbatim."""
    path = model / "config.json"
    data = json.loads(path.read_text())
    data["text_config"].update(fields)
    path.write_text(json.dumps(data))
    return path


ROPE = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}


@pytest.mark.parametrize("fields, field, problem", [
    # float(10**400) raised OverflowError, a traceback from every CLI
    ({"rope_parameters": {**ROPE, "rope_theta": 10**400}}, "rope_parameters.rope_theta",
     "must be a finite number, got an integer too large for a float"),
    ({"rms_norm_eps": -10**400}, "rms_norm_eps", "must be a finite number, got an integer too large for a float"),
    # head_dim * partial_rotary_factor overflowed
    ({"head_dim": 10**400}, "head_dim", f"must be <= 2147483647 (an int32 size), got {10**400}"),
    # layer_types were planned for 10**9 layers before anything was refused (a hang)
    ({"num_hidden_layers": 10**9, "layer_types": None}, "num_hidden_layers",
     "must be <= 4096 (trt_neg's limit on layer and head counts), got 1000000000"),
    ({"num_attention_heads": 2**24}, "num_attention_heads", "must be <= 4096"),
])
def test_declared_sizes_beyond_reason_are_refused_before_use(model, fields, field, problem):
    path = edit_text_config(model, **fields)
    with pytest.raises(ConfigError) as info:
        load_config(model)
    assert str(info.value).startswith(f"{path}: field 'text_config.{field}': {problem}"), str(info.value)


def test_inspect_names_a_lone_surrogate_instead_of_crashing_on_print(model):
    """`python -m trt_neg.inspect` printed a UnicodeEncodeError traceback for architectures ["\\ud800"]."""
    path = model / "config.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "architectures": ["\ud800"]}))  # json.dumps writes the escape
    r = subprocess.run([sys.executable, "-m", "trt_neg.inspect", str(model)], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    assert f"{path}: field '<file>': holds a string that is not valid Unicode" in r.stderr + r.stdout


# ------------------------------------------------------------------ safetensors headers
def write_with_header(path: Path, header_bytes: bytes, data: bytes = b"\0" * 4) -> Path:
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + data)
    return path


TENSOR = {"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}


@pytest.mark.parametrize("header, problem", [
    (b"\xef\xbb\xbf" + json.dumps(TENSOR).encode(), "its JSON starts with a byte-order mark"),
    (json.dumps(TENSOR).encode("utf-16"), "its JSON is not UTF-8"),
    (json.dumps({**TENSOR, "__metadata__": 5}).encode(), "__metadata__ must be an object of strings, got 5"),
    (json.dumps({**TENSOR, "__metadata__": {"rank": 0}}).encode(),
     '__metadata__ must be an object of strings, got {"rank": 0}'),
    (json.dumps({**TENSOR, "__metadata__": []}).encode(), "__metadata__ must be an object of strings, got []"),
])
def test_headers_the_safetensors_library_refuses_are_refused(tmp_path, header, problem):
    """read_header accepted these (json.loads on bytes detects UTF-16 and skips a BOM); the safetensors
    library, which transformers and TensorRT-LLM load with, refuses each."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = write_with_header(tmp_path / "x.safetensors", header)
    with pytest.raises(CheckpointError, match=f"^{path}: corrupt safetensors header: ") as info:
        read_header(path)
    assert problem in str(info.value), str(info.value)
    with pytest.raises(SafetensorError):
        load_file(path)


@pytest.mark.parametrize("edit", [('"data_offsets": [0,', '"data_offsets": [-0,'), ('"shape": [1]', '"shape": [-0]')])
def test_a_negative_zero_in_a_header_is_refused_naming_the_tensor(tmp_path, edit):
    """json.loads reads -0 as the integer 0; the safetensors library (usize) refuses the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = write_with_header(tmp_path / "x.safetensors", json.dumps(TENSOR).replace(*edit).encode())
    with pytest.raises(CheckpointError, match=rf"^{path}: tensor 'x': corrupt header entry \(needs integer "
                                              r"data_offsets"):
        read_header(path)
    with pytest.raises(SafetensorError):
        load_file(path)


def test_metadata_of_strings_and_null_metadata_are_read(tmp_path):
    for metadata in ({"format": "pt", "rank": "0"}, None):
        header = json.dumps({**TENSOR, "__metadata__": metadata}).encode()
        assert read_header(write_with_header(tmp_path / "ok.safetensors", header))["x"]["shape"] == [1]


# ------------------------------------------------------------------ converted checkpoints
@pytest.fixture(scope="module")
def converted(tiny_checkpoint, tmp_path_factory):
    from trt_neg.checkpoint.convert import convert_checkpoint

    out = tmp_path_factory.mktemp("converted") / "tp2"
    convert_checkpoint(tiny_checkpoint, out, tp_size=2)
    return out


def test_a_converted_config_with_a_huge_head_count_is_refused_at_once(converted, tmp_path):
    """inspect planned one piece per declared head before comparing any rank file (2**24 heads: a hang)."""
    import trt_neg.inspect as inspect_cli

    ckpt = Path(shutil.copytree(converted, tmp_path / "ckpt"))
    data = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**data, "num_attention_heads": 2**24}))
    r = CliRunner().invoke(inspect_cli.main, [str(ckpt)])
    assert r.exit_code != 0 and "Traceback" not in r.output, r.output
    assert "field 'num_attention_heads': must be <= 4096" in " ".join(r.output.split()), r.output


@pytest.mark.parametrize("edit, problem", [
    (lambda d: d.update(rnn_conv_dim_size="x"),
     "field 'rnn_conv_dim_size': is \"x\"; the contract writes {conv} for this model"),
    (lambda d: d.update(quantization={"quant_algo": "W8A16", "kv_cache_quant_algo": None}),
     "field 'quantization': is {\"quant_algo\": \"W8A16\", \"kv_cache_quant_algo\": null}; the contract writes "
     "{\"quant_algo\": null, \"kv_cache_quant_algo\": null} for this model"),
    (lambda d: d.update(qk_layernorm=1), "field 'qk_layernorm': is 1; the contract writes true for this model"),
    (lambda d: d.update(logits_dtype="float16"),
     "field 'logits_dtype': is \"float16\"; the contract writes \"float32\" for this model"),
    (lambda d: d.update(state_size=d["state_size"] + 1), "field 'state_size': is {state+1}; the contract writes "
                                                          "{state} for this model"),
    (lambda d: d.pop("rotary_scaling"), "field 'rotary_scaling': is required but missing (the contract writes null "
                                        "here)"),
])
def test_fields_derived_from_the_model_must_be_the_contracts(converted, edit, problem):
    """These fields were never read back, so a corrupt value passed inspect, the simulation loader and
    --reuse-checkpoint, to reach TensorRT-LLM's build (rotary_scaling and quantization change the engine)."""
    from trt_neg.checkpoint.contract import config_from_checkpoint

    data = json.loads((converted / "config.json").read_text())
    conv, state = data["rnn_conv_dim_size"], data["state_size"]
    edit(data)
    with pytest.raises(ConfigError) as info:
        config_from_checkpoint(data, "config.json")
    expected = problem.replace("{conv}", str(conv)).replace("{state+1}", str(state + 1)).replace("{state}", str(state))
    assert str(info.value) == "config.json: " + expected


def test_the_quantization_tensorrt_llm_writes_back_is_the_contracts(converted):
    """DarwinNegConfig.description() reads back TensorRT-LLM's PretrainedConfig.to_dict(), whose
    quantization is the whole QuantConfig (dataclasses.asdict): refusing its extra fields failed
    DarwinNegForCausalLM(config), i.e. every engine build with the real TensorRT-LLM; an algorithm in
    that form is still refused."""
    from trt_neg.checkpoint.contract import config_from_checkpoint

    data = json.loads((converted / "config.json").read_text())
    whole = {"quant_algo": None, "kv_cache_quant_algo": None, "group_size": 128, "smoothquant_val": 0.5,
             "clamp_val": None, "use_meta_recipe": False, "has_zero_point": False, "pre_quant_scale": False,
             "exclude_modules": None}
    assert config_from_checkpoint({**data, "quantization": whole}, "c") == config_from_checkpoint(data, "c")
    for bad in ({**whole, "quant_algo": "FP8"}, {**whole, "kv_cache_quant_algo": "INT8"}, {"quant_algo": None}, []):
        with pytest.raises(ConfigError, match="^c: field 'quantization': is "):
            config_from_checkpoint({**data, "quantization": bad}, "c")


def test_derived_fields_compare_as_json_values(converted):
    """10000 and 10000.0 are the same JSON number; the checkpoint reads back unchanged."""
    from trt_neg.checkpoint.contract import config_from_checkpoint

    data = json.loads((converted / "config.json").read_text())
    assert config_from_checkpoint(data, "config.json") == config_from_checkpoint(
        {**data, "embedding_sharding_dim": 0.0}, "config.json")
