"""python -m trt_neg.inspect: what it says about an HF checkpoint, a converted TensorRT-LLM checkpoint
and an engine directory."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from trt_neg import inspect as inspect_cli
from trt_neg.checkpoint.hf import HFCheckpoint


def _rows(output: str) -> dict[str, str]:
    return {key: value.strip() for key, value in
            (line.split("  ", 1) for line in output.splitlines() if "  " in line)}


def test_hf_checkpoint_shows_tau_and_the_kv_cache_in_its_own_dtype(tiny_checkpoint):
    r = CliRunner().invoke(inspect_cli.main, [str(tiny_checkpoint)])
    assert r.exit_code == 0, r.output
    rows = _rows(r.output)
    tau = HFCheckpoint(tiny_checkpoint).get("neg_gate.threshold").item()
    assert f"tau {tau:g}" in rows["NEG"], rows["NEG"]
    # tiny: 1 full-attention layer, 2 kv heads x 16 dims, K and V, float32
    assert rows["KV cache per token"] == "256 B (float32; 128 B in bf16)"
    summary = json.loads(CliRunner().invoke(inspect_cli.main, [str(tiny_checkpoint), "--json"]).output)
    assert summary["dtype"] == "float32" and summary["neg_threshold"] == pytest.approx(tau)
    assert summary["derived"]["kv_cache_bytes_per_token"] == 256


def test_trtllm_checkpoint_is_described(tiny_checkpoint, tmp_path):
    from trt_neg.checkpoint.convert import convert_checkpoint

    convert_checkpoint(tiny_checkpoint, tmp_path / "ckpt", tp_size=2, dtype="bfloat16")
    r = CliRunner().invoke(inspect_cli.main, [str(tmp_path / "ckpt")])
    assert r.exit_code == 0, r.output
    rows = _rows(r.output)
    assert rows["kind"] == "TensorRT-LLM checkpoint (written by build_engine.py, contract version 1)"
    assert rows["architecture"] == "DarwinNegForCausalLM" and rows["dtype"] == "bfloat16"
    assert rows["mapping"] == "tp 2, pp 1 (world size 2)"
    assert rows["ranks"] == "rank0.safetensors, rank1.safetensors"
    assert rows["converted from"] == str(tiny_checkpoint.resolve() / "config.json")
    tau = HFCheckpoint(tiny_checkpoint).get("neg_gate.threshold").item()
    assert rows["NEG"].startswith("head 64->32->1 (silu), top_k 8, T 1, seed 0, enabled") and f"tau {tau:g}" in rows["NEG"]
    assert rows["KV cache per token"] == "128 B (bfloat16)"
    summary = json.loads(CliRunner().invoke(inspect_cli.main, [str(tmp_path / "ckpt"), "--json"]).output)
    assert summary["kind"] == "trtllm_checkpoint" and summary["mapping"] == {"world_size": 2, "tp_size": 2,
                                                                              "pp_size": 1}
    assert summary["ranks"] == ["rank0.safetensors", "rank1.safetensors"]


def test_engine_directory_is_named_as_such(tmp_path):
    from trt_neg.trtllm.engine_dir import write_build_info

    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({
        "pretrained_config": {"architecture": "DarwinNegForCausalLM", "vocab_size": 512,
                              "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
                              "neg_config": {"enabled": True, "seed": 0}},
        "build_config": {"max_batch_size": 8, "max_seq_len": 256}}))
    (engine / "rank0.engine").write_bytes(b"x")
    write_build_info(engine, plugin_library=None, hf_model_dir="/models/tiny", tensorrt_llm_version="1.2.1")
    r = CliRunner().invoke(inspect_cli.main, [str(engine)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"{engine}: a TensorRT-LLM engine directory (tp 1, pp 1; rank0.engine), built with "
                               "tensorrt_llm 1.2.1 from /models/tiny; max_batch_size 8, max_seq_len 256, NEG enabled")


# ------------------------------------------------------------------------------------ a damaged converted checkpoint
def _converted(tiny_checkpoint, path, **options):
    from trt_neg.checkpoint.convert import convert_checkpoint

    return convert_checkpoint(tiny_checkpoint, path, dtype="float32", fsync=False, **options).output


def _truncate_rank1(ckpt, other):
    path = ckpt / "rank1.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _remove_rank1(ckpt, other):
    (ckpt / "rank1.safetensors").unlink()


def _swap_ranks(ckpt, other):
    a, b = ckpt / "rank0.safetensors", ckpt / "rank1.safetensors"
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)


def _rank0_of_another_layout(ckpt, other):
    (ckpt / "rank0.safetensors").write_bytes((other / "rank0.safetensors").read_bytes())


@pytest.mark.parametrize("damage, rank_file, problem", [
    (_truncate_rank1, "rank1.safetensors", r"truncated"),
    (_remove_rank1, "rank1.safetensors", r"missing rank file \(a tp 2 pp 1 checkpoint has one per rank: "
                                         r"rank0\.safetensors \.\. rank1\.safetensors\)"),
    (_swap_ranks, "rank0.safetensors", r"its metadata says it was written for rank 1, not rank 0"),
    (_rank0_of_another_layout, "rank0.safetensors", r"tensor 'transformer\.layers\.\d+\.[a-z_.]+': shape \[\d+(, \d+)*\], "
                                                    r"contract says \[\d+(, \d+)*\]"),
])
def test_every_rank_file_of_a_trtllm_checkpoint_is_checked(tiny_checkpoint, tmp_path, damage, rank_file, problem):
    """Each rank file's header (complete, written for that rank, the contract's names, shapes and dtypes) is
    read; a damaged one is named with the problem, never described as a valid checkpoint."""
    import re

    ckpt = _converted(tiny_checkpoint, tmp_path / "ckpt", tp_size=2)
    other = _converted(tiny_checkpoint, tmp_path / "other", tp_size=1)
    assert CliRunner().invoke(inspect_cli.main, [str(ckpt)]).exit_code == 0
    damage(ckpt, other)
    if damage is _rank0_of_another_layout:  # a tp 2 checkpoint whose rank0 is a tp 1 conversion's
        assert json.loads((ckpt / "config.json").read_text())["mapping"]["tp_size"] == 2
    r = CliRunner().invoke(inspect_cli.main, [str(ckpt)])
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert re.search(rf"^Error: {re.escape(str(ckpt / rank_file))}: .*{problem}", r.output), r.output


def test_a_missing_rank_file_of_a_tp1_checkpoint_names_its_one_file(tiny_checkpoint, tmp_path):
    ckpt = _converted(tiny_checkpoint, tmp_path / "ckpt")
    (ckpt / "rank0.safetensors").unlink()
    r = CliRunner().invoke(inspect_cli.main, [str(ckpt)])
    assert r.exit_code == 1 and r.output.startswith(
        f"Error: {ckpt / 'rank0.safetensors'}: missing rank file (a tp 1 pp 1 checkpoint has one: rank0.safetensors)\n")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(head_size=0), "field 'head_size': must be >= 1, got 0"),
    (lambda c: c["mapping"].update(tp_size=2.0), "field 'mapping.tp_size': must be an integer, got 2.0"),
    (lambda c: c.update(rotary_base="x"), "field 'rotary_base': must be a number, got 'x'"),
    (lambda c: c.update(mapping=[2, 1]), "field 'mapping': expected a JSON object, got list"),
])
def test_a_corrupt_trtllm_checkpoint_config_is_named(tiny_checkpoint, tmp_path, edit, message):
    ckpt = _converted(tiny_checkpoint, tmp_path / "ckpt", tp_size=2)
    config = json.loads((ckpt / "config.json").read_text())
    edit(config)
    (ckpt / "config.json").write_text(json.dumps(config))
    r = CliRunner().invoke(inspect_cli.main, [str(ckpt)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    assert r.output == f"Error: {ckpt / 'config.json'}: {message}\n"


def test_hf_checkpoint_summary_and_rows_give_every_derived_figure(tiny_checkpoint):
    """The tiny preset's figures worked out by hand (DESIGN.md section 3's formulas): 4 layers LLLF,
    4 q / 2 kv heads of 16 dims at rotary 0.25, Gated DeltaNet 2 k / 4 v heads of 16, conv 4, NEG 64->32->1."""
    import math

    from trt_neg.checkpoint.hf import hf_text_weight_shapes

    summary = json.loads(CliRunner().invoke(inspect_cli.main, [str(tiny_checkpoint), "--json"]).output)
    backbone_parameters = sum(math.prod(s) for s in
                              hf_text_weight_shapes(HFCheckpoint(tiny_checkpoint).config.backbone).values())
    neg_parameters = 64 * 32 + 32 + 32 + 1 + 1  # fc1 weight and bias, fc2 weight and bias, tau
    assert summary["derived"] == {
        "rotary_dim": 4, "full_attention_layers": [3], "linear_attention_layers": [0, 1, 2],
        "linear_key_dim": 32, "linear_value_dim": 64, "linear_conv_dim": 128,
        "backbone_parameters": backbone_parameters, "neg_parameters": neg_parameters,
        "total_parameters": backbone_parameters + neg_parameters,
        "recurrent_state_bytes_per_sequence": 3 * 4 * 16 * 16 * 4,  # 3 GDN layers x [Hv, dk, dv] fp32
        "conv_state_bytes_per_sequence_fp32": 3 * 3 * 128 * 4,  # 3 GDN layers x (kernel - 1) x conv channels
        "kv_cache_bytes_per_token_bf16": 2 * 2 * 16 * 2,  # 1 full-attention layer: K and V, 2 kv heads x 16
        "kv_cache_bytes_per_token": 2 * 2 * 16 * 4,  # in the checkpoint's float32
    }
    assert summary["source"] == str(tiny_checkpoint / "config.json")
    assert summary["architecture"] == "Qwen3_5ForConditionalGeneration" and summary["kind"] == "hf_checkpoint"
    assert summary["backbone"]["hidden_size"] == 64 and summary["neg"]["head_hidden_size"] == 32
    assert summary["tensors"] == len(HFCheckpoint(tiny_checkpoint).names())
    rows = _rows(CliRunner().invoke(inspect_cli.main, [str(tiny_checkpoint)]).output)
    assert rows["parameters"] == (f"{backbone_parameters + neg_parameters:,} (backbone {backbone_parameters:,}, "
                                  f"NEG {neg_parameters:,})")
    assert rows["layers"] == "4 [LLLF]  L = Gated DeltaNet, F = gated full attention"
    assert rows["hidden / MLP / vocab"] == "64 / 128 / 512"
    assert rows["attention"] == "4 q heads, 2 kv heads, head_dim 16, rotary 4 dims (theta 10000)"
    assert rows["gated deltanet"] == "2 k heads x 16, 4 v heads x 16, conv 4"
    assert rows["state per sequence"] == "12.0 KiB recurrent (fp32) + 4.5 KiB conv (fp32)"
    assert rows["tensors"] == f"{summary['tensors']} (ignored: 2 vision/MTP)"
    assert (rows["architecture"], rows["dtype"]) == ("Qwen3_5ForConditionalGeneration", "float32")
    assert sorted(summary["ignored_tensors"]) == ["model.visual.patch_embed.proj.weight", "mtp.fc.weight"]


def test_byte_counts_are_shown_in_binary_units_up_to_gib():
    assert [inspect_cli._bytes(n) for n in (1023, 1024, 1536 * 1024, 3 * 2**30, 2**40)] == [
        "1023 B", "1.0 KiB", "1.5 MiB", "3.0 GiB", "1024.0 GiB"]
