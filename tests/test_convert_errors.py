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
from trt_neg.checkpoint.hf import HFCheckpoint
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


def test_missing_tensor_is_named_in_the_checkpoints_own_layout(hf, tmp_path):
    rewrite(hf, lambda t: t.pop("model.language_model.layers.1.linear_attn.A_log"))
    convert_fails(hf, tmp_path, CheckpointError, f"{hf}: tensor 'model.language_model.layers.1.linear_attn.A_log': "
                                                 "missing 1 tensor(s)")

    def text_layout(t):  # the same tensors stored as model.layers.* (the text layout)
        for name in [n for n in t if n.startswith("model.language_model.")]:
            t["model." + name[len("model.language_model."):]] = t.pop(name)
    rewrite(hf, text_layout)
    convert_fails(hf, tmp_path, CheckpointError, f"{hf}: tensor 'model.layers.1.linear_attn.A_log': missing 1")


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
    (out / "rank7.safetensors").write_text("old")  # a previous (tp 8) checkpoint's file
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_checkpoint(hf, out)
    assert (out / "rank7.safetensors").read_text() == "old"
    convert_checkpoint(hf, out, overwrite=True)
    assert not (out / "rank7.safetensors").exists() and (out / "rank0.safetensors").exists()


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


# ------------------------------------------------------------------ outputs over the source checkpoint
@pytest.mark.parametrize("where", ["same", "ancestor", "inside", "symlink"])
def test_output_over_the_source_checkpoint_is_refused(hf, tmp_path, where):
    """An output that is, contains or lies inside the HF checkpoint is refused before anything is
    written or deleted, with or without overwrite, naming both directories."""
    before = sorted(p.name for p in hf.iterdir())
    out = {"same": hf, "ancestor": tmp_path, "inside": hf / "trtllm", "symlink": tmp_path / "link"}[where]
    if where == "symlink":
        out.symlink_to(hf, target_is_directory=True)
    for overwrite in (False, True):
        with pytest.raises(ValueError) as info:
            convert_checkpoint(hf, out, overwrite=overwrite, fsync=False)
        message = str(info.value)
        assert str(hf.resolve()) in message and "source HF checkpoint" in message, message
        assert str(out.resolve()) in message, message
    assert sorted(p.name for p in hf.iterdir()) == before  # nothing deleted, nothing added
    HFCheckpoint(hf)  # still a whole checkpoint


# ------------------------------------------------------------------ NEG tensors in DESIGN.md's shapes
NEG_ALT_SHAPES = {"neg_head.fc2.weight": (-1,), "neg_head.fc2.bias": (), "neg_gate.threshold": (1,)}


def _neg_outputs(model_dir):
    from trt_neg import neg
    from trt_neg.reference.model import DarwinNegForCausalLM

    model = DarwinNegForCausalLM.from_pretrained(model_dir)
    sd = model.neg_state_dict
    ids = torch.tensor([[1, 5, 9, 33, 7, 2, 90, 11]])
    hidden = model.model(ids)[0]
    logits = model.compute_logits(hidden)
    weights = neg.NegWeights.from_state_dict(sd)
    out = neg.neg_step(hidden, logits, weights, top_k=4, seeds=3, offsets=torch.arange(8))
    # with the gate forced open too, so gated sampling runs on every row
    forced = neg.neg_step(hidden, logits, weights, top_k=4, seeds=3, offsets=torch.arange(8), threshold=-1e9)
    return sd, out, forced


