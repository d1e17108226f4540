"""Which files of an HF checkpoint are read: entries that are not readable files, and a sharded
checkpoint's model.safetensors.index.json (the authority, as for transformers). Each problem is
one CheckpointError naming the file, and the tensor where there is one."""

from __future__ import annotations

import json
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
