"""build_engine.py's engine build and trt_neg/trtllm/build.py.

CPU only: the pure parts (option validation, engine config rewrite and its runtime check,
build_info contents, plugin-library discovery) directly; the whole flow end to end over the
recording stub of tensorrt_llm (tests/trtllm_stub, put on sys.path per test: its builder.py
records ``build``/``Engine.save`` and writes placeholder engines). The real build runs in the
container (docker/selftest.sh, tests marked ``trtllm``).
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from trt_neg.checkpoint import contract
from trt_neg.checkpoint.synthetic import preset_config
from trt_neg.config import ConfigError, config_from_dict
from trt_neg.trtllm import build as B
from trt_neg.trtllm.engine_dir import read_build_info, read_engine_dir, write_build_info
from trt_neg.trtllm.plugins import PLUGIN_LIBRARY, PLUGIN_LIBRARY_ENV, PluginLibraryError

ROOT = Path(__file__).resolve().parents[1]
LIMITS = ["--max-batch-size", "4", "--max-input-len", "64", "--max-seq-len", "128", "--max-num-tokens", "256"]
# Imported above: the trtllm_stub / no_trtllm fixtures keep these module objects.
TRTLLM_KEEP = ("trt_neg.trtllm", "trt_neg.trtllm.build", "trt_neg.trtllm.engine_dir", "trt_neg.trtllm.plugins")


@pytest.fixture
def stub(trtllm_stub, monkeypatch, tmp_path):
    """The recording tensorrt_llm stub, with plugin loading recorded into the builder's CALLS."""
    builder = importlib.import_module("tensorrt_llm.builder")
    builder.CALLS.clear()
    from trt_neg.trtllm import plugins

    monkeypatch.setattr(plugins, "load_plugin_library",
                        lambda path=None: builder.CALLS.append(("load_plugin_library", str(path))) or [Path(path)])
    monkeypatch.delenv(PLUGIN_LIBRARY_ENV, raising=False)
    lib = tmp_path / "lib" / PLUGIN_LIBRARY
    lib.parent.mkdir()
    lib.write_bytes(b"\x7fELF not really a plugin library")
    builder.lib = lib
    yield builder
    builder.CALLS.clear()


def _tiny_engine_config(**build_overrides):
    desc = config_from_dict(preset_config("tiny"))
    pretrained = contract.checkpoint_config(desc, contract.Mapping(1, 1), "float32")
    pretrained.update({"architecture": B.RUNTIME_ARCHITECTURE_ALIAS, "trt_neg_architecture": "DarwinNegForCausalLM"})
    build = {"max_batch_size": 4, "max_input_len": 64, "max_seq_len": 128, "max_num_tokens": 256,
             "max_beam_width": 1, "kv_cache_type": "PAGED",
             "plugin_config": {"gpt_attention_plugin": "auto", "mamba_conv1d_plugin": "auto", "gemm_plugin": "auto",
                               "remove_input_padding": True, "paged_kv_cache": True, "paged_state": True}}
    build.update(build_overrides)
    return {"version": "1.2.1", "pretrained_config": pretrained, "build_config": build}


# ------------------------------------------------------------------------------------ CLI basics
def test_help_lists_the_engine_options():
    proc = subprocess.run([sys.executable, str(ROOT / "build_engine.py"), "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--max-batch-size", "--max-input-len", "--max-seq-len", "--max-num-tokens", "--dtype", "--tp-size",
                 "--pp-size", "--plugin-lib", "--workers", "--checkpoint-only", "--reuse-checkpoint", "--overwrite"):
        assert flag in proc.stdout


def test_without_tensorrt_llm_converts_then_stops_with_exit_3(cli, no_trtllm, tiny_checkpoint, tmp_path):
    from trt_neg.checkpoint.convert import convert_checkpoint

    engine = tmp_path / "engine"
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--no-progress",
                                      *LIMITS])
    assert result.exit_code == 3, result.output
    assert "tensorrt_llm 1.2.x" in result.output and "nvcr.io/nvidia/tensorrt-llm/release:1.2" in result.output
    assert "--reuse-checkpoint" in result.output and "Traceback" not in result.output
    assert not engine.exists()
    ckpt = tmp_path / "engine.ckpt"
    # the kept checkpoint is exactly what the converter writes
    direct = convert_checkpoint(tiny_checkpoint, tmp_path / "direct", dtype="float32", fsync=False).output
    for name in ("config.json", "rank0.safetensors"):
        assert (ckpt / name).read_bytes() == (direct / name).read_bytes(), name
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directories left

    again = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), *LIMITS])
    assert again.exit_code == 1 and "pass --reuse-checkpoint" in again.output
    reused = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--reuse-checkpoint",
                                      *LIMITS])
    assert reused.exit_code == 3 and "reusing TensorRT-LLM checkpoint" in reused.output
    wrong = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--reuse-checkpoint",
                                     "--tp-size", "2"])
    assert wrong.exit_code == 2 and "the reused checkpoint" in wrong.output


@pytest.mark.parametrize("args,message", [
    (["--max-input-len", "128", "--max-seq-len", "128"], "must be smaller than --max-seq-len"),
    (["--max-seq-len", "4096"], "exceeds the model's max_position_embeddings (2048)"),
    (["--max-input-len", "100", "--max-seq-len", "200", "--max-num-tokens", "50"], "must be at least --max-input-len"),
    (["--max-batch-size", "64", "--max-input-len", "10", "--max-seq-len", "20", "--max-num-tokens", "32"],
     "must be at least --max-batch-size"),
    (["--tp-size", "3"], "tensor parallel size 3 is not possible"),
    (["--pp-size", "2"], "--pp-size > 1: pipeline-parallel engines are not supported yet"),
    (["--max-batch-size", "5000"], "--max-batch-size 5000 exceeds 4096"),
])
def test_option_errors_fail_before_converting(cli, no_trtllm, tiny_checkpoint, tmp_path, args, message):
    """Options that do not fit the model or each other are usage errors, exit 2 as click's own and run.py's
    (1 is a bad input file, 3 "converted, rerun in the container")."""
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "e"), *args])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "\nError: " in result.output and message in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_engine_options_are_refused_with_checkpoint_only(cli, tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "c"),
                                      "--checkpoint-only", "--max-batch-size", "4", "--plugin-lib", "x.so"])
    assert result.exit_code == 2
    assert "--max-batch-size, --plugin-lib: engine option(s), meaningless with --checkpoint-only" in result.output


