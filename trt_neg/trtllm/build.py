"""Engine build: converted TensorRT-LLM checkpoint -> engine directory (TensorRT-LLM 1.2.x).

``build_engine.py`` drives this module; the flow (docs/engine_build.md) is

1. :func:`resolve_build_options` — validate the limits against the model (pure, tested on CPU);
2. :func:`find_plugin_library` — ``--plugin-lib``, else ``TRT_NEG_PLUGIN_LIB``, else the default
   build locations (pure, tested on CPU);
3. conversion (``trt_neg.checkpoint.convert``; not here);
4. :func:`build_engines` — load the plugin library (``RTLD_GLOBAL``, before anything builds),
   per rank ``DarwinNegForCausalLM.from_checkpoint`` -> ``tensorrt_llm.builder.build`` ->
   ``Engine.save`` into a temporary directory, then the runtime overrides of the engine's
   ``config.json`` (:func:`rewrite_engine_config`, atomic, checked by :func:`check_engine_config`),
   the plugin library copy and ``build_info.json`` (:func:`build_info_contents`, written with
   ``engine_dir.write_build_info``); the directory is renamed into place only when complete.

Only step 4 needs tensorrt_llm; everything else is plain Python.

TensorRT-LLM API provenance (NVIDIA/TensorRT-LLM read through the project's source index;
file versions, not tags — none could be tied to a v1.2.x tag from here; see
docs/engine_build.md for what remains to verify in the container). **1.2 differs from the
versions read in one respect:** ``BuildConfig`` and ``PluginConfig`` became pydantic models in
Oct 2025 (PRs #8330 "Migrate BuildConfig to Pydantic, add a Python wrapper for KVCacheType enum"
and #8277 "Migrate PluginConfig to Pydantic"), before 1.2.0. Nothing here depends on the
dataclass form: ``BuildConfig`` is built by keyword, ``PluginConfig`` fields are set one by one,
and :func:`darwin_build_config_class` subclasses either kind
(tests/test_build_engine.py::test_darwin_build_config_class_works_on_a_pydantic_base). The
pydantic ``builder.py`` text itself was not in the index.

* ``tensorrt_llm/builder.py`` (index id 205252225, the newest version in the index: dataclass
  ``BuildConfig`` with a pydantic ``PluginConfig``): ``BuildConfig(max_input_len, max_seq_len,
  max_batch_size, max_beam_width, max_num_tokens, opt_num_tokens, kv_cache_type, ...,
  output_timing_cache='model.cache', plugin_config)``; ``build(model, build_config) -> Engine``
  deep-copies the config, sets ``plugin_config.dtype = model.config.dtype``, calls
  ``build_config.update_kv_cache_type(model.config.architecture)``, ``_init_max_seq_len``,
  ``optimize_model_with_config``, ``model.prepare_inputs(...)``/``model(**inputs)`` and saves the
  timing cache to ``output_timing_cache`` (a path relative to the working directory unless set);
  ``Engine.save(engine_dir)`` writes ``config.json`` (``version``, ``pretrained_config``,
  ``build_config``) on rank 0 only and ``rank{rank}.engine`` on every rank. Same in the version
  at commit 008b2b8d23af95e4e19fa6f354f9c5f6349b2bfc.
* ``BuildConfig.update_kv_cache_type`` treats ``paged_state`` as the paged-cache switch only for
  ``MambaForCausalLM``/``RecurrentGemmaForCausalLM``; for any other architecture it **forces
  ``plugin_config.paged_state = False``** — which the Darwin-NEG network refuses (its Gated
  DeltaNet layers need the paged RNN state). :func:`darwin_build_config_class` therefore
  subclasses ``BuildConfig`` and applies RecurrentGemma's rule (``paged_state`` and
  ``paged_kv_cache`` both on) to ``DarwinNegForCausalLM`` — the same hybrid model kind the
  engine's runtime alias names. ``build`` deep-copies the config, which keeps the subclass.
* ``tensorrt_llm/plugin/plugin.py`` (index id 196834873, pydantic ``PluginConfig`` with
  ``validate_assignment``): fields ``dtype``, ``gpt_attention_plugin``, ``gemm_plugin``,
  ``mamba_conv1d_plugin`` (values ``"auto"``/dtype/None), ``context_fmha``,
  ``paged_kv_cache``, ``remove_input_padding``, ``tokens_per_block``,
  ``use_paged_context_fmha``, ``paged_state``; ``"auto"`` resolves to ``dtype``. The 2024
  dataclass version (commit 035b99e0d09d4f2dfdb949810cf7245112aa4165) has the same names;
  attributes are set one by one (``setattr``), which both accept.
* ``tensorrt_llm/commands/build.py`` (commit 008b2b8d23af95e4e19fa6f354f9c5f6349b2bfc):
  ``trtllm-build`` builds rank by rank — ``build_and_save(rank, gpu_id=rank % workers, ...)``
  with ``torch.cuda.set_device(gpu_id)``, ``model_cls.from_checkpoint(ckpt_dir,
  config=rank_config)``, ``build(model, build_config)``, ``engine.save(output_dir)``; several
  workers run in a ``ProcessPoolExecutor(mp_context=get_context('spawn'))``; ``workers`` is
  capped at ``torch.cuda.device_count()``. Mirrored by :func:`build_engines`.
* ``tensorrt_llm/models/modeling_utils.py`` (index id 1189552800):
  ``PretrainedModel.from_checkpoint(ckpt_dir, rank=None, config=None, *,
  preprocess_weights_hook=None)`` calls ``config.set_rank(rank)`` (mutates the config: each
  rank gets its own deep copy) and loads ``rank{rank}.safetensors``.
"""

