"""What the Python side repeats from the plugins' C++ sources, checked against those sources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trt_neg.trtllm import build as B
from trt_neg.trtllm import plugins as P

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def header_constant(header: str, name: str) -> str:
    m = re.search(rf"\b{name}\s*=\s*\"?([^\";,\s]+)", (PLUGINS / header).read_text())
    assert m, f"{name} not found in plugins/{header}"
    return m.group(1)


def test_names_versions_codes_and_limits_match_the_headers():
    assert (P.NEG_PLUGIN_NAME, P.NEG_PLUGIN_VERSION) == (header_constant("neg/negPluginCore.h", "kNegPluginName"),
                                                         header_constant("neg/negPluginCore.h", "kNegPluginVersion"))
    assert (P.GDN_PLUGIN_NAME, P.GDN_PLUGIN_VERSION) == (header_constant("gdn/gdnPluginCore.h", "kPluginName"),
                                                         header_constant("gdn/gdnPluginCore.h", "kPluginVersion"))
    assert P.GDN_MAX_SEQS_PER_CALL == int(header_constant("gdn/gdnParams.h", "kMaxSeqsPerCall"))
    for act, code in P.NEG_ACTIVATION_CODES.items():
        assert int(header_constant("neg/negMath.h", f"kNEG_ACT_{act.upper()}")) == code, act


def test_engine_batch_is_capped_at_what_one_gdn_plugin_call_takes():
    assert B.resolve_build_options(max_position_embeddings=64, max_batch_size=4096)[0].max_batch_size == 4096
    with pytest.raises(B.BuildOptionError, match="--max-batch-size 4097 exceeds 4096, the most sequences one Gated "
                                                 "DeltaNet plugin call takes"):
        B.resolve_build_options(max_position_embeddings=64, max_batch_size=4097)