# ------------------------------------------------------------------------------------ pure parts
def test_resolve_build_options_defaults_and_caps():
    opts, notes = B.resolve_build_options(max_position_embeddings=262144, max_batch_size=8)
    assert (opts.max_seq_len, opts.max_input_len, opts.max_num_tokens) == (4096, 4095, 8192)
    assert notes == []
    opts, _ = B.resolve_build_options(max_position_embeddings=2048, max_batch_size=2, max_seq_len=128)
    assert (opts.max_input_len, opts.max_num_tokens) == (127, 254)
    opts, notes = B.resolve_build_options(max_position_embeddings=2048, tp_size=4, workers=8, gpu_count=2)
    assert opts.workers == 2 and opts.world_size == 4
    assert notes == ["--workers 8 capped at the engine count (4)", "--workers 4 capped at the visible GPU count (2)"]
    with pytest.raises(B.BuildOptionError, match=r"--pp-size > 1: pipeline-parallel engines are not supported yet"):
        B.resolve_build_options(max_position_embeddings=2048, pp_size=2)
    pc = opts.plugin_config()
    assert pc["paged_state"] is pc["paged_kv_cache"] is pc["remove_input_padding"] is True
    assert pc["mamba_conv1d_plugin"] == pc["gpt_attention_plugin"] == "auto" and pc["use_paged_context_fmha"] is False
    assert B.resolve_build_options(max_position_embeddings=64, gemm_plugin=False)[0].plugin_config()["gemm_plugin"] \
        is None
    with pytest.raises(B.BuildOptionError, match="--tokens-per-block must be one of"):
        B.resolve_build_options(max_position_embeddings=64, tokens_per_block=48)
    with pytest.raises(B.BuildOptionError, match="--max-batch-size must be an integer >= 1"):
        B.resolve_build_options(max_position_embeddings=64, max_batch_size=0)


def test_resolve_build_options_limits_are_inclusive_and_defaults_are_one_gpu_float32():
    """Each limit may equal what bounds it: max_seq_len the model's max_position_embeddings, max_num_tokens
    the batch size; the defaults are one GPU, float32 and a max_num_tokens capped at 8192."""
    opts, notes = B.resolve_build_options(max_position_embeddings=128, max_seq_len=128, max_batch_size=16,
                                          max_input_len=8, max_num_tokens=16, dtype="bfloat16")
    assert (opts.max_seq_len, opts.max_num_tokens, opts.dtype, opts.tp_size, opts.pp_size, opts.world_size,
            opts.workers) == (128, 16, "bfloat16", 1, 1, 1, 1) and notes == []
    with pytest.raises(B.BuildOptionError, match=r"--max-seq-len 129 exceeds the model's max_position_embeddings"):
        B.resolve_build_options(max_position_embeddings=128, max_seq_len=129)
    with pytest.raises(B.BuildOptionError, match=r"--max-num-tokens \(15\) must be at least --max-batch-size \(16\)"):
        B.resolve_build_options(max_position_embeddings=128, max_batch_size=16, max_input_len=8, max_num_tokens=15)
    opts, _ = B.resolve_build_options(max_position_embeddings=8192, max_batch_size=3)
    assert (opts.max_seq_len, opts.max_input_len, opts.max_num_tokens, opts.dtype) == (4096, 4095, 8192, "float32")
    assert opts.to_dict()["world_size"] == 1 and opts.to_dict()["plugin_config"] == opts.plugin_config()
    for workers, gpus in ((1, 2), (2, 2), (2, None)):  # within both caps: kept as asked, no note
        opts, notes = B.resolve_build_options(max_position_embeddings=128, tp_size=2, workers=workers, gpu_count=gpus)
        assert (opts.workers, notes) == (workers, [])
    opts, notes = B.resolve_build_options(max_position_embeddings=128, tp_size=2, workers=2, gpu_count=0)
    assert (opts.workers, notes) == (1, ["--workers 2 capped at the visible GPU count (0)"])


def test_a_prompt_limit_over_the_default_sequence_length_says_it_is_the_default():
    with pytest.raises(B.BuildOptionError) as info:
        B.resolve_build_options(max_position_embeddings=262144, max_input_len=5000)
    assert str(info.value) == ("--max-input-len (5000) must be smaller than --max-seq-len (4096, the default: "
                               "min(max_position_embeddings, 4096); pass a larger --max-seq-len): a sequence holds its "
                               "prompt plus at least one generated token")
    with pytest.raises(B.BuildOptionError) as info:  # a --max-seq-len the user gave is just named
        B.resolve_build_options(max_position_embeddings=262144, max_input_len=5000, max_seq_len=5000)
    assert str(info.value) == ("--max-input-len (5000) must be smaller than --max-seq-len (5000): a sequence holds its "
                               "prompt plus at least one generated token")


def test_check_engine_config_takes_float16_logits_and_names_a_missing_build_config():
    assert B.check_engine_config(_tiny_engine_config() | {"pretrained_config": {
        **_tiny_engine_config()["pretrained_config"], "logits_dtype": "float16"}}) == []
    assert B.check_engine_config({"pretrained_config": _tiny_engine_config()["pretrained_config"]}) == [
        "needs 'pretrained_config' and 'build_config' objects (an engine config, not a checkpoint config)"]
    config = _tiny_engine_config()
    config["pretrained_config"].update(conv_kernel=2, mapping={"world_size": 1})  # tp_size and pp_size: 1
    assert B.check_engine_config(config) == []
    assert B.check_engine_config(_tiny_engine_config(max_batch_size=1)) == []
    config["pretrained_config"]["mapping"] = {"world_size": 2, "tp_size": 1, "pp_size": 2}
    assert B.check_engine_config(config) == []


