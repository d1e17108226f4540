"""``TrtllmExecutorEngine``: Darwin-NEG engines on TensorRT-LLM's C++ executor (in-flight batching).

Like :class:`trt_neg.runtime.LLMEngine` it is an :class:`trt_neg.runtime.frontend.EngineFrontend`,
so the user-facing surface (what ``run.py`` uses) is the same code: ``validate``,
``add_request(request, listener)``, ``submit`` -> :class:`RequestHandle` (``stream()``,
``result()``, ``cancel()``), ``generate(requests)``, asyncio ``stream(request)``,
``has_unfinished()``; so are admission (request ids, seeds, stop ids, the ``max_new_tokens``
cap) and every ``ValueError``'s wording. This class adds the executor side: enqueueing
(``_enqueue``), ``abort_request``, the NEG-mode check, the response dispatcher thread and
``shutdown()``. Outputs are the runtime's :class:`TokenOutput` / :class:`RequestResult`;
per-request bookkeeping (stop tokens and strings, incremental text, timings, the result) is
the runtime's own :class:`trt_neg.runtime.sequence.Sequence`.

How it runs (docs/trtllm_runtime.md has the decisions):

1. ``require_tensorrt_llm()`` — without tensorrt_llm 1.2.x the constructor raises
   :class:`TensorRTLLMUnavailable` with a one-line message naming it and NVIDIA's container;
2. :func:`engine_dir.read_engine_dir` — limits, vocabulary, EOS, NEG facts, plugin library,
   ``world_size`` (tp x pp) and every ``rank{N}.engine``; :func:`check_mpi_launch` — the MPI
   process count must equal ``world_size`` (1 = no mpirun), else :class:`MpiLaunchError`
   naming ``mpirun -n <world_size> python run.py ...``;
3. the plugin library is loaded (``ctypes.CDLL(path, RTLD_GLOBAL)``) **before** the
   executor deserialises the engine (on every rank);
4. ``Executor(engine_dir, ModelType.DECODER_ONLY, ExecutorConfig(max_beam_width=1,
   kv_cache_config=KvCacheConfig(enable_block_reuse=False, ...), enable_chunked_context=False,
   batching_type=INFLIGHT, ...))``; a tp/pp engine adds ``parallel_config =
   ParallelConfig(CommunicationType.MPI, CommunicationMode.LEADER)`` and every rank builds the
   same executor (rank r loads ``rank{r}.engine`` on GPU ``r % gpus_per_node``);
   ``is_leader = executor.can_enqueue_requests()`` (rank 0). Only the leader runs steps 5-6;
   a non-leader refuses requests and its ``shutdown()`` returns when the leader's has (the
   executor broadcasts the leader's requests and its termination to the other ranks);
5. each request is enqueued as a streaming ``Request`` (EOS and stop token ids as single-token
   stop words, ``end_id=-1``; the request's sampling as ``SamplingConfig``; the NEG extras
   ``neg_entropy`` / ``neg_fired`` as ``OutputConfig.additional_model_outputs``);
6. one dispatcher thread calls ``await_responses(timeout)`` and hands every response to its
   request: ``TokenOutput(token, entropy, fired)`` per new token, then the ``RequestResult``.

API provenance — every name below was checked against NVIDIA/TensorRT-LLM sources read
through the project's source index (single file versions, not tags: "@abcd1234" is the commit
of the version read, "id N" an index id where the index gave no commit). 1.2-era corroboration:
the Triton Python backend ``triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/1/model.py``
@0d5352f5 drives ``tensorrt_llm.bindings.executor`` exactly this way (``Executor(path,
ModelType.DECODER_ONLY, ExecutorConfig(...))``, ``await_responses(timeout=timedelta)``,
``cancel_request``, responses finished by ``result.is_final``); nanobind has been the default
binding since PR #6608 (Aug 2025, before 1.2) with the same module and class names as pybind
(PR #6185: "no changes in the Python files required").

* ``Executor(model_path, model_type, executor_config)``, ``enqueue_request(request) -> id``,
  ``await_responses(timeout: datetime.timedelta | None)``, ``cancel_request(id)``,
  ``shutdown()``, ``can_enqueue_requests()``: ``cpp/tensorrt_llm/nanobind/executor/executor.cpp``
  @1dd50d07; usage with ``timedelta`` in ``tensorrt_llm/executor/worker.py`` (id 1131391427).
* ``ModelType.DECODER_ONLY``, ``BatchingType.INFLIGHT``: ``nanobind/executor/bindings.cpp``
  @01315fdb and ``executorConfig.cpp`` @008b2b8d.
* ``KvCacheConfig(enable_block_reuse=True, max_tokens, max_attention_window, sink_token_length,
  free_gpu_memory_fraction, ...)`` (block reuse defaults to **True**: we pass False);
  ``ExecutorConfig(max_beam_width=1, scheduler_config, kv_cache_config, enable_chunked_context,
  ..., batching_type, max_batch_size, max_num_tokens, ..., additional_model_outputs, ...)``:
  ``nanobind/executor/executorConfig.cpp`` @008b2b8d; the read/write property
  ``ExecutorConfig.additional_model_outputs`` exists in both bindings (nanobind id 69765689,
  pybind id 633537790) and ``docs/source/legacy/advanced/executor.md`` @04fa274f says an output
  must be named there *and* in the request's ``OutputConfig``. No context/generation-fusion
  knob is needed: ``executor/executorImpl.cpp::createModel`` (id 571425092) picks
  ``TrtGptModelType::InflightBatching`` (no fusion) by itself when ``isRnnBased()``, and
  ``checkOptionalParams`` (@036a60f7) turns chunked context off for RNN models.
* ``SamplingConfig(beam_width=1, *, top_k, top_p, ..., seed, temperature, ...)``,
  ``OutputConfig(..., additional_model_outputs=[AdditionalModelOutput(name, gather_context=False)])``,
  ``Request(input_token_ids, max_tokens, *, streaming, sampling_config, output_config, end_id,
  pad_id, position_ids, bad_words, stop_words: list[list[int]], ...)``, ``FinishReason.{NOT_FINISHED,
  END_ID, STOP_WORDS, LENGTH, TIMED_OUT, CANCELLED}``, ``Response.{request_id, has_error(),
  error_msg, result}``, ``Result.{is_final, output_token_ids, finish_reasons,
  additional_outputs}``, ``AdditionalOutput.{name, output}``: ``nanobind/executor/request.cpp``
  @008b2b8d (``AdditionalOutput.output`` is a ``tle::Tensor``, ``AdditionalModelOutput(name,
  gather_context=False)`` also in id 557998768) and ``pybind/executor/request.cpp`` @007a7508
  (identical names).
* ``AdditionalOutput.output`` is a **host torch tensor**: the ``tle::Tensor`` caster returns
  ``torch.Tensor`` (nanobind ``type_caster<tensorrt_llm::executor::Tensor>``, id 1039870972;
  pybind twin id 3391852804) and the buffer it wraps
  is pinned host memory (``llmRequest.h::allocAdditionalOutputs``, id 786144818:
  ``BufferManager::pinnedPool``, shape ``[beam_width, max_new_tokens, ...]``; the engine output's
  first dimension must be dynamic).
* Streaming semantics: ``batch_manager/llmRequest.cpp::createResult`` @119c6e60 — a streaming
  response carries only the tokens not sent before (``return_all_generated_tokens=False``;
  ``exclude_input_from_output`` only matters without streaming); additional outputs are
  returned as ``"generation_" + name`` (``"context_" + name`` with ``gather_context``) holding
  the request's whole buffer; ``batch_manager/utils/inflightBatchingUtils.cpp::
  copyAdditionalOutputs`` @a35c38f3 writes generated token i's value at ``[beam, i]`` (the first
  one from the context step). ``LlmRequest::validate`` accepts ``end_id`` in ``[-1, vocab)``
  and the LLM API passes ``end_id=-1`` for ``ignore_eos`` (``executor/worker.py`` id
  1131391427): -1 = no end id. A stop word's tokens are part of ``output_token_ids``: the LLM
  API's ``executor/result.py`` (id 1063746606) trims them on ``STOP_WORDS`` unless
  ``include_stop_str_in_output``.
* Cancellation: ``executorImpl.cpp::terminateCancelledRequests`` (id 571425092) ends every
  active request whose id was cancelled with ``terminateRequestSync(req, kCANCELLED)``
  (``kTIMED_OUT`` if its time ran out); ``populateNewResponses`` then sends its final
  response (``LlmRequest::finishByReason`` sets ``kGENERATION_COMPLETE``, llmRequest.h id
  786144818). Only *active* requests are terminated and only their ids leave
  ``mCancelledReqIds``, so a queued request is cancelled once scheduled; ``cancelRequest`` of a
  request whose final response was already awaited is ignored. After ``shutdown()``,
  ``enqueueRequests`` / ``awaitResponses`` / ``cancelRequest`` throw "Shutdown called"
  (``TLLM_CHECK_WITH_INFO(!mShutdownCalled, ...)``), and ``executionLoop`` runs until its
  active requests are done (``while (!mShutdown || !activeRequests.empty())``).

* Multi-GPU, LEADER mode (docs/trtllm_runtime.md, "Multi-GPU engines", has the decision
  against ORCHESTRATOR mode): ``ParallelConfig(communication_type=MPI,
  communication_mode=LEADER, device_ids=None, participant_ids=None, orchestrator_config=None,
  num_nodes=None)``, ``OrchestratorConfig(is_orchestrator=True, worker_executable_path="",
  orch_leader_comm=None, spawn_processes=True)``, ``ExecutorConfig.parallel_config``:
  ``nanobind/executor/executorConfig.cpp`` (id 69765689); ``CommunicationType.MPI``,
  ``CommunicationMode.{LEADER, ORCHESTRATOR}``: ``nanobind/executor/bindings.cpp`` (id
  783259216). ``tensorrt_llm/runtime/model_runner_cpp.py`` @03832911 (``ModelRunnerCpp``)
  sets ``parallel_config = ParallelConfig(CommunicationType.MPI, CommunicationMode.LEADER,
  device_ids=None by default, orchestrator_config=None)`` and returns at once from
  ``generate`` where ``not executor.can_enqueue_requests()``; ``examples/bindings/executor/
  example_basic.py`` @1a43c7d6 enqueues only ``if executor.can_enqueue_requests()`` and its
  README runs it as ``mpirun -n 4 --allow-run-as-root python3 example_basic.py``.
  ``executor/executorImpl.cpp`` @036a60f7: ``initializeWorkers`` requires MPI worldSize ==
  tp*pp*cp without ``participant_ids`` (default participants 0..N-1, leader = the first);
  ``canEnqueueRequests`` = LEADER mode and leader and not shut down; ``checkParallelApiUsage``
  throws when a non-leader calls ``enqueueRequests`` / ``awaitResponses`` / ``cancelRequest``
  (hence no dispatcher thread there); ``shutdown`` on the leader enqueues a terminate request
  that ``fetchNewRequests`` sees on every rank, and on every rank joins the execution thread,
  so a non-leader's ``shutdown()`` blocks until the leader's (``Executor::Impl::~Impl`` calls
  it too); the nanobind ``Executor.shutdown`` releases the GIL (``nanobind/executor/
  executor.cpp`` @1dd50d07). Devices: ``loadModel`` builds ``WorldConfig::mpi(gpusPerNode
  from config.json, tp, pp, cp, parallelConfig.getDeviceIds())`` and ``getDevice()`` is
  ``deviceIds[rank % deviceIds.size()]`` with ``deviceIds`` defaulting to ``0..gpusPerNode-1``
  (``runtime/worldConfig.h`` id 2970045747, ``worldConfig.cpp`` id 464226422);
  ``runtime/gptJsonConfig.cpp`` (id 809211714) reads ``pretrained_config.mapping.{tp_size,
  pp_size, cp_size, gpus_per_node}`` (``gpus_per_node`` default 8) and names rank r's file
  ``rank{r}.engine``. Rank and size as TensorRT-LLM reads them: ``tensorrt_llm._utils.
  mpi_rank()`` / ``mpi_world_size()`` = mpi4py ``COMM_WORLD`` (id 52995752, late 2025; also
  @000a01de). ORCHESTRATOR mode spawns ``tensorrt_llm/bin/executorWorker`` processes
  (``initializeOrchestrator``: ``MPI_Comm_spawn``, MPI worldSize must be 1), and that C++
  worker registers only TensorRT-LLM's own plugins (``initTrtLlmPlugins()``,
  ``executor_worker/executorWorker.cpp`` @06c0e9b1, 2024 version), not ours.

Still to see in the 1.2.1 container: that the file versions above are what 1.2.1 ships (none
could be tied to a tag; the ``generation_`` prefix is unchanged in every version read, and the
bare name is still accepted as a fallback), and that a request cancelled while still queued
(not yet active) also gets its final response in practice (the source says so, above;
``shutdown`` finishes any the executor never answers). Multi-GPU was never run (no multi-GPU
machine, no tensorrt_llm here): that the NEG plugin's outputs and ``neg_entropy`` /
``neg_fired`` reach the leader intact under tp and pp (for pp the last stage computes them),
and the leader/non-leader shutdown sequence in practice.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from trt_neg.runtime.frontend import EngineFrontend, Listener, Output, RequestHandle, limit_arg
from trt_neg.runtime.request import FinishReason, Request
from trt_neg.runtime.sampling_params import SamplingParams
from trt_neg.runtime.sequence import Sequence
from trt_neg.trtllm import TRTLLM_REQUIREMENT, TensorRTLLMUnavailable, require_tensorrt_llm
from trt_neg.trtllm import engine_dir as engine_dir_mod
from trt_neg.trtllm import plugins

log = logging.getLogger(__name__)

NEG_OUTPUTS = ("neg_entropy", "neg_fired")  # = trt_neg.trtllm.model.NEG_ENTROPY_OUTPUT / NEG_FIRED_OUTPUT
CONTAINER = "nvcr.io/nvidia/tensorrt-llm/release:1.2.x"


def _unavailable_message(exc: BaseException) -> str:
    if isinstance(exc, TensorRTLLMUnavailable) and exc.__cause__ is not None:
        reason = f"cannot import tensorrt_llm ({exc.__cause__})"
    elif isinstance(exc, TensorRTLLMUnavailable):
        version = getattr(sys.modules.get("tensorrt_llm"), "__version__", "(unknown version)")
        reason = f"found tensorrt_llm {version}, not a 1.2.x release"
    else:
        reason = f"cannot import tensorrt_llm.bindings.executor ({exc})"
    reason = " ".join(reason.split())  # one line
    return (f"{reason}. --backend trtllm needs {TRTLLM_REQUIREMENT} (TensorRT-LLM's C++ executor, TensorRT 10 "
            f"and a CUDA GPU), which cannot be installed on this machine: run it inside NVIDIA's TensorRT-LLM "
            f"container ({CONTAINER}, see docker/), or use --backend torch")


def executor_bindings() -> Any:
    """``tensorrt_llm.bindings.executor``; :class:`TensorRTLLMUnavailable` (one line) without tensorrt_llm 1.2.x."""
    try:
        require_tensorrt_llm()
        from tensorrt_llm.bindings import executor
    except ImportError as exc:  # TensorRTLLMUnavailable is an ImportError too
        raise TensorRTLLMUnavailable(_unavailable_message(exc)) from exc
    return executor


# Where the launcher tells a process its MPI rank and size, when tensorrt_llm._utils cannot.
MPI_ENV_VARS = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),  # Open MPI (NVIDIA's containers)
                ("PMI_RANK", "PMI_SIZE"))  # MPICH / Hydra, Intel MPI


class MpiLaunchError(ValueError):
    """The process count under MPI does not match the engine's ``world_size`` (tp x pp)."""


