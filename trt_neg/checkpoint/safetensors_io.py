"""Safetensors I/O that never holds a whole checkpoint in memory.

Reading goes through ``safetensors.safe_open`` (memory-mapped, one tensor at a time) with
errors that name the file and tensor. Writing streams (``StreamingSafetensorsWriter``): the
header is laid out from the declared names, shapes and dtypes first, then each tensor's
bytes are appended as they are produced (in chunks if need be, several files side by side
if need be), so peak memory is one chunk, not one checkpoint.
Only safetensors are ever loaded: pickle checkpoints are refused, never unpickled.
A sharded HF checkpoint's ``model.safetensors.index.json`` says which files to read, as for
transformers (``open_checkpoint_files``).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import stat
import struct
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import torch

from .. import strict_json

log = logging.getLogger(__name__)

TORCH_TO_SAFETENSORS = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
SAFETENSORS_TO_TORCH = {v: k for k, v in TORCH_TO_SAFETENSORS.items()}
# Bytes per element of every safetensors dtype code (header checks need no torch dtype for it).
SAFETENSORS_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                        "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# transformers' names (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME) for an unsharded checkpoint's one
# file and a sharded checkpoint's index.
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


class CheckpointError(ValueError):
    """A checkpoint file or tensor is missing, malformed or inconsistent; names both."""

    def __init__(self, path: str | Path, problem: str, tensor: str | None = None):
        self.path, self.tensor = str(path), tensor
        where = f"{path}" + (f": tensor '{tensor}'" if tensor else "")
        super().__init__(f"{where}: {problem}")


def torch_dtype(name: str) -> torch.dtype:
    try:
        return DTYPE_NAMES[name]
    except KeyError:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}; got {name!r}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPE_NAMES.items()}[dtype]


def check_regular_file(path: Path) -> os.stat_result:
    """``path``'s stat (symlinks followed); CheckpointError naming it if it is not a regular file:
    a broken symlink (common in copied HF-hub snapshots, whose files are links into a blob store),
    a directory, a pipe or device (opening one could block), or a path that cannot be examined."""
    try:
        info = path.stat()
    except OSError as exc:
        if path.is_symlink():
            raise CheckpointError(path, f"is a broken symlink to {os.readlink(path)} ({exc.strerror})") from None
        raise CheckpointError(path, f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(path, "is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(path, "is not a regular file (a pipe, socket or device)")
    return info


class _NegativeZero(int):
    """The literal ``-0``: json.loads reads it as 0, the safetensors library (a Rust usize) refuses it.
    Not an ``int`` by type, so the entry checks below refuse it, naming the tensor."""


def _header_int(literal: str) -> int:
    return _NegativeZero(0) if literal == "-0" else int(literal)


def read_header(path: str | Path) -> dict:
    """Parse and validate a safetensors header without reading tensor data."""
    path = Path(path)
    size = check_regular_file(path).st_size
    try:
        with path.open("rb") as handle:
            raw = handle.read(8)
            if len(raw) < 8:
                raise CheckpointError(path, "truncated safetensors file (no header length)")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > min(size - 8, 100 * 2**20):
                raise CheckpointError(path, f"corrupt safetensors header (claims {header_len} bytes, file has {size})")
            encoded = handle.read(header_len)
    except OSError as exc:  # e.g. no read permission, an I/O error
        raise CheckpointError(path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        header = strict_json.loads(encoded, parse_int=_header_int)
    except strict_json.JsonError as exc:
        raise CheckpointError(path, f"corrupt safetensors header: its JSON {exc}") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "corrupt safetensors header (not a JSON object)")
    metadata = header.get("__metadata__")
    # As the safetensors library reads it (an optional map of string to string): anything else there
    # is refused by transformers' and TensorRT-LLM's loaders, so it is refused here too.
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise CheckpointError(path, f"corrupt safetensors header: __metadata__ must be an object of strings, "
                                    f"got {json.dumps(metadata)[:80]}")
    data_len = size - 8 - header_len
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = info["data_offsets"]
            shape, code = list(info["shape"]), info["dtype"]
            if not all(type(v) is int for v in (start, end, *shape)) or not isinstance(code, str):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(path, "corrupt header entry (needs integer data_offsets [start, end], an "
                                        "integer shape and a dtype)", name) from None
        if end > data_len:
            raise CheckpointError(path, f"truncated: data ends at byte {data_len}, tensor needs {end}", name)
        if not 0 <= start <= end or min(shape, default=0) < 0:
            raise CheckpointError(path, f"corrupt header entry (data_offsets [{start}, {end}], shape {shape})", name)
        itemsize = SAFETENSORS_ITEMSIZE.get(code)
        if itemsize is not None and end - start != _numel(shape) * itemsize:
            raise CheckpointError(path, f"corrupt header entry: data_offsets [{start}, {end}] span {end - start} "
                                        f"bytes, shape {shape} x {code} needs {_numel(shape) * itemsize}", name)
        spans.append((start, end, name))
    # Like the safetensors library: tensors are laid end to end, no overlap, no gap, nothing after.
    position, previous = 0, None
    for start, end, name in sorted(spans):
        if start != position:
            problem = (f"overlaps tensor '{previous}'" if start < position
                       else f"leaves a gap of {start - position} bytes after " + (f"tensor '{previous}'" if previous
                                                                                 else "the header"))
            raise CheckpointError(path, f"corrupt header entry: data_offsets [{start}, {end}] {problem}", name)
        position, previous = end, name
    if position != data_len:
        raise CheckpointError(path, f"corrupt safetensors file: tensors end at byte {position} of a "
                                    f"{data_len}-byte data buffer", previous)
    return header


class SafetensorsFile:
    """A lazily read safetensors file: names, shapes and dtypes from the header, data on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.header = read_header(self.path)
        self.metadata = self.header.pop("__metadata__", None) or {}
        self._handle = None

    def keys(self) -> list[str]:
        return list(self.header)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def dtype(self, name: str) -> torch.dtype:
        code = self.header[name]["dtype"]
        if code not in SAFETENSORS_TO_TORCH:
            raise CheckpointError(self.path, f"unsupported dtype {code}", name)
        return SAFETENSORS_TO_TORCH[code]

    def _open(self, name: str):
        if name not in self.header:
            raise CheckpointError(self.path, "not in this file", name)
        if self._handle is None:
            from safetensors import safe_open

            try:
                self._handle = safe_open(str(self.path), framework="pt")
            except Exception as exc:  # safetensors raises its own error types
                raise CheckpointError(self.path, f"cannot open ({exc})") from None
        return self._handle

    def get(self, name: str) -> torch.Tensor:
        handle = self._open(name)
        try:
            return handle.get_tensor(name)
        except Exception as exc:
            raise CheckpointError(self.path, f"cannot read ({exc})", name) from None

    def rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of tensor ``name`` (only those bytes are read)."""
        handle = self._open(name)
        try:
            return handle.get_slice(name)[start:stop]
        except Exception as exc:
            raise CheckpointError(self.path, f"cannot read rows {start}:{stop} ({exc})", name) from None


@dataclass(frozen=True)
class CheckpointFiles:
    """The safetensors files an HF checkpoint's tensors are read from, opened (headers checked)."""

    files: list[SafetensorsFile]
    unlisted: tuple[str, ...] = ()  # *.safetensors files beside the index that it does not list: not read