@pytest.mark.parametrize("pretrained, build, problem", [
    ({"mapping": {"tp_size": 0}}, {}, "pretrained_config.mapping must hold positive tp_size and pp_size, got "
                                      "{'tp_size': 0}"),
    ({"mapping": {"pp_size": "2"}}, {}, "pretrained_config.mapping must hold positive tp_size and pp_size, got "
                                        "{'pp_size': '2'}"),
    ({"mapping": {"world_size": 4, "tp_size": 1, "pp_size": 2}}, {}, "pretrained_config.mapping.world_size (4) != "
                                                                      "tp_size * pp_size"),
    ({"mapping": {"world_size": 2, "tp_size": 1, "pp_size": 1}}, {}, "pretrained_config.mapping.world_size (2) != "
                                                                      "tp_size * pp_size"),
    ({}, {"max_input_len": None}, "build_config.max_input_len must be an integer >= 1, got None"),
    ({}, {"plugin_config": {"gpt_attention_plugin": False, "mamba_conv1d_plugin": "auto", "remove_input_padding": True,
                            "paged_kv_cache": True, "paged_state": True}},
     "build_config.plugin_config.gpt_attention_plugin must be enabled, got False"),
])
def test_check_engine_config_names_each_bad_mapping_or_limit(pretrained, build, problem):
    config = _tiny_engine_config(**build)
    config["pretrained_config"].update(pretrained)
    assert B.check_engine_config(config) == [problem]


def test_check_engine_config_accepts_a_good_config_and_lists_every_problem():
    good = _tiny_engine_config()
    assert B.check_engine_config(good) == []
    # the enum's name (dataclass BuildConfig) or the pydantic KVCacheType's value: the C++ reader takes both
    for spelling in ("paged", "KVCacheType.PAGED", None):
        assert B.check_engine_config(_tiny_engine_config(kv_cache_type=spelling)) == [], spelling
    assert B.check_engine_config({"architecture": "DarwinNegForCausalLM"}) == [
        "needs 'pretrained_config' and 'build_config' objects (an engine config, not a checkpoint config)"]

    bad = _tiny_engine_config(max_beam_width=2, max_input_len=128, kv_cache_type="CONTINUOUS")
    p = bad["pretrained_config"]
    p["architecture"] = "DarwinNegForCausalLM"  # the alias not applied
    p["layer_types"] = ["linear", "attention"]
    p["rnn_conv_dim_size"] += 1
    del p["conv_kernel"]
    p["neg_config"] = None
    p["mapping"] = {"world_size": 3, "tp_size": 2, "pp_size": 1}
    bad["build_config"]["plugin_config"].update(paged_state=False, mamba_conv1d_plugin=None)
    problems = "\n".join(B.check_engine_config(bad))
    for expected in ("architecture must be the runtime alias 'RecurrentGemmaForCausalLM'",
                     "layer_types must be a non-empty list", "rnn_conv_dim_size is", "conv_kernel must be a positive",
                     "neg_config must be an object", "mapping.world_size (3) != tp_size * pp_size",
                     "max_input_len (128) must be < max_seq_len (128)", "max_beam_width must be 1",
                     "kv_cache_type must be PAGED", "plugin_config.mamba_conv1d_plugin must be enabled",
                     "plugin_config.paged_state must be true"):
        assert expected in problems, expected
    only_attention = _tiny_engine_config()
    only_attention["pretrained_config"]["layer_types"] = ["attention"]
    assert any("both 'recurrent' and 'attention'" in m for m in B.check_engine_config(only_attention))


def test_check_engine_config_wants_one_ranks_recurrent_state_sizes():
    """TensorRT-LLM sizes every rank's state pools with rnn_hidden_size / rnn_conv_dim_size as
    read: a tp 2 engine must carry one rank's sizes (global ones would allocate 2x)."""
    desc = config_from_dict(preset_config("tiny"))
    tp2 = _tiny_engine_config()
    tp2["pretrained_config"] = {**tp2["pretrained_config"],
                                **contract.checkpoint_config(desc, contract.Mapping(2, 1), "float32"),
                                "architecture": B.RUNTIME_ARCHITECTURE_ALIAS}
    assert B.check_engine_config(tp2) == []
    b = desc.backbone
    assert tp2["pretrained_config"]["rnn_hidden_size"] * 2 == b.linear_value_dim
    tp2["pretrained_config"].update(rnn_hidden_size=b.linear_value_dim, rnn_conv_dim_size=b.linear_conv_dim)
    problems = B.check_engine_config(tp2)
    assert any("rnn_hidden_size is" in m and "at tp_size 2" in m for m in problems), problems
    assert any("rnn_conv_dim_size is" in m for m in problems), problems


def test_rewrite_engine_config_is_atomic_and_checked(tmp_path):
    config = _tiny_engine_config()
    config["pretrained_config"]["architecture"] = "DarwinNegForCausalLM"  # as Engine.save writes it
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    before = path.read_bytes()
    with pytest.raises(B.EngineConfigError, match="architecture must be the runtime alias"):
        B.rewrite_engine_config(tmp_path, {"trt_neg_architecture": "DarwinNegForCausalLM"})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["config.json"]
    new = B.rewrite_engine_config(tmp_path, {"architecture": B.RUNTIME_ARCHITECTURE_ALIAS,
                                             "trt_neg_architecture": "DarwinNegForCausalLM"})
    assert json.loads(path.read_text()) == new
    assert new["pretrained_config"]["architecture"] == "RecurrentGemmaForCausalLM"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
    with pytest.raises(B.EngineConfigError, match="cannot read"):
        B.rewrite_engine_config(tmp_path / "nowhere", {})
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(B.EngineConfigError, match=rf"^{path}: cannot read the engine config written by Engine.save"):
        B.rewrite_engine_config(tmp_path, {})


def test_build_info_contents_follow_the_engine_dir_contract(tmp_path):
    opts, _ = B.resolve_build_options(max_position_embeddings=2048, max_batch_size=4, max_seq_len=128)
    info = B.build_info_contents(options=opts, plugin_library="plugins/libtrt_neg_plugins.so",
                                 plugin_library_source=Path("/opt/lib/libtrt_neg_plugins.so"),
                                 plugin_library_sha256="ab" * 32, hf_model_dir=tmp_path / "hf",
                                 checkpoint_dir=tmp_path / "ckpt", checkpoint_reused=False,
                                 source_fingerprint={"sha256": "00"}, timings={"convert checkpoint": 1.25,
                                                                              "build rank 0": 2.0},
                                 versions={"tensorrt_llm": "1.2.1", "trt_neg": "0.1.0", "tensorrt": "10.13"})
    write_build_info(tmp_path, **info)
    back = read_build_info(tmp_path)
    assert back["build_info_version"] == 1 and back["plugin_library"] == "plugins/libtrt_neg_plugins.so"
    assert back["hf_model_dir"] == str((tmp_path / "hf").resolve()) and back["tensorrt_llm_version"] == "1.2.1"
    assert back["options"]["max_seq_len"] == 128 and back["options"]["plugin_config"]["paged_state"] is True
    assert back["source"]["checkpoint_dir"] == str((tmp_path / "ckpt").resolve())
    assert back["timings_s"] == {"convert checkpoint": 1.25, "build rank 0": 2.0} and back["total_s"] == 3.25