def mpi_world() -> tuple[int, int]:
    """``(rank, size)`` of this process in ``MPI_COMM_WORLD``.

    TensorRT-LLM's own ``tensorrt_llm._utils.mpi_rank()`` / ``mpi_world_size()`` (mpi4py's
    ``COMM_WORLD``, the communicator the C++ executor splits too) where they exist; else the
    launcher's environment (:data:`MPI_ENV_VARS`); ``(0, 1)`` when neither says otherwise.
    """
    try:
        from tensorrt_llm import _utils

        return int(_utils.mpi_rank()), int(_utils.mpi_world_size())
    except (ImportError, AttributeError):
        pass
    for rank_var, size_var in MPI_ENV_VARS:
        try:
            return int(os.environ.get(rank_var) or 0), int(os.environ[size_var])
        except (KeyError, ValueError):
            continue
    return 0, 1


def launch_command(info: "engine_dir_mod.EngineDir") -> str:
    return f"mpirun -n {info.world_size} python run.py --backend trtllm --engine-dir {info.path} ..."


def check_mpi_launch(info: "engine_dir_mod.EngineDir") -> tuple[int, int]:
    """``(rank, size)`` when the process count matches ``info.world_size``; else :class:`MpiLaunchError`.

    LEADER mode needs exactly ``world_size`` MPI processes (``executorImpl.cpp::initializeWorkers``:
    "MPI worldSize is expected to be equal to tp*pp*cp"); this says so before the executor does,
    naming the command.
    """
    rank, size = mpi_world()
    if size == info.world_size:
        return rank, size
    if info.world_size == 1:
        raise MpiLaunchError(f"{info.path}: a single-GPU engine (world_size 1), but this process is one of {size} "
                             "MPI processes: run it without mpirun (or with mpirun -n 1)")
    where = "this process is not running under MPI" if size == 1 else f"this process is one of {size} MPI processes"
    raise MpiLaunchError(f"{info.path}: a {info.world_size}-GPU engine (tp {info.tp_size}, pp {info.pp_size}) runs "
                         f"as {info.world_size} MPI processes, one per GPU, and {where}: launch it with "
                         f"`{launch_command(info)}` (add --allow-run-as-root as root in a container)")


