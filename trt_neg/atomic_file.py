"""Files written whole or not at all: a temporary file beside the target, renamed into place.

An interrupted or failed write leaves the previous file (or nothing), never half of one, and
the new file gets the usual permissions of a new file (0666 less the umask), not the 0600 of
the temporary file it was written as.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a temporary path beside ``path`` to write; on a clean exit it is renamed over
    ``path``, on an exception removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``fsync`` flushes it to disk before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
    return Path(path)


def unwritable_reason(path: str | os.PathLike[str], *, make_parents: bool = False) -> str | None:
    """Why :func:`atomic_write_text` could not write ``path`` (None when it can), found out before
    the work whose result it is: ``path`` is a directory, its folder is missing (made first with
    ``make_parents``), or a file cannot be created there. The folder is written to once (a probe
    file, removed): a permission check alone passes for root on /proc."""
    path = Path(path)
    if path.is_dir():
        return "is a directory"
    folder = path.parent
    try:
        if make_parents:
            folder.mkdir(parents=True, exist_ok=True)
        elif not folder.is_dir():
            return f"directory {folder} does not exist"
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return f"cannot write in {folder} ({exc.strerror or exc})"
    return None


__all__ = ["atomic_path", "atomic_write_text", "unwritable_reason"]