def test_checkpoint_fingerprint_changes_with_the_weights_layout(tiny_checkpoint, tmp_path):
    import shutil

    a = B.checkpoint_fingerprint(tiny_checkpoint)
    assert a == B.checkpoint_fingerprint(tiny_checkpoint) and len(a["sha256"]) == 64
    copy = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, copy)
    assert B.checkpoint_fingerprint(copy)["sha256"] == a["sha256"]
    cfg = json.loads((copy / "config.json").read_text())
    cfg["neg_config"]["seed"] = 1234
    (copy / "config.json").write_text(json.dumps(cfg))
    assert B.checkpoint_fingerprint(copy)["sha256"] != a["sha256"]


def test_checkpoint_fingerprint_covers_safetensors_headers_not_their_bytes_nor_other_files(tiny_checkpoint, tmp_path):
    """What the docstring promises: names, sizes and headers of *.safetensors files (a renamed tensor of the same
    size changes it), never the weight bytes (a cheap identity of the 9B) nor files other than JSON and safetensors."""
    import shutil

    copy = shutil.copytree(tiny_checkpoint, tmp_path / "copy")
    a = B.checkpoint_fingerprint(copy)
    assert {f["name"] for f in a["files"]} == {p.name for p in copy.iterdir() if p.suffix in (".json", ".safetensors")}
    (copy / "README.md").write_text("notes")
    raw = bytearray((copy / "model.safetensors").read_bytes())
    raw[-4:] = b"\x01\x02\x03\x04"  # the last weight's bytes
    (copy / "model.safetensors").write_bytes(bytes(raw))
    assert B.checkpoint_fingerprint(copy)["sha256"] == a["sha256"]
    n = int.from_bytes(raw[:8], "little")
    header = bytes(raw[8:8 + n]).replace(b"mtp.fc.weight", b"mtp.fc.weighs")  # same length, another tensor name
    (copy / "model.safetensors").write_bytes(bytes(raw[:8]) + header + bytes(raw[8 + n:]))
    assert B.checkpoint_fingerprint(copy)["sha256"] != a["sha256"]


def test_find_plugin_library(tmp_path):
    lib = tmp_path / PLUGIN_LIBRARY
    lib.write_bytes(b"")
    other = tmp_path / "libother.so"
    other.write_bytes(b"")
    assert B.find_plugin_library(lib, environ={}) == lib.resolve()
    with pytest.raises(PluginLibraryError, match=r"--plugin-lib .*missing\.so: no such file; build it with: cmake"):
        B.find_plugin_library(tmp_path / "missing.so", environ={})
    env = {PLUGIN_LIBRARY_ENV: os.pathsep.join([str(lib), str(other)])}
    assert B.find_plugin_library(None, environ=env) == lib.resolve()
    with pytest.raises(PluginLibraryError, match=f"{PLUGIN_LIBRARY_ENV} names missing file"):
        B.find_plugin_library(None, environ={PLUGIN_LIBRARY_ENV: str(tmp_path / "gone.so")})
    assert B.find_plugin_library(None, environ={}, candidates=[tmp_path / "no.so", lib]) == lib.resolve()
    with pytest.raises(PluginLibraryError) as info:
        B.find_plugin_library(None, environ={}, candidates=[tmp_path / "a" / PLUGIN_LIBRARY])
    assert "not found (looked in" in str(info.value) and "cmake -S plugins -B build/plugins" in str(info.value)
    assert PLUGIN_LIBRARY_ENV in str(info.value)


def test_a_plugin_library_list_must_start_with_the_plugin_library(tmp_path):
    """The engine is built with, records and copies the first entry of TRT_NEG_PLUGIN_LIB: another library
    there (a dependency listed first) is refused before converting, not found missing plugins after it."""
    lib = tmp_path / PLUGIN_LIBRARY
    dep = tmp_path / "libdep.so"
    lib.write_bytes(b"")
    dep.write_bytes(b"")
    with pytest.raises(PluginLibraryError) as info:
        B.find_plugin_library(None, environ={PLUGIN_LIBRARY_ENV: os.pathsep.join([str(dep), str(lib)])})
    assert str(info.value) == (f"{PLUGIN_LIBRARY_ENV}: its first entry {dep} is the library the engine is built with "
                               f"and records, and must be {PLUGIN_LIBRARY}; list it first, or pass --plugin-lib")
    assert B.find_plugin_library(dep, environ={}) == dep.resolve()  # named explicitly: taken as it is


