"""Which files of an HF checkpoint are read: entries that are not readable files, and a sharded
checkpoint's model.safetensors.index.json (the authority, as for transformers). Each problem is
one CheckpointError naming the file, and the tensor where there is one."""

from __future__ import annotations

import json
import os
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from trt_neg.checkpoint.convert import convert_checkpoint
from trt_neg.checkpoint.hf import NEG_FILE, NEG_TENSORS, HFCheckpoint
from trt_neg.checkpoint.safetensors_io import INDEX_FILE, SINGLE_FILE, CheckpointError


@pytest.fixture(scope="module")
def sharded_tiny(tmp_path_factory):
    """The tiny checkpoint written as several shards with an index (transformers' sharded layout)."""
    from trt_neg.checkpoint import synthetic

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(synthetic, "SHARD_BYTES", 300_000)
        path = synthetic.write_checkpoint(tmp_path_factory.mktemp("sharded") / "tiny", "tiny", seed=0)
    assert (path / INDEX_FILE).exists() and len(shards_of(path)) >= 3
    return path


@pytest.fixture
def sharded(sharded_tiny, tmp_path):
    """A private copy to damage."""
    return shutil.copytree(sharded_tiny, tmp_path / "sharded")


def shards_of(model) -> list[str]:
    return sorted(set(json.loads((model / INDEX_FILE).read_text())["weight_map"].values()))


def edit_weight_map(model, edit):
    index = json.loads((model / INDEX_FILE).read_text())
    edit(index["weight_map"])
    (model / INDEX_FILE).write_text(json.dumps(index))


def fails(model, *fragments) -> str:
    """HFCheckpoint(model) raises a CheckpointError holding every fragment; so does the converter
    (every CLI reads checkpoints through the same class)."""
    with pytest.raises(CheckpointError) as info:
        HFCheckpoint(model)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    with pytest.raises(CheckpointError):
        convert_checkpoint(model, model.parent / "out")
    return message


# ------------------------------------------------------------------ entries that are not files
@pytest.mark.parametrize("entry, problem", [
    ("broken symlink", "is a broken symlink to {target} (No such file or directory)"),
    ("directory", "is a directory, not a file"),
])
@pytest.mark.parametrize("layout", ["single file", "shard"])
def test_an_unreadable_safetensors_entry_is_named(tiny_checkpoint, sharded, tmp_path, entry, problem, layout):
    """Copied HF-hub snapshots hold symlinks into a blob store, which dangle when the blobs stay behind."""
    model = shutil.copytree(tiny_checkpoint, tmp_path / "single") if layout == "single file" else sharded
    path = model / (SINGLE_FILE if layout == "single file" else shards_of(model)[1])
    path.unlink()
    target = tmp_path / "blobs" / "gone"
    if entry == "broken symlink":
        path.symlink_to(target)
    else:
        path.mkdir()
    message = fails(model, problem.format(target=target))
    assert message.startswith(f"{path}: "), message


def test_hidden_safetensors_files_are_not_read(tiny_checkpoint, tmp_path):
    # A tool's partial copy beside the checkpoint, truncated: reading it would fail (or double tensors).
    model = shutil.copytree(tiny_checkpoint, tmp_path / "single")
    (model / f".{SINGLE_FILE}.partial.safetensors").write_bytes((model / SINGLE_FILE).read_bytes()[:1000])
    checkpoint = HFCheckpoint(model)
    checkpoint.validate_names()
    assert [f.path.name for f in checkpoint.files.files] == [SINGLE_FILE]


