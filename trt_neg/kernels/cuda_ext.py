"""Torch CUDA extensions of the plugin kernels: the fused NEG op (plugins/neg/negKernel.cu,
binding negTorch.cpp) and the Gated DeltaNet op (plugins/gdn/gdnKernel.cu, binding
gdnTorch.cpp; used by the GPU check).

Built on first use with ``torch.utils.cpp_extension.load`` (needs CUDA torch, nvcc and
ninja; cached by torch under ``TORCH_EXTENSIONS_DIR``); importing this module never builds
anything and never needs CUDA.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional

import torch

from . import GDN_EXTENSION, NEG_EXTENSION, PLUGINS_DIR, check_splits

_lock = threading.Lock()
_ext = None
_gdn_ext = None

NEG_SOURCES = (PLUGINS_DIR / "neg" / "negTorch.cpp", PLUGINS_DIR / "neg" / "negKernel.cu")
GDN_SOURCES = (PLUGINS_DIR / "gdn" / "gdnTorch.cpp", PLUGINS_DIR / "gdn" / "gdnKernel.cu")
# No -std here: torch.utils.cpp_extension passes the standard its own headers need (C++20 since
# torch 2.14 refuses anything older), and a later -std of ours would override it.
EXTRA_CFLAGS = ["-O3"]
EXTRA_CUDA_CFLAGS = ["-O3"]


def available() -> bool:
    return torch.cuda.is_available()


_MATH_HEADERS = ("cublas_v2.h", "cublasLt.h", "cusparse.h", "cusolverDn.h")
_RUNTIME_HEADER = Path("include") / "cuda_runtime_api.h"
DEFAULT_TOOLKIT = "/usr/local/cuda"


def _nvcc_top(nvcc: str) -> Optional[str]:
    """The toolkit folder ``nvcc`` belongs to, as nvcc itself reports it (``--dryrun`` prints
    ``#$ TOP=<toolkit>/bin/..``): right also when ``nvcc`` is a wrapper script or a link."""
    try:
        r = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^#\$ TOP=(.+)$", r.stdout + r.stderr, re.MULTILINE)
    return os.path.normpath(m.group(1).strip()) if m else None


def toolkit_nvcc(home: str) -> str:
    """The nvcc torch's build runs for toolkit ``home``: ``$PYTORCH_NVCC`` if set, else its bin/nvcc."""
    return os.environ.get("PYTORCH_NVCC") or os.path.join(home, "bin", "nvcc")


def nvcc_release(nvcc: str) -> Optional[str]:
    """``nvcc --version``'s release ("13.0"), or None where it does not run or say."""
    try:
        r = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release ([0-9.]+)", r.stdout)
    return m.group(1).rstrip(".") if m else None


def _toolkit_missing(home: str) -> list[str]:
    """What torch's build needs from a toolkit folder and ``home`` lacks: the CUDA headers, and
    ``bin/nvcc`` (unless ``$PYTORCH_NVCC`` names the compiler)."""
    missing = [] if (Path(home) / _RUNTIME_HEADER).is_file() else [str(_RUNTIME_HEADER)]
    if not os.environ.get("PYTORCH_NVCC") and not (Path(home) / "bin" / "nvcc").is_file():
        missing.append("bin/nvcc")
    return missing


def cuda_toolkit(torch_choice: Optional[str]) -> str:
    """The CUDA toolkit the extensions build with: a folder with ``include/cuda_runtime_api.h``
    and ``bin/nvcc``.  ``torch_choice`` is torch.utils.cpp_extension's CUDA_HOME.  An explicit
    ``$CUDA_HOME`` / ``$CUDA_PATH`` must be one (a wrong setting is an error, not overruled).
    Otherwise torch guessed, from ``nvcc`` on PATH as ``<dir>/bin/nvcc``: a wrapper script at
    /usr/local/bin/nvcc makes that /usr/local, where no CUDA header is, and the build would fail
    deep inside ninja.  Then the toolkit nvcc reports (``nvcc --dryrun``) is taken, else
    DEFAULT_TOOLKIT; if none is one, the error names each folder tried and what it lacks."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            home = os.environ[var]
            missing = _toolkit_missing(home)
            if missing:
                raise RuntimeError(f"${var}={home}: no CUDA toolkit there ({' and '.join(missing)} missing); "
                                   "set it to the toolkit's folder (the one holding bin/nvcc and include/)")
            return home
    nvcc = shutil.which("nvcc")
    candidates = [(torch_choice, "torch's guess"),
                  (_nvcc_top(nvcc) if nvcc else None, f"the toolkit of nvcc on PATH ({nvcc})"),
                  (DEFAULT_TOOLKIT, "the default")]
    problems = [] if nvcc else ["no nvcc on PATH"]
    for home, why in candidates:
        if not home:
            continue
        missing = _toolkit_missing(home)
        if not missing:
            return home
        problems.append(f"{home} ({why}) lacks {' and '.join(missing)}")
    raise RuntimeError("no CUDA toolkit found to build the extensions with: " + "; ".join(problems)
                       + ". Install the CUDA toolkit (nvcc and headers) or set $CUDA_HOME to it")


def _math_library_includes(cuda_home: Optional[str]) -> list[str]:
    """Header folders of NVIDIA's pip packages (nvidia-cublas, nvidia-cusparse, ...), only when
    the CUDA toolkit that nvcc belongs to lacks the cuBLAS/cuSPARSE/cuSOLVER headers that
    torch's ATen/cuda/CUDAContext.h includes (a bare nvcc install next to a pip-installed
    CUDA torch).  Empty when the toolkit has them."""
    if cuda_home and all((Path(cuda_home) / "include" / h).exists() for h in _MATH_HEADERS):
        return []
    found: list[str] = []
    for base in sys.path:
        root = Path(base or ".") / "nvidia"
        if not root.is_dir():
            continue
        for inc in sorted(root.glob("*/include")) + sorted(root.glob("*/*/include")):
            if any((inc / h).exists() for h in _MATH_HEADERS) and str(inc) not in found:
                found.append(str(inc))
    return found


def _build(name: str, sources, verbose: bool):
    if not torch.cuda.is_available():
        raise RuntimeError(f"{name}: needs a CUDA build of torch and a visible GPU")
    from torch.utils import cpp_extension

    home = cuda_toolkit(cpp_extension.CUDA_HOME)
    # torch reads this module global whenever it needs the toolkit (nvcc, include/), and set
    # it once, at import, from its guess.
    cpp_extension.CUDA_HOME = home
    major, minor = torch.cuda.get_device_capability()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
    return cpp_extension.load(name=name, sources=[str(s) for s in sources], extra_cflags=EXTRA_CFLAGS,
                              extra_cuda_cflags=EXTRA_CUDA_CFLAGS,
                              extra_include_paths=[str(PLUGINS_DIR)] + _math_library_includes(home), verbose=verbose)


def load(verbose: bool = False):
    """Build (cached by torch under TORCH_EXTENSIONS_DIR) and return the NEG extension module."""
    global _ext
    with _lock:
        if _ext is None:
            _ext = _build(NEG_EXTENSION, NEG_SOURCES, verbose)
        return _ext


def load_gdn(verbose: bool = False):
    """Build (cached) and return the Gated DeltaNet extension module (``gdn_forward``)."""
    global _gdn_ext
    with _lock:
        if _gdn_ext is None:
            _gdn_ext = _build(GDN_EXTENSION, GDN_SOURCES, verbose)
        return _gdn_ext


HEAD_ALGOS = {"gemv": 0, "mma": 1}  # NegHeadAlgo in plugins/neg/negKernel.h


def _head_algo(name: str) -> int:
    if name not in HEAD_ALGOS:
        raise ValueError(f"head_algo: expected one of {sorted(HEAD_ALGOS)}, got {name!r}")
    return HEAD_ALGOS[name]


def _rows(x, n: int, name: str, device) -> torch.Tensor:
    from ..neg import kernel_rows_int64

    return kernel_rows_int64(x, n, name).to(device).contiguous()


def neg_step(hidden, logits, weights, *, activation="silu", top_k=8, temperature=1.0, seeds=0, offsets=0,
             threshold=None, entropy: Optional[torch.Tensor] = None, with_guided=True, splits=0, head_algo="gemv"):
    """CUDA twin of :func:`trt_neg.neg.neg_step`; with ``entropy`` given, skips the head
    (twin of :func:`trt_neg.neg.gated_topk_sample`).  W1 is cast to the hidden dtype.
    ``splits``: 0 = the kernel's automatic plan, 1 = one block per row, > 1 = that many
    vocabulary slices per row (the split-V path; docs/neg.md).  ``head_algo``: "gemv" (default)
    or "mma" (tensor-core tiles; bf16/fp16 hidden, opt-in until timed on a GPU)."""
    from ..neg import ACTIVATION_CODES, NegStepOutput, canonical_activation, check_sampling_args, threshold_scalar

    check_sampling_args(top_k, temperature)
    top_k = min(int(top_k), int(logits.shape[1]))  # k = min(top_k, V), as in the definition
    if top_k > 1024:
        raise ValueError(f"top_k: the CUDA kernel supports min(top_k, V) <= 1024, got {top_k}")
    ext = load()
    dev = logits.device
    n = logits.shape[0]
    tau = threshold_scalar(weights.threshold if threshold is None else threshold).reshape(1).to(dev)
    kw = dict(hidden=None, w1=None, b1=None, w2=None, b2=None, entropy_in=None)
    if entropy is not None:
        kw["entropy_in"] = torch.as_tensor(entropy, dtype=torch.float32).reshape(-1).to(dev).contiguous()
    else:
        h = hidden.contiguous()
        kw.update(
            hidden=h,
            w1=weights.fc1_weight.to(dev, h.dtype).contiguous(),
            b1=weights.fc1_bias.to(dev, torch.float32).contiguous(),
            w2=weights.fc2_weight.to(dev, torch.float32).reshape(-1).contiguous(),
            b2=weights.fc2_bias.to(dev, torch.float32).reshape(1).contiguous(),
        )
    token, ent, fired, status, guided = ext.neg_step(
        logits=logits.float().contiguous(), tau=tau, seeds=_rows(seeds, n, "seeds", dev),
        offsets=_rows(offsets, n, "offsets", dev),
        activation=ACTIVATION_CODES[canonical_activation(activation)], top_k=int(top_k),
        temperature=float(temperature), with_guided=bool(with_guided), splits=check_splits(splits),
        head_algo=_head_algo(head_algo), **kw)
    return NegStepOutput(token=token.long(), entropy=ent, fired=fired.bool(), status=status,
                         guided_logits=guided if with_guided else None)


def neg_head(hidden, weights, activation="silu", head_algo="gemv") -> torch.Tensor:
    """The kernel's NEG-Head pass alone (no logits): H_hat [N] fp32, twin of :func:`trt_neg.neg.neg_head`."""
    from ..neg import ACTIVATION_CODES, canonical_activation

    ext = load()
    h = hidden.contiguous()
    dev = h.device
    empty = torch.empty(0, dtype=torch.int64, device=dev)
    _, ent, _, _, _ = ext.neg_step(
        hidden=h, logits=None, w1=weights.fc1_weight.to(dev, h.dtype).contiguous(),
        b1=weights.fc1_bias.to(dev, torch.float32).contiguous(),
        w2=weights.fc2_weight.to(dev, torch.float32).reshape(-1).contiguous(),
        b2=weights.fc2_bias.to(dev, torch.float32).reshape(1).contiguous(),
        tau=torch.zeros(1, dtype=torch.float32, device=dev), seeds=empty, offsets=empty, entropy_in=None,
        activation=ACTIVATION_CODES[canonical_activation(activation)], top_k=1, temperature=1.0, with_guided=False,
        head_algo=_head_algo(head_algo))
    return ent


