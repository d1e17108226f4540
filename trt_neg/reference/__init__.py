"""Torch reference of the Qwen3.5 text backbone plus NEG weights, with per-sequence slots."""

from .model import BatchContext, DarwinNegForCausalLM, SlotCache
from .model_runner import ReferenceModelRunner

__all__ = ["BatchContext", "DarwinNegForCausalLM", "ReferenceModelRunner", "SlotCache"]