# ------------------------------------------------------------------ the shard index
def test_the_index_decides_which_files_are_read(sharded, tiny_checkpoint, caplog):
    """Listed shards and neg.safetensors are read; any other *.safetensors is not (transformers ignores
    it too), so a stale shard of an earlier save cannot double the tensors."""
    reference = HFCheckpoint(tiny_checkpoint)
    # The NEG head moved to its own file, which the backbone's index does not list.
    shards = shards_of(sharded)
    holder = next(s for s in shards if set(NEG_TENSORS) <= set(load_file(str(sharded / s))))
    tensors = load_file(str(sharded / holder))
    save_file({n: tensors.pop(n) for n in NEG_TENSORS}, str(sharded / NEG_FILE))
    save_file(tensors, str(sharded / holder), metadata={"format": "pt"})
    edit_weight_map(sharded, lambda m: [m.pop(n) for n in NEG_TENSORS])
    stale = "model-00001-of-00009.safetensors"
    shutil.copy(sharded / shards[0], sharded / stale)
    with caplog.at_level(logging.WARNING):
        ckpt = HFCheckpoint(sharded)
    assert f"ignoring {stale}, not listed in {INDEX_FILE}" in caplog.text
    assert ckpt.files.unlisted == (stale,)
    assert sorted(h.path.name for h in ckpt.files.files) == sorted([*shards, NEG_FILE])
    for name in reference.names():
        assert torch.equal(ckpt.get(name), reference.get(name)), name


def test_a_missing_shard_is_named_with_its_tensor_count(sharded):
    shard = shards_of(sharded)[1]
    count = sum(v == shard for v in json.loads((sharded / INDEX_FILE).read_text())["weight_map"].values())
    (sharded / shard).unlink()
    fails(sharded, f"{sharded / INDEX_FILE}: lists shard {shard} for {count} tensor(s), but there is no such file")


@pytest.mark.parametrize("text, problem", [
    ('{"weight_map": ', "is not valid JSON (Expecting value: line 1 column 16"),
    (b"\xff{}", "is not UTF-8"),
    ('{"metadata": {}}', 'needs a "weight_map" object of tensor name -> shard file name'),
    ('{"weight_map": {"a": 1}}', 'needs a "weight_map" object'),
    ('{"weight_map": {}}', 'has an empty "weight_map"'),
    ('{"weight_map": {"lm_head.weight": "../model.safetensors"}}',
     "tensor 'lm_head.weight': weight_map puts it in '../model.safetensors', not the name of a *.safetensors file "
     "beside the index"),
    ('{"weight_map": {"lm_head.weight": "pytorch_model-00001-of-00002.bin"}}', "'pytorch_model-00001-of-00002.bin'"),
])
def test_an_unusable_index_is_named(sharded, text, problem):
    path = sharded / INDEX_FILE
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    message = fails(sharded, problem)
    assert message.startswith(f"{path}: "), message


def test_an_index_that_is_not_a_file_is_named(sharded, tmp_path):
    (sharded / INDEX_FILE).unlink()
    (sharded / INDEX_FILE).symlink_to(tmp_path / "gone.json")
    fails(sharded, f"{sharded / INDEX_FILE}: is a broken symlink to {tmp_path / 'gone.json'}")


def _move(model, weight_map, shards):
    tensor = next(t for t, s in weight_map.items() if s == shards[0])
    weight_map[tensor] = shards[1]
    return tensor, f"weight_map puts it in {shards[1]}, but {shards[0]} holds it"


def _duplicate(model, weight_map, shards):
    """A tensor stored in a second shard too (the index names the first)."""
    tensor = next(t for t, s in weight_map.items() if s == shards[0])
    second = load_file(str(model / shards[1]))
    second[tensor] = load_file(str(model / shards[0]))[tensor]
    save_file(second, str(model / shards[1]), metadata={"format": "pt"})
    return tensor, f"weight_map puts it in {shards[0]}, but {shards[1]} holds it too"


def _drop(model, weight_map, shards):
    tensor = next(t for t, s in weight_map.items() if s == shards[1])
    del weight_map[tensor]
    return tensor, f"is not in weight_map, but {shards[1]} holds it"


def _unlist(model, weight_map, shards):
    """The last shard's tensors mapped to the first: the last is no longer listed, hence not read."""
    moved = [t for t, s in weight_map.items() if s == shards[-1]]
    weight_map.update(dict.fromkeys(moved, shards[0]))
    return moved[0], (f"weight_map puts it in {shards[0]}, which does not hold it; it is in {shards[-1]}, which "
                      f"the index does not list ({len(moved)} tensors disagree in all)")


def _nowhere(model, weight_map, shards):
    weight_map["model.language_model.layers.9.mlp.up_proj.weight"] = shards[0]
    return ("model.language_model.layers.9.mlp.up_proj.weight",
            f"weight_map puts it in {shards[0]}, which does not hold it; no other file holds it")


