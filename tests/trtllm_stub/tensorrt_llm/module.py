"""tensorrt_llm/module.py stand-in: shared by both stubs (tests/trtllm_stub_shared/module.py)."""

from trtllm_stub_shared.module import Module, ModuleList  # noqa: F401
