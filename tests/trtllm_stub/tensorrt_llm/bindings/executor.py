"""Recording fake of ``tensorrt_llm.bindings.executor`` (tensorrt_llm 1.2.x) for CPU tests.

Only what ``trt_neg/trtllm/executor.py`` uses. Constructor signatures (argument names,
defaults, keyword-only markers) copy the real bindings so that a wrong keyword fails here
as it would in the container. Checked against NVIDIA/TensorRT-LLM sources read through the
project's source index (the index serves single file versions, not tags):

* ``cpp/tensorrt_llm/nanobind/executor/request.cpp`` @008b2b8d (and the pybind twin
  ``pybind/executor/request.cpp`` @007a7508): ``FinishReason``, ``SamplingConfig``,
  ``AdditionalModelOutput``, ``OutputConfig``, ``Request``, ``AdditionalOutput``,
  ``Result``, ``Response``;
* ``cpp/tensorrt_llm/nanobind/executor/executorConfig.cpp`` @008b2b8d: ``KvCacheConfig``,
  ``ExecutorConfig`` (incl. ``additional_model_outputs``);
* ``cpp/tensorrt_llm/nanobind/executor/executor.cpp`` @1dd50d07: ``Executor(model_path,
  model_type, executor_config)``, ``enqueue_request``, ``await_responses(timeout=None)``,
  ``cancel_request(id)``, ``shutdown``;
* ``cpp/tensorrt_llm/nanobind/executor/bindings.cpp`` @01315fdb: ``ModelType``, ``BatchingType``;
* response semantics: ``cpp/tensorrt_llm/batch_manager/llmRequest.cpp::createResult``
  @119c6e60 (streaming sends only the new tokens; additional outputs are named
  ``"generation_" + name`` and hold the whole ``[beam_width, max_tokens, ...]`` buffer),
  ``batch_manager/utils/inflightBatchingUtils.cpp::copyAdditionalOutputs`` @a35c38f3
  (generated token i's value at ``[beam, i]``), ``include/.../batch_manager/llmRequest.h``
  ``allocAdditionalOutputs`` (buffer shape, pinned host memory: ``output`` is a CPU torch tensor);
* an additional output is served only when named in ``ExecutorConfig.additional_model_outputs``
  too (``docs/source/legacy/advanced/executor.md`` @04fa274f): the fake answers a request for an
  unconfigured one with an error response.

Multi-GPU (LEADER mode, the only mode modelled): the fake's "MPI" is what the adapter reads
too — ``tensorrt_llm._utils.mpi_rank()`` / ``mpi_world_size()`` if a test provides them, else
``OMPI_COMM_WORLD_RANK`` / ``OMPI_COMM_WORLD_SIZE`` (or ``PMI_RANK`` / ``PMI_SIZE``), else rank 0
of 1. As in ``executor/executorImpl.cpp`` @036a60f7 (``initializeWorkers``, ``canEnqueueRequests``,
``checkParallelApiUsage``): without ``participant_ids`` the MPI size must equal the engine's
tp*pp (``config.json`` ``pretrained_config.mapping``), the leader is rank 0,
``can_enqueue_requests()`` is true only there (and only before ``shutdown``), and a non-leader's
``enqueue_request`` / ``await_responses`` / ``cancel_request`` throw. ``ParallelConfig``,
``CommunicationType``, ``CommunicationMode``: ``nanobind/executor/executorConfig.cpp`` (index id
69765689) and ``nanobind/executor/bindings.cpp`` (id 783259216). The real non-leader
``shutdown()`` blocks until the leader shuts down; here it returns at once (one process).

Scripted replay: a test sets :data:`RESPONDER` to ``fn(request, request_id) -> [Step, ...]``.
:meth:`Executor.await_responses` emits one step per active request per call (requests
interleave like in-flight batching). A request finishes by itself like the real executor:
``LENGTH`` at ``max_tokens``, ``STOP_WORDS`` on a stop word (the token is included),
``END_ID`` on ``end_id``; a script that runs out leaves the request pending until
``cancel_request`` (final response ``CANCELLED``). Every call is recorded in :data:`EVENTS`.

After ``shutdown()``, ``enqueue_request``, ``await_responses`` and ``cancel_request`` throw
"Shutdown called", as ``executorImpl.cpp`` (index id 571425092: ``TLLM_CHECK_WITH_INFO(
!mShutdownCalled, ...)`` in ``enqueueRequests``, ``awaitResponses``, ``cancelRequest``) does;
a second ``shutdown()`` returns at once (``if (mShutdownCalled) return;``).
"""

from __future__ import annotations

import datetime
import enum
import itertools
import json
import os
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import torch

