"""Requests, sampling, the in-flight batching scheduler, the engine loop and backends.

See ``docs/runtime.md`` for the decisions (seeds, mode 0, limits, finish reasons).
Importing this package needs only torch; backends import their model code lazily.
"""

from .backend import Backend, BackendRow, BackendSample
from .frontend import EngineFrontend
from .llm_engine import LLMEngine, RequestHandle
from .request import FinishReason, Request, RequestResult, TokenOutput
from .sampling_params import SamplingParams
from .scheduler import ScheduledBatch, Scheduler, SchedulerConfig

__all__ = [
    "Backend", "BackendRow", "BackendSample", "EngineFrontend", "FinishReason", "LLMEngine", "Request", "RequestHandle",
    "RequestResult", "SamplingParams", "ScheduledBatch", "Scheduler", "SchedulerConfig", "TokenOutput",
]