def open_checkpoint_files(directory: str | Path, always_read: tuple[str, ...] = ()) -> CheckpointFiles:
    """The safetensors files of an HF checkpoint directory, each header read and checked.

    Without ``model.safetensors.index.json``: every ``*.safetensors`` file but hidden ones (pickle-only checkpoints are
    refused). With one, as transformers loads a sharded checkpoint, the index is the authority: the
    files its ``weight_map`` lists (each must exist) and, where present, those named in
    ``always_read`` (files of tensors a backbone's index need not list); every tensor of those files
    is read, as transformers reads every key of each listed shard, and where the map disagrees with
    the files a warning says so (``_warn_weight_map_disagreements``). Other ``*.safetensors`` files are not read, as transformers
    ignores them: a stale shard of an earlier save would otherwise double tensors; a warning names
    them. An unlisted ``model.safetensors`` is refused: transformers would load it alone and ignore
    the index, so which of the two is the checkpoint is ambiguous.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(directory, "is not a directory")
    index = directory / INDEX_FILE
    if not os.path.lexists(index):
        paths = _visible_safetensors(directory)
        if not paths:
            _refuse_no_safetensors(directory)
        return CheckpointFiles([SafetensorsFile(path) for path in paths])
    weight_map = read_weight_map(index)
    tensors_per_shard = Counter(weight_map.values())
    listed = sorted(tensors_per_shard)  # transformers' order
    for name in listed:
        if not os.path.lexists(directory / name):
            raise CheckpointError(index, f"lists shard {name} for {tensors_per_shard[name]} tensor(s), but there "
                                         "is no such file")
    unlisted = [p.name for p in _visible_safetensors(directory) if p.name not in tensors_per_shard]
    if SINGLE_FILE in unlisted and (directory / SINGLE_FILE).is_file():
        raise CheckpointError(directory / SINGLE_FILE, f"is beside {INDEX_FILE}, which does not list it: transformers "
                                                       f"would load it alone and ignore the index's {len(listed)} "
                                                       "shard(s). Remove whichever is stale")
    extra = [name for name in unlisted if name in always_read]
    ignored = tuple(name for name in unlisted if name not in always_read)
    if ignored:
        log.warning("%s: ignoring %s, not listed in %s (as transformers does)", directory, ", ".join(ignored),
                    INDEX_FILE)
    shards = [SafetensorsFile(directory / name) for name in listed]
    others = [SafetensorsFile(directory / name) for name in extra]
    _warn_weight_map_disagreements(index, weight_map, shards, others, ignored)
    return CheckpointFiles([*shards, *others], ignored)


def _visible_safetensors(directory: Path) -> list[Path]:
    """The directory's ``*.safetensors`` files, sorted, hidden ones left out: a dot-file is a
    tool's partial or temporary copy (pathlib's glob, unlike a shell's, matches them)."""
    return sorted(p for p in directory.glob("*.safetensors") if not p.name.startswith("."))