from __future__ import annotations

import copy
import datetime
import gc
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from trt_neg import strict_json
from trt_neg.atomic_file import atomic_write_text
from trt_neg.checkpoint.contract import recurrent_state_sizes
from trt_neg.checkpoint.safetensors_io import OutputKind
from trt_neg.trtllm import engine_dir as engine_dir_contract
from trt_neg.trtllm.plugins import (GDN_MAX_SEQS_PER_CALL, PLUGIN_LIBRARY, PLUGIN_LIBRARY_ENV, PluginLibraryError,
                                    plugin_library_candidates)

RUNTIME_ARCHITECTURE_ALIAS = "RecurrentGemmaForCausalLM"  # = trt_neg.trtllm.config (needs no tensorrt_llm here)
DARWIN_NEG_ARCHITECTURE = engine_dir_contract.DARWIN_NEG_ARCHITECTURE
TIMING_CACHE_FILE = "timing.cache"
PLUGIN_COPY_DIR = "plugins"
# What build_engines puts in an engine directory (Engine.save's config.json and rank engines, the timing
# cache, the plugin library copy under whatever name --plugin-lib had, build_info.json): --overwrite replaces
# only a directory holding nothing else.
ENGINE_DIRECTORY = OutputKind("engine directory", (
    engine_dir_contract.ENGINE_CONFIG_FILE, "rank*.engine", engine_dir_contract.BUILD_INFO_FILE, TIMING_CACHE_FILE,
    "timing.rank*.cache", f"{PLUGIN_COPY_DIR}/", f"{PLUGIN_COPY_DIR}/*"))
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_MAX_SEQ_LEN_CAP = 4096
DEFAULT_MAX_NUM_TOKENS_CAP = 8192  # BuildConfig.max_num_tokens' own default
TOKENS_PER_BLOCK_CHOICES = (16, 32, 64, 128)
LAYER_TYPES = ("attention", "recurrent")  # what Darwin-NEG's engine may declare (gptJsonConfig.cpp vocabulary)


class BuildOptionError(ValueError):
    """An engine build option is invalid for this model (message names the option)."""


class EngineConfigError(ValueError):
    """The engine's config.json does not satisfy what the C++ runtime needs (every problem listed)."""


