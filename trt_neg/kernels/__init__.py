"""Loaders for the NEG C++/CUDA code in ``plugins/``.

* :mod:`trt_neg.kernels.host` -- builds the CPU host library with g++ on first use
  (cached by a hash of the sources) and calls it through ctypes.  Needs only g++.
* :mod:`trt_neg.kernels.cuda_ext` -- builds the torch CUDA extension with
  ``torch.utils.cpp_extension.load`` when CUDA torch and nvcc exist.

Importing this package never compiles anything and never needs CUDA.
"""

from pathlib import Path

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"


def check_splits(splits) -> int:
    """The NEG op's ``splits`` argument (host library and CUDA kernel alike): 0 = the
    kernel's automatic split-V plan, 1 = one pass / block per row, > 1 = that many slices."""
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 0:
        raise ValueError(f"splits: expected an integer >= 0 (0 = automatic), got {splits!r}")
    return splits


__all__ = ["PLUGINS_DIR", "check_splits"]
