"""Torch CUDA extension of the fused NEG kernel (plugins/neg/negKernel.cu).

Built on first use with ``torch.utils.cpp_extension.load`` (needs CUDA torch and nvcc);
importing this module never builds anything and never needs CUDA.
"""

from __future__ import annotations

import os
import threading
from typing import Optional

import torch

from . import PLUGINS_DIR

_lock = threading.Lock()
_ext = None


def available() -> bool:
    return torch.cuda.is_available()


def load(verbose: bool = False):
    """Build (cached by torch under TORCH_EXTENSIONS_DIR) and return the extension module."""
    global _ext
    if not torch.cuda.is_available():
        raise RuntimeError("NEG CUDA extension: needs a CUDA build of torch and a visible GPU")
    with _lock:
        if _ext is None:
            from torch.utils.cpp_extension import load as _load

            major, minor = torch.cuda.get_device_capability()
            os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
            _ext = _load(
                name="trt_neg_cuda",
                sources=[str(PLUGINS_DIR / "neg" / "negTorch.cpp"), str(PLUGINS_DIR / "neg" / "negKernel.cu")],
                extra_cflags=["-O3", "-std=c++17"],
                extra_cuda_cflags=["-O3", "-std=c++17"],
                extra_include_paths=[str(PLUGINS_DIR)],
                verbose=verbose,
            )
        return _ext


def _rows(x, n: int, device) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.int64).reshape(-1)
    if t.numel() == 1:
        t = t.expand(n)
    return t.to(device).contiguous()


def neg_step(hidden, logits, weights, *, activation="silu", top_k=8, temperature=1.0, seeds=0, offsets=0,
             threshold=None, entropy: Optional[torch.Tensor] = None, with_guided=True):
    """CUDA twin of :func:`trt_neg.neg.neg_step`; with ``entropy`` given, skips the head
    (twin of :func:`trt_neg.neg.gated_topk_sample`).  W1 is cast to the hidden dtype."""
    from ..neg import ACTIVATION_CODES, NegStepOutput, _check_sampling_args, canonical_activation

    _check_sampling_args(top_k, temperature)
    top_k = min(int(top_k), int(logits.shape[1]))  # k = min(top_k, V), as in the definition
    if top_k > 1024:
        raise ValueError(f"top_k: the CUDA kernel supports min(top_k, V) <= 1024, got {top_k}")
    ext = load()
    dev = logits.device
    n = logits.shape[0]
    tau = torch.as_tensor(weights.threshold if threshold is None else threshold, dtype=torch.float32).reshape(1).to(dev)
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
        logits=logits.float().contiguous(), tau=tau, seeds=_rows(seeds, n, dev), offsets=_rows(offsets, n, dev),
        activation=ACTIVATION_CODES[canonical_activation(activation)], top_k=int(top_k),
        temperature=float(temperature), with_guided=bool(with_guided), **kw)
    return NegStepOutput(token=token.long(), entropy=ent, fired=fired.bool(), status=status,
                         guided_logits=guided if with_guided else None)
