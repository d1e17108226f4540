"""HF Darwin-NEG checkpoint -> sharded TensorRT-LLM checkpoint, streamed.

What is written is defined by ``contract.py`` (names, shapes, dtypes, transforms, split
rules); this module only moves bytes:

* the HF checkpoint is validated up front (``HFCheckpoint``: names, shapes, float dtypes,
  config agreement), and the tp/pp layout against the model's head counts;
* each rank's tensors are produced from row ranges of the HF tensors (``contract.pieces``),
  read with ``pread``-style reads in chunks of at most ``chunk_bytes`` — never a whole
  tensor, never a memory map — so peak memory stays bounded whatever the model size;
* every source byte is read once per pipeline stage: replicated tensors are read once and
  written to every tp rank, row-parallel tensors are read in row chunks and their column
  slices dispatched to the ranks;
* ranks of a stage are written side by side by push-style ``StreamingSafetensorsWriter``s
  (header first, then data appended in declaration order); files are fsynced, and the whole
  output directory is renamed into place only when complete (``atomic_output_dir``).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from . import contract as C
from .hf import HFCheckpoint
from .safetensors_io import (SAFETENSORS_TO_TORCH, CheckpointError, OutputKind, SafetensorsFile,
                             StreamingSafetensorsWriter, atomic_output_dir, check_disjoint, check_output_dir,
                             dtype_name, torch_dtype)

CHUNK_BYTES = 64 * 2**20
# What convert_checkpoint writes: --overwrite replaces only a directory holding nothing else.
TRTLLM_CHECKPOINT = OutputKind("TensorRT-LLM checkpoint", ("config.json", "rank*.safetensors"))


# ------------------------------------------------------------------------------------
# Reading rows without a memory map
# ------------------------------------------------------------------------------------

class RowReader:
    """Reads row ranges of safetensors tensors with plain file reads into fresh buffers."""

    def __init__(self, ckpt: HFCheckpoint):
        self.ckpt = ckpt
        self._files: dict[Path, tuple[object, int, dict]] = {}

    def _file(self, path: Path):
        if path not in self._files:
            handle = open(path, "rb", buffering=0)
            (header_len,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_len))
            self._files[path] = (handle, 8 + header_len, header)
        return self._files[path]

    def info(self, name: str) -> tuple[Path, str, tuple[int, ...], torch.dtype]:
        """(file, stored name, canonical shape, stored dtype) of HF tensor ``name``.

        The shape is the checkpoint's canonical one (``HFCheckpoint.shape``): a NEG tensor stored
        as e.g. [d] or [] is read as [1, d] or [1], its bytes being the same.
        """
        path, stored = self.ckpt.source(name)
        _, _, header = self._file(path)
        entry = header[stored]
        return path, stored, self.ckpt.shape(name), SAFETENSORS_TO_TORCH[entry["dtype"]]

    def read(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of HF tensor ``name`` in its canonical shape (scalars: the scalar)."""
        path, stored, shape, dtype = self.info(name)
        handle, data_start, header = self._file(path)
        entry = header[stored]
        row_elems = 1
        for s in shape[1:]:
            row_elems *= s
        row_bytes = row_elems * dtype.itemsize
        nbytes = (stop - start) * row_bytes
        buf = torch.empty(nbytes, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        offset = data_start + entry["data_offsets"][0] + start * row_bytes
        done = 0
        while done < nbytes:
            n = os.preadv(handle.fileno(), [view[done:]], offset + done)
            if n <= 0:
                raise CheckpointError(path, f"truncated: could only read {done} of {nbytes} bytes at offset "
                                            f"{offset}", stored)
            done += n
        tensor = buf.view(dtype)
        return tensor.reshape(()) if not shape else tensor.reshape(stop - start, *shape[1:])

    def close(self) -> None:
        for handle, _, _ in self._files.values():
            handle.close()
        self._files.clear()


# ------------------------------------------------------------------------------------
# The converter
# ------------------------------------------------------------------------------------

@dataclass
class ConversionReport:
    output: Path
    mapping: C.Mapping
    dtype: str
    bytes_read: int
    bytes_written: int
    tensors_written: int


def resolve_dtype(ckpt: HFCheckpoint, dtype: str | None) -> str:
    """``dtype`` if given, else the HF config's ``dtype``/``torch_dtype``, else the embedding's dtype."""
    if dtype is not None:
        torch_dtype(dtype)  # validates
        return dtype
    for key in ("dtype", "torch_dtype"):
        value = ckpt.config.extra.get(key)
        if value in C.DTYPES:
            return value
    path, stored = ckpt.source("model.embed_tokens.weight")
    stored_dtype = SafetensorsFile(path).dtype(stored)
    return dtype_name(stored_dtype) if stored_dtype in (torch.float32, torch.float16, torch.bfloat16) else "float32"


def convert_checkpoint(model_dir: str | Path, output_dir: str | Path, tp_size: int = 1, pp_size: int = 1,
                       dtype: str | None = None, check_finite: bool = False,
                       key_map: dict[str, str] | None = None, overwrite: bool = False, progress: bool = False,
                       chunk_bytes: int = CHUNK_BYTES, fsync: bool = True) -> ConversionReport:
    """Convert an HF Darwin-NEG checkpoint into a TensorRT-LLM checkpoint directory.

    Raises ``ConfigError``/``CheckpointError`` (naming file and field/tensor),
    ``ShardingError``, ``FileExistsError`` (output exists and no ``overwrite``, or it is not a
    previous TensorRT-LLM checkpoint that ``overwrite`` may replace: ``TRTLLM_CHECKPOINT``),
    ``PermissionError`` (output not writable) or ``ValueError`` (the output is, contains or
    lies inside ``model_dir``); on any error no output is left behind.
    """
    output_dir = Path(output_dir)
    check_disjoint(output_dir, model_dir, "output", "the source HF checkpoint")
    check_output_dir(output_dir, TRTLLM_CHECKPOINT, overwrite)  # fail before reading anything
    ckpt = HFCheckpoint(model_dir, key_map=key_map)
    config, b = ckpt.config, ckpt.config.backbone
    mapping = C.Mapping(tp_size=tp_size, pp_size=pp_size)
    C.check_mapping(b, mapping)
    dtype = resolve_dtype(ckpt, dtype)
    model_dtype = torch_dtype(dtype)
    hf_shapes = {**ckpt.expected, **ckpt.expected_neg}
    plans = [C.rank_plan(config, mapping, r, model_dtype, hf_shapes) for r in range(mapping.world_size)]
    total = sum(_nbytes(t.shape, t.dtype) for plan in plans for t in plan)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=f"converting tp{tp_size} pp{pp_size} {dtype}")
    reader = RowReader(ckpt)
    stats = {"read": 0, "written": 0, "tensors": 0}
    try:
        with atomic_output_dir(output_dir, overwrite=overwrite, kind=TRTLLM_CHECKPOINT) as tmp:
            cfg = C.checkpoint_config(config, mapping, dtype)
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            for pp_rank in range(pp_size):
                ranks = [mapping.rank(t, pp_rank) for t in range(tp_size)]
                _write_stage(tmp, ranks, [plans[r] for r in ranks], reader, check_finite, chunk_bytes, bar,
                             stats, fsync)
    finally:
        reader.close()
        if bar is not None:
            bar.close()
    return ConversionReport(output_dir, mapping, dtype, stats["read"], stats["written"], stats["tensors"])


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    n = 1
    for s in shape:
        n *= s
    return n * dtype.itemsize


