"""Bad input to the converter: each a clear error naming the file and tensor, and no output left behind."""

from __future__ import annotations

import json
import shutil
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from trt_neg.checkpoint.contract import ShardingError
from trt_neg.checkpoint.convert import convert_checkpoint
from trt_neg.checkpoint.safetensors_io import CheckpointError
from trt_neg.config import ConfigError

FILE = "model.safetensors"
Q_PROJ = "model.language_model.layers.3.self_attn.q_proj.weight"


@pytest.fixture
def hf(tiny_checkpoint, tmp_path):
    """A private copy of the tiny checkpoint to damage."""
    return shutil.copytree(tiny_checkpoint, tmp_path / "hf")


def rewrite(hf, edit):
    tensors = load_file(str(hf / FILE))
    edit(tensors)
    save_file(tensors, str(hf / FILE), metadata={"format": "pt"})


def assert_no_output(out):
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    assert not leftovers, leftovers


def convert_fails(hf, tmp_path, error, *fragments, **kwargs):
    out = tmp_path / "out"
    with pytest.raises(error) as info:
        convert_checkpoint(hf, out, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert_no_output(out)
    return message


def test_missing_tensor(hf, tmp_path):
    rewrite(hf, lambda t: t.pop("model.language_model.layers.1.linear_attn.A_log"))
    convert_fails(hf, tmp_path, CheckpointError, str(hf), "missing", "model.layers.1.linear_attn.A_log")


def test_unexpected_shape(hf, tmp_path):
    def edit(t):
        t[Q_PROJ] = t[Q_PROJ][:-16].clone()
    rewrite(hf, edit)
    convert_fails(hf, tmp_path, CheckpointError, FILE, Q_PROJ, "shape [112, 64] does not match config ([128, 64])")


def test_wrong_dtype(hf, tmp_path):
    rewrite(hf, lambda t: t.update({Q_PROJ: t[Q_PROJ].to(torch.int32)}))
    convert_fails(hf, tmp_path, CheckpointError, FILE, Q_PROJ, "not a float type")


def test_non_finite_values_behind_the_check_flag(hf, tmp_path):
    name = "model.language_model.layers.2.mlp.down_proj.weight"  # late in the file: output is half written

    def edit(t):
        t[name][3, 5] = float("nan")
    rewrite(hf, edit)
    convert_fails(hf, tmp_path, CheckpointError, FILE, name, "non-finite", tp_size=2, check_finite=True)
    # Without the flag the values are converted as they are (the check costs a pass over memory).
    convert_checkpoint(hf, tmp_path / "unchecked", tp_size=2)


def test_float16_overflow_is_refused(hf, tmp_path):
    name = "model.language_model.layers.0.mlp.up_proj.weight"

    def edit(t):
        t[name][0, 0] = 1e6
    rewrite(hf, edit)
    convert_fails(hf, tmp_path, CheckpointError, FILE, name, "overflow float16", dtype="float16")


def test_truncated_file(hf, tmp_path):
    data = (hf / FILE).read_bytes()
    (hf / FILE).write_bytes(data[: len(data) - 1000])
    convert_fails(hf, tmp_path, CheckpointError, FILE, "truncated")


def test_corrupt_header(hf, tmp_path):
    data = bytearray((hf / FILE).read_bytes())
    (header_len,) = struct.unpack("<Q", data[:8])
    data[8:8 + header_len] = b"\x00\xff" * (header_len // 2) + b"\x00" * (header_len % 2)
    (hf / FILE).write_bytes(bytes(data))
    convert_fails(hf, tmp_path, CheckpointError, FILE, "corrupt safetensors header")


def test_header_length_beyond_the_file(hf, tmp_path):
    data = bytearray((hf / FILE).read_bytes())
    data[:8] = struct.pack("<Q", 10 * len(data))
    (hf / FILE).write_bytes(bytes(data))
    convert_fails(hf, tmp_path, CheckpointError, FILE, "corrupt safetensors header")


def test_config_and_weights_disagree(hf, tmp_path):
    config = json.loads((hf / "config.json").read_text())
    config["text_config"]["intermediate_size"] = 96
    (hf / "config.json").write_text(json.dumps(config))
    convert_fails(hf, tmp_path, CheckpointError, FILE, "model.language_model.layers.0.mlp.gate_proj.weight",
                  "does not match config ([96, 64])")


def test_invalid_config(hf, tmp_path):
    config = json.loads((hf / "config.json").read_text())
    config["text_config"]["num_key_value_heads"] = 3
    (hf / "config.json").write_text(json.dumps(config))
    convert_fails(hf, tmp_path, ConfigError, "config.json", "num_key_value_heads")


def test_pickle_only_checkpoint_is_refused_never_loaded(tmp_path, tiny_checkpoint):
    model = tmp_path / "pickled"
    model.mkdir()
    shutil.copy(tiny_checkpoint / "config.json", model / "config.json")
    marker = tmp_path / "unpickled"

    class Payload:  # unpickling this would create the marker file
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"x": Payload()}, model / "pytorch_model.bin")
    convert_fails(model, tmp_path, CheckpointError, str(model), "pickle", "pytorch_model.bin")
    assert not marker.exists()


