"""tensorrt_llm.builder stand-in: ``BuildConfig``, ``Engine`` and a recording ``build``.

``BuildConfig`` has the 1.2.x field names/defaults that trt_neg/trtllm/build.py touches, and
``update_kv_cache_type`` is the real 1.2.x logic (tensorrt_llm/builder.py, index id 205252225),
so the paged_state override it applies to unknown architectures is reproduced. ``build`` does
what the real one does before building the network — deep copy, plugin dtype, kv-cache type —
then checks the plugin config the way DarwinNegForCausalLM.prepare_inputs does (the stub cannot
run the network) and returns an ``Engine`` whose ``save`` writes ``config.json`` (rank 0) and a
placeholder ``rank{N}.engine``. Every call is appended to ``CALLS``.
(1.2.x's BuildConfig is a pydantic model — PR #8330 — with the same field names; the dataclass
here is the form read. test_build_engine.py checks the Darwin subclass on a pydantic base too.)
"""

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Optional

from . import __version__
from .plugin import PluginConfig

CALLS = []

PAGED, CONTINUOUS = "PAGED", "CONTINUOUS"


@dataclass
class BuildConfig:
    max_input_len: int = 1024
    max_seq_len: int = None
    opt_batch_size: int = 8
    max_batch_size: int = 2048
    max_beam_width: int = 1
    max_num_tokens: int = 8192
    opt_num_tokens: Optional[int] = None
    kv_cache_type: str = None
    output_timing_cache: str = "model.cache"
    plugin_config: PluginConfig = field(default_factory=PluginConfig)

    def update_kv_cache_type(self, model_architecture):
        attr = "paged_state" if model_architecture in ("MambaForCausalLM", "RecurrentGemmaForCausalLM") \
            else "paged_kv_cache"
        value = getattr(self.plugin_config, attr)
        if self.kv_cache_type is not None:
            if value is not None:
                assert (value is True and self.kv_cache_type == PAGED) or (value is False and self.kv_cache_type != PAGED)
            else:
                setattr(self.plugin_config, attr, self.kv_cache_type == PAGED)
        elif value is not None:
            self.kv_cache_type = PAGED if value else CONTINUOUS
        else:
            self.kv_cache_type = PAGED
            setattr(self.plugin_config, attr, True)
        if attr == "paged_state":
            self.plugin_config.paged_kv_cache = self.plugin_config.paged_state \
                if model_architecture == "RecurrentGemmaForCausalLM" else False
        else:
            self.plugin_config.paged_state = False

    def to_dict(self):
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self)}
        out["plugin_config"] = self.plugin_config.model_dump()
        return out


class EngineConfig:
    def __init__(self, pretrained_config, build_config, version):
        self.pretrained_config, self.build_config, self.version = pretrained_config, build_config, version

    def to_dict(self):
        return {"version": self.version, "pretrained_config": self.pretrained_config.to_dict(),
                "build_config": self.build_config.to_dict()}


class Engine:
    def __init__(self, config, engine):
        self.config, self.engine = config, engine

    def save(self, engine_dir):
        os.makedirs(engine_dir, exist_ok=True)
        rank = self.config.pretrained_config.mapping.rank
        CALLS.append(("save", str(engine_dir), rank))
        if rank == 0:
            with open(os.path.join(engine_dir, "config.json"), "w", encoding="utf-8") as f:
                json.dump(self.config.to_dict(), f, indent=4)
        with open(os.path.join(engine_dir, f"rank{rank}.engine"), "wb") as f:
            f.write(self.engine)


def build(model, build_config):
    build_config = copy.deepcopy(build_config)
    build_config.plugin_config.dtype = model.config.dtype
    build_config.update_kv_cache_type(model.config.architecture)
    if build_config.max_input_len > build_config.max_seq_len:  # _init_max_seq_len clips
        build_config.max_input_len = build_config.max_seq_len
    pc = build_config.plugin_config
    # DarwinNegForCausalLM.prepare_inputs / GatedDeltaNet.forward refuse anything else.
    if not (pc.remove_input_padding and pc.paged_state and pc.mamba_conv1d_plugin and pc.gpt_attention_plugin
            and pc.paged_kv_cache):
        raise ValueError("Darwin-NEG needs remove_input_padding, paged_kv_cache, paged_state, "
                         f"mamba_conv1d and gpt_attention plugins (got {pc.model_dump()})")
    rank = model.config.mapping.rank
    CALLS.append(("build", type(model).__name__, rank, type(build_config).__name__, build_config.to_dict()))
    if build_config.output_timing_cache is not None and rank == 0:
        with open(build_config.output_timing_cache, "wb") as f:
            f.write(b"stub timing cache")
    return Engine(EngineConfig(model.config, build_config, __version__), f"stub engine rank {rank}".encode())
