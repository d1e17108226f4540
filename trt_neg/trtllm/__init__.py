"""TensorRT-LLM 1.2.x engine definition of Darwin-NEG (issue #6).

Importing this package needs neither tensorrt nor tensorrt_llm: the engine classes are
imported on first use (``trt_neg.trtllm.DarwinNegForCausalLM``), and only then is
tensorrt_llm required. Without it, using them raises :class:`TensorRTLLMUnavailable`,
whose message names the requirement (tensorrt_llm 1.2.x, as shipped in NVIDIA's
TensorRT-LLM NGC container) instead of a bare ``ModuleNotFoundError``.

Modules:
  config.py   DarwinNegConfig(PretrainedConfig): the converted checkpoint's config.json
  model.py    DarwinNegForCausalLM: the network (Qwen3.5 gated attention + Gated DeltaNet
              + SwiGLU + LM head + the NEG plugin)
  plugins.py  loading libtrt_neg_plugins.so and functional wrappers for our plugins
See docs/trtllm_network.md.
"""

from __future__ import annotations

import importlib
from typing import Any

TRTLLM_REQUIREMENT = "tensorrt_llm 1.2.x"
TRTLLM_SUPPORTED_PREFIX = "1.2."

_HINT = (
    f"the TensorRT-LLM engine path needs {TRTLLM_REQUIREMENT} (with TensorRT 10 and a CUDA GPU); "
    "it is not installable from PyPI on these machines. Run it inside NVIDIA's TensorRT-LLM NGC "
    "container (nvcr.io/nvidia/tensorrt-llm/release:1.2.x, see docker/), or use the torch "
    "backend (run.py --backend torch), which needs only torch."
)


class TensorRTLLMUnavailable(ImportError):
    """tensorrt_llm (or tensorrt) is missing or is not a 1.2.x release."""


def require_tensorrt_llm() -> Any:
    """Import and return ``tensorrt_llm``; raise :class:`TensorRTLLMUnavailable` with a clear message."""
    try:
        module = importlib.import_module("tensorrt_llm")
    except ImportError as exc:  # ModuleNotFoundError, or a broken install (libnvinfer missing)
        raise TensorRTLLMUnavailable(f"cannot import tensorrt_llm ({exc}): {_HINT}") from exc
    version = str(getattr(module, "__version__", ""))
    if not version.startswith(TRTLLM_SUPPORTED_PREFIX) and not getattr(module, "_TRT_NEG_STUB", False):
        raise TensorRTLLMUnavailable(
            f"found tensorrt_llm {version or '(unknown version)'}, but this engine definition is written "
            f"against {TRTLLM_REQUIREMENT} (the last releases with the TensorRT engine backend): {_HINT}")
    return module


_LAZY = {
    "DarwinNegForCausalLM": "model",
    "DarwinNegModel": "model",
    "DarwinNegDecoderLayer": "model",
    "GatedDeltaNet": "model",
    "DarwinNegAttention": "model",
    "register_with_tensorrt_llm": "model",
    "DarwinNegConfig": "config",
}

__all__ = ["TRTLLM_REQUIREMENT", "TensorRTLLMUnavailable", "require_tensorrt_llm", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