def read_weight_map(index: Path) -> dict[str, str]:
    """A sharded checkpoint index's ``weight_map`` (stored tensor name -> shard file name); CheckpointError
    naming the index if it cannot be read, is not a JSON object with one, or names a shard that is not a
    ``*.safetensors`` file beside it (nothing outside the checkpoint directory is read, pickles never)."""
    check_regular_file(index)
    try:
        data = strict_json.loads(index.read_bytes())
    except OSError as exc:
        raise CheckpointError(index, f"cannot be read ({exc.strerror or exc})") from None
    except strict_json.JsonError as exc:
        raise CheckpointError(index, str(exc)) from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(shard, str) for shard in weight_map.values()):
        raise CheckpointError(index, "needs a \"weight_map\" object of tensor name -> shard file name")
    if not weight_map:
        raise CheckpointError(index, "has an empty \"weight_map\": it lists no shard files")
    for tensor, shard in weight_map.items():
        if Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise CheckpointError(index, f"weight_map puts it in {shard!r}, not the name of a *.safetensors file "
                                         "beside the index", tensor)
    return weight_map


def _warn_weight_map_disagreements(index: Path, weight_map: Mapping[str, str], shards: list[SafetensorsFile],
                                   others: list[SafetensorsFile], ignored: tuple[str, ...]) -> None:
    """Where ``weight_map`` does not say which tensors each listed shard holds: one warning naming the
    first disagreeing tensor, the index and the file that holds it.

    A warning, not an error: transformers uses the map only to pick the shard files and then reads
    every tensor in them, so a checkpoint whose map is stale (a tensor left out, an entry for a tensor
    dropped later, say a text-only copy without its vision tensors) loads there and must load here.
    What matters is checked elsewhere: a tensor in two files (HFCheckpoint) and a tensor the model
    needs but no read file holds (``HFCheckpoint.validate_names``). ``others``: the files read though
    unlisted; ``ignored``: the unlisted files not read, whose headers are looked at only to say where
    a tensor the map misplaces is."""
    by_name = {shard.path.name: shard for shard in shards}
    problems: dict[str, str] = {}  # tensor -> what is wrong, one per tensor
    for shard in shards:
        for tensor in shard.keys():
            mapped = weight_map.get(tensor)
            if mapped is None:
                problems.setdefault(tensor, f"is not in weight_map, but {shard.path.name} holds it")
            elif mapped != shard.path.name:
                also = " too" if tensor in by_name[mapped].header else ""
                problems.setdefault(tensor, f"weight_map puts it in {mapped}, but {shard.path.name} holds it{also}")
    holders: dict[str, str] | None = None
    for tensor, mapped in weight_map.items():
        if tensor in problems or tensor in by_name[mapped].header:
            continue
        if holders is None:
            holders = _tensor_holders(index.parent, others, ignored)
        holder = holders.get(tensor)
        where = ("no other file holds it" if holder is None else f"it is in {holder}" +
                 (", which the index does not list" if holder in ignored else ""))
        problems[tensor] = f"weight_map puts it in {mapped}, which does not hold it; {where}"
    if problems:
        tensor, problem = next(iter(problems.items()))
        more = f" ({len(problems)} tensors disagree in all)" if len(problems) > 1 else ""
        log.warning("%s", CheckpointError(index, f"{problem}{more}; every tensor of the listed shards is read, as "
                                                 "transformers does", tensor))


