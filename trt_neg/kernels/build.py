"""Build a plugins/ C++ host library with g++ on first use, cached, and load it with ctypes.

The library is compiled into a cache directory (:func:`trt_neg.cache.cache_dir`)
under a key made of the hash of its sources, the compiler and the flags; it is written to
a temporary name and renamed into place, so concurrent builds never see half a file.
OpenMP is used where the compiler supports it.

``$TRT_NEG_HOST_CXXFLAGS`` (read at build time, split as a shell would) adds compiler flags after
each library's own, so they win: the sanitiser tests build the same sources with
``-fsanitize=address,undefined`` that way (tests/test_sanitizers.py). The flags are part of the
cache key, so such a build never replaces the plain one.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

from ..cache import cache_dir

EXTRA_FLAGS_VAR = "TRT_NEG_HOST_CXXFLAGS"


class HostLibrary:
    """One shared library built from ``main_source`` (which includes the other ``sources``);
    ``libs`` are the linker's arguments, which follow the source."""

    def __init__(self, name: str, main_source: Path, sources: Sequence[Path], flags: Sequence[str],
                 declare: Callable[[ctypes.CDLL], None], libs: Sequence[str] = ()):
        self.name, self.main_source = name, main_source
        self.sources = [main_source, *sources]
        self.flags = ["-std=c++17", "-shared", "-fPIC", "-fno-fast-math", "-ffp-contract=off", *flags]
        self.libs = list(libs)
        self.declare = declare  # sets argtypes/restype once the library is loaded
        self._lock = threading.Lock()
        self._lib: Optional[ctypes.CDLL] = None

    def _compiler(self) -> str:
        cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
        if not cxx:
            raise RuntimeError(f"{self.name} host library: no C++ compiler found (install g++ or set CXX)")
        return cxx

    def _compile(self, out: Path, cxx: str, flags: list[str]) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            cmd = [cxx, *flags, str(self.main_source), "-o", tmp, *self.libs]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"{self.name} host library: compile failed:\n{' '.join(cmd)}\n{r.stderr[-4000:]}")
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def path(self) -> Path:
        """Build (if needed) and return the path of the library."""
        cxx = self._compiler()
        h = hashlib.sha256()
        for p in self.sources:
            h.update(p.read_bytes())
        extra = shlex.split(os.environ.get(EXTRA_FLAGS_VAR, ""))
        for openmp in (True, False):
            flags = self.flags + extra + (["-fopenmp"] if openmp else [])
            key = hashlib.sha256(h.digest() + " ".join([cxx, *flags, *self.libs]).encode()).hexdigest()[:16]
            out = cache_dir() / self.name / key / f"libtrtneg_{self.name}_host.so"
            if out.exists():
                return out
            try:
                self._compile(out, cxx, flags)
                return out
            except RuntimeError:
                if not openmp:
                    raise
        raise AssertionError("unreachable")

    def load(self) -> ctypes.CDLL:
        with self._lock:
            if self._lib is None:
                lib = ctypes.CDLL(str(self.path()))
                self.declare(lib)
                self._lib = lib
            return self._lib