class _Tracked:
    __slots__ = ("seq", "exec_id", "listener", "received", "done")

    def __init__(self, seq: Sequence, listener: Listener | None):
        self.seq, self.listener = seq, listener
        self.exec_id: int | None = None
        self.received = 0  # tokens the executor has sent for this request
        self.done = False


class TrtllmExecutorEngine(EngineFrontend):
    """A Darwin-NEG engine directory served by TensorRT-LLM's executor (see the module docstring)."""

    seeds_neg_draws = False  # the NEG plugin's Philox key is the engine's neg_config.seed, fixed at build time

    def __init__(self, engine_dir: str | os.PathLike[str], *, tokenizer: Any = None, max_batch_size: int | None = None,
                 max_seq_len: int | None = None, max_num_tokens: int | None = None,
                 kv_cache_free_gpu_memory_fraction: float | None = None, plugin_library: str | None = None,
                 poll_interval_s: float = 0.05, clock: Callable[[], float] = time.perf_counter):
        self.tle = executor_bindings()  # first: a machine without tensorrt_llm fails here, cleanly
        info = engine_dir_mod.read_engine_dir(engine_dir)
        self.mpi_rank, self.mpi_size = check_mpi_launch(info)  # tp/pp: one MPI process per rank engine
        self.engine = info
        slots = limit_arg("max_batch_size", max_batch_size, 1, info.max_batch_size, "the engine's max_batch_size")
        seq_len = limit_arg("max_seq_len", max_seq_len, 2, info.max_seq_len, "the engine's max_seq_len")
        tokens = limit_arg("max_num_tokens", max_num_tokens, 1, info.max_num_tokens, "the engine's max_num_tokens")
        super().__init__(max_slots=slots, max_seq_len=seq_len,
                         max_tokens_per_step=min(tokens, info.max_input_len),  # no chunked context
                         vocab_size=info.vocab_size, eos_token_ids=info.eos_token_ids, neg_enabled=info.neg_enabled,
                         neg_seed=info.neg_seed, tokenizer=tokenizer, clock=clock)
        self.poll_interval_s = poll_interval_s

        # The plugin library must be registered before the executor deserialises the engine.
        # TRT_NEG_PLUGIN_LIB overrides the argument, which overrides build_info.json.
        if os.environ.get(plugins.PLUGIN_LIBRARY_ENV):
            lib = None  # load_plugin_library(None) loads the environment's list
        else:
            lib = plugin_library if plugin_library is not None else info.plugin_library
        self.plugin_libraries = plugins.load_plugin_library(lib)

        tle = self.tle
        kv = tle.KvCacheConfig(enable_block_reuse=False,  # a reused KV prefix would not restore the recurrent state
                               free_gpu_memory_fraction=None if kv_cache_free_gpu_memory_fraction is None
                               else float(kv_cache_free_gpu_memory_fraction))
        self.executor_config = tle.ExecutorConfig(
            max_beam_width=1, kv_cache_config=kv, enable_chunked_context=False,
            batching_type=tle.BatchingType.INFLIGHT, max_batch_size=slots, max_num_tokens=tokens)
        self._neg_outputs = list(NEG_OUTPUTS) if info.neg_enabled else []
        if self._neg_outputs:  # the executor only serves outputs named here and in the request
            self.executor_config.additional_model_outputs = self._model_outputs()
        if info.world_size > 1:  # every rank builds the same Executor; rank r loads rank{r}.engine on its GPU
            self.executor_config.parallel_config = tle.ParallelConfig(tle.CommunicationType.MPI,
                                                                      tle.CommunicationMode.LEADER)
        self.executor = tle.Executor(Path(info.path), tle.ModelType.DECODER_ONLY, self.executor_config)
        # LEADER mode: only the leader (MPI rank 0) enqueues, awaits and cancels; the executor
        # broadcasts its requests to the other ranks, which only run their part of the model.
        self.is_leader = bool(self.executor.can_enqueue_requests())

        self._tracked: dict[str, _Tracked] = {}
        self._by_exec: dict[int, _Tracked] = {}
        self._stopping = False
        self._closed = False
        self._shut_down_done = threading.Event()  # set when the first shutdown() has finished
        self._shutdown_thread: threading.Thread | None = None  # the thread running it (its listeners may call again)
        self._thread: threading.Thread | None = None
        if self.is_leader:  # a non-leader's await_responses would throw: no dispatcher there
            self._thread = threading.Thread(target=self._loop, name="trt-neg-trtllm-responses", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ mapping
    def _model_outputs(self) -> list:
        return [self.tle.AdditionalModelOutput(name, gather_context=False) for name in self._neg_outputs]

    def _neg_mode(self, request: Request) -> int:
        """The engine fixes the NEG mode (built with or without NEG); validate() rejects the other one."""
        mode = super()._neg_mode(request)
        if mode == 0 and self.engine.neg_enabled:
            raise ValueError("neg_mode: 0 (NEG off) is not available on this TensorRT-LLM engine: it was built with "
                             "NEG (neg_config.enabled), which applies to every request; use an engine built without "
                             "NEG, or the torch backend, for mode 0")
        if mode == 1 and not self.engine.neg_enabled:
            raise ValueError("neg_mode: 1 (NEG on) is not available on this TensorRT-LLM engine: it was built "
                             "without NEG (neg_config.enabled false); rebuild it with NEG enabled for mode 1")
        return mode

    def _sampling_config(self, sp: SamplingParams, seed: int | None) -> Any:
        if sp.is_greedy:  # top_k 1 = argmax; with NEG fired, the only finite logit
            return self.tle.SamplingConfig(1, top_k=1, seed=seed)
        return self.tle.SamplingConfig(1, top_k=int(sp.top_k), top_p=float(sp.top_p),
                                       temperature=float(sp.temperature), seed=seed)

    def _executor_request(self, seq: Sequence) -> Any:
        stop_ids = sorted(seq.stop_token_ids)
        return self.tle.Request(
            list(seq.prompt), seq.max_new_tokens,
            streaming=True,
            sampling_config=self._sampling_config(seq.sampling, seq.sample_seed),
            output_config=self.tle.OutputConfig(additional_model_outputs=self._model_outputs() or None),
            end_id=-1,  # EOS ids travel as stop words (the model may have several; the token is kept)
            pad_id=self.engine.pad_token_id if self.engine.pad_token_id is not None else
            (self.engine.eos_token_ids[0] if self.engine.eos_token_ids else 0),
            stop_words=[[t] for t in stop_ids] or None,
        )

    # --------------------------------------------------------------- submission
    def _enqueue(self, seq: Sequence, listener: Listener | None) -> None:
        """``executor.enqueue_request``; called with the lock held, so the dispatcher cannot see a
        response before the executor's id is mapped."""
        if self._closed:
            raise RuntimeError("the engine is shut down")
        if not self.is_leader:
            raise RuntimeError(f"MPI rank {self.mpi_rank} of {self.mpi_size} is not the leader: only the rank whose "
                               "executor can_enqueue_requests() (rank 0) submits requests; the other ranks call "
                               "shutdown(), which returns when the leader shuts down")
        tracked = _Tracked(seq, listener)
        tracked.exec_id = self.executor.enqueue_request(self._executor_request(seq))
        self._tracked[seq.request_id] = tracked
        self._by_exec[tracked.exec_id] = tracked

    def abort_request(self, request_id: str) -> bool:
        """Ask the executor to cancel; False if unknown, done or already asked.

        True means asked, not cancelled: a request the executor has already finished (its final
        response on the way) ends with its own finish reason (docs/trtllm_runtime.md).
        """
        with self._lock:  # held across cancel_request: shutdown() cannot shut the executor down in between
            tracked = self._tracked.get(request_id)
            if tracked is None or tracked.seq.cancel_requested or tracked.done:
                return False
            tracked.seq.cancel_requested = True
            self.executor.cancel_request(tracked.exec_id)
        return True

    # --------------------------------------------------------- dispatcher thread
    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "TrtllmExecutorEngine":
        return self  # the dispatcher thread starts with the engine

    def _progress(self) -> None:
        time.sleep(self.poll_interval_s)  # only after shutdown, which has finished every request

    def _loop(self) -> None:
        timeout = datetime.timedelta(seconds=self.poll_interval_s)
        while not self._stopping:
            try:
                responses = self.executor.await_responses(timeout=timeout)
            except Exception:
                if self._stopping:
                    return
                log.exception("await_responses failed")
                time.sleep(self.poll_interval_s)
                continue
            for response in responses or ():
                try:
                    self._on_response(response)
                except Exception:  # never let one response kill the dispatcher
                    log.exception("handling a response for executor request %s failed",
                                  getattr(response, "request_id", "?"))

    def _on_response(self, response: Any) -> None:
        with self._lock:
            tracked = self._by_exec.get(response.request_id)
        if tracked is None or tracked.done:  # a late response after we finished it (stop string, error)
            return
        outputs: list[Output] = []
        try:
            self._apply_response(tracked, response, outputs)
        except Exception as exc:  # e.g. the tokenizer failed on a token: fail this request only, as LLMEngine does
            log.exception("request %s: handling its executor response failed", tracked.seq.request_id)
            self._fail(tracked, response, outputs, exc)
        self._deliver(tracked, outputs)

    def _fail(self, tracked: _Tracked, response: Any, outputs: list[Output], exc: Exception) -> None:
        """End the request with ``error`` and stop its executor request (unless this response was its last)."""
        try:
            final = response.has_error() or bool(response.result.is_final)
        except Exception:
            final = False
        if not final:
            try:
                self.executor.cancel_request(tracked.exec_id)
            except Exception:
                log.exception("cancelling executor request %s failed", tracked.exec_id)
        if not tracked.done:
            self._finish(tracked, FinishReason.ERROR, outputs, error=f"{type(exc).__name__}: {exc}")

    def _apply_response(self, tracked: _Tracked, response: Any, outputs: list[Output]) -> None:
        """The response's new tokens (with their NEG values) and, if it ends the request, the result."""
        seq = tracked.seq
        if response.has_error():
            self._finish(tracked, FinishReason.ERROR, outputs, error=f"executor: {response.error_msg}")
            return
        result = response.result
        new = [int(t) for t in (result.output_token_ids[0] if result.output_token_ids else [])]
        entropies, fired = self._neg_values(result, tracked.received, len(new))
        tracked.received += len(new)
        now = self.clock()
        for i, (token, entropy, flag) in enumerate(zip(new, entropies, fired)):
            last = result.is_final and i == len(new) - 1  # its output carries the held-back text
            outputs.append(seq.append(token, entropy, flag and seq.neg_mode == 1, now, last=last))
            if seq.finish_reason is not None:
                break
        if seq.finish_reason is not None:  # our own stop (stop token, stop string, length)
            if not result.is_final:
                self.executor.cancel_request(tracked.exec_id)
            self._finish(tracked, seq.finish_reason, outputs)
        elif result.is_final:
            reasons = list(result.finish_reasons or [])
            reason, error = self._map_finish(reasons[0] if reasons else None)
            # A final response without tokens: the held-back text reaches the result only (cut at a
            # stop string it completes, which makes it a stop).
            if reason in (FinishReason.STOP, FinishReason.LENGTH) and not new and seq.finish_text():
                reason = FinishReason.STOP
            self._finish(tracked, reason, outputs, error=error)

    def _map_finish(self, reason: Any) -> tuple[FinishReason, str | None]:
        name = getattr(reason, "name", str(reason))
        if name in ("END_ID", "STOP_WORDS"):
            return FinishReason.STOP, None
        if name == "LENGTH":
            return FinishReason.LENGTH, None
        if name == "CANCELLED":
            return FinishReason.CANCELLED, None
        if name == "TIMED_OUT":
            return FinishReason.ERROR, "executor: the request timed out"
        return FinishReason.ERROR, f"executor: final response without a finish reason ({name})"

    def _neg_values(self, result: Any, before: int, count: int) -> tuple[list[float], list[bool]]:
        """Entropy and fired flag of the ``count`` new tokens (generated tokens ``before`` .. ``before+count-1``)."""
        if not self._neg_outputs:  # engine built without NEG: no H_hat output, the gate never fires
            return [math.nan] * count, [False] * count
        by_name = {ao.name: ao.output for ao in (result.additional_outputs or [])}
        values = []
        for name in self._neg_outputs:
            tensor = by_name.get("generation_" + name, by_name.get(name))
            if tensor is None:
                raise RuntimeError(f"the executor response lacks the additional output {name!r} "
                                   f"(got {sorted(by_name)}); was the engine built with NEG?")
            values.append(_token_slice(tensor, before, count, name))
        entropy, fired = values
        return [float(v) for v in entropy], [bool(v) for v in fired]

    def _finish(self, tracked: _Tracked, reason: FinishReason, outputs: list[Output], error: str | None = None) -> None:
        seq = tracked.seq
        seq.finish_reason = reason
        if error is not None:
            seq.error = error
        seq.finish_time = self.clock()
        tracked.done = True
        with self._lock:
            self._seqs.pop(seq.request_id, None)
            self._tracked.pop(seq.request_id, None)
            self._by_exec.pop(tracked.exec_id, None)
        outputs.append(seq.result())

    def _deliver(self, tracked: _Tracked, outputs: list[Output]) -> None:
        if tracked.listener is None:
            return
        for item in outputs:
            try:
                tracked.listener(item)
            except Exception:  # a consumer's failure never stops the dispatcher
                log.exception("output listener for %s failed", item.request_id)

    # ----------------------------------------------------------------- shutdown
    def shutdown(self, cancel: bool = True) -> None:
        """Stop the dispatcher and the executor; with ``cancel`` unfinished requests end cancelled (their
        listeners are told), without it they run to their end first (the executor's own shutdown waits
        for its active requests too).

        From an output listener (on the dispatcher thread) it returns at once and a helper
        thread finishes the job: the dispatcher must go on to deliver the cancellations. Any
        other call made while a shutdown is under way returns when that one is done.

        On a non-leader rank (tp/pp engines) this is all there is to do: ``Executor.shutdown()``
        blocks (GIL released) until the leader's shutdown reaches this rank, then returns.
        """
        with self._lock:
            first, self._closed = not self._closed, True
        if not first:
            if threading.current_thread() not in (self._thread, self._shutdown_thread):
                self._shut_down_done.wait()
            return
        if not self.is_leader:
            self._shutdown_executor()
            self._shut_down_done.set()
            return
        if threading.current_thread() is self._thread:
            threading.Thread(target=self._shut_down, args=(cancel,), name="trt-neg-executor-shutdown").start()
            return
        self._shut_down(cancel)

    def _shut_down(self, cancel: bool) -> None:
        self._shutdown_thread = threading.current_thread()
        try:
            self._stop_dispatcher(cancel)
            self._shutdown_executor()
        finally:
            self._shut_down_done.set()

    def _stop_dispatcher(self, cancel: bool) -> None:
        deadline = math.inf
        if cancel:
            with self._lock:
                pending = list(self._tracked.values())
            for tracked in pending:
                self.abort_request(tracked.seq.request_id)
            deadline = time.monotonic() + 5.0
        while self.has_unfinished() and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stopping = True
        self._thread.join()
        with self._lock:
            leftover = list(self._tracked.values())
        for tracked in leftover:  # the executor never answered the cancellation
            outputs: list[Output] = []
            self._finish(tracked, FinishReason.CANCELLED, outputs)
            self._deliver(tracked, outputs)

    def _shutdown_executor(self) -> None:
        try:
            self.executor.shutdown()  # the leader's also tells the other ranks to stop
        except Exception:
            log.exception("executor.shutdown failed")


def _token_slice(tensor: Any, before: int, count: int, name: str) -> list:
    """Values of generated tokens ``before`` .. ``before+count-1`` from an additional output.

    The executor returns the request's whole ``[beam_width, max_tokens(, 1)]`` buffer; a
    per-step slice (``[beam_width, count]``) or a 1-D tensor is accepted too.
    """
    if count == 0:
        return []
    data = tensor.tolist() if hasattr(tensor, "tolist") else list(tensor)
    if data and isinstance(data[0], list):  # [beam, tokens, ...]: beam 0
        data = data[0]
    data = [x[0] if isinstance(x, list) else x for x in data]  # trailing [.., 1]
    if len(data) >= before + count:
        return data[before:before + count]
    if len(data) == count:
        return data
    raise RuntimeError(f"additional output {name!r} has {len(data)} values; expected the tokens "
                       f"{before}..{before + count - 1}")


__all__ = ["MPI_ENV_VARS", "MpiLaunchError", "NEG_OUTPUTS", "RequestHandle", "TrtllmExecutorEngine",
           "check_mpi_launch", "executor_bindings", "mpi_world"]