# ------------------------------------------------------------------------------------ end to end (stub)
def test_full_build_over_the_stub_writes_a_valid_engine_directory(cli, stub, tiny_checkpoint, tmp_path):
    engine = tmp_path / "engine"
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--no-progress",
                                      "--plugin-lib", str(stub.lib), *LIMITS])
    assert result.exit_code == 0, result.output
    for stage in ("validate options", "find plugin library", "convert checkpoint", "load plugin library",
                  "build rank 0", "rewrite engine config", "copy plugin library"):
        assert f"[build] {stage}" in result.output, stage
    assert "wrote engine directory" in result.output

    # the plugin library is loaded before anything is built; the build config keeps paged_state on
    kinds = [c[0] for c in stub.CALLS]
    assert kinds == ["load_plugin_library", "build", "save"]
    _, model_cls, rank, cfg_cls, build_cfg = stub.CALLS[1]
    assert (model_cls, rank, cfg_cls) == ("DarwinNegForCausalLM", 0, "DarwinNegBuildConfig")
    assert build_cfg["plugin_config"]["paged_state"] is True and build_cfg["plugin_config"]["paged_kv_cache"] is True
    assert (build_cfg["max_batch_size"], build_cfg["max_input_len"], build_cfg["max_seq_len"],
            build_cfg["max_num_tokens"]) == (4, 64, 128, 256)
    assert build_cfg["output_timing_cache"].endswith(B.TIMING_CACHE_FILE)

    info = read_engine_dir(engine)  # the runner's reader accepts it
    assert info.plugin_library == engine / "plugins" / PLUGIN_LIBRARY
    assert info.plugin_library.read_bytes() == stub.lib.read_bytes()
    assert info.hf_model_dir == Path(tiny_checkpoint).resolve() and info.neg_enabled
    assert (info.max_batch_size, info.max_input_len, info.max_seq_len, info.max_num_tokens) == (4, 64, 128, 256)
    config = json.loads((engine / "config.json").read_text())
    assert B.check_engine_config(config) == []
    assert config["pretrained_config"]["architecture"] == "RecurrentGemmaForCausalLM"
    build_info = info.build_info
    assert build_info["plugin_library_source"] == str(stub.lib.resolve())
    assert build_info["tensorrt_llm_version"] == "1.2.0-trt-neg-stub"
    assert build_info["source"]["hf_fingerprint"]["sha256"] == B.checkpoint_fingerprint(tiny_checkpoint)["sha256"]
    assert {"convert checkpoint", "build rank 0", "save rank 0"} <= set(build_info["timings_s"])
    assert sorted(p.name for p in engine.iterdir()) == ["build_info.json", "config.json", "plugins", "rank0.engine",
                                                        "timing.cache"]
    assert (tmp_path / "engine.ckpt" / "rank0.safetensors").is_file()

    # no overwrite without --overwrite; with it (and the kept checkpoint) the engine is replaced
    again = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--plugin-lib",
                                     str(stub.lib), *LIMITS])
    assert again.exit_code == 1 and "already exists; pass --overwrite" in again.output
    replaced = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--overwrite",
                                        "--reuse-checkpoint", "--no-copy-plugin-lib", "--plugin-lib", str(stub.lib),
                                        "--max-batch-size", "2", "--max-seq-len", "64"])
    assert replaced.exit_code == 0, replaced.output
    info = read_engine_dir(engine)
    assert info.max_batch_size == 2 and info.max_seq_len == 64 and info.plugin_library == stub.lib.resolve()
    assert info.build_info["source"]["checkpoint_reused"] is True and not (engine / "plugins").exists()


def test_tp2_builds_one_engine_per_rank(cli, stub, tiny_checkpoint, tmp_path):
    engine = tmp_path / "engine"
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--no-progress",
                                      "--plugin-lib", str(stub.lib), "--tp-size", "2", "--workers", "4", *LIMITS])
    assert result.exit_code == 0, result.output
    assert "note: --workers 4 capped at the engine count (2)" in result.output
    assert [(c[0], c[2]) for c in stub.CALLS if c[0] in ("build", "save")] == [("build", 0), ("save", 0),
                                                                                ("build", 1), ("save", 1)]
    # every rank has a timing cache path of its own (a pydantic BuildConfig refuses None); only rank 0's is kept
    caches = [c[4]["output_timing_cache"] for c in stub.CALLS if c[0] == "build"]
    assert caches[0].endswith(B.TIMING_CACHE_FILE) and caches[1].endswith("timing.rank1.cache")
    assert not list(engine.glob("timing.rank*.cache"))
    info = read_engine_dir(engine)
    assert info.world_size == 2 and all(p.is_file() for p in info.engine_files)
    assert json.loads((engine / "config.json").read_text())["pretrained_config"]["mapping"]["tp_size"] == 2


def test_a_failed_build_leaves_nothing_behind(cli, stub, tiny_checkpoint, tmp_path, monkeypatch):
    def broken(model, build_config):
        raise ValueError("TensorRT said no")

    monkeypatch.setattr(stub, "build", broken)
    engine = tmp_path / "engine"
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--no-progress",
                                      "--plugin-lib", str(stub.lib), *LIMITS])
    assert result.exit_code == 1 and "TensorRT said no" in result.output
    assert not engine.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".engine")]
    assert (tmp_path / "engine.ckpt" / "config.json").is_file()  # the conversion is kept for the next try


def test_plain_build_config_would_switch_paged_state_off(stub, tiny_checkpoint, tmp_path):
    """Why build.py subclasses BuildConfig: 1.2.x update_kv_cache_type forces paged_state off for any
    architecture but Mamba/RecurrentGemma, and the Darwin-NEG network refuses that."""
    from tensorrt_llm.builder import BuildConfig, build

    from trt_neg.checkpoint.convert import convert_checkpoint
    from trt_neg.trtllm.config import DarwinNegConfig
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    ckpt = convert_checkpoint(tiny_checkpoint, tmp_path / "ckpt", fsync=False).output
    opts, _ = B.resolve_build_options(max_position_embeddings=2048, max_batch_size=2, max_seq_len=64)
    darwin = B.make_build_config(opts)
    plain = BuildConfig(max_batch_size=2, max_input_len=63, max_seq_len=64, max_num_tokens=126,
                        plugin_config=darwin.plugin_config)
    model = DarwinNegForCausalLM.from_checkpoint(str(ckpt), rank=0, config=DarwinNegConfig.from_checkpoint(ckpt))
    with pytest.raises(ValueError, match="needs remove_input_padding, paged_kv_cache, paged_state"):
        build(model, plain)
    assert build(model, darwin).config.build_config.plugin_config.paged_state is True
    assert darwin.plugin_config.paged_state is True  # build() works on a copy


