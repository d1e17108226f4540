"""What the Python side repeats from the plugins' C++ sources, checked against those sources."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trt_neg.kernels import gdn_host, host
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
    assert P.NEG_MAX_TOP_K == int(header_constant("neg/negKernel.h", "kNegMaxTopK"))
    for act, code in P.NEG_ACTIVATION_CODES.items():
        assert int(header_constant("neg/negMath.h", f"kNEG_ACT_{act.upper()}")) == code, act
    max_vocab = re.search(r"\bkNegMaxVocab\s*=\s*1 << (\d+);", (PLUGINS / "neg/negKernel.h").read_text())
    assert max_vocab and host.KERNEL_MAX_VOCAB == 1 << int(max_vocab.group(1))
    for name, constant in (("CHUNK_MIN_TOKENS", "kChunkMinTokens"), ("HOST_CHUNK_SIZE", "kHostChunkSize"),
                           ("HOST_MAX_CHUNK_SIZE", "kHostMaxChunkSize"), ("TOKEN_TILE", "kTokenTile")):
        assert getattr(gdn_host, name) == int(header_constant("gdn/gdnChunk.h", constant)), name


def test_engine_batch_is_capped_at_what_one_gdn_plugin_call_takes():
    assert B.resolve_build_options(max_position_embeddings=64, max_batch_size=4096)[0].max_batch_size == 4096
    with pytest.raises(B.BuildOptionError, match="--max-batch-size 4097 exceeds 4096, the most sequences one Gated "
                                                 "DeltaNet plugin call takes"):
        B.resolve_build_options(max_position_embeddings=64, max_batch_size=4097)


def test_neg_plugin_fields_refuse_what_the_plugin_refuses():
    """NegPluginConfig::validate (plugins/neg/negPluginCore.cpp): top_k in [1, 1024], or any top_k when the
    vocabulary is no larger; temperature finite and > 0 in float32; every value fits its field."""
    fields = dict((name, data) for name, data, _ in P.neg_plugin_fields(
        hidden_size=16, head_hidden_size=8, vocab_size=512, top_k=5000))  # k = min(top_k, V) = 512
    assert int(fields["top_k"][0]) == 5000
    P.neg_plugin_fields(hidden_size=16, head_hidden_size=8, vocab_size=248320, top_k=1024)
    with pytest.raises(ValueError, match=r"NEG top_k 1025 exceeds 1024, the most candidates the NEG kernel keeps "
                                         r"\(kNegMaxTopK, plugins/neg/negKernel\.h\)"):
        P.neg_plugin_fields(hidden_size=16, head_hidden_size=8, vocab_size=248320, top_k=1025)
    with pytest.raises(ValueError, match=r"NEG top_k must be in \[1, 2\^31-1\] \(an INT32 plugin field\), got "
                                         r"1099511627776"):
        P.neg_plugin_fields(hidden_size=16, head_hidden_size=8, vocab_size=512, top_k=2**40)
    for temperature in (1e-50, 1e39):
        with pytest.raises(ValueError, match="NEG temperature must be finite and > 0 in float32"):
            P.neg_plugin_fields(hidden_size=16, head_hidden_size=8, vocab_size=512, temperature=temperature)
    for seed in (-1, 2**64):  # the INT64 field carries a 64-bit key: [0, 2**64)
        with pytest.raises(ValueError, match=f"NEG seed must fit in 64 bits, got {seed}"):
            P.neg_plugin_fields(hidden_size=16, head_hidden_size=8, vocab_size=512, seed=seed)
    fields = dict((name, data) for name, data, _ in P.neg_plugin_fields(
        hidden_size=16, head_hidden_size=8, vocab_size=512, seed=2**64 - 1))
    assert int(fields["seed"][0]) == -1  # two's complement of 2**64 - 1


def _probe_library(sources, flags):
    """A HostLibrary of ``sources`` (the first is the main file) exporting ``int value()``."""
    import ctypes

    from trt_neg.kernels.build import HostLibrary

    def declare(lib):
        lib.value.restype = ctypes.c_int

    return HostLibrary("probe", sources[0], sources[1:], flags, declare)


def test_a_host_library_is_rebuilt_when_its_sources_or_flags_change(tmp_path, monkeypatch):
    """The cache key covers the sources' bytes, the compiler and the flags: an edited header or another
    flag never reuses a stale library (each gets its own directory), the same inputs reuse the built one."""
    monkeypatch.setenv("TRT_NEG_CACHE", str(tmp_path / "cache"))
    main, header = tmp_path / "lib.cpp", tmp_path / "value.h"
    main.write_text('#include "value.h"\nextern "C" int value() { return VALUE; }\n')
    header.write_text("#define VALUE 1\n")

    def library(flags):
        return _probe_library([main, header], flags)

    first = library(["-O0"]).path()
    assert first.is_file() and first.parent.parent == tmp_path / "cache" / "probe"
    assert library(["-O0"]).path() == first
    assert library(["-O1"]).path() != first
    header.write_text("#define VALUE 2\n")
    second = library(["-O0"])
    assert second.path() != first and second.load().value() == 2


def test_host_library_flags_from_the_environment_follow_its_own_and_key_the_cache(tmp_path, monkeypatch):
    """$TRT_NEG_HOST_CXXFLAGS (the sanitiser tests' way to rebuild the host libraries) is split
    as a shell would and comes after the library's own flags, so it can override them; and the
    library it gives lives under its own key, next to the plain build, which stays."""
    from trt_neg.kernels.build import EXTRA_FLAGS_VAR

    monkeypatch.setenv("TRT_NEG_CACHE", str(tmp_path / "cache"))
    main = tmp_path / "lib.cpp"
    main.write_text('extern "C" int value() { return VALUE; }\n')
    monkeypatch.delenv(EXTRA_FLAGS_VAR, raising=False)
    plain = _probe_library([main], ["-DVALUE=1"])
    assert plain.load().value() == 1
    plain_path = plain.path()
    monkeypatch.setenv(EXTRA_FLAGS_VAR, "-UVALUE '-DVALUE=(2 + 1)'")
    rebuilt = _probe_library([main], ["-DVALUE=1"])
    assert rebuilt.load().value() == 3
    assert rebuilt.path() != plain_path and plain_path.is_file()