def gdn_forward(qkv, a, b, A_log, dt_bias, state_pool, *, num_k_heads, num_v_heads, head_k_dim, head_v_dim,
                last_token_ids, request_types=None, slot_mapping=None, z=None, norm_weight=None, norm_eps=1e-6,
                remove_padding=True, continue_context=False, algo="auto") -> torch.Tensor:
    """CUDA twin of :func:`trt_neg.kernels.gdn_host.gated_delta_rule` (same arguments; the
    chunk size is the launcher's, ``load_gdn().chunk_size(Hk, Hv, dk, dv)``);
    ``state_pool`` (fp32 CUDA, contiguous) is updated in place.  Where the host op raises for a
    ``slot_mapping`` entry outside the pool, the kernel (which cannot raise) treats that sequence
    as padding: zero output rows, no state touched (docs/gdn_kernel.md)."""
    from .gdn_host import ALGOS

    if algo not in ALGOS:
        raise ValueError(f"algo: expected one of {sorted(ALGOS)}, got {algo!r}")
    ext = load_gdn()
    dev = qkv.device
    batch = len(last_token_ids) if remove_padding else qkv.shape[0]
    i32 = lambda x: torch.as_tensor(x, dtype=torch.int32).reshape(-1).to(dev).contiguous()  # noqa: E731
    rtypes = [0] * batch if request_types is None else [int(t) for t in request_types]
    return ext.gdn_forward(
        qkv=qkv.contiguous(), a=a.contiguous(), b=b.contiguous(), z=None if z is None else z.contiguous(),
        a_log=A_log.to(dev, torch.float32).contiguous(), dt_bias=dt_bias.to(dev, torch.float32).contiguous(),
        norm_weight=None if norm_weight is None else norm_weight.to(dev, torch.float32).contiguous(),
        state_pool=state_pool, slot_mapping=None if slot_mapping is None else i32(slot_mapping),
        last_token_ids=i32(last_token_ids), request_types=rtypes, num_k_heads=int(num_k_heads),
        num_v_heads=int(num_v_heads), head_k_dim=int(head_k_dim), head_v_dim=int(head_v_dim),
        norm_eps=float(norm_eps), remove_padding=bool(remove_padding), continue_context=bool(continue_context),
        algo=ALGOS[algo])