def test_darwin_build_config_class_works_on_a_pydantic_base():
    """1.2.x BuildConfig is a pydantic model (NVIDIA/TensorRT-LLM PR #8330, Oct 2025; the stub's is a
    dataclass like the 2025 versions read): the subclass factory must work on both, and a deep copy
    (what build() makes) must keep the override."""
    import copy

    pydantic = pytest.importorskip("pydantic")

    class Plugins(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(validate_assignment=True)
        paged_kv_cache: bool | None = None
        paged_state: bool | None = True

    class PydanticBuildConfig(pydantic.BaseModel):  # the 1.2 rule, as in the dataclass version read
        model_config = pydantic.ConfigDict(validate_assignment=True)
        max_batch_size: int = 2048
        kv_cache_type: str | None = None
        plugin_config: Plugins = pydantic.Field(default_factory=Plugins)

        def update_kv_cache_type(self, model_architecture: str):
            if model_architecture in ("MambaForCausalLM", "RecurrentGemmaForCausalLM"):
                self.kv_cache_type = "PAGED" if self.plugin_config.paged_state else "CONTINUOUS"
                self.plugin_config.paged_kv_cache = (self.plugin_config.paged_state
                                                     if model_architecture == "RecurrentGemmaForCausalLM" else False)
            else:
                self.kv_cache_type = "PAGED" if self.plugin_config.paged_kv_cache else "CONTINUOUS"
                self.plugin_config.paged_state = False

    cls = B.darwin_build_config_class(PydanticBuildConfig)
    config = copy.deepcopy(cls(max_batch_size=4, plugin_config=Plugins(paged_kv_cache=True, paged_state=True)))
    assert type(config) is cls and issubclass(cls, PydanticBuildConfig)
    config.update_kv_cache_type(B.DARWIN_NEG_ARCHITECTURE)
    assert (config.plugin_config.paged_state, config.plugin_config.paged_kv_cache) == (True, True)
    plain = PydanticBuildConfig(plugin_config=Plugins(paged_kv_cache=True, paged_state=True))
    plain.update_kv_cache_type(B.DARWIN_NEG_ARCHITECTURE)
    assert plain.plugin_config.paged_state is False


# ------------------------------------------------------------------------------------ outputs apart from the source
def _tree(directory):
    return sorted((str(p.relative_to(directory)), p.stat().st_size) for p in directory.rglob("*"))


@pytest.mark.parametrize("layout", [
    "ckpt-only: output = model", "ckpt-only: output = model's parent", "ckpt-only: output inside model",
    "engine: output = model", "engine: output = model's parent", "engine: checkpoint-dir = model",
    "engine: checkpoint-dir = model's parent", "engine: checkpoint-dir inside model",
    "engine: default checkpoint-dir beside an output inside model",
])
def test_outputs_over_the_model_are_refused_and_delete_nothing(cli, no_trtllm, tiny_checkpoint, tmp_path, layout,
                                                              monkeypatch):
    """--overwrite must never delete the HF checkpoint: every output directory (--output, --checkpoint-dir)
    that is, contains or lies inside --model is refused up front, naming both directories."""
    import shutil

    model = shutil.copytree(tiny_checkpoint, tmp_path / "work" / "model")
    before = _tree(model)
    mode, where = layout.split(": ")
    target, what = where.split(" = ") if " = " in where else (where.split(" inside ")[0], "inside")
    place = {"model": model, "model's parent": model.parent, "inside": model / "sub"}[what]
    args = ["--model", str(model), "--overwrite", "--no-progress"]
    if mode == "ckpt-only":
        args += ["--checkpoint-only", "--output", str(place)]
        named = "--output directory"
    elif target == "output":
        args += ["--output", str(place), "--checkpoint-dir", str(tmp_path / "ck"), *LIMITS]
        named = "--output directory"
    elif target == "checkpoint-dir":
        args += ["--output", str(tmp_path / "engine"), "--checkpoint-dir", str(place), *LIMITS]
        named = "--checkpoint-dir"
    else:  # relative --output inside the model: its default <output>.ckpt is inside the model too
        monkeypatch.chdir(model)
        args += ["--output", "engine", *LIMITS]
        named = "--output directory"
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output  # options naming nested directories: a usage error
    assert named in result.output and str(model) in result.output and "--model checkpoint" in result.output, \
        result.output
    assert "Traceback" not in result.output
    assert _tree(model) == before  # not a byte deleted or added
    assert not (tmp_path / "engine").exists() and not (tmp_path / "ck").exists()


def test_checkpoint_dir_and_output_must_not_nest(cli, no_trtllm, tiny_checkpoint, tmp_path):
    for ckpt, out in ((tmp_path / "engine" / "ck", tmp_path / "engine"), (tmp_path / "ck", tmp_path / "ck" / "e")):
        result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(out), "--checkpoint-dir",
                                          str(ckpt), "--overwrite", "--no-progress", *LIMITS])
        assert result.exit_code == 2, result.output
        assert "--checkpoint-dir" in result.output and str(ckpt) in result.output and str(out) in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_output_without_a_name_gets_a_clear_error(cli, no_trtllm, tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", "/", *LIMITS])
    assert result.exit_code == 2 and "--output /" in result.output and "Traceback" not in result.output


def test_invalid_key_map_file_is_named_by_the_cli(cli, tiny_checkpoint, tmp_path):
    bad = tmp_path / "keys.json"
    bad.write_text('{"neg.w1": "neg_head.fc1.weight",')
    for extra in (["--checkpoint-only"], LIMITS):
        result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "o"),
                                          "--key-map", str(bad), "--no-progress", *extra])
        assert result.exit_code == 1, result.output
        assert f"Error: {bad}: " in result.output and "not valid JSON" in result.output, result.output
        assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json"]


# ------------------------------------------------------------------------------------ --reuse-checkpoint
def _model_variant(root, name, edit):
    from trt_neg.checkpoint.synthetic import write_checkpoint_from_config

    config = preset_config("tiny")
    edit(config)
    return write_checkpoint_from_config(root / name, config, seed=5)


@pytest.mark.parametrize("edit, field", [
    (lambda c: c["text_config"].update(vocab_size=400, eos_token_id=399, pad_token_id=398), "vocab_size"),
    (lambda c: c["text_config"].update(intermediate_size=96), "intermediate_size"),
    (lambda c: c["neg_config"].update(top_k=4), "neg_config.top_k"),
])
def test_reuse_checkpoint_must_describe_the_model(cli, no_trtllm, tiny_checkpoint, tmp_path, edit, field):
    """A reused checkpoint converted from another model is refused (the engine and build_info would name --model)."""
    from trt_neg.checkpoint.convert import convert_checkpoint

    other = _model_variant(tmp_path, "other", edit)
    ckpt = convert_checkpoint(tiny_checkpoint, tmp_path / "engine.ckpt", dtype="float32").output
    engine = tmp_path / "engine"
    result = CliRunner().invoke(cli, ["--model", str(other), "--output", str(engine), "--reuse-checkpoint", *LIMITS])
    assert result.exit_code == 2, result.output  # --reuse-checkpoint does not fit --model: a usage error
    assert str(ckpt / "config.json") in result.output and str(other / "config.json") in result.output
    assert f"{field} is " in result.output and "Traceback" not in result.output
    assert not engine.exists()
    same = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--reuse-checkpoint",
                                    *LIMITS])
    assert same.exit_code == 3 and "reusing TensorRT-LLM checkpoint" in same.output, same.output