RESPONDER: Callable[["Request", int], list["Step"]] | None = None
EVENTS: list[tuple] = []
INSTANCES: list["Executor"] = []
OUTPUT_NAME_PREFIX = "generation_"  # llmRequest.cpp::createResult @119c6e60


def reset() -> None:
    global RESPONDER, OUTPUT_NAME_PREFIX
    RESPONDER = None
    OUTPUT_NAME_PREFIX = "generation_"
    EVENTS.clear()
    INSTANCES.clear()


@dataclass
class Step:
    token: int | None = None
    entropy: float | None = None
    fired: int | None = None
    final: "FinishReason | None" = None  # finish now with this reason (after the token, if any)
    error: str | None = None  # an error response instead


# ------------------------------------------------------------------------------ enums
class ModelType(enum.Enum):
    DECODER_ONLY = 0
    ENCODER_ONLY = 1
    ENCODER_DECODER = 2


class BatchingType(enum.Enum):
    STATIC = 0
    INFLIGHT = 1


class CommunicationType(enum.Enum):
    MPI = 0


class CommunicationMode(enum.Enum):
    LEADER = 0
    ORCHESTRATOR = 1


class FinishReason(enum.Enum):
    NOT_FINISHED = 0
    END_ID = 1
    STOP_WORDS = 2
    LENGTH = 3
    TIMED_OUT = 4
    CANCELLED = 5


def _optional(value, kind, name):
    if value is not None and (isinstance(value, bool) and kind is not bool or not isinstance(value, kind)):
        raise TypeError(f"{name}: incompatible type {type(value).__name__}")
    return value


def _token_list(value, name):
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        raise TypeError(f"{name}: expected list[int], got {value!r}")
    return value


# ---------------------------------------------------------------------------- configs
class SamplingConfig:
    def __init__(self, beam_width=1, *, top_k=None, top_p=None, top_p_min=None, top_p_reset_ids=None,
                 top_p_decay=None, seed=None, temperature=None, min_tokens=None, beam_search_diversity_rate=None,
                 repetition_penalty=None, presence_penalty=None, frequency_penalty=None, length_penalty=None,
                 early_stopping=None, no_repeat_ngram_size=None, num_return_sequences=None, min_p=None,
                 beam_width_array=None):
        self.beam_width = _optional(beam_width, int, "beam_width")
        self.top_k = _optional(top_k, int, "top_k")
        self.top_p = _optional(top_p, float, "top_p")
        self.seed = _optional(seed, int, "seed")
        self.temperature = _optional(temperature, float, "temperature")
        if self.seed is not None and not 0 <= self.seed < 2**64:  # RandomSeedType = uint64_t
            raise TypeError("seed: out of uint64 range")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        # executor/samplingConfig.cpp: checkTopP TLLM_CHECK(topP > 0.f) and (topP <= 1.f);
        # checkTemperature TLLM_CHECK(temperature >= 0.f).
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if self.temperature is not None and self.temperature < 0.0:
            raise ValueError("temperature must be >= 0")
        self.others = dict(top_p_min=top_p_min, top_p_reset_ids=top_p_reset_ids, top_p_decay=top_p_decay,
                           min_tokens=min_tokens, repetition_penalty=repetition_penalty,
                           presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                           length_penalty=length_penalty, early_stopping=early_stopping,
                           no_repeat_ngram_size=no_repeat_ngram_size, num_return_sequences=num_return_sequences,
                           min_p=min_p, beam_width_array=beam_width_array,
                           beam_search_diversity_rate=beam_search_diversity_rate)


class AdditionalModelOutput:
    def __init__(self, name, gather_context=False):
        self.name = _optional(name, str, "name")
        self.gather_context = _optional(gather_context, bool, "gather_context")


class OutputConfig:
    def __init__(self, return_log_probs=False, return_context_logits=False, return_generation_logits=False,
                 exclude_input_from_output=False, return_encoder_output=False, return_perf_metrics=False,
                 additional_model_outputs=None):
        if additional_model_outputs is not None and not all(
                isinstance(a, AdditionalModelOutput) for a in additional_model_outputs):
            raise TypeError("additional_model_outputs: expected list[AdditionalModelOutput]")
        self.return_log_probs, self.return_context_logits = return_log_probs, return_context_logits
        self.return_generation_logits = return_generation_logits
        self.exclude_input_from_output = exclude_input_from_output
        self.return_encoder_output, self.return_perf_metrics = return_encoder_output, return_perf_metrics
        self.additional_model_outputs = None if additional_model_outputs is None else list(additional_model_outputs)


