"""tensorrt_llm/models/generation_mixin.py stand-in: shared by both stubs (tests/trtllm_stub_shared/)."""

from trtllm_stub_shared.generation_mixin import GenerationMixin  # noqa: F401