def test_reuse_checkpoint_of_a_tied_config_with_a_different_stored_head(cli, no_trtllm, tmp_path):
    """The model's description for the comparison is the one the converter used (stored head => untied)."""
    import shutil

    from trt_neg.checkpoint.convert import convert_checkpoint

    model = _model_variant(tmp_path, "hf", lambda c: None)  # untied: lm_head stored
    config = json.loads((model / "config.json").read_text())
    config["tie_word_embeddings"] = config["text_config"]["tie_word_embeddings"] = True
    (model / "config.json").write_text(json.dumps(config))
    ckpt = convert_checkpoint(model, tmp_path / "engine.ckpt", dtype="float32").output
    assert json.loads((ckpt / "config.json").read_text())["tie_word_embeddings"] is False
    result = CliRunner().invoke(cli, ["--model", str(model), "--output", str(tmp_path / "engine"),
                                      "--reuse-checkpoint", *LIMITS])
    assert result.exit_code == 3 and "reusing TensorRT-LLM checkpoint" in result.output, result.output
    # a checkpoint of the really tied model (lm_head = embeddings) does not describe this one
    shutil.rmtree(ckpt)
    tied = _model_variant(tmp_path, "tied", lambda c: (c.update(tie_word_embeddings=True),
                                                        c["text_config"].update(tie_word_embeddings=True)))
    convert_checkpoint(tied, ckpt, dtype="float32")
    result = CliRunner().invoke(cli, ["--model", str(model), "--output", str(tmp_path / "engine"),
                                      "--reuse-checkpoint", *LIMITS])
    assert result.exit_code == 2 and "tie_word_embeddings is True there but False" in result.output, result.output


@pytest.mark.parametrize("damage, problem", [
    ("remove", "missing rank file (a tp 2 pp 1 checkpoint has one per rank"),
    ("truncate", "truncated"),
])
def test_reuse_checkpoint_checks_every_rank_file(cli, no_trtllm, tiny_checkpoint, tmp_path, damage, problem):
    """A reused checkpoint with a missing or truncated rank file is an input error (exit 1) naming that file,
    found before "the checkpoint is ready" is said."""
    from trt_neg.checkpoint.convert import convert_checkpoint

    ckpt = convert_checkpoint(tiny_checkpoint, tmp_path / "engine.ckpt", tp_size=2, dtype="float32").output
    rank1 = ckpt / "rank1.safetensors"
    if damage == "remove":
        rank1.unlink()
    else:
        rank1.write_bytes(rank1.read_bytes()[:-64])
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "engine"),
                                      "--reuse-checkpoint", "--tp-size", "2", *LIMITS])
    assert result.exit_code == 1, result.output
    assert f"Error: {rank1}: " in result.output and problem in result.output, result.output
    assert "ready" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "engine").exists()


def test_reuse_checkpoint_with_a_corrupt_config_names_the_field(cli, no_trtllm, tiny_checkpoint, tmp_path):
    from trt_neg.checkpoint.convert import convert_checkpoint

    ckpt = convert_checkpoint(tiny_checkpoint, tmp_path / "engine.ckpt", dtype="float32").output
    config = json.loads((ckpt / "config.json").read_text())
    config["head_size"] = 0
    (ckpt / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "engine"),
                                      "--reuse-checkpoint", *LIMITS])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"Error: {ckpt / 'config.json'}: field 'head_size': must be >= 1, got 0" in result.output


@pytest.mark.parametrize("flags", [["--check-finite"], ["--key-map", "KEYMAP"],
                                   ["--check-finite", "--key-map", "KEYMAP"]])
def test_reuse_checkpoint_refuses_conversion_options(cli, no_trtllm, tiny_checkpoint, tmp_path, flags):
    from trt_neg.checkpoint.convert import convert_checkpoint

    key_map = tmp_path / "key_map.json"
    key_map.write_text("{}")
    convert_checkpoint(tiny_checkpoint, tmp_path / "engine.ckpt", dtype="float32")
    flags = [str(key_map) if f == "KEYMAP" else f for f in flags]
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "engine"),
                                      "--reuse-checkpoint", *flags, *LIMITS])
    assert result.exit_code == 2, result.output
    named = [f for f in flags if f.startswith("--")]
    assert f"{', '.join(named)}: conversion option(s), meaningless with --reuse-checkpoint" in result.output
    assert "reusing" not in result.output and not (tmp_path / "engine").exists()


def test_reuse_checkpoint_without_tensorrt_llm_says_what_happens(cli, no_trtllm, tiny_checkpoint, tmp_path):
    """With --reuse-checkpoint nothing is converted, and the advice does not ask for the flag already given."""
    engine = tmp_path / "engine"
    first = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--no-progress",
                                     *LIMITS])
    assert first.exit_code == 3 and "the checkpoint will be converted" in first.output
    assert "Run the same command with --reuse-checkpoint (to skip the conversion) inside" in first.output
    reused = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(engine), "--reuse-checkpoint",
                                      *LIMITS])
    assert reused.exit_code == 3, reused.output
    assert "will be converted" not in reused.output and "the reused checkpoint is checked" in reused.output
    assert "Run the same command inside NVIDIA's TensorRT-LLM 1.2 container" in reused.output
    assert "adding --reuse-checkpoint" not in reused.output and "with --reuse-checkpoint" not in reused.output


@pytest.mark.parametrize("checkpoint_only", [False, True])
def test_a_model_directory_without_config_json_is_named(cli, tmp_path, checkpoint_only):
    for model in (tmp_path / "nonexistent", tmp_path):
        result = CliRunner().invoke(cli, ["--model", str(model), "--output", str(tmp_path / "out"),
                                          *(["--checkpoint-only"] if checkpoint_only else [])])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
        assert f"{model / 'config.json'}: not found (expected an HF checkpoint directory" in result.output
        assert "field '<file>'" not in result.output and "--model" in result.output


