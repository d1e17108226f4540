"""The engine directory contract: what ``run.py --backend trtllm`` (and any other runner) reads.

An engine directory written by the engine build holds

* ``config.json`` and ``rank{N}.engine`` — TensorRT-LLM's own files (``engine.save``; the
  C++ runtime reads ``config.json``). Every *model and limit* fact is read from there, so it
  has one source of truth: ``build_config.{max_batch_size, max_input_len, max_seq_len,
  max_num_tokens}``, ``pretrained_config.{vocab_size, eos_token_id, pad_token_id,
  mapping.{world_size, tp_size, pp_size}, neg_config.{enabled, seed}}`` and the architecture
  (``trt_neg_architecture`` = ``DarwinNegForCausalLM``; ``architecture`` may be the runtime
  alias, docs/trtllm_engine.md section 5).
* ``build_info.json`` — the project's build metadata, i.e. only what ``config.json`` lacks
  (contract version 1)::

      {
        "build_info_version": 1,                 # required, int
        "plugin_library": "libtrt_neg_plugins.so",   # str or null: the plugin library the engine
                                                 #   was built against; absolute, or relative to
                                                 #   the engine directory; null = default search
                                                 #   (trt_neg.trtllm.plugins.plugin_library_candidates)
        "hf_model_dir": "/models/Darwin-9B-NEG",  # str or null: the HF checkpoint it was built
                                                 #   from (tokenizer, chat template, torch reference);
                                                 #   absolute or relative to the engine directory
        "tensorrt_llm_version": "1.2.1",          # optional, informative
        "trt_neg_version": "0.1.0"                # optional, informative
      }

  Other keys are allowed (ignored). ``TRT_NEG_PLUGIN_LIB`` in the environment overrides
  ``plugin_library`` (containers often mount the library elsewhere).

:func:`read_engine_dir` validates both files and returns an :class:`EngineDir`; every
problem is an :class:`EngineDirError` (a ``ValueError``) naming the file and the field;
a ``world_size`` N engine needs every ``rank{0..N-1}.engine`` (a missing one is named).
:func:`write_build_info` is the writer the engine build uses (written atomically).
Importing this module needs neither tensorrt nor tensorrt_llm.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic_file import atomic_write_text
from .. import strict_json

BUILD_INFO_FILE = "build_info.json"
BUILD_INFO_VERSION = 1
ENGINE_CONFIG_FILE = "config.json"
DARWIN_NEG_ARCHITECTURE = "DarwinNegForCausalLM"  # = trt_neg.checkpoint.contract.ARCHITECTURE


class EngineDirError(ValueError):
    """The engine directory is missing a file or a field, or holds an invalid value."""


@dataclass(frozen=True)
class EngineDir:
    path: Path
    plugin_library: Path | None  # resolved; None = default search
    hf_model_dir: Path | None  # resolved; None = no tokenizer recorded
    neg_enabled: bool
    neg_seed: int
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    max_num_tokens: int
    world_size: int
    tensorrt_llm_version: str | None = None
    tp_size: int = 1
    pp_size: int = 1
    build_info: dict = field(default_factory=dict, repr=False)
    config: dict = field(default_factory=dict, repr=False)

    @property
    def engine_files(self) -> list[Path]:
        return [self.path / f"rank{r}.engine" for r in range(self.world_size)]

    def describe(self) -> str:
        """One line: what the directory holds and what it was built with and from."""
        files = ", ".join(p.name for p in self.engine_files)
        built = f"built with tensorrt_llm {self.tensorrt_llm_version or '(version not recorded)'} from " + (
            str(self.hf_model_dir) if self.hf_model_dir is not None else "an unrecorded HF checkpoint")
        return (f"a TensorRT-LLM engine directory (tp {self.tp_size}, pp {self.pp_size}; {files}), {built}; "
                f"max_batch_size {self.max_batch_size}, max_seq_len {self.max_seq_len}, "
                f"NEG {'enabled' if self.neg_enabled else 'disabled'}")


def _load_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise EngineDirError(f"{path}: missing ({what})")
    try:
        data = strict_json.loads(path.read_bytes())
    except OSError as exc:
        raise EngineDirError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except strict_json.JsonError as exc:
        raise EngineDirError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise EngineDirError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _int(container: dict, key: str, where: str, *, required: bool = True, default: int | None = None,
         minimum: int = 1) -> int | None:
    if key not in container or container[key] is None:
        if required:
            raise EngineDirError(f"{where}.{key}: required but missing")
        return default
    value = container[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EngineDirError(f"{where}.{key}: must be an integer >= {minimum}, got {value!r}")
    return value


def _path(value: Any, key: str, source: Path, base: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise EngineDirError(f"{source}: {key} must be a non-empty string or null, got {value!r}")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def read_build_info(engine_dir: str | os.PathLike[str]) -> dict:
    """``build_info.json`` checked against contract version 1 (paths left as written)."""
    path = Path(engine_dir) / BUILD_INFO_FILE
    info = _load_json(path, "the engine build's metadata; rebuild the engine with build_engine.py")
    version = info.get("build_info_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise EngineDirError(f"{path}: build_info_version must be an integer, got {version!r}")
    if version > BUILD_INFO_VERSION:
        raise EngineDirError(f"{path}: build_info_version {version} is newer than this trt_neg understands "
                             f"({BUILD_INFO_VERSION}); update trt_neg")
    if version < 1:
        raise EngineDirError(f"{path}: build_info_version must be >= 1, got {version}")
    for key in ("plugin_library", "hf_model_dir"):
        if key not in info:
            raise EngineDirError(f"{path}: {key} is required (a path, or null)")
        _path(info[key], key, path, Path(engine_dir))
    for key in ("tensorrt_llm_version", "trt_neg_version"):
        if info.get(key) is not None and not isinstance(info[key], str):
            raise EngineDirError(f"{path}: {key} must be a string, got {info[key]!r}")
    return info


def read_engine_dir(engine_dir: str | os.PathLike[str]) -> EngineDir:
    """Validate ``config.json``, ``build_info.json`` and the engine files of ``engine_dir``."""
    root = Path(engine_dir)
    if not root.is_dir():
        raise EngineDirError(f"{root}: not a directory (expected an engine directory with config.json, "
                             f"rank0.engine and {BUILD_INFO_FILE})")
    cfg_path = root / ENGINE_CONFIG_FILE
    config = _load_json(cfg_path, "TensorRT-LLM's engine config, written by engine.save")
    pretrained, build = config.get("pretrained_config"), config.get("build_config")
    if not isinstance(pretrained, dict) or not isinstance(build, dict):
        raise EngineDirError(f"{cfg_path}: needs 'pretrained_config' and 'build_config' objects "
                             f"(is this a TensorRT-LLM engine directory, not a checkpoint?)")
    arch = pretrained.get("trt_neg_architecture", pretrained.get("architecture"))
    if arch != DARWIN_NEG_ARCHITECTURE:
        raise EngineDirError(f"{cfg_path}: not a Darwin-NEG engine (pretrained_config.trt_neg_architecture / "
                             f"architecture is {arch!r}, expected {DARWIN_NEG_ARCHITECTURE!r})")
    where_p, where_b = f"{cfg_path}: pretrained_config", f"{cfg_path}: build_config"
    vocab = _int(pretrained, "vocab_size", where_p)
    mapping = pretrained.get("mapping") or {}
    if not isinstance(mapping, dict):
        raise EngineDirError(f"{where_p}.mapping: expected an object, got {mapping!r}")
    world = _int(mapping, "world_size", f"{where_p}.mapping", required=False, default=None)
    tp = _int(mapping, "tp_size", f"{where_p}.mapping", required=False, default=None)
    pp = _int(mapping, "pp_size", f"{where_p}.mapping", required=False, default=1)
    if tp is None:  # world / pp; without world_size either, TensorRT-LLM's Mapping default tp_size 1 (not 1 // pp = 0)
        tp = world // pp if world is not None else 1
    if world is None:
        world = tp * pp
    if world != tp * pp:
        raise EngineDirError(f"{where_p}.mapping: world_size {world} != tp_size {tp} * pp_size {pp}")
    eos = pretrained.get("eos_token_id")
    eos_ids = () if eos is None else (eos,) if isinstance(eos, int) else eos
    if isinstance(eos_ids, (list, tuple)):
        eos_ids = tuple(eos_ids)
    if not isinstance(eos_ids, tuple) or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab
                                                 for t in eos_ids):
        raise EngineDirError(f"{where_p}.eos_token_id: must be a token id, a list of them or null, got {eos!r}")
    pad = pretrained.get("pad_token_id")
    if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < vocab):
        raise EngineDirError(f"{where_p}.pad_token_id: must be a token id or null, got {pad!r}")
    neg = pretrained.get("neg_config")
    if not isinstance(neg, dict):
        raise EngineDirError(f"{where_p}.neg_config: required (the NEG settings the engine was built with)")
    enabled = neg.get("enabled", True)  # DarwinNegConfig.neg_enabled's default
    if not isinstance(enabled, bool):
        raise EngineDirError(f"{where_p}.neg_config.enabled: must be true or false, got {enabled!r}")
    seed = neg.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise EngineDirError(f"{where_p}.neg_config.seed: must be an integer in [0, 2**64), got {seed!r}")
    max_batch = _int(build, "max_batch_size", where_b)
    max_seq = _int(build, "max_seq_len", where_b, minimum=2)
    max_input = _int(build, "max_input_len", where_b, required=False, default=max_seq - 1)
    if max_input >= max_seq:  # as check_engine_config refuses at build time: no room for a generated token
        raise EngineDirError(f"{where_b}.max_input_len: {max_input} must be smaller than max_seq_len ({max_seq}): a "
                             "sequence holds its prompt plus at least one generated token")
    max_tokens = _int(build, "max_num_tokens", where_b, required=False, default=max_batch * max_input)

    info = read_build_info(root)
    info_path = root / BUILD_INFO_FILE
    result = EngineDir(
        path=root,
        plugin_library=_path(info["plugin_library"], "plugin_library", info_path, root),
        hf_model_dir=_path(info["hf_model_dir"], "hf_model_dir", info_path, root),
        neg_enabled=enabled, neg_seed=seed, vocab_size=vocab, eos_token_ids=eos_ids, pad_token_id=pad,
        max_batch_size=max_batch, max_input_len=max_input, max_seq_len=max_seq, max_num_tokens=max_tokens,
        world_size=world, tensorrt_llm_version=info.get("tensorrt_llm_version"), tp_size=tp, pp_size=pp,
        build_info=info, config=config,
    )
    missing = [p.name for p in result.engine_files if not p.is_file()]
    if missing and world == 1:
        raise EngineDirError(f"{root}: missing {missing[0]} (the serialized engine)")
    if missing:
        raise EngineDirError(f"{root}: missing {', '.join(missing)} (a {world}-GPU engine, tp {tp} pp {pp}, needs "
                             f"rank0.engine .. rank{world - 1}.engine, one per rank; was the build interrupted, or "
                             f"only part of the directory copied?)")
    return result


def write_build_info(engine_dir: str | os.PathLike[str], *, plugin_library: str | os.PathLike[str] | None,
                     hf_model_dir: str | os.PathLike[str] | None, tensorrt_llm_version: str | None = None,
                     trt_neg_version: str | None = None, **extra: Any) -> Path:
    """Write ``build_info.json`` (contract version 1) atomically; returns its path."""
    root = Path(engine_dir)
    info: dict[str, Any] = {
        "build_info_version": BUILD_INFO_VERSION,
        "plugin_library": None if plugin_library is None else str(plugin_library),
        "hf_model_dir": None if hf_model_dir is None else str(hf_model_dir),
    }
    if tensorrt_llm_version is not None:
        info["tensorrt_llm_version"] = tensorrt_llm_version
    if trt_neg_version is not None:
        info["trt_neg_version"] = trt_neg_version
    info.update(extra)
    atomic_write_text(root / BUILD_INFO_FILE, json.dumps(info, indent=2) + "\n")
    return root / BUILD_INFO_FILE


__all__ = ["BUILD_INFO_FILE", "BUILD_INFO_VERSION", "DARWIN_NEG_ARCHITECTURE", "EngineDir", "EngineDirError",
           "read_build_info", "read_engine_dir", "write_build_info"]