@pytest.mark.parametrize("edit, refused", [
    (_move, None), (_drop, None), (_nowhere, None),  # every tensor is still read once: they load
    (_duplicate, "duplicate tensor"),  # two copies: which one?
    (_unlist, "missing"),  # the tensors of a shard the index no longer lists are not read
])
def test_a_weight_map_that_disagrees_with_the_shards_is_a_warning(sharded, tiny_checkpoint, caplog, edit, refused):
    """transformers uses weight_map only to pick the shards, then reads every tensor in them: a stale map
    (a tensor left out, an entry for a tensor removed later) loads there, so it loads here, with a warning.
    The disagreements that matter are errors of their own."""
    found = {}
    edit_weight_map(sharded, lambda m: found.update(zip(("tensor", "problem"), edit(sharded, m, shards_of(sharded)))))
    with caplog.at_level(logging.WARNING, logger="trt_neg.checkpoint.safetensors_io"):
        if refused is None:
            checkpoint = HFCheckpoint(sharded)
            checkpoint.validate_names()
            whole = HFCheckpoint(tiny_checkpoint)
            for name in ("model.embed_tokens.weight", "lm_head.weight", *NEG_TENSORS):
                assert torch.equal(checkpoint.get(name), whole.get(name))
        else:
            fails(sharded, refused)
    warning = f"{sharded / INDEX_FILE}: tensor '{found['tensor']}': {found['problem']}"
    assert any(r.getMessage().startswith(warning) for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_tensors_only_in_an_unlisted_shard_are_missing_and_the_shard_is_named(sharded):
    last = shards_of(sharded)[-1]
    edit_weight_map(sharded, lambda m: [m.pop(t) for t, s in list(m.items()) if s == last])
    fails(sharded, f"{sharded}: tensor '", "missing", f"not read: {last}, which {INDEX_FILE} does not list")


def test_an_unlisted_model_safetensors_beside_an_index_is_refused(sharded, tiny_checkpoint):
    """transformers loads model.safetensors alone when it exists, ignoring the index: which of the two
    is the checkpoint is ambiguous."""
    shutil.copy(tiny_checkpoint / SINGLE_FILE, sharded / SINGLE_FILE)
    fails(sharded, f"{sharded / SINGLE_FILE}: is beside {INDEX_FILE}, which does not list it: transformers would "
                   f"load it alone and ignore the index's {len(shards_of(sharded))} shard(s)")


# ------------------------------------------------------------------ headers and files, one problem each
def _raw_safetensors(path, header, data=b""):
    encoded = json.dumps(header).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    return path


@pytest.mark.parametrize("content, problem", [
    (b"\x10\x00\x00", "truncated safetensors file (no header length)"),
    (None, "corrupt safetensors header (not a JSON object)"),
])
def test_a_file_too_short_or_with_a_non_object_header_is_named(tmp_path, content, problem):
    from trt_neg.checkpoint.safetensors_io import read_header

    path = tmp_path / "x.safetensors"
    if content is None:
        _raw_safetensors(path, [1, 2])
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_header(path)
    assert str(info.value) == f"{path}: {problem}"


def test_a_fifo_is_refused_before_it_is_opened(tmp_path):
    """Opening a named pipe for reading blocks until a writer comes: it is refused by its type."""
    from trt_neg.checkpoint.safetensors_io import read_header

    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: is not a regular file \(a pipe, socket or "
                                              r"device\)"):
        read_header(fifo)


def test_a_tensor_of_a_dtype_torch_cannot_hold_is_named(tiny_checkpoint, tmp_path):
    """U32 is a valid safetensors dtype (its size is known, so the header checks pass) that no torch
    dtype here maps: the error names the file, the tensor and the dtype."""
    model = shutil.copytree(tiny_checkpoint, tmp_path / "m")
    raw = (model / SINGLE_FILE).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name = "model.language_model.norm.weight"
    assert header[name]["dtype"] == "F32"
    header[name]["dtype"] = "U32"  # same shape, same bytes
    _raw_safetensors(model / SINGLE_FILE, header, raw[8 + n:])
    fails(model, f"{model / SINGLE_FILE}: tensor '{name}': unsupported dtype U32")


def test_a_tensor_not_in_the_file_is_named(tiny_checkpoint):
    from trt_neg.checkpoint.safetensors_io import SafetensorsFile

    handle = SafetensorsFile(tiny_checkpoint / SINGLE_FILE)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.norm\.weight': not in this file"):
        handle.get("model.norm.weight")
    with pytest.raises(CheckpointError, match=r"tensor 'nope': not in this file"):
        handle.rows("nope", 0, 1)


def test_a_checkpoint_that_is_not_a_directory_or_has_no_safetensors_is_named(tmp_path):
    from trt_neg.checkpoint.safetensors_io import open_checkpoint_files

    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match=r"file: is not a directory$"):
        open_checkpoint_files(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"empty: holds no \*\.safetensors files$"):
        open_checkpoint_files(tmp_path / "empty")


