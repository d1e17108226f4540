"""The built-in Darwin-NEG checkpoints: published layout, determinism, transformers loading."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from trt_neg.checkpoint.hf import NEG_TENSORS, HFCheckpoint, hf_text_weight_shapes
from trt_neg.checkpoint.synthetic import PRESETS, write_checkpoint
from trt_neg.config import config_from_dict, load_config


def digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_published_layout(tiny_checkpoint):
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["model_type"] == "qwen3_5" and "text_config" in config and "neg_config" in config
    with safe_open(str(tiny_checkpoint / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert all(k.startswith(("model.language_model.", "model.visual.", "mtp.", "lm_head.", "neg_")) for k in keys)
    assert any(k.startswith("model.visual.") for k in keys) and any(k.startswith("mtp.") for k in keys)
    assert "lm_head.weight" in keys and set(NEG_TENSORS) <= keys


def test_same_seed_same_bytes_other_seed_other_weights(tiny_checkpoint, tmp_path):
    again = write_checkpoint(tmp_path / "again", "tiny", seed=0)
    assert digest(again) == digest(tiny_checkpoint)
    other = write_checkpoint(tmp_path / "other", "tiny", seed=1)
    a, b = HFCheckpoint(tiny_checkpoint), HFCheckpoint(other)
    for name in a.names():
        if name != "neg_gate.threshold":
            assert not torch.equal(a.get(name), b.get(name)), name


def test_every_parameter_is_random(tiny_checkpoint):
    ckpt = HFCheckpoint(tiny_checkpoint)
    for name in ckpt.names():
        t = ckpt.get(name).float()
        assert torch.isfinite(t).all(), name
        if t.numel() > 1:  # scalars (fc2 bias, threshold) are compared across seeds elsewhere
            assert t.std() > 1e-3, f"{name} looks constant"
    # Zero-centred norms must not be all-zero and the plain gated norm not all-one.
    assert ckpt.get("model.layers.0.input_layernorm.weight").abs().mean() > 0.05
    assert (ckpt.get("model.layers.0.linear_attn.norm.weight") - 1).abs().mean() > 0.05


def test_tiny_loads_in_transformers_with_finite_logits(tiny_checkpoint):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32,
                                                      output_loading_info=True)
    assert type(model).__name__ == "Qwen3_5ForCausalLM"
    assert not info["missing_keys"] and not info["mismatched_keys"]
    # Only the NEG tensors are foreign to transformers (visual/mtp are on its ignore list).
    assert set(info["unexpected_keys"]) <= set(NEG_TENSORS)
    ids = torch.arange(1, 40).unsqueeze(0)
    logits = model(ids).logits
    assert logits.shape == (1, 39, 512) and torch.isfinite(logits).all()
    assert logits[0, -1].std() > 0.5  # not a degenerate model: the logits spread


def test_tiny_tokenizer_and_chat_template(tiny_checkpoint):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
    cfg = load_config(tiny_checkpoint).backbone
    assert len(tok) == cfg.vocab_size
    assert tok.eos_token_id in cfg.eos_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "What is two plus two?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text).input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<|im_start|>") and max(ids) < cfg.vocab_size
    assert tok.decode(ids) == text


def test_a_preset_config_is_the_callers_own_to_edit():
    from trt_neg.checkpoint.synthetic import preset_config

    edited = preset_config("tiny")
    edited["text_config"]["rope_parameters"]["partial_rotary_factor"] = 1.0
    edited["neg_config"]["top_k"] = 3
    fresh = preset_config("tiny")
    assert fresh["text_config"]["rope_parameters"]["partial_rotary_factor"] == 0.25
    assert fresh["neg_config"]["top_k"] == PRESETS["tiny"]["neg_config"]["top_k"] != 3


def test_9b_preset_shapes_without_writing():
    from trt_neg.checkpoint.synthetic import preset_config

    b = config_from_dict(preset_config("9b")).backbone
    shapes = hf_text_weight_shapes(b)
    total = sum(torch.Size(s).numel() for s in shapes.values())
    assert total == b.num_parameters
    assert shapes["model.layers.3.self_attn.q_proj.weight"] == (2 * 16 * 256, 4096)
    assert shapes["model.layers.0.linear_attn.in_proj_qkv.weight"] == (8192, 4096)
    assert PRESETS["9b"]["dtype"] == "bfloat16"


def test_large_tensors_are_streamed_in_bounded_chunks(tmp_path, monkeypatch):
    """The 9b writer generates big tensors in chunks; chunking must not change a byte."""
    import trt_neg.checkpoint.synthetic as synthetic

    monkeypatch.setattr(synthetic, "CHUNK_ELEMENTS", 4096)
    path = write_checkpoint(tmp_path / "chunked", "tiny", seed=0)
    # Chunking changes nothing in the bytes: generators draw the same stream in any chunk size.
    reference = write_checkpoint(tmp_path / "whole", "tiny", seed=0)
    assert digest(path) == digest(reference)


def test_existing_output_needs_overwrite(tiny_checkpoint):
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_checkpoint(tiny_checkpoint, "tiny", seed=0)


def test_cli_errors_are_one_line_and_come_before_the_progress_bar(tiny_checkpoint, tmp_path):
    from click.testing import CliRunner

    from trt_neg.checkpoint.synthetic import main

    (tmp_path / "afile").write_text("x")
    unwritable = tmp_path / "afile" / "tiny"  # below a file: cannot be created
    result = CliRunner().invoke(main, ["--output", str(unwritable)])
    assert result.exit_code == 1 and not isinstance(result.exception, PermissionError), result.output
    assert result.output.startswith(f"Error: {unwritable}: cannot write output here") and "writing" not in result.output
    result = CliRunner().invoke(main, ["--output", str(tiny_checkpoint)])
    assert result.exit_code == 1
    assert result.output == f"Error: {tiny_checkpoint}: output already exists; pass --overwrite to replace it\n"
    # Seeds are taken modulo 2**63 inside: 2**63 would silently write seed 0's bytes, -1 seed 2**63 - 1's.
    for seed in ("-1", str(2**63)):
        result = CliRunner().invoke(main, ["--seed", seed, "--output", str(tmp_path / "s")])
        assert result.exit_code == 2 and "Invalid value for '--seed'" in result.output and not (tmp_path / "s").exists()


def test_overwrite_replaces_only_a_previous_builtin_checkpoint(tmp_path):
    from click.testing import CliRunner

    from trt_neg.checkpoint.synthetic import main

    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "model.safetensors").write_text("not ours")
    result = CliRunner().invoke(main, ["--output", str(project), "--overwrite"])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {project}: holds files that are not part of a trt-neg built-in HF "
                                    "checkpoint (e.g. .git); "
                                    "--overwrite replaces only an empty directory or a previous built-in HF "
                                    "checkpoint (config.json, ")
    assert sorted(p.name for p in project.iterdir()) == [".git", "model.safetensors"]
    ours = write_checkpoint(tmp_path / "ours", "tiny", seed=1)
    (ours / "model-00001-of-00002.safetensors").write_text("a shard of an earlier, sharded write")
    write_checkpoint(ours, "tiny", seed=0, overwrite=True)
    assert sorted(p.name for p in ours.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json"]


# ------------------------------------------------------------------ atomic output directories, races
def test_a_target_that_appears_meanwhile_is_never_replaced_without_overwrite(tmp_path):
    from trt_neg.checkpoint.safetensors_io import OutputKind, atomic_output_dir

    for filled in (True, False):  # another writer's finished output, or a bare directory
        target = tmp_path / f"out-{filled}"
        with pytest.raises(FileExistsError) as info:
            with atomic_output_dir(target, overwrite=False) as tmp:
                (tmp / "mine.txt").write_text("new")
                target.mkdir()
                if filled:
                    (target / "theirs.txt").write_text("another writer's finished output")
        assert str(target) in str(info.value) and "--overwrite" in str(info.value)
        assert sorted(p.name for p in target.iterdir()) == (["theirs.txt"] if filled else [])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-False", "out-True"]  # no temporary left
    target = tmp_path / "out-True"
    kind = OutputKind("test output", ("theirs.txt", "mine.txt"))  # what overwrite may replace
    with atomic_output_dir(target, overwrite=True, kind=kind) as tmp:  # replaced with overwrite only
        (tmp / "mine.txt").write_text("new")
        (target / "theirs.txt").write_text("changed meanwhile")
    assert sorted(p.name for p in target.iterdir()) == ["mine.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-False", "out-True"]


def test_parallel_first_runs_share_one_builtin_tiny_model(tiny_checkpoint, tmp_path, monkeypatch):
    """Several first runs of run.py at once: each writes the built-in model, all wait until all have
    written it (so each passed the 'not there yet' check), then race to put it in place. The first one
    wins; the others find the finished directory, leave it as it is, and use it: no crash, one complete
    directory, never swapped under a reader, no temporaries left."""
    import importlib.util
    import os
    import threading
    from pathlib import Path

    import trt_neg.checkpoint.synthetic as synthetic

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("run_script_for_race", root / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    monkeypatch.setenv("TRT_NEG_CACHE", str(tmp_path / "cache"))

    n = 4
    barrier = threading.Barrier(n, timeout=30)
    real_close = synthetic.StreamingSafetensorsWriter.close

    def close(self, fsync=False):
        barrier.wait()  # every writer has its model written, none has renamed it into place
        return real_close(self, fsync)
    monkeypatch.setattr(synthetic.StreamingSafetensorsWriter, "close", close)

    results, errors = [None] * n, []

    def first_run(i):
        try:
            path = run.builtin_tiny_model()
            results[i] = (path, os.stat(path).st_ino, HFCheckpoint(path).config.backbone.hidden_size)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=first_run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    path = results[0][0]
    assert {r[0] for r in results} == {path} and {r[1] for r in results} == {os.stat(path).st_ino}
    assert digest(path) == digest(tiny_checkpoint)  # the same preset and seed
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_ctrl_c_exits_130_with_one_line_and_writes_nothing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from trt_neg.checkpoint import synthetic

    def interrupted_tensor(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_random_chunks", interrupted_tensor)
    result = CliRunner().invoke(synthetic.main, ["--output", str(tmp_path / "tiny")])
    assert result.exit_code == 130, result.output
    assert result.stderr.endswith("\ninterrupted\n"), result.stderr  # on a line of its own, after the bar
    assert list(tmp_path.iterdir()) == []


def test_dash_h_is_help():
    from click.testing import CliRunner

    from trt_neg.checkpoint.synthetic import main

    result = CliRunner().invoke(main, ["-h"])
    assert result.exit_code == 0 and "--preset" in result.output, result.output