# ------------------------------------------------------------------------------------
# Options
# ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuildOptions:
    """Resolved, validated engine build options (what the engine is built with)."""

    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    tp_size: int = 1
    pp_size: int = 1
    dtype: str = "float32"
    gemm_plugin: bool = True
    context_fmha: bool = True
    tokens_per_block: int = 32
    workers: int = 1

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size

    def plugin_config(self) -> dict[str, Any]:
        """``PluginConfig`` fields set for Darwin-NEG (the others keep TensorRT-LLM's defaults).

        Fixed: the GPT attention plugin with a paged KV cache, the mamba_conv1d plugin with the
        paged RNN state, packed (padding-free) input — what the network and the runtime's
        in-flight batching of a recurrent model need (``ModelConfig::supportsInflightBatching``,
        docs/trtllm_engine.md section 1). Paged context FMHA is off: it serves chunked context
        and KV-cache block reuse, both unusable with recurrent state.
        """
        return {
            "gpt_attention_plugin": "auto",
            "gemm_plugin": "auto" if self.gemm_plugin else None,
            "mamba_conv1d_plugin": "auto",
            "context_fmha": self.context_fmha,
            "use_paged_context_fmha": False,
            "paged_kv_cache": True,
            "paged_state": True,
            "remove_input_padding": True,
            "tokens_per_block": self.tokens_per_block,
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["world_size"] = self.world_size
        out["plugin_config"] = self.plugin_config()
        return out


# Found by tests/test_trtllm_network_numeric.py (prepare_inputs bound by name at pp 2).
PP_ENGINE_UNSUPPORTED = (
    "--pp-size > 1: pipeline-parallel engines are not supported yet. TensorRT-LLM's prepare_inputs declares "
    "position_ids only on the first stage and last_token_ids only on the last, but a stage's Gated DeltaNet "
    "layers need last_token_ids and the last stage's NEG needs position_ids. Use --tp-size for several GPUs "
    "(checkpoint conversion with --checkpoint-only --pp-size N works).")


def check_engine_neg(config) -> None:
    """ConfigError unless the NEG plugin takes ``config``'s NEG fields (a trt_neg.config
    DarwinNegConfig): the kernel keeps at most NEG_MAX_TOP_K candidates, which the config and the
    torch backend do not limit. Checked before converting; an engine without NEG needs nothing.
    A ConfigError, not a BuildOptionError: no build option can fix the model's own NEG settings."""
    from trt_neg.config import ConfigError
    from trt_neg.trtllm.plugins import neg_plugin_fields

    n, b = config.neg, config.backbone
    if not n.enabled:
        return
    try:
        neg_plugin_fields(hidden_size=b.hidden_size, head_hidden_size=n.head_hidden_size, vocab_size=b.vocab_size,
                          top_k=n.top_k, temperature=n.temperature, seed=n.seed, activation=n.activation)
    except ValueError as exc:
        raise ConfigError(config.source or None, "neg_config", str(exc)) from None


def resolve_build_options(*, max_position_embeddings: int, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                          max_input_len: int | None = None, max_seq_len: int | None = None,
                          max_num_tokens: int | None = None, tp_size: int = 1, pp_size: int = 1,
                          dtype: str = "float32", gemm_plugin: bool = True, context_fmha: bool = True,
                          tokens_per_block: int = 32, workers: int = 1,
                          gpu_count: int | None = None) -> tuple[BuildOptions, list[str]]:
    """Fill the defaults and validate; returns the options and notes (adjustments worth printing).

    Defaults: ``max_seq_len`` = min(max_position_embeddings, 4096); ``max_input_len`` =
    max_seq_len - 1; ``max_num_tokens`` = max(max_input_len, min(8192, max_batch_size *
    max_input_len)). ``workers`` is capped at the engine count and, when ``gpu_count`` is
    known, at the GPU count (as trtllm-build does). Raises :class:`BuildOptionError`.
    """
    notes: list[str] = []

    def positive(name: str, value: int | None, minimum: int = 1) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise BuildOptionError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, got {value!r}")

    for name, value, minimum in (("max_batch_size", max_batch_size, 1), ("max_input_len", max_input_len, 1),
                                 ("max_seq_len", max_seq_len, 2), ("max_num_tokens", max_num_tokens, 1),
                                 ("tp_size", tp_size, 1), ("pp_size", pp_size, 1), ("workers", workers, 1)):
        positive(name, value, minimum)
    if pp_size > 1:
        raise BuildOptionError(PP_ENGINE_UNSUPPORTED)
    if max_batch_size > GDN_MAX_SEQS_PER_CALL:
        # The GDN plugin refuses such a profile in configurePlugin; say so before converting.
        raise BuildOptionError(f"--max-batch-size {max_batch_size} exceeds {GDN_MAX_SEQS_PER_CALL}, the most "
                               "sequences one Gated DeltaNet plugin call takes (plugins/gdn/gdnParams.h)")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise BuildOptionError(f"--dtype must be float32, float16 or bfloat16, got {dtype!r}")
    if tokens_per_block not in TOKENS_PER_BLOCK_CHOICES:
        raise BuildOptionError(f"--tokens-per-block must be one of {', '.join(map(str, TOKENS_PER_BLOCK_CHOICES))}, "
                               f"got {tokens_per_block}")

    seq_len_given = max_seq_len is not None
    if not seq_len_given:
        max_seq_len = min(max_position_embeddings, DEFAULT_MAX_SEQ_LEN_CAP)
    elif max_seq_len > max_position_embeddings:
        raise BuildOptionError(f"--max-seq-len {max_seq_len} exceeds the model's max_position_embeddings "
                               f"({max_position_embeddings}): positions beyond it have no RoPE table entry")
    if max_input_len is None:
        max_input_len = max_seq_len - 1
    elif max_input_len >= max_seq_len:
        default = "" if seq_len_given else (f", the default: min(max_position_embeddings, {DEFAULT_MAX_SEQ_LEN_CAP}); "
                                            "pass a larger --max-seq-len")
        raise BuildOptionError(f"--max-input-len ({max_input_len}) must be smaller than --max-seq-len "
                               f"({max_seq_len}{default}): a sequence holds its prompt plus at least one generated "
                               "token")
    if max_num_tokens is None:
        max_num_tokens = max(max_input_len, min(DEFAULT_MAX_NUM_TOKENS_CAP, max_batch_size * max_input_len))
    elif max_num_tokens < max_input_len:
        raise BuildOptionError(
            f"--max-num-tokens ({max_num_tokens}) must be at least --max-input-len ({max_input_len}): a prompt is "
            "processed in one step (no chunked context with recurrent state)")
    if max_num_tokens < max_batch_size:
        raise BuildOptionError(f"--max-num-tokens ({max_num_tokens}) must be at least --max-batch-size "
                               f"({max_batch_size}): a generation step feeds one token per sequence")

    world = tp_size * pp_size
    if workers > world:
        notes.append(f"--workers {workers} capped at the engine count ({world})")
        workers = world
    if gpu_count is not None and workers > max(gpu_count, 1):
        notes.append(f"--workers {workers} capped at the visible GPU count ({gpu_count})")
        workers = max(gpu_count, 1)
    options = BuildOptions(max_batch_size=max_batch_size, max_input_len=max_input_len, max_seq_len=max_seq_len,
                           max_num_tokens=max_num_tokens, tp_size=tp_size, pp_size=pp_size, dtype=dtype,
                           gemm_plugin=gemm_plugin, context_fmha=context_fmha, tokens_per_block=tokens_per_block,
                           workers=workers)
    return options, notes


# ------------------------------------------------------------------------------------
# Plugin library discovery
# ------------------------------------------------------------------------------------

def find_plugin_library(explicit: str | os.PathLike[str] | None = None,
                        environ: Mapping[str, str] | None = None,
                        candidates: Sequence[Path] | None = None) -> Path:
    """The plugin library to build with: ``explicit``, else ``TRT_NEG_PLUGIN_LIB``, else the defaults.

    ``TRT_NEG_PLUGIN_LIB`` may list several libraries (``os.pathsep``); the engine records the
    first, which must be ``libtrt_neg_plugins.so`` (or be named explicitly). Raises
    :class:`PluginLibraryError` naming where it looked and how to build the library.
    """
    environ = os.environ if environ is None else environ
    build_hint = ("build it with: cmake -S plugins -B build/plugins -DTENSORRT_ROOT=/usr/local/tensorrt && "
                  "cmake --build build/plugins -j (needs TensorRT, e.g. NVIDIA's TensorRT-LLM container; "
                  "docker/selftest.sh does it)")
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise PluginLibraryError(f"--plugin-lib {path}: no such file; {build_hint}")
        return path.resolve()
    env = environ.get(PLUGIN_LIBRARY_ENV, "")
    if env:
        entries = [Path(p).expanduser() for p in env.split(os.pathsep) if p]
        missing = [str(p) for p in entries if not p.is_file()]
        if missing:
            raise PluginLibraryError(f"{PLUGIN_LIBRARY_ENV} names missing file(s): {', '.join(missing)}")
        if not entries:
            raise PluginLibraryError(f"{PLUGIN_LIBRARY_ENV} is set but empty")
        if entries[0].name != PLUGIN_LIBRARY:  # the one library the build loads, records and copies
            raise PluginLibraryError(f"{PLUGIN_LIBRARY_ENV}: its first entry {entries[0]} is the library the engine is "
                                     f"built with and records, and must be {PLUGIN_LIBRARY}; list it first, or pass "
                                     "--plugin-lib")
        return entries[0].resolve()
    if candidates is None:
        candidates = plugin_library_candidates()
    for path in candidates:
        if Path(path).is_file():
            return Path(path).resolve()
    raise PluginLibraryError(f"{PLUGIN_LIBRARY} not found (looked in {', '.join(map(str, candidates))}; "
                             f"neither --plugin-lib nor {PLUGIN_LIBRARY_ENV} is set); {build_hint}")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_fingerprint(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A cheap identity of an HF checkpoint: sha256 over its JSON files and each safetensors file's
    name, size and header (tensor names, dtypes, shapes, offsets) — not the weight bytes, so it
    costs milliseconds even for the 9B. Returns ``{"sha256": ..., "files": [...]}``."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    files = []
    for path in sorted(p for p in root.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors")):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        if path.suffix == ".json":
            digest.update(path.read_bytes())
        else:
            with open(path, "rb") as handle:
                head = handle.read(8)
                digest.update(head)
                if len(head) == 8:
                    digest.update(handle.read(min(int.from_bytes(head, "little"), 100 * 2**20)))
        files.append({"name": path.name, "bytes": size})
    return {"sha256": digest.hexdigest(), "files": files,
            "method": "sha256(json files + safetensors names, sizes and headers)"}


# ------------------------------------------------------------------------------------
# The engine config.json: runtime overrides and what the C++ runtime needs
# ------------------------------------------------------------------------------------

def _is_int(value: Any, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_engine_config(config: Mapping[str, Any]) -> list[str]:
    """Problems (empty list = fine) of an engine ``config.json`` against what TensorRT-LLM 1.2.x's C++
    runtime (``gptJsonConfig.cpp``, ``modelConfig.h``, ``rnnStateManager.cpp``) needs to run
    Darwin-NEG as a recurrent + attention model with in-flight batching (docs/trtllm_engine.md
    sections 1, 2 and 5)."""
    problems: list[str] = []
    pc, bc = config.get("pretrained_config"), config.get("build_config")
    if not isinstance(pc, Mapping) or not isinstance(bc, Mapping):
        return ["needs 'pretrained_config' and 'build_config' objects (an engine config, not a checkpoint config)"]
    P, B = "pretrained_config", "build_config"

    # Model variant: only these two names make ModelConfig::isRnnBased() true; RecurrentGemma is also
    # transformer based (KV cache for the attention layers).
    if pc.get("architecture") != RUNTIME_ARCHITECTURE_ALIAS:
        problems.append(f"{P}.architecture must be the runtime alias {RUNTIME_ARCHITECTURE_ALIAS!r} (so the runtime "
                        f"allocates recurrent state), got {pc.get('architecture')!r}")
    if pc.get("trt_neg_architecture") != DARWIN_NEG_ARCHITECTURE:
        problems.append(f"{P}.trt_neg_architecture must be {DARWIN_NEG_ARCHITECTURE!r}, "
                        f"got {pc.get('trt_neg_architecture')!r}")
    for key in ("num_hidden_layers", "num_attention_heads", "hidden_size", "vocab_size"):
        if not _is_int(pc.get(key)):
            problems.append(f"{P}.{key} must be a positive integer, got {pc.get(key)!r}")
    for key in ("num_key_value_heads", "head_size"):
        if key in pc and pc[key] is not None and not _is_int(pc[key]):
            problems.append(f"{P}.{key} must be a positive integer, got {pc[key]!r}")
    if pc.get("dtype") not in ("float32", "float16", "bfloat16"):
        problems.append(f"{P}.dtype must be float32, float16 or bfloat16, got {pc.get('dtype')!r}")
    if pc.get("logits_dtype", "float32") not in ("float32", "float16"):
        problems.append(f"{P}.logits_dtype must be float32 or float16, got {pc.get('logits_dtype')!r}")

    # layer_types: a group repeated over num_hidden_layers; recurrent = state-carrying.
    types = pc.get("layer_types")
    if not isinstance(types, list) or not types or any(t not in LAYER_TYPES for t in types):
        problems.append(f"{P}.layer_types must be a non-empty list of {LAYER_TYPES}, got {types!r}")
    elif _is_int(pc.get("num_hidden_layers")):
        expanded = [types[i % len(types)] for i in range(pc["num_hidden_layers"])]
        if "recurrent" not in expanded or "attention" not in expanded:
            problems.append(f"{P}.layer_types must hold both 'recurrent' and 'attention' layers, got {types!r}")

    # RNN config (read with .at() for RNN-based models: required).
    for key in ("state_size", "conv_kernel", "rnn_hidden_size", "rnn_head_size", "rnn_conv_dim_size"):
        if not _is_int(pc.get(key)):
            problems.append(f"{P}.{key} must be a positive integer (recurrent state layout), got {pc.get(key)!r}")
    if _is_int(pc.get("rnn_hidden_size")) and _is_int(pc.get("rnn_head_size")) \
            and pc["rnn_hidden_size"] % pc["rnn_head_size"]:
        problems.append(f"{P}.rnn_hidden_size ({pc['rnn_hidden_size']}) must be a multiple of rnn_head_size "
                        f"({pc['rnn_head_size']})")
    if _is_int(pc.get("conv_kernel")) and pc["conv_kernel"] < 2:
        problems.append(f"{P}.conv_kernel must be >= 2 (conv_state holds conv_kernel - 1 steps)")
    lin = [pc.get(k) for k in ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                               "linear_value_head_dim")]
    tp = pc.get("mapping", {}).get("tp_size", 1) if isinstance(pc.get("mapping"), Mapping) else 1
    if all(_is_int(v) for v in lin) and _is_int(tp):  # Gated DeltaNet -> RnnStateManager (one rank's sizes)
        for key, value in recurrent_state_sizes(*lin, tp).items():
            if _is_int(pc.get(key)) and pc[key] != value:
                problems.append(f"{P}.{key} is {pc[key]}, but the Gated DeltaNet dimensions at tp_size {tp} "
                                f"give {value}")
    if not isinstance(pc.get("neg_config"), Mapping):
        problems.append(f"{P}.neg_config must be an object (the NEG settings the engine was built with)")
    mapping = pc.get("mapping")
    if not isinstance(mapping, Mapping) or not _is_int(mapping.get("tp_size", 1)) \
            or not _is_int(mapping.get("pp_size", 1)):
        problems.append(f"{P}.mapping must hold positive tp_size and pp_size, got {mapping!r}")
    elif "world_size" in mapping and mapping["world_size"] != mapping.get("tp_size", 1) * mapping.get("pp_size", 1):
        problems.append(f"{P}.mapping.world_size ({mapping['world_size']}) != tp_size * pp_size")

    # Builder limits.
    for key, minimum in (("max_batch_size", 1), ("max_input_len", 1), ("max_seq_len", 2), ("max_num_tokens", 1)):
        if not _is_int(bc.get(key), minimum):
            problems.append(f"{B}.{key} must be an integer >= {minimum}, got {bc.get(key)!r}")
    if _is_int(bc.get("max_input_len")) and _is_int(bc.get("max_seq_len")) and bc["max_input_len"] >= bc["max_seq_len"]:
        problems.append(f"{B}.max_input_len ({bc['max_input_len']}) must be < max_seq_len ({bc['max_seq_len']})")
    if bc.get("max_beam_width", 1) != 1:
        problems.append(f"{B}.max_beam_width must be 1 (the RNN state manager supports beam width 1 only), "
                        f"got {bc.get('max_beam_width')!r}")
    # TensorRT-LLM writes the enum's name ("PAGED") or, since its pydantic BuildConfig, the Python
    # KVCacheType's value ("paged"); its C++ reader upper-cases before parsing, so either spelling.
    kv_cache_type = bc.get("kv_cache_type", "PAGED")
    if kv_cache_type is not None and str(kv_cache_type).split(".")[-1].upper() != "PAGED":
        problems.append(f"{B}.kv_cache_type must be PAGED, got {kv_cache_type!r}")

    # Plugins: supportsInflightBatching() for a transformer + RNN model, and RnnStateManager's checks.
    plugin = bc.get("plugin_config")
    if not isinstance(plugin, Mapping):
        problems.append(f"{B}.plugin_config must be an object")
    else:
        for key in ("gpt_attention_plugin", "mamba_conv1d_plugin"):
            if plugin.get(key) in (None, False, "disable"):
                problems.append(f"{B}.plugin_config.{key} must be enabled, got {plugin.get(key)!r}")
        for key in ("remove_input_padding", "paged_kv_cache", "paged_state"):
            if plugin.get(key) is not True:
                problems.append(f"{B}.plugin_config.{key} must be true, got {plugin.get(key)!r}")
    return problems


def apply_engine_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with ``overrides`` applied to ``pretrained_config`` and checked.

    Raises :class:`EngineConfigError` listing every problem of the result."""
    out = copy.deepcopy(dict(config))
    if not isinstance(out.get("pretrained_config"), dict):
        raise EngineConfigError("engine config.json has no 'pretrained_config' object")
    out["pretrained_config"].update(copy.deepcopy(dict(overrides)))
    problems = check_engine_config(out)
    if problems:
        raise EngineConfigError("engine config.json does not satisfy the C++ runtime:\n  " + "\n  ".join(problems))
    return out


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as JSON to a temporary file beside ``path``, fsync and rename it over ``path``."""
    return atomic_write_text(path, json.dumps(data, indent=4) + "\n", fsync=True)


def rewrite_engine_config(engine_dir: str | os.PathLike[str], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply the runtime overrides to ``engine_dir/config.json`` atomically (checked first: on any
    problem the file is left as it was). Returns the new config."""
    path = Path(engine_dir) / engine_dir_contract.ENGINE_CONFIG_FILE
    try:
        config = strict_json.loads(path.read_bytes())
    except (OSError, strict_json.JsonError) as exc:
        raise EngineConfigError(f"{path}: cannot read the engine config written by Engine.save ({exc})") from None
    new = apply_engine_overrides(config, overrides)
    atomic_write_json(path, new)
    return new


# ------------------------------------------------------------------------------------
# build_info.json
# ------------------------------------------------------------------------------------

def build_info_contents(*, options: BuildOptions, plugin_library: str | None, plugin_library_source: Path | None,
                        plugin_library_sha256: str | None, hf_model_dir: Path | None, checkpoint_dir: Path,
                        checkpoint_reused: bool, source_fingerprint: dict | None, timings: Mapping[str, float],
                        versions: Mapping[str, str | None]) -> dict[str, Any]:
    """Keyword arguments for ``engine_dir.write_build_info`` (contract version 1 keys + extras).

    ``plugin_library``: as recorded — relative to the engine directory when the library was copied
    into it, else absolute; ``hf_model_dir`` absolute (the tokenizer and the reference model)."""
    return {
        "plugin_library": plugin_library,
        "hf_model_dir": None if hf_model_dir is None else str(Path(hf_model_dir).resolve()),
        "tensorrt_llm_version": versions.get("tensorrt_llm"),
        "trt_neg_version": versions.get("trt_neg"),
        "tensorrt_version": versions.get("tensorrt"),
        "plugin_library_source": None if plugin_library_source is None else str(plugin_library_source),
        "plugin_library_sha256": plugin_library_sha256,
        "runtime_architecture_alias": RUNTIME_ARCHITECTURE_ALIAS,
        "options": options.to_dict(),
        "source": {
            "hf_model_dir": None if hf_model_dir is None else str(Path(hf_model_dir).resolve()),
            "hf_fingerprint": source_fingerprint,
            "checkpoint_dir": str(Path(checkpoint_dir).resolve()),
            "checkpoint_reused": checkpoint_reused,
        },
        "timings_s": {k: round(float(v), 3) for k, v in timings.items()},
        "total_s": round(float(sum(timings.values())), 3),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": {"python": platform.python_version(), "platform": platform.platform(),
                 "gpu": versions.get("gpu")},
    }


# ------------------------------------------------------------------------------------
# Progress and timing
# ------------------------------------------------------------------------------------

@dataclass
class StageTimer:
    """Per-stage wall times, printed as each stage ends (``echo``) and recorded for build_info.json."""

    echo: Callable[[str], None] = print
    timings: dict[str, float] = field(default_factory=dict)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.echo(f"[build] {name} ...")
        start = time.perf_counter()
        try:
            return fn()
        finally:
            seconds = time.perf_counter() - start
            self.timings[name] = self.timings.get(name, 0.0) + seconds
            self.echo(f"[build] {name}: {seconds:.1f} s")


# ------------------------------------------------------------------------------------
# The TensorRT-LLM part
# ------------------------------------------------------------------------------------

def darwin_build_config_class(base: type) -> type:
    """``BuildConfig`` subclass whose ``update_kv_cache_type`` treats Darwin-NEG like RecurrentGemma.

    1.2.x ``update_kv_cache_type`` forces ``paged_state = False`` for architectures other than
    Mamba/RecurrentGemma (module docstring); Darwin-NEG is a hybrid model that needs both
    ``paged_kv_cache`` (attention layers) and ``paged_state`` (Gated DeltaNet layers), which is
    exactly RecurrentGemma's rule. Everything else is the base class's.
    """

    def update_kv_cache_type(self, model_architecture: str):
        if model_architecture == DARWIN_NEG_ARCHITECTURE:
            model_architecture = RUNTIME_ARCHITECTURE_ALIAS
        return base.update_kv_cache_type(self, model_architecture)

    return type("DarwinNegBuildConfig", (base,), {"update_kv_cache_type": update_kv_cache_type,
                                                   "__module__": __name__})


def make_build_config(options: BuildOptions, timing_cache: str | None = None) -> Any:
    """The ``tensorrt_llm`` ``BuildConfig`` (Darwin-NEG subclass) for ``options``."""
    from tensorrt_llm.builder import BuildConfig
    from tensorrt_llm.plugin import PluginConfig

    plugin_config = PluginConfig()
    for key, value in options.plugin_config().items():
        setattr(plugin_config, key, value)  # pydantic validate_assignment / dataclass: both accept setattr
    cls = darwin_build_config_class(BuildConfig)
    return cls(max_batch_size=options.max_batch_size, max_input_len=options.max_input_len,
               max_seq_len=options.max_seq_len, max_num_tokens=options.max_num_tokens, max_beam_width=1,
               plugin_config=plugin_config, output_timing_cache=timing_cache)


def rank_timing_cache(timing_cache: str | None, rank: int) -> str | None:
    """Rank 0 writes ``timing_cache``; rank r > 0 a ``timing.rank{r}.cache`` beside it (no two
    workers write one file)."""
    if timing_cache is None or rank == 0:
        return timing_cache
    return str(Path(timing_cache).with_name(f"timing.rank{rank}.cache"))


def build_rank(checkpoint_dir: str, rank: int, options: BuildOptions, output_dir: str,
               plugin_library: str | None, gpu_id: int | None = None,
               timing_cache: str | None = None) -> dict[str, float]:
    """Build and save one rank's engine (also the body of a spawned worker). Returns its stage timings."""
    from trt_neg.trtllm import plugins, require_tensorrt_llm

    require_tensorrt_llm()
    timings: dict[str, float] = {}
    if gpu_id is not None:
        import torch

        torch.cuda.set_device(gpu_id)
    if plugin_library is not None:  # idempotent in this process; a spawned worker needs its own load
        plugins.load_plugin_library(plugin_library)
    from tensorrt_llm.builder import build

    from trt_neg.trtllm.config import DarwinNegConfig
    from trt_neg.trtllm.model import DarwinNegForCausalLM

    start = time.perf_counter()
    config = DarwinNegConfig.from_checkpoint(checkpoint_dir)
    model = DarwinNegForCausalLM.from_checkpoint(checkpoint_dir, rank=rank, config=copy.deepcopy(config))
    timings[f"load rank {rank}"] = time.perf_counter() - start
    start = time.perf_counter()
    # Every rank gets a timing cache path of its own (a pydantic BuildConfig takes no None there, and the
    # default is a file in the working directory); rank 0's is kept, the others' are removed after the build.
    engine = build(model, make_build_config(options, rank_timing_cache(timing_cache, rank)))
    timings[f"build rank {rank}"] = time.perf_counter() - start
    start = time.perf_counter()
    engine.save(output_dir)
    timings[f"save rank {rank}"] = time.perf_counter() - start
    del engine, model
    gc.collect()
    return timings


def tool_versions() -> dict[str, str | None]:
    """tensorrt_llm, tensorrt, trt_neg versions and the GPU name (None where unknown)."""
    import trt_neg

    out: dict[str, str | None] = {"trt_neg": trt_neg.__version__, "tensorrt_llm": None, "tensorrt": None,
                                  "gpu": None}
    for name in ("tensorrt_llm", "tensorrt"):
        module = sys.modules.get(name)
        if module is not None:
            version = getattr(module, "__version__", None)
            out[name] = None if version is None else str(version)
    try:
        import torch

        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - informative only
        pass
    return out


@dataclass
class EngineBuildReport:
    output: Path
    options: BuildOptions
    plugin_library: str | None
    timings: dict[str, float]
    build_info: dict[str, Any]


def build_engines(checkpoint_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str], options: BuildOptions,
                  *, plugin_library: Path, hf_model_dir: str | os.PathLike[str] | None, overwrite: bool = False,
                  copy_plugin_library: bool = True, checkpoint_reused: bool = False,
                  timer: StageTimer | None = None) -> EngineBuildReport:
    """Build every rank's engine from a converted checkpoint into ``output_dir`` (atomically).

    Needs tensorrt_llm 1.2.x (:func:`trt_neg.trtllm.require_tensorrt_llm` raises
    ``TensorRTLLMUnavailable`` otherwise). ``timer`` collects per-stage timings (it may already
    hold earlier stages, e.g. the conversion; they are recorded too).
    """
    from trt_neg.checkpoint.safetensors_io import atomic_output_dir
    from trt_neg.trtllm import plugins, require_tensorrt_llm

    require_tensorrt_llm()
    timer = timer or StageTimer()
    checkpoint_dir = Path(checkpoint_dir).resolve()
    plugin_library = Path(plugin_library).resolve()
    timer.run("load plugin library", lambda: plugins.load_plugin_library(plugin_library))
    from trt_neg.trtllm.config import DarwinNegConfig

    config = DarwinNegConfig.from_checkpoint(checkpoint_dir)
    m = config.mapping
    if (m.tp_size, m.pp_size) != (options.tp_size, options.pp_size) or config.dtype != options.dtype:
        raise BuildOptionError(f"{checkpoint_dir}: checkpoint is tp {m.tp_size}, pp {m.pp_size}, {config.dtype}; "
                               f"the build options say tp {options.tp_size}, pp {options.pp_size}, {options.dtype}")
    fingerprint = None
    if hf_model_dir is not None:
        fingerprint = timer.run("fingerprint source", lambda: checkpoint_fingerprint(hf_model_dir))

    with atomic_output_dir(output_dir, overwrite=overwrite, kind=ENGINE_DIRECTORY) as tmp:
        timing_cache = str(tmp / TIMING_CACHE_FILE)
        world = options.world_size
        if options.workers <= 1:
            for rank in range(world):
                timer.echo(f"[build] rank {rank + 1}/{world}: load checkpoint, build network and engine, save ...")
                stages = build_rank(str(checkpoint_dir), rank, options, str(tmp), None, None, timing_cache)
                for name, seconds in stages.items():
                    timer.timings[name] = seconds
                    timer.echo(f"[build] {name}: {seconds:.1f} s")
        else:
            def parallel():
                from concurrent.futures import ProcessPoolExecutor, as_completed
                from multiprocessing import get_context

                with ProcessPoolExecutor(max_workers=options.workers, mp_context=get_context("spawn")) as pool:
                    futures = {pool.submit(build_rank, str(checkpoint_dir), rank, options, str(tmp),
                                           str(plugin_library), rank % options.workers, timing_cache): rank
                               for rank in range(world)}
                    errors = []
                    for future in as_completed(futures):
                        try:
                            for name, seconds in future.result().items():
                                timer.timings[f"{name} (worker)"] = seconds
                        except Exception as exc:  # noqa: BLE001 - collected and re-raised below
                            errors.append(f"rank {futures[future]}: {exc}")
                    if errors:
                        raise RuntimeError("engine build failed: " + "; ".join(errors))

            timer.run(f"build {world} ranks on {options.workers} workers", parallel)
        missing = [f"rank{r}.engine" for r in range(world) if not (tmp / f"rank{r}.engine").is_file()]
        if missing or not (tmp / engine_dir_contract.ENGINE_CONFIG_FILE).is_file():
            raise RuntimeError(f"engine build wrote no {', '.join(missing) or 'config.json'} "
                               "(see TensorRT-LLM's log above)")
        for rank in range(1, world):  # only rank 0's timing cache is kept with the engines
            Path(rank_timing_cache(timing_cache, rank)).unlink(missing_ok=True)
        timer.run("rewrite engine config", lambda: rewrite_engine_config(tmp, config.engine_config_overrides()))

        recorded: str | None = str(plugin_library)
        if copy_plugin_library:
            def copy_library() -> str:
                (tmp / PLUGIN_COPY_DIR).mkdir()
                shutil.copy2(plugin_library, tmp / PLUGIN_COPY_DIR / plugin_library.name)
                return f"{PLUGIN_COPY_DIR}/{plugin_library.name}"

            recorded = timer.run("copy plugin library", copy_library)
        info = build_info_contents(options=options, plugin_library=recorded, plugin_library_source=plugin_library,
                                   plugin_library_sha256=sha256_file(plugin_library),
                                   hf_model_dir=None if hf_model_dir is None else Path(hf_model_dir),
                                   checkpoint_dir=checkpoint_dir, checkpoint_reused=checkpoint_reused,
                                   source_fingerprint=fingerprint, timings=timer.timings, versions=tool_versions())
        engine_dir_contract.write_build_info(tmp, **info)
    final = Path(output_dir)
    engine_dir_contract.read_engine_dir(final)  # the runner's reader accepts it
    return EngineBuildReport(final, options, recorded, dict(timer.timings), info)


__all__ = ["BuildOptionError", "BuildOptions", "ENGINE_DIRECTORY", "EngineBuildReport", "EngineConfigError",
           "StageTimer", "apply_engine_overrides", "atomic_write_json", "build_engines", "build_info_contents",
           "build_rank", "check_engine_neg",
           "rank_timing_cache",
           "check_engine_config", "checkpoint_fingerprint", "darwin_build_config_class", "find_plugin_library",
           "make_build_config", "resolve_build_options", "rewrite_engine_config", "sha256_file"]
