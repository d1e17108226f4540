"""Numeric (torch, CPU) stand-in of tensorrt_llm 1.2.x for CPU tests (see tests/trtllm_numeric_stub/README.md)."""

__version__ = "1.2.0-trt-neg-numeric-stub"
_TRT_NEG_STUB = True