def test_the_streaming_writer_refuses_misuse_by_tensor(tmp_path):
    from trt_neg.checkpoint.safetensors_io import StreamingSafetensorsWriter

    with pytest.raises(ValueError, match=r"out\.safetensors: tensor 'a' declared twice"):
        StreamingSafetensorsWriter(tmp_path / "out.safetensors",
                                   [("a", (2,), torch.float32), ("a", (1,), torch.float32)])
    assert not list(tmp_path.iterdir())  # refused before anything is written
    writer = StreamingSafetensorsWriter(tmp_path / "out.safetensors", [("a", (2,), torch.float32)])
    with pytest.raises(ValueError, match=r"out\.safetensors: append\(\) without begin\(\)"):
        writer.append(torch.zeros(2))
    with pytest.raises(ValueError, match=r"out\.safetensors: end\(\) without begin\(\)"):
        writer.end()
    writer.write("a", torch.ones(2))
    writer.close()
    assert load_file(tmp_path / "out.safetensors")["a"].tolist() == [1.0, 1.0]


def test_non_finite_values_are_refused_only_when_asked(tiny_checkpoint, tmp_path):
    """HFCheckpoint.get hands stored values on as they are (a NaN is the checkpoint's business); with
    check_finite it names the file and the tensor."""
    model = shutil.copytree(tiny_checkpoint, tmp_path / "m")
    tensors = load_file(model / SINGLE_FILE)
    name = "model.language_model.layers.0.mlp.up_proj.weight"
    tensors[name][1, 2] = float("inf")
    save_file(tensors, model / SINGLE_FILE, metadata={"format": "pt"})
    ckpt = HFCheckpoint(model)
    assert torch.isinf(ckpt.get("model.layers.0.mlp.up_proj.weight")[1, 2])
    with pytest.raises(CheckpointError) as info:
        ckpt.get("model.layers.0.mlp.up_proj.weight", check_finite=True)
    assert str(info.value) == f"{model / SINGLE_FILE}: tensor '{name}': holds non-finite values (NaN or inf)"
    assert ckpt.get("model.layers.0.mlp.down_proj.weight", check_finite=True).isfinite().all()


@pytest.mark.parametrize("row, head_dtype, tied", [(None, torch.bfloat16, True), (0, torch.float32, False),
                                                   (511, torch.float32, False), (254, torch.bfloat16, False)])