def _write_stage(tmp: Path, ranks: list[int], plans: list[list[C.PlannedTensor]], reader: RowReader,
                 check_finite: bool, chunk_bytes: int, bar, stats: dict, fsync: bool) -> None:
    writers: list[StreamingSafetensorsWriter] = []
    try:
        for rank, plan in zip(ranks, plans):
            writers.append(StreamingSafetensorsWriter(C.rank_file(tmp, rank),
                                                      [(t.name, t.shape, t.dtype) for t in plan],
                                                      metadata={"format": "pt", C.RANK_METADATA_KEY: str(rank)}))
        for column in zip(*plans):  # the same tensor on every tp rank of the stage
            names = {t.name for t in column}
            assert len(names) == 1, names
            for w in writers:
                w.begin(column[0].name)
            _write_tensor(list(column), writers, reader, check_finite, chunk_bytes, bar, stats)
            for w in writers:
                w.end()
            stats["tensors"] += len(column)
        for w in writers:
            w.close(fsync=fsync)
    except BaseException:
        for w in writers:
            w.abort()
        raise


def _write_tensor(column: list[C.PlannedTensor], writers: list[StreamingSafetensorsWriter], reader: RowReader,
                  check_finite: bool, chunk_bytes: int, bar, stats: dict) -> None:
    first = column[0]
    same_parts = all(t.parts == first.parts for t in column)
    rows_only = [tuple((p.source, p.start, p.stop) for p in t.parts) for t in column]
    if same_parts:  # replicated: read once, write to every rank
        for chunk in _stream(first, first.parts, reader, check_finite, chunk_bytes, stats):
            for w in writers:
                _push(w, chunk, bar, stats)
    elif all(r == rows_only[0] for r in rows_only) and all(p.cols is not None for p in first.parts):
        # row-parallel: read full rows once, hand each rank its column slice
        full = [C.Piece(p.source, p.start, p.stop) for p in first.parts]
        for chunk in _stream(first, full, reader, check_finite, chunk_bytes, stats):
            for t, w in zip(column, writers):
                a, z = t.parts[0].cols
                _push(w, chunk[:, a:z], bar, stats)
    else:  # each rank its own rows
        for t, w in zip(column, writers):
            for chunk in _stream(t, t.parts, reader, check_finite, chunk_bytes, stats):
                _push(w, chunk, bar, stats)