def test_unwritable_output(hf, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = blocker / "out"
    with pytest.raises(PermissionError) as info:
        convert_checkpoint(hf, out)
    assert str(out) in str(info.value) and "cannot write output" in str(info.value)
    assert blocker.read_text() == "not a directory"


def test_existing_output_needs_overwrite(hf, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_checkpoint(hf, out)
    assert (out / "keep").read_text() == "old"
    convert_checkpoint(hf, out, overwrite=True)
    assert not (out / "keep").exists() and (out / "rank0.safetensors").exists()


def test_failed_overwrite_keeps_the_old_output(hf, tmp_path):
    out = tmp_path / "out"
    convert_checkpoint(hf, out)
    before = (out / "rank0.safetensors").read_bytes()
    rewrite(hf, lambda t: t["model.language_model.norm.weight"].fill_(float("inf")))
    with pytest.raises(CheckpointError):
        convert_checkpoint(hf, out, overwrite=True, check_finite=True)
    assert (out / "rank0.safetensors").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


@pytest.mark.parametrize("tp, pp, fragment", [
    (3, 1, "num_attention_heads (4) is not divisible by tp 3"),
    (8, 1, "num_attention_heads (4) is not divisible by tp 8"),
    (1, 5, "pipeline parallel size 5 exceeds the number of layers (4)"),
])
def test_impossible_parallel_layouts(hf, tmp_path, tp, pp, fragment):
    convert_fails(hf, tmp_path, ShardingError, fragment, tp_size=tp, pp_size=pp)


def test_key_map_renames_neg_tensors(hf, tmp_path):
    renames = {"neg_head.fc1.weight": "entropy_head.w1", "neg_gate.threshold": "entropy_gate.tau"}

    def edit(t):
        for old, new in renames.items():
            t[new] = t.pop(old)
    rewrite(hf, edit)
    convert_fails(hf, tmp_path, CheckpointError, "missing", "neg_head.fc1.weight")
    key_map = {new: old for old, new in renames.items()}
    out = convert_checkpoint(hf, tmp_path / "mapped", key_map=key_map).output
    tensors = load_file(str(out / "rank0.safetensors"))
    assert torch.equal(tensors["neg_head.fc1.weight"], load_file(str(hf / FILE))["entropy_head.w1"])


def test_push_style_writer_checks_order_and_sizes(tmp_path):
    """The converter's writer (StreamingSafetensorsWriter, push style): declared order and byte counts are
    enforced, an unfinished file never appears under its name, a finished one is a valid safetensors file."""
    from trt_neg.checkpoint.safetensors_io import StreamingSafetensorsWriter

    plan = [("a", (2, 3), torch.float32), ("b", (4,), torch.bfloat16), ("s", (), torch.float32)]
    a, b, s = torch.arange(6.0).reshape(2, 3), torch.arange(4.0).to(torch.bfloat16), torch.tensor(7.0)
    one, two = StreamingSafetensorsWriter(tmp_path / "one.safetensors", plan), \
        StreamingSafetensorsWriter(tmp_path / "two.safetensors", plan, metadata={"rank": "1"})
    for w in (one, two):  # side by side, chunk by chunk
        w.begin("a")
    for w in (one, two):
        w.append(a[:1])
        w.append(a[1:, :2])  # non-contiguous chunks are fine
        w.append(a[1:, 2:])
        w.end()
    with pytest.raises(ValueError, match="tensor 's' written out of order \\(expected b\\)"):
        one.begin("s")
    one.begin("b")
    with pytest.raises(ValueError, match="begun before 'b' was ended"):
        one.begin("b")
    with pytest.raises(ValueError, match="chunk has dtype torch.float32, declared torch.bfloat16"):
        one.append(b.float())
    with pytest.raises(ValueError, match="overflows its 8 bytes"):
        one.append(torch.cat([b, b]))
    one.append(b[:3])
    with pytest.raises(ValueError, match="tensor 'b' got 6 bytes, shape \\(4,\\) needs 8"):
        one.end()
    with pytest.raises(ValueError, match="tensors never written: b, s"):
        one.close()
    assert not list(tmp_path.glob("one.safetensors*"))  # removed, never renamed into place
    two.write("b", [b[:1], b[1:]])
    two.write("s", s)
    assert not (tmp_path / "two.safetensors").exists()
    two.close(fsync=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.safetensors"]
    got = load_file(str(tmp_path / "two.safetensors"))
    assert torch.equal(got["a"], a) and torch.equal(got["b"], b) and torch.equal(got["s"], s)