def test_a_stored_head_ties_only_if_every_row_equals_the_embedding(tiny_checkpoint, tmp_path, monkeypatch, row,
                                                                    head_dtype, tied):
    """A tied config whose checkpoint also stores lm_head.weight is tied only if the two are equal (as
    transformers' tie_weights decides): compared block by block (5 rows here, a partial last block), the
    first and the last row included, values compared across dtypes."""
    from trt_neg.checkpoint import hf

    monkeypatch.setattr(hf, "COMPARE_CHUNK_BYTES", 5 * 64 * 4)
    model = shutil.copytree(tiny_checkpoint, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (model / "config.json").write_text(json.dumps(config))
    tensors = load_file(model / SINGLE_FILE)
    embedding = tensors["model.language_model.embed_tokens.weight"].bfloat16().float()  # bf16-exact values
    tensors["model.language_model.embed_tokens.weight"] = embedding
    head = embedding.clone()
    if row is not None:
        head[row, 3] += 0.5
    tensors["lm_head.weight"] = head.to(head_dtype)
    save_file(tensors, model / SINGLE_FILE, metadata={"format": "pt"})
    assert HFCheckpoint(model).config.backbone.tie_word_embeddings is tied
    assert hf.load_model_config(model).backbone.tie_word_embeddings is tied


def test_a_key_map_must_map_names_to_names(tmp_path):
    from trt_neg.checkpoint.hf import read_key_map

    for text in ('{"a": 1}', '{"a": ["b"]}', '["a"]'):
        (tmp_path / "map.json").write_text(text)
        with pytest.raises(ValueError) as info:
            read_key_map(tmp_path / "map.json")
        assert str(info.value) == f"{tmp_path / 'map.json'}: a key map must be a JSON object of stored name -> " \
                                  "expected name"
    (tmp_path / "map.json").write_text('{"my.w1": "neg_head.fc1.weight"}')
    assert read_key_map(tmp_path / "map.json") == {"my.w1": "neg_head.fc1.weight"}


def test_a_neg_tensor_of_the_wrong_size_names_both_element_counts(tiny_checkpoint, tmp_path):
    model = shutil.copytree(tiny_checkpoint, tmp_path / "m")
    tensors = load_file(model / SINGLE_FILE)
    tensors["neg_head.fc2.weight"] = torch.zeros(31)
    save_file(tensors, model / SINGLE_FILE, metadata={"format": "pt"})
    fails(model, f"{model / SINGLE_FILE}: tensor 'neg_head.fc2.weight': shape [31] does not match config: "
                 "neg_head.fc2.weight needs 32 element(s) (shape [1, 32], or any shape of that many elements), not 31")


def test_an_empty_safetensors_file_and_a_pickle_only_directory(tmp_path):
    """A file of a header and no data is valid (header_len == size - 8); .ckpt is one of the pickle forms named."""
    from trt_neg.checkpoint.safetensors_io import open_checkpoint_files, read_header

    path = tmp_path / "empty.safetensors"
    path.write_bytes(len(b"{}      ").to_bytes(8, "little") + b"{}      ")
    assert read_header(path) == {}
    (tmp_path / "pickles").mkdir()
    (tmp_path / "pickles" / "model.ckpt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"holds only pickle weights \(model\.ckpt\); they are never loaded"):
        open_checkpoint_files(tmp_path / "pickles")


def test_data_offsets_that_run_backwards_are_named(tmp_path):
    from trt_neg.checkpoint.safetensors_io import read_header

    path = _raw_safetensors(tmp_path / "x.safetensors", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}},
                            b"\0" * 8)
    with pytest.raises(CheckpointError) as info:
        read_header(path)
    assert str(info.value) == f"{path}: tensor 'a': corrupt header entry (data_offsets [8, 4], shape [1])"