class KvCacheConfig:
    def __init__(self, enable_block_reuse=True, max_tokens=None, max_attention_window=None, sink_token_length=None,
                 free_gpu_memory_fraction=None, host_cache_size=None, onboard_blocks=True,
                 cross_kv_cache_fraction=None, secondary_offload_min_priority=None, event_buffer_max_size=0, *,
                 enable_partial_reuse=True, copy_on_partial_reuse=True, use_uvm=False, runtime_defaults=None):
        self.enable_block_reuse = _optional(enable_block_reuse, bool, "enable_block_reuse")
        self.max_tokens = max_tokens
        self.free_gpu_memory_fraction = _optional(free_gpu_memory_fraction, float, "free_gpu_memory_fraction")
        self.enable_partial_reuse = enable_partial_reuse


class ParallelConfig:
    def __init__(self, communication_type=CommunicationType.MPI, communication_mode=CommunicationMode.LEADER,
                 device_ids=None, participant_ids=None, orchestrator_config=None, num_nodes=None):
        if not isinstance(communication_type, CommunicationType) or not isinstance(communication_mode,
                                                                                  CommunicationMode):
            raise TypeError("ParallelConfig(communication_type: CommunicationType, communication_mode: "
                            "CommunicationMode, ...)")
        self.communication_type, self.communication_mode = communication_type, communication_mode
        self.device_ids = None if device_ids is None else _token_list(list(device_ids), "device_ids")
        self.participant_ids = None if participant_ids is None else _token_list(list(participant_ids),
                                                                                "participant_ids")
        self.orchestrator_config, self.num_nodes = orchestrator_config, num_nodes


class ExecutorConfig:
    def __init__(self, max_beam_width=1, scheduler_config=None, kv_cache_config=None, enable_chunked_context=False,
                 normalize_log_probs=True, iter_stats_max_iterations=1000, request_stats_max_iterations=0,
                 batching_type=BatchingType.INFLIGHT, max_batch_size=None, max_num_tokens=None, parallel_config=None,
                 peft_cache_config=None, logits_post_processor_config=None, decoding_config=None,
                 use_gpu_direct_storage=False, gpu_weights_percent=1.0, max_queue_size=None,
                 extended_runtime_perf_knob_config=None, debug_config=None, recv_poll_period_ms=0,
                 max_seq_idle_microseconds=180000000, spec_dec_config=None, guided_decoding_config=None,
                 additional_model_outputs=None, cache_transceiver_config=None, gather_generation_logits=False,
                 mm_embedding_offloading=False, enable_trt_overlap=False):
        self.max_beam_width = _optional(max_beam_width, int, "max_beam_width")
        self.kv_cache_config = kv_cache_config if kv_cache_config is not None else KvCacheConfig()
        if not isinstance(self.kv_cache_config, KvCacheConfig):
            raise TypeError("kv_cache_config: expected KvCacheConfig")
        self.enable_chunked_context = _optional(enable_chunked_context, bool, "enable_chunked_context")
        if not isinstance(batching_type, BatchingType):
            raise TypeError("batching_type: expected BatchingType")
        self.batching_type = batching_type
        self.max_batch_size = _optional(max_batch_size, int, "max_batch_size")
        self.max_num_tokens = _optional(max_num_tokens, int, "max_num_tokens")
        self.additional_model_outputs = additional_model_outputs
        self.scheduler_config, self.parallel_config = scheduler_config, parallel_config


class Request:
    def __init__(self, input_token_ids, max_tokens, *, streaming=False, sampling_config=None, output_config=None,
                 end_id=None, pad_id=None, position_ids=None, bad_words=None, stop_words=None, embedding_bias=None,
                 external_draft_tokens_config=None, prompt_tuning_config=None, multimodal_input=None,
                 multimodal_embedding=None, mrope_config=None, lora_config=None, lookahead_config=None,
                 kv_cache_retention_config=None, logits_post_processor_name=None, logits_post_processor=None,
                 encoder_input_token_ids=None, client_id=None, return_all_generated_tokens=False, priority=0.5,
                 type=None, context_phase_params=None, encoder_input_features=None, encoder_output_length=None,
                 cross_attention_mask=None, num_return_sequences=1, eagle_config=None, skip_cross_attn_blocks=None,
                 guided_decoding_params=None, language_adapter_uid=None, allotted_time_ms=None):
        self.input_token_ids = _token_list(input_token_ids, "input_token_ids")
        self.max_tokens = _optional(max_tokens, int, "max_tokens")
        self.streaming = _optional(streaming, bool, "streaming")
        self.sampling_config = sampling_config if sampling_config is not None else SamplingConfig()
        self.output_config = output_config if output_config is not None else OutputConfig()
        if not isinstance(self.sampling_config, SamplingConfig) or not isinstance(self.output_config, OutputConfig):
            raise TypeError("sampling_config / output_config: wrong type")
        self.end_id = _optional(end_id, int, "end_id")
        self.pad_id = _optional(pad_id, int, "pad_id")
        if stop_words is not None:
            stop_words = [_token_list(w, "stop_words[i]") for w in stop_words]
        self.stop_words, self.bad_words = stop_words, bad_words
        self.client_id = client_id
        self.return_all_generated_tokens = return_all_generated_tokens


