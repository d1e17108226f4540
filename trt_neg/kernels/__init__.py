"""Loaders for the NEG C++/CUDA code in ``plugins/``.

* :mod:`trt_neg.kernels.host` -- builds the CPU host library with g++ on first use
  (cached by a hash of the sources) and calls it through ctypes.  Needs only g++.
* :mod:`trt_neg.kernels.cuda_ext` -- builds the torch CUDA extension with
  ``torch.utils.cpp_extension.load`` when CUDA torch and nvcc exist.

Importing this package never compiles anything and never needs CUDA.
"""

from pathlib import Path

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
# The torch extensions' module names (cuda_ext builds them; the GPU check clears their build locks).
NEG_EXTENSION = "trt_neg_cuda"
GDN_EXTENSION = "trt_neg_gdn_cuda"


def check_splits(splits) -> int:
    """The NEG op's ``splits`` argument (host library and CUDA kernel alike): 0 = the
    kernel's automatic split-V plan, 1 = one pass / block per row, > 1 = that many slices."""
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 0:
        raise ValueError(f"splits: expected an integer >= 0 (0 = automatic), got {splits!r}")
    return splits


# The most threads one host-library call may ask OpenMP for. More threads than CPUs is allowed
# (oversubscription only slows a call down), but libgomp ends the process, with no Python error,
# when it cannot create the threads asked for (10**9 tries to allocate 216 GB).
MAX_HOST_THREADS = 1024


def check_num_threads(num_threads) -> int:
    """The host libraries' ``num_threads``: 0 = OpenMP's default, else 1..MAX_HOST_THREADS."""
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or not 0 <= num_threads <= MAX_HOST_THREADS:
        raise ValueError(f"num_threads: expected an integer in [0, {MAX_HOST_THREADS}] (0 = OpenMP's default), "
                         f"got {num_threads!r}")
    return num_threads


__all__ = ["MAX_HOST_THREADS", "PLUGINS_DIR", "check_num_threads", "check_splits"]