@pytest.mark.parametrize("offsets, problem", [
    ({"a": [4, 8]}, "tensor 'a': corrupt header entry: data_offsets [4, 8] leaves a gap of 4 bytes after the header"),
    ({"a": [0, 4], "b": [12, 16]}, "tensor 'b': corrupt header entry: data_offsets [12, 16] leaves a gap of 8 bytes "
                                   "after tensor 'a'"),
    ({"a": [0, 8], "b": [4, 12]}, None),
])
def test_a_gap_between_tensors_is_named_with_its_size(tmp_path, offsets, problem):
    from trt_neg.checkpoint.safetensors_io import read_header

    header = {name: {"dtype": "F32", "shape": [(end - start) // 4], "data_offsets": [start, end]}
              for name, (start, end) in offsets.items()}
    size = max(end for _, end in offsets.values())
    path = _raw_safetensors(tmp_path / "x.safetensors", header, b"\0" * size)
    with pytest.raises(CheckpointError) as info:
        read_header(path)
    assert str(info.value) == f"{path}: " + (problem or "tensor 'b': corrupt header entry: data_offsets [4, 12] "
                                                        "overlaps tensor 'a'")


def test_the_streaming_writer_aligns_the_data_and_keeps_the_metadata(tmp_path):
    """The header is padded so the data start 8-byte aligned (safetensors' recommendation, which mmap'd readers
    rely on), and __metadata__ (transformers checks its "format") is written."""
    from trt_neg.checkpoint.safetensors_io import SafetensorsFile, StreamingSafetensorsWriter

    for name in ("a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh"):
        path = tmp_path / f"{name}.safetensors"
        writer = StreamingSafetensorsWriter(path, [(name, (3,), torch.float16)], metadata={"format": "pt"})
        writer.write(name, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float16))
        writer.close()
        raw = path.read_bytes()
        header_len = int.from_bytes(raw[:8], "little")
        text = raw[8:8 + header_len].rstrip(b" ")
        assert header_len % 8 == 0 and header_len - len(text) < 8  # padded to 8, and by no more than that
        assert json.loads(text)["__metadata__"] == {"format": "pt"}
        assert len(raw) == 8 + header_len + 6
        assert SafetensorsFile(path).metadata == {"format": "pt"}
        assert load_file(path)[name].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("output, other, relation", [("a", "a", "is"), ("a", "a/b", "contains"),
                                                     ("a/b", "a", "is inside"), ("a/b", "a/c", None)])
def test_an_output_inside_or_around_its_source_is_refused_with_the_relation(tmp_path, output, other, relation):
    from trt_neg.checkpoint.safetensors_io import check_disjoint

    if relation is None:
        check_disjoint(tmp_path / output, tmp_path / other, "engine directory", "the checkpoint")
        return
    with pytest.raises(ValueError) as info:
        check_disjoint(tmp_path / output, tmp_path / other, "engine directory", "the checkpoint")
    assert str(info.value).startswith(f"{tmp_path / output}: the engine directory {relation} the checkpoint "
                                      f"{tmp_path / other}; writing it")


@pytest.mark.parametrize("existing", ["empty directory", "full directory", "file"])
def test_rename_noreplace_never_replaces_what_is_there(tmp_path, existing):
    """The last step of every atomic output: an existing target (even an empty directory, which a plain
    rename would replace) is a FileExistsError naming it, and nothing moves."""
    from trt_neg.checkpoint.safetensors_io import _rename_noreplace

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "new").write_text("new")
    if existing == "file":
        dst.write_text("old")
    else:
        dst.mkdir()
        if existing == "full directory":
            (dst / "old").write_text("old")
    with pytest.raises(FileExistsError) as info:
        _rename_noreplace(src, dst)
    assert info.value.filename == str(dst)
    assert (src / "new").read_text() == "new"
    _rename_noreplace(src, tmp_path / "fresh")
    assert (tmp_path / "fresh" / "new").read_text() == "new" and not src.exists()


def test_an_atomic_output_is_written_beside_its_target_with_a_new_directorys_permissions(tmp_path):
    """The temporary directory is a hidden sibling of the target (a rename never crosses file systems) and
    the output gets 0777 less the umask, not mkdtemp's private 0700."""
    from trt_neg.checkpoint.safetensors_io import atomic_output_dir

    target = tmp_path / "out"
    umask = os.umask(0o027)
    try:
        with atomic_output_dir(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".out.") and tmp.name.endswith(".partial")
            (tmp / "f").write_text("x")
    finally:
        os.umask(umask)
    assert (target / "f").read_text() == "x" and (target.stat().st_mode & 0o777) == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_tied_checkpoint_may_store_its_equal_head_but_nothing_else_unexpected(tiny_checkpoint, tmp_path):
    model = shutil.copytree(tiny_checkpoint, tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (model / "config.json").write_text(json.dumps(config))
    tensors = load_file(model / SINGLE_FILE)
    tensors["lm_head.weight"] = tensors["model.language_model.embed_tokens.weight"].clone()
    save_file(tensors, model / SINGLE_FILE, metadata={"format": "pt"})
    assert "lm_head.weight" not in HFCheckpoint(model).names()
    tensors["model.language_model.extra.weight"] = torch.zeros(2)
    save_file(tensors, model / SINGLE_FILE, metadata={"format": "pt"})
    fails(model, f"{model / SINGLE_FILE}: tensor 'model.language_model.extra.weight': unexpected tensor for this "
                 "config (1 in all)")