def _push(writer: StreamingSafetensorsWriter, chunk: torch.Tensor, bar, stats: dict) -> None:
    writer.append(chunk)
    n = chunk.numel() * chunk.element_size()
    stats["written"] += n
    if bar is not None:
        bar.update(n)


def _stream(t: C.PlannedTensor, parts: Sequence[C.Piece], reader: RowReader, check_finite: bool,
            chunk_bytes: int, stats: dict) -> Iterator[torch.Tensor]:
    """Chunks (rows, converted to the planned dtype) of ``t`` built from ``parts``."""
    for part in parts:
        if part.source is None:  # vocabulary padding
            tail = t.shape[1:]
            row_bytes = max(1, _nbytes(tail, t.dtype))
            step = max(1, chunk_bytes // row_bytes)
            for start in range(0, part.rows, step):
                yield torch.zeros((min(step, part.rows - start), *tail), dtype=t.dtype)
            continue
        path, stored, shape, src_dtype = reader.info(part.source)
        if not shape:
            raw = reader.read(part.source, 0, 1)
            stats["read"] += raw.element_size()
            yield _convert(t, raw, path, stored, check_finite)
            continue
        row_bytes = max(1, _nbytes(shape[1:], src_dtype))
        step = max(1, chunk_bytes // row_bytes)
        for start in range(part.start, part.stop, step):
            stop = min(part.stop, start + step)
            raw = reader.read(part.source, start, stop)
            stats["read"] += raw.numel() * raw.element_size()
            if part.cols is not None:
                raw = raw[:, part.cols[0]:part.cols[1]]
            yield _convert(t, raw, path, stored, check_finite)


def _convert(t: C.PlannedTensor, raw: torch.Tensor, path: Path, stored: str, check_finite: bool) -> torch.Tensor:
    if check_finite and not torch.isfinite(raw).all():
        raise CheckpointError(path, "holds non-finite values (NaN or inf)", stored)
    out = C.apply_transform(t.entry, raw, t.dtype)
    if t.dtype == torch.float16 and raw.dtype != torch.float16 and torch.isinf(out).any() \
            and torch.isfinite(raw).all():
        peak = raw.float().abs().max().item()
        raise CheckpointError(path, f"values overflow float16 (max |x| = {peak:.4g} > 65504); "
                                    "convert to bfloat16 or float32 instead", stored)
    return out