# ---------------------------------------------------------------------------- results
class AdditionalOutput:
    def __init__(self, name, output):
        self.name, self.output = name, output


class Result:
    def __init__(self):
        self.is_final = False
        self.output_token_ids: list[list[int]] = [[]]
        self.finish_reasons: list[FinishReason] = [FinishReason.NOT_FINISHED]
        self.sequence_index = 0
        self.is_sequence_final = False
        self.decoding_iter = 0
        self.additional_outputs: list[AdditionalOutput] = []


class Response:
    def __init__(self, request_id, result=None, error_msg=None, client_id=None):
        self.request_id, self._result, self._error, self.client_id = request_id, result, error_msg, client_id

    def has_error(self):
        return self._error is not None

    @property
    def error_msg(self):
        return self._error

    @property
    def result(self):
        if self._error is not None:  # the real binding throws here too
            raise RuntimeError("Cannot get the result for a response with an error")
        return self._result


# ---------------------------------------------------------------------------- executor
def _mpi_world() -> tuple[int, int]:
    """The fake's MPI_COMM_WORLD: tensorrt_llm._utils' functions if a test set them, else the launcher's env."""
    import tensorrt_llm._utils as utils

    if hasattr(utils, "mpi_rank") and hasattr(utils, "mpi_world_size"):
        return int(utils.mpi_rank()), int(utils.mpi_world_size())
    for rank_var, size_var in (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"), ("PMI_RANK", "PMI_SIZE")):
        if os.environ.get(size_var):
            return int(os.environ.get(rank_var) or 0), int(os.environ[size_var])
    return 0, 1


def _engine_world_size(model_path) -> int:
    try:
        with open(os.path.join(str(model_path), "config.json"), encoding="utf-8") as handle:
            mapping = json.load(handle).get("pretrained_config", {}).get("mapping") or {}
    except (OSError, ValueError):
        return 1
    return int(mapping.get("tp_size", 1)) * int(mapping.get("pp_size", 1))


class _Active:
    def __init__(self, rid: int, request: Request, script: list[Step]):
        self.rid, self.request, self.script = rid, request, deque(script)
        self.generated = 0
        self.cancelled = False
        dims = request.max_tokens
        self.buffers = {}
        for ao in request.output_config.additional_model_outputs or []:
            dtype = torch.int32 if ao.name == "neg_fired" else torch.float32
            self.buffers[ao.name] = torch.zeros((1, dims), dtype=dtype)  # [beam_width, max_tokens]


class Executor:
    def __init__(self, model_path, model_type, executor_config):
        if not isinstance(model_type, ModelType) or not isinstance(executor_config, ExecutorConfig):
            raise TypeError("Executor(model_path, model_type: ModelType, executor_config: ExecutorConfig)")
        self.model_path, self.model_type, self.config = model_path, model_type, executor_config
        self.rank, self.world_size = _mpi_world()
        pc = executor_config.parallel_config if executor_config.parallel_config is not None else ParallelConfig()
        if pc.communication_mode is not CommunicationMode.LEADER:
            raise NotImplementedError("this fake models LEADER mode only")
        engine_world = _engine_world_size(model_path)
        if pc.participant_ids is None:
            if self.world_size != engine_world:  # executorImpl.cpp::initializeWorkers
                raise RuntimeError("[TensorRT-LLM][ERROR] Assertion failed: With communicationMode kLEADER, MPI "
                                   "worldSize is expected to be equal to tp*pp*cp when participantIds are not "
                                   "specified")
            participants = list(range(engine_world))
        else:
            participants = pc.participant_ids
        self.is_leader = self.rank == participants[0]
        self.enqueued: dict[int, Request] = {}
        self.cancelled: list[int] = []
        self._active: dict[int, _Active] = {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._shutdown = False
        EVENTS.append(("Executor", str(model_path)))
        INSTANCES.append(self)

    def can_enqueue_requests(self):
        return self.is_leader and not self._shutdown

    def _leader_only(self, method):  # executorImpl.cpp::checkParallelApiUsage
        if not self.is_leader:
            EVENTS.append(("non-leader call", method))
            raise RuntimeError(f"With LEADER communication mode, only leader rank is expected to call {method}")

    def _not_shut_down(self, method):  # executorImpl.cpp: TLLM_CHECK_WITH_INFO(!mShutdownCalled, ...)
        if self._shutdown:
            EVENTS.append(("call after shutdown", method))
            raise RuntimeError(f"[TensorRT-LLM][ERROR] Assertion failed: Shutdown called ({method})")

    def enqueue_request(self, request):
        self._not_shut_down("enqueueRequests")
        self._leader_only("enqueueRequests")
        if not isinstance(request, Request):
            raise TypeError("enqueue_request(request: Request)")
        if not request.streaming:
            raise AssertionError("this fake only replays streaming requests")
        with self._cond:
            rid = next(self._ids)
            self.enqueued[rid] = request
            script = RESPONDER(request, rid) if RESPONDER is not None else []
            configured = {a.name for a in self.config.additional_model_outputs or []}
            missing = [a.name for a in request.output_config.additional_model_outputs or []
                       if a.name not in configured]
            if missing:  # not named in ExecutorConfig.additional_model_outputs
                script = [Step(error=f"Additional output tensor not configured in the executor: {missing}")]
            self._active[rid] = _Active(rid, request, list(script))
            EVENTS.append(("enqueue_request", rid))
            self._cond.notify_all()
        return rid

    def cancel_request(self, id=None):
        self._not_shut_down("cancelRequest")
        self._leader_only("cancelRequest")
        with self._cond:
            EVENTS.append(("cancel_request", id))
            self.cancelled.append(id)
            if id in self._active:
                self._active[id].cancelled = True
            self._cond.notify_all()

    def shutdown(self):
        with self._cond:
            if self._shutdown:  # executorImpl.cpp: "Cannot call shutdown multiple times"
                return
            EVENTS.append(("shutdown",))
            self._shutdown = True
            self._cond.notify_all()

    def _ready(self, a: _Active) -> bool:
        return a.cancelled or bool(a.script)

    def await_responses(self, timeout=None):
        self._not_shut_down("awaitResponses")
        self._leader_only("awaitResponses")
        if timeout is not None and not isinstance(timeout, datetime.timedelta):
            raise TypeError("await_responses(timeout: datetime.timedelta | None)")
        wait = None if timeout is None else timeout.total_seconds()
        with self._cond:
            self._cond.wait_for(lambda: self._shutdown or any(self._ready(a) for a in self._active.values()), wait)
            responses = []
            for rid in sorted(self._active):
                a = self._active[rid]
                if self._ready(a):
                    responses.append(self._step(a))
            for r in responses:
                if r.has_error() or r.result.is_final:
                    self._active.pop(r.request_id, None)
            return responses

    def _step(self, a: _Active) -> Response:
        result = Result()
        if a.cancelled:
            return self._final(a, result, [], FinishReason.CANCELLED)
        step = a.script.popleft()
        if step.error is not None:
            return Response(a.rid, error_msg=step.error)
        new = []
        reason = step.final
        if step.token is not None:
            new = [step.token]
            for name, buf in a.buffers.items():
                value = step.entropy if name == "neg_entropy" else step.fired if name == "neg_fired" else None
                if value is None:  # the engine has no such output (what the real executor reports)
                    return Response(a.rid, error_msg=f"Additional generation output tensor not found {name}")
                buf[0, a.generated] = value
            a.generated += 1
            req = a.request
            if reason is None and step.token in [w[0] for w in (req.stop_words or []) if len(w) == 1]:
                reason = FinishReason.STOP_WORDS
            if reason is None and req.end_id is not None and step.token == req.end_id:
                reason = FinishReason.END_ID
            if reason is None and a.generated >= req.max_tokens:
                reason = FinishReason.LENGTH
        if reason is not None:
            return self._final(a, result, new, reason)
        result.output_token_ids = [new]
        result.decoding_iter = a.generated
        result.additional_outputs = self._outputs(a)
        return Response(a.rid, result=result)

    def _final(self, a: _Active, result: Result, new: list[int], reason: FinishReason) -> Response:
        result.is_final = result.is_sequence_final = True
        result.output_token_ids = [new]
        result.finish_reasons = [reason]
        result.decoding_iter = a.generated
        result.additional_outputs = self._outputs(a)
        return Response(a.rid, result=result)

    def _outputs(self, a: _Active) -> list[AdditionalOutput]:
        return [AdditionalOutput(OUTPUT_NAME_PREFIX + name, buf.clone()) for name, buf in a.buffers.items()]


__all__: list[Any] = []
