"""tensorrt_llm/mapping.py stand-in: shared by both stubs (tests/trtllm_stub_shared/mapping.py)."""

from trtllm_stub_shared.mapping import Mapping  # noqa: F401
