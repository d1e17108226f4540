"""tensorrt_llm/_utils.py stand-in: shared by both stubs (tests/trtllm_stub_shared/_utils.py)."""

from trtllm_stub_shared._utils import pad_vocab_size, str_dtype_to_np, str_dtype_to_trt  # noqa: F401