def test_neg_tensors_in_design_shapes_load_convert_and_agree(hf, tmp_path):
    """DESIGN.md section 4: w2 [d], b2 scalar; a threshold stored as [1]. All are read in the canonical
    shapes (fc2.weight [1, d], fc2.bias [1], threshold []) by the reference model and the converter."""
    from trt_neg.checkpoint.hf import neg_weight_shapes

    canonical = shutil.copytree(hf, tmp_path / "canonical")

    def edit(t):
        for name, shape in NEG_ALT_SHAPES.items():
            t[name] = t[name].reshape(shape).clone()
    rewrite(hf, edit)
    stored = load_file(str(hf / FILE))
    d = HFCheckpoint(hf).config.neg.head_hidden_size
    assert {n: tuple(stored[n].shape) for n in NEG_ALT_SHAPES} == {
        "neg_head.fc2.weight": (d,), "neg_head.fc2.bias": (), "neg_gate.threshold": (1,)}

    ckpt = HFCheckpoint(hf)
    expected = neg_weight_shapes(ckpt.config.backbone, ckpt.config.neg)
    assert {n: tuple(t.shape) for n, t in ckpt.neg_state_dict().items()} == expected

    sd_alt, out_alt, forced_alt = _neg_outputs(hf)
    sd_ref, out_ref, forced_ref = _neg_outputs(canonical)
    for name in expected:
        assert tuple(sd_alt[name].shape) == expected[name] and torch.equal(sd_alt[name], sd_ref[name]), name
    for a, b in ((out_alt, out_ref), (forced_alt, forced_ref)):
        assert torch.equal(a.entropy, b.entropy) and torch.equal(a.fired, b.fired) and torch.equal(a.token, b.token)
    assert forced_alt.fired.all()

    for tp in (1, 2):
        got = convert_checkpoint(hf, tmp_path / f"alt{tp}", tp_size=tp, fsync=False).output
        ref = convert_checkpoint(canonical, tmp_path / f"ref{tp}", tp_size=tp, fsync=False).output
        for rank in range(tp):
            assert (got / f"rank{rank}.safetensors").read_bytes() == (ref / f"rank{rank}.safetensors").read_bytes()
        converted = load_file(str(got / "rank0.safetensors"))
        assert {n: tuple(converted[n].shape) for n in expected} == expected

    from click.testing import CliRunner

    from trt_neg.inspect import main as inspect_main
    result = CliRunner().invoke(inspect_main, [str(hf)])
    assert result.exit_code == 0, result.output

    # a plain state dict in those shapes too (DarwinNegForCausalLM.from_state_dict)
    from trt_neg.reference.model import DarwinNegForCausalLM

    plain = {n: ckpt.get(n) for n in ckpt.names()}
    plain.update({n: stored[n] for n in NEG_ALT_SHAPES})
    model = DarwinNegForCausalLM.from_state_dict(ckpt.config, plain)
    assert all(torch.equal(model.neg_state_dict[n], sd_ref[n]) for n in expected)
    plain["neg_gate.threshold"] = torch.zeros(2)
    with pytest.raises(CheckpointError, match="neg_gate.threshold"):
        DarwinNegForCausalLM.from_state_dict(ckpt.config, plain)


@pytest.mark.parametrize("name, shape", [("neg_head.fc2.weight", (33,)), ("neg_head.fc2.weight", (2, 32)), ("neg_head.fc2.bias", (2,)),
                                         ("neg_gate.threshold", (1, 2)), ("neg_head.fc1.bias", (1, 32))])
def test_neg_tensor_with_a_wrong_element_count_is_refused(hf, tmp_path, name, shape):
    def edit(t):
        t[name] = torch.zeros(shape)
    rewrite(hf, edit)
    message = convert_fails(hf, tmp_path, CheckpointError, FILE, name, f"shape {list(shape)} does not match config")
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        HFCheckpoint(hf)
    assert message


# ------------------------------------------------------------------ safetensors header offsets
def _edit_header(path, edit, data_edit=lambda data: data):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edit(header)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data_edit(raw[8 + n:]))


NORM = "model.language_model.norm.weight"


def _offsets(header, name):
    return header[name]["data_offsets"]


def _neighbour(header, name):
    """The tensor stored right after ``name``."""
    end = header[name]["data_offsets"][1]
    return next(k for k, v in header.items() if k != "__metadata__" and v["data_offsets"][0] == end)


