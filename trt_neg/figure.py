"""Matplotlib figures written as PNG files: the headless backend, and a figure saved whole or
not at all (a temporary file beside the target, renamed into place), then closed."""

from __future__ import annotations

import os
from pathlib import Path

from .atomic_file import atomic_path


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` atomically and close it; returns the path."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=dpi)
    finally:
        pyplot().close(fig)
    return path
