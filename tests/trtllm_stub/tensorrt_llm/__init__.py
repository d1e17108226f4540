"""Recording stub of tensorrt_llm 1.2.x for CPU tests (see tests/trtllm_stub/README.md)."""

__version__ = "1.2.0-trt-neg-stub"
_TRT_NEG_STUB = True