@pytest.mark.parametrize("case, fragment", [
    ("half", "span 128 bytes, shape [64] x F32 needs 256"),
    ("dtype", "span 256 bytes, shape [64] x F16 needs 128"),
    ("shape", "span 256 bytes, shape [32] x F32 needs 128"),
    ("overlap", "overlaps tensor"),
    ("gap", "leaves a gap of"),
    ("negative", "corrupt header entry"),
    ("reversed", "corrupt header entry"),
    ("float", "corrupt header entry"),
    ("trailing", "tensors end at byte"),
])
def test_header_offsets_must_agree_with_shape_and_dtype(hf, tmp_path, case, fragment):
    """data_offsets that disagree with shape x dtype, overlap, leave gaps or do not cover the data
    buffer are refused (as the safetensors library does), never read as a neighbour's bytes."""
    def edit(h):
        s, e = _offsets(h, NORM)
        if case == "half":
            h[NORM]["data_offsets"] = [s, s + (e - s) // 2]
        elif case == "dtype":
            h[NORM]["dtype"] = "F16"
        elif case == "shape":
            h[NORM]["shape"] = [32]
        elif case == "overlap":  # the neighbour starts inside NORM (sizes still consistent: shifted back)
            nb = _neighbour(h, NORM)
            a, z = _offsets(h, nb)
            h[nb]["data_offsets"] = [a - 4, z - 4]
        elif case == "gap":
            nb = _neighbour(h, NORM)
            a, z = _offsets(h, nb)
            h[nb]["data_offsets"] = [a + 4, z + 4]
        elif case == "negative":
            h[NORM]["data_offsets"] = [-256, e - s - 256]
        elif case == "reversed":
            h[NORM]["data_offsets"] = [e, s]
        elif case == "float":
            h[NORM]["data_offsets"] = [float(s), float(e)]
    _edit_header(hf / FILE, edit, (lambda data: data + b"\0" * 16) if case == "trailing" else (lambda d: d))
    message = convert_fails(hf, tmp_path, CheckpointError, str(hf / FILE), fragment)
    if case in ("half", "dtype", "shape", "negative", "reversed", "float"):
        assert f"tensor '{NORM}'" in message, message


def test_a_well_formed_file_from_the_safetensors_library_passes_the_header_checks(tmp_path):
    from safetensors.torch import save_file as st_save

    from trt_neg.checkpoint.safetensors_io import read_header

    tensors = {"a": torch.zeros(3, 5), "b": torch.zeros((), dtype=torch.bfloat16), "c": torch.zeros(0, 4),
               "d": torch.zeros(7, dtype=torch.int8)}
    st_save(tensors, str(tmp_path / "x.safetensors"))
    header = read_header(tmp_path / "x.safetensors")
    assert set(header) - {"__metadata__"} == set(tensors)


# ------------------------------------------------------------------ key map file errors
def test_unreadable_or_invalid_key_map_names_the_file(tmp_path):
    from trt_neg.checkpoint.hf import read_key_map

    bad = tmp_path / "map.json"
    for text in ("{not json", '{"a": "b",}', ""):
        bad.write_text(text)
        with pytest.raises(ValueError, match=f"^{bad}: .*not valid JSON"):
            read_key_map(bad)
    bad.write_bytes(b'{"\xff": "x"}')
    with pytest.raises(ValueError, match=f"^{bad}: .*this is not UTF-8"):
        read_key_map(bad)
    with pytest.raises(ValueError, match=f"^{tmp_path / 'absent.json'}: cannot read the key map"):
        read_key_map(tmp_path / "absent.json")
    with pytest.raises(ValueError, match=f"^{tmp_path}: cannot read the key map"):
        read_key_map(tmp_path)
    bad.write_text('{"stored.name": "neg_head.fc1.weight"}')
    assert read_key_map(bad) == {"stored.name": "neg_head.fc1.weight"}


def test_failed_conversion_removes_the_parent_directories_it_created(hf, tmp_path):
    """atomic_output_dir creates the output's missing parents; a failure removes those (and only those) again."""
    from trt_neg.checkpoint.safetensors_io import atomic_output_dir

    def nan(t):
        t["model.language_model.norm.weight"] = t["model.language_model.norm.weight"].clone()
        t["model.language_model.norm.weight"][0] = float("nan")
    rewrite(hf, nan)
    (tmp_path / "kept").mkdir()
    out = tmp_path / "kept" / "a" / "b" / "ckpt"
    with pytest.raises(CheckpointError, match="non-finite"):
        convert_checkpoint(hf, out, check_finite=True)
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == []  # kept: it existed before
    # a created parent that something else wrote into meanwhile stays (with its ancestors)
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "kept" / "a" / "b" / "ckpt"):
            (tmp_path / "kept" / "a" / "other").write_text("not ours")
            raise RuntimeError("fail")
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "kept").rglob("*")) == ["kept/a", "kept/a/other"]
    # success keeps them, of course
    with atomic_output_dir(tmp_path / "new" / "x" / "ckpt") as tmp:
        (tmp / "f").write_text("ok")
    assert (tmp_path / "new" / "x" / "ckpt" / "f").read_text() == "ok"


def test_a_converted_checkpoint_config_that_is_not_utf8_is_named(tmp_path):
    from trt_neg.checkpoint.simulate import ShardedCheckpoint

    (tmp_path / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'config.json'}: field '<file>': is not UTF-8"):
        ShardedCheckpoint(tmp_path)


def test_float16_overflow_names_the_peak_and_a_stored_inf_is_not_an_overflow(hf, tmp_path):
    """Found by mutation testing: the overflow error reports max |x|; a chunk whose source already
    holds an inf converts as it is (only --check-finite refuses it), overflow or not elsewhere."""
    name = "model.language_model.layers.0.mlp.up_proj.weight"

    def edit(t):
        t[name][0, 0] = 1e6
        t[name][0, 1] = -3e5
    rewrite(hf, edit)
    message = convert_fails(hf, tmp_path, CheckpointError, name, dtype="float16")
    assert "max |x| = 1e+06 > 65504" in message

    def edit_inf(t):
        t[name][0, 0] = float("inf")
        t[name][0, 1] = 1.0
    rewrite(hf, edit_inf)
    out = convert_checkpoint(hf, tmp_path / "inf", dtype="float16").output
    converted = load_file(str(out / "rank0.safetensors"))["transformer.layers.0.mlp.gate.weight"]  # up_proj
    assert converted[0, 0] == float("inf") and converted[0, 1] == 1.0
    convert_fails(hf, tmp_path, CheckpointError, name, "non-finite", dtype="float16", check_finite=True)