# ------------------------------------------------------------------------------------ what --overwrite may replace
@pytest.mark.parametrize("which", ["--output", "--checkpoint-dir"])
def test_overwrite_refuses_a_folder_that_is_not_a_previous_output(cli, no_trtllm, tiny_checkpoint, tmp_path, which):
    """Both output directories are checked before converting: a folder of other files is never replaced."""
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "notes.txt").write_text("precious")
    places = {"--output": project, "--checkpoint-dir": tmp_path / "ck"} if which == "--output" else \
        {"--output": tmp_path / "engine", "--checkpoint-dir": project}
    kind = ("engine directory (config.json, rank*.engine, build_info.json" if which == "--output"
            else "TensorRT-LLM checkpoint (config.json, rank*.safetensors)")
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--overwrite", "--no-progress", *LIMITS,
                                      *(arg for flag, path in places.items() for arg in (flag, str(path)))])
    assert result.exit_code == 1, result.output
    name = kind.split(" (")[0]
    assert (f"{project}: holds files that are not part of a trt-neg {name} (e.g. .git); --overwrite replaces only an "
            f"empty directory or a previous {kind}") in result.output
    assert "convert checkpoint" not in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]
    assert sorted(p.name for p in project.iterdir()) == [".git", "notes.txt"]


def test_overwrite_refuses_the_current_directory_as_the_engine_directory(cli, no_trtllm, tiny_checkpoint, tmp_path,
                                                                          monkeypatch):
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(here), "--checkpoint-dir",
                                      str(tmp_path / "ck"), "--overwrite", "--no-progress", *LIMITS])
    assert result.exit_code == 1, result.output
    assert f"{here}: is the current directory; replacing it would delete" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_engine_directory_rule_takes_a_previous_engine_and_nothing_nested_under_plugins(tmp_path):
    """A previous engine directory (tp 2 ranks, timing caches, the plugin copy under any name) may
    be replaced; a folder under plugins/ is not part of one, whatever its name (a glob's * must not
    cross a "/": plugins/*.so.* once took in plugins/x.so.d/thesis.tex)."""
    from trt_neg.checkpoint.safetensors_io import check_replaceable

    engine = tmp_path / "engine"
    for name in ("config.json", "rank0.engine", "rank1.engine", "build_info.json", "timing.cache",
                 "timing.rank1.cache", "plugins/libtrt_neg_plugins.so", "plugins/trt_neg_plugins.cu13"):
        (engine / name).parent.mkdir(parents=True, exist_ok=True)
        (engine / name).write_text("x")
    check_replaceable(engine, B.ENGINE_DIRECTORY)
    (engine / "plugins" / "x.so.d").mkdir()
    (engine / "plugins" / "x.so.d" / "thesis.tex").write_text("precious")
    with pytest.raises(FileExistsError, match=r"holds files that are not part of a trt-neg engine directory "
                                              r"\(e\.g\. plugins/x\.so\.d\)"):
        check_replaceable(engine, B.ENGINE_DIRECTORY)


def test_a_reused_checkpoint_config_that_is_not_utf8_is_named(cli, no_trtllm, tiny_checkpoint, tmp_path):
    ckpt = tmp_path / "engine.ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_bytes(b"\xff\xfe{}")
    result = CliRunner().invoke(cli, ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "engine"),
                                      "--reuse-checkpoint", *LIMITS])
    assert result.exit_code == 1, result.output
    assert f"{ckpt / 'config.json'}: field '<file>': is not UTF-8 (invalid start byte at byte 0)" in result.output


# ------------------------------------------------------------------------------------ NEG fields the plugin takes
def _large_vocab_config(top_k: int, enabled: bool = True) -> dict:
    config = preset_config("tiny")
    config["text_config"]["vocab_size"] = 2048
    config["neg_config"].update(top_k=top_k, enabled=enabled)
    return config


def test_check_engine_neg_refuses_a_top_k_beyond_the_kernel_limit():
    B.check_engine_neg(config_from_dict(_large_vocab_config(1024), "cfg.json"))
    B.check_engine_neg(config_from_dict(_large_vocab_config(5000, enabled=False), "cfg.json"))  # no NEG plugin
    small_vocab = preset_config("tiny")  # vocab 512 <= 1024: k = min(top_k, vocab) fits the kernel
    small_vocab["neg_config"]["top_k"] = 5000
    B.check_engine_neg(config_from_dict(small_vocab, "cfg.json"))
    with pytest.raises(ConfigError, match=r"^cfg\.json: field 'neg_config': NEG top_k 1025 exceeds 1024, the most "
                                          r"candidates the NEG kernel keeps \(kNegMaxTopK, plugins/neg/negKernel\.h\)"):
        B.check_engine_neg(config_from_dict(_large_vocab_config(1025), "cfg.json"))


def test_an_engine_build_refuses_top_k_beyond_the_kernel_limit_before_converting(cli, no_trtllm, tmp_path):
    from trt_neg.checkpoint.synthetic import write_checkpoint_from_config

    model = write_checkpoint_from_config(tmp_path / "hf", _large_vocab_config(2000), seed=1)
    result = CliRunner().invoke(cli, ["--model", str(model), "--output", str(tmp_path / "engine"), "--no-progress",
                                      *LIMITS])
    assert result.exit_code == 1, result.output
    assert (f"{model / 'config.json'}: field 'neg_config': NEG top_k 2000 exceeds 1024, the most candidates the NEG "
            "kernel keeps"
            in result.output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # nothing converted
    converted = CliRunner().invoke(cli, ["--model", str(model), "--output", str(tmp_path / "ckpt"),
                                         "--checkpoint-only", "--no-progress"])
    assert converted.exit_code == 0, converted.output  # the torch backend takes any top_k


@pytest.mark.parametrize("tp_size, dtype", [(1, "bfloat16"), (2, "float32")])
def test_build_engines_refuses_a_checkpoint_of_another_layout_or_dtype(stub, tiny_checkpoint, tmp_path, tp_size, dtype):
    """A reused checkpoint converted with other options is named before anything is built."""
    from trt_neg.checkpoint.convert import convert_checkpoint

    convert_checkpoint(tiny_checkpoint, tmp_path / "ckpt", dtype="float32")
    options, _ = B.resolve_build_options(max_position_embeddings=2048, max_seq_len=128, tp_size=tp_size, dtype=dtype)
    with pytest.raises(B.BuildOptionError) as info:
        B.build_engines(tmp_path / "ckpt", tmp_path / "engine", options, plugin_library=stub.lib, hf_model_dir=None)
    assert str(info.value) == (f"{(tmp_path / 'ckpt').resolve()}: checkpoint is tp 1, pp 1, float32; the build options "
                               f"say tp {tp_size}, pp 1, {dtype}")
    assert [c[0] for c in stub.CALLS] == ["load_plugin_library"] and not (tmp_path / "engine").exists()