def _tensor_holders(directory: Path, others: list[SafetensorsFile], ignored: tuple[str, ...]) -> dict[str, str]:
    """Stored tensor name -> the name of a file holding it, among ``others`` and the unread ``ignored``
    files (only for error messages: an ignored file whose header cannot be read is skipped)."""
    holders = {tensor: other.path.name for other in others for tensor in other.keys()}
    for name in ignored:
        try:
            header = read_header(directory / name)
        except CheckpointError:
            continue
        for tensor in header:
            if tensor != "__metadata__":
                holders.setdefault(tensor, name)
    return holders


def _refuse_no_safetensors(directory: Path) -> None:
    """CheckpointError for a directory without safetensors files, naming its pickles if it has some."""
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            directory,
            f"holds only pickle weights ({', '.join(pickles[:3])}); they are never loaded because unpickling "
            "runs arbitrary code. Convert them to safetensors first.",
        )
    raise CheckpointError(directory, "holds no *.safetensors files")


class StreamingSafetensorsWriter:
    """Write one safetensors file tensor by tensor, one chunk in memory at a time.

    Every tensor is declared up front (``plan``) so the header can be written first; the
    data are then appended in declaration order, either a whole tensor at a time with
    ``write(name, chunks)``, or push-style with ``begin(name)``, ``append(chunk)``... and
    ``end()``, which lets a caller fill several files side by side (the converter feeds
    every tp rank of a stage from one read of the source). Each tensor must get exactly its
    declared bytes, in its declared dtype. The file is written under a temporary name and
    renamed by ``close()`` only when every tensor is complete; ``abort()`` removes it.
    """

    def __init__(self, path: str | Path, plan: Iterable[tuple[str, tuple[int, ...], torch.dtype]],
                 metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        self._order: list[str] = []
        self._plan: dict[str, tuple[tuple[int, ...], torch.dtype, int, int]] = {}
        header: dict = {}
        if metadata:
            header["__metadata__"] = dict(metadata)
        offset = 0
        for name, shape, dtype in plan:
            if name in self._plan:
                raise ValueError(f"{self.path}: tensor '{name}' declared twice")
            nbytes = _numel(shape) * _element_size(dtype)
            header[name] = {"dtype": TORCH_TO_SAFETENSORS[dtype], "shape": list(shape),
                            "data_offsets": [offset, offset + nbytes]}
            self._plan[name] = (tuple(shape), dtype, offset, nbytes)
            self._order.append(name)
            offset += nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # data must start 8-byte aligned
        self.total_bytes = 8 + len(encoded) + offset
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self._handle = self._tmp.open("wb")
        self._handle.write(struct.pack("<Q", len(encoded)))
        self._handle.write(encoded)
        self._next = 0  # index of the next tensor to begin
        self._current: str | None = None  # the tensor being appended to
        self._written = 0  # its bytes so far

    def begin(self, name: str) -> None:
        """Start tensor ``name``; it must be the next declared one and the previous must be ended."""
        if self._current is not None:
            raise ValueError(f"{self.path}: tensor '{name}' begun before '{self._current}' was ended")
        if self._next >= len(self._order) or self._order[self._next] != name:
            expected = self._order[self._next] if self._next < len(self._order) else "nothing"
            raise ValueError(f"{self.path}: tensor '{name}' written out of order (expected {expected})")
        self._current, self._written = name, 0

    def _begun(self, call: str) -> tuple[str, tuple[int, ...], torch.dtype, int]:
        """(name, shape, dtype, bytes) of the tensor being written; ValueError if none is."""
        if self._current is None:
            raise ValueError(f"{self.path}: {call}() without begin()")
        shape, dtype, _, nbytes = self._plan[self._current]
        return self._current, shape, dtype, nbytes

    def append(self, chunk: torch.Tensor) -> None:
        """Append the bytes of ``chunk`` (any shape, the declared dtype) to the current tensor."""
        name, shape, dtype, nbytes = self._begun("append")
        if chunk.dtype != dtype:
            raise ValueError(f"{self.path}: tensor '{name}' chunk has dtype {chunk.dtype}, declared {dtype}")
        data = chunk.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy()
        if self._written + data.nbytes > nbytes:
            raise ValueError(f"{self.path}: tensor '{name}' overflows its {nbytes} bytes (shape {shape})")
        self._handle.write(memoryview(data))
        self._written += data.nbytes

    def end(self) -> None:
        """Finish the current tensor; it must have received exactly its declared bytes."""
        name, shape, _, nbytes = self._begun("end")
        if self._written != nbytes:
            raise ValueError(f"{self.path}: tensor '{name}' got {self._written} bytes, shape {shape} needs {nbytes}")
        self._current = None
        self._next += 1

    def write(self, name: str, chunks: torch.Tensor | Iterable[torch.Tensor]) -> None:
        """The whole tensor ``name`` from one tensor or an iterable of row chunks."""
        self.begin(name)
        for chunk in [chunks] if isinstance(chunks, torch.Tensor) else chunks:
            self.append(chunk)
        self.end()

    def close(self, fsync: bool = False) -> None:
        """Rename the complete file into place (after an fsync if asked); incomplete: removed, ValueError."""
        missing = self._order[self._next:]
        if missing or self._current is not None:
            self.abort()
            raise ValueError(f"{self.path}: tensors never written: {', '.join(missing[:5])}")
        self._handle.flush()
        if fsync:
            os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._handle.close()
        self._tmp.unlink(missing_ok=True)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def check_disjoint(output: str | Path, other: str | Path, output_what: str = "output",
                   other_what: str = "the source checkpoint") -> None:
    """ValueError naming both paths unless ``output`` and ``other`` are apart: neither the same
    directory (symlinks resolved), nor one inside the other. Writing (and with ``--overwrite``
    replacing) ``output`` must never delete or mix into ``other``."""
    out, src = Path(output).resolve(), Path(other).resolve()
    if out == src:
        relation = "is"
    elif src.is_relative_to(out):
        relation = "contains"
    elif out.is_relative_to(src):
        relation = "is inside"
    else:
        return
    raise ValueError(f"{out}: the {output_what} {relation} {other_what} {src}; writing it (or replacing it with "
                     f"--overwrite) would destroy or mix into {other_what}. Choose a directory outside it")


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename directory ``src`` to ``dst``; FileExistsError (nothing touched) if ``dst`` exists.

    Linux ``renameat2(RENAME_NOREPLACE)`` makes the check and the rename one atomic step;
    elsewhere (or on a file system without it) the check comes just before a plain rename,
    which on POSIX can itself only replace an empty directory, never a filled one.
    """
    import ctypes
    import errno

    func = None
    try:
        func = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        pass
    if func is not None:
        at_fdcwd, rename_noreplace = -100, 1
        func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        if func(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_noreplace) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EEXIST or err == errno.ENOTEMPTY:
            raise FileExistsError(err, os.strerror(err), str(dst))
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise OSError(err, os.strerror(err), str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(exc.errno, exc.strerror, str(dst)) from None
        raise


@dataclass(frozen=True)
class OutputKind:
    """What one writer puts in its output directory, as globs of paths relative to it (a
    directory's glob ends with "/"). ``--overwrite`` replaces only an empty directory or one that
    holds nothing else: a previous output of the same writer, never a folder of other files."""

    name: str
    patterns: tuple[str, ...]

    def foreign_entry(self, directory: Path) -> str | None:
        """The first entry of ``directory`` (top level first) that no pattern matches, or None."""
        for root, dirs, files in os.walk(directory):
            base = Path(root).relative_to(directory)
            entries = sorted([(d, "/") for d in dirs] + [(f, "") for f in files])
            for name, slash in entries:
                relative = (base / name).as_posix()
                if not any(_glob_matches(relative + slash, pattern) for pattern in self.patterns):
                    return relative
        return None


def _glob_matches(relative: str, pattern: str) -> bool:
    """fnmatch component by component: a ``*`` never crosses a "/" (``plugins/*.so.*`` must not
    take in ``plugins/x.so.d/thesis.tex``)."""
    parts, globs = relative.split("/"), pattern.split("/")
    return len(parts) == len(globs) and all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, globs))


# A directory no writer recognises: only an empty one may be replaced.
ANY_EMPTY_DIRECTORY = OutputKind("output", ())


def check_output_dir(target: str | Path, kind: OutputKind, overwrite: bool) -> None:
    """Refuse an existing ``target`` unless ``overwrite`` may replace it (see ``check_replaceable``).

    Without ``overwrite`` FileExistsError says to pass it (for a directory it could replace)."""
    target = Path(target).resolve()
    if not os.path.lexists(target):
        return
    check_replaceable(target, kind)
    if not overwrite:
        raise FileExistsError(f"{target}: output already exists; pass --overwrite to replace it")


def check_replaceable(target: str | Path, kind: OutputKind) -> None:
    """FileExistsError naming ``target`` unless replacing it can destroy nothing but a previous
    output of ``kind``: it must be a directory, neither the current directory nor one above it, and
    hold only ``kind``'s files (or nothing)."""
    target = Path(target).resolve()
    remedy = "remove it yourself or choose another output directory"
    if not target.is_dir():
        raise FileExistsError(f"{target}: is a file, not a trt-neg {kind.name} directory; {remedy}")
    cwd = Path.cwd().resolve()
    if cwd.is_relative_to(target):
        relation = "is" if cwd == target else "contains"
        raise FileExistsError(f"{target}: {relation} the current directory; replacing it would delete the directory "
                              f"this command runs in; {remedy}")
    foreign = kind.foreign_entry(target)
    if foreign is not None:
        rule = f" ({', '.join(kind.patterns)})" if kind.patterns else ""
        raise FileExistsError(f"{target}: holds files that are not part of a trt-neg {kind.name} (e.g. {foreign}); "
                              f"--overwrite replaces only an empty directory or a previous {kind.name}{rule}; {remedy}")


@contextmanager
def atomic_output_dir(target: str | Path, overwrite: bool = False,
                      kind: OutputKind = ANY_EMPTY_DIRECTORY) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; rename it into place on success.

    An interrupted or failed run leaves ``target`` untouched and removes the temporary
    directory. An existing ``target`` is replaced only with ``overwrite``, and only if it is an
    empty directory or a previous output of ``kind`` (``check_replaceable``, checked before and
    again just before the swap). Without ``overwrite``, a ``target`` that already exists, or
    that appears while the output is being written (a concurrent writer that finished first),
    is never touched: the temporary directory is removed and ``FileExistsError`` names ``target``.
    """
    import shutil
    import tempfile

    target = Path(target).resolve()
    check_output_dir(target, kind, overwrite)
    # The missing parent directories, deepest first: a failed run removes those it created (if still empty).
    created = [p for p in target.parents if not p.exists()]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output should not be
    except OSError as exc:
        _remove_empty_dirs(created)
        raise PermissionError(f"{target}: cannot write output here ({exc.strerror or exc})") from None
    try:
        yield tmp
        if overwrite and os.path.lexists(target):
            check_replaceable(target, kind)  # it may have changed while the output was written
            # a private name, so concurrent overwriters never trip over each other's old copy
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "old")
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old / "old", target)  # put the previous output back
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                _rename_noreplace(tmp, target)
            except FileExistsError:
                raise FileExistsError(f"{target}: output appeared while this one was being written (another "
                                      "writer?); it was left as it is. Pass --overwrite to replace it") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty_dirs(created)
        raise


def _remove_empty_dirs(dirs: list[Path]) -> None:
    """rmdir each of ``dirs`` (deepest first) while empty; stop at the first that is not (or is gone)."""
    for directory in dirs:
        try:
            os.rmdir(directory)
        except OSError:
            return
