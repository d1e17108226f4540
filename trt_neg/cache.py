"""Where trt-neg keeps what it builds or writes once and reuses (host libraries, the built-in tiny model)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$TRT_NEG_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/trt_neg``."""
    root = os.environ.get("TRT_NEG_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trt_neg"


def cache_dir_origin() -> str:
    """Which setting chose :func:`cache_dir` (for error messages): the variable, or the default."""
    if os.environ.get("TRT_NEG_CACHE"):
        return "$TRT_NEG_CACHE"
    if os.environ.get("XDG_CACHE_HOME"):
        return "$XDG_CACHE_HOME/trt_neg"
    return "the default ~/.cache/trt_neg"
