"""The C++ under AddressSanitizer and UndefinedBehaviorSanitizer, with every local that is left
uninitialised filled with a non-zero pattern (``-ftrivial-auto-var-init=pattern``), and under
valgrind's memcheck.

A plain build reads a forgotten initialisation as whatever the stack held, often zero, so a
test can pass by luck (a Philox counter word or a radix-select flag left unset survived the
mutation tests that way); with the pattern it reads 0xFE bytes and the result changes, or UBSan
stops at a bool that is neither 0 nor 1. ASan stops at any out-of-bounds or freed access on the
heap or stack, UBSan at any undefined behaviour (-fno-sanitize-recover: the first report ends
the program). Memcheck stops at a branch on a value never written, which the pattern misses
where the object is not a local of the code that leaves it unset (a member without an
initialiser, in an object returned by value: the caller's slot).

* each plugin's plain-C++ core test (GDN's runs the host op through the enqueue path), both ways;
* the host libraries' own test files (host twins vs the torch reference, the differential
  fuzz, the GDN host op), run in a child pytest whose host libraries are built with these
  flags (``$TRT_NEG_HOST_CXXFLAGS``, trt_neg/kernels/build.py) and which has libasan
  preloaded, as a library built with ASan needs when the program (Python) is not.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest
from _build import GXX, PATTERN_INIT, ROOT, cuda_include, run_plugin_core_test

from trt_neg.kernels.build import EXTRA_FLAGS_VAR

SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", *PATTERN_INIT, "-g", "-O1"]
# The host libraries' tests: between them they cover V from 1 to 248320, top_k up to and past
# V, NaN/inf logits and entropies, thresholds at +-inf and NaN, 1 to 256 rows, every split-V
# path, fp32/fp16/bf16 hidden states, and GDN's scan and chunked paths in every layout.
HOST_LIBRARY_TESTS = ("tests/test_neg_host.py", "tests/test_neg_fuzz.py", "tests/test_gdn_host.py")


def _libasan() -> str | None:
    if GXX is None:
        return None
    path = subprocess.run([GXX, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None  # else g++ echoes the bare name


LIBASAN = _libasan()
needs_sanitizers = pytest.mark.skipif(LIBASAN is None, reason="g++ or its AddressSanitizer runtime (libasan) missing")


@needs_sanitizers
@pytest.mark.parametrize("plugin", ["neg", "gdn"])
def test_plugin_core_cpp_tests_clean_under_sanitizers(tmp_path, plugin):
    if plugin == "neg" and cuda_include() is None:
        pytest.skip("CUDA headers missing")
    run_plugin_core_test(plugin, tmp_path, SANITIZE)


VALGRIND = shutil.which("valgrind")


@pytest.mark.skipif(GXX is None or VALGRIND is None, reason="g++ or valgrind missing")
@pytest.mark.parametrize("plugin", ["neg", "gdn"])
def test_plugin_core_cpp_tests_clean_under_valgrind(tmp_path, plugin):
    if plugin == "neg" and cuda_include() is None:
        pytest.skip("CUDA headers missing")
    run_plugin_core_test(plugin, tmp_path, ["-g"], runner=[VALGRIND, "-q", "--error-exitcode=99"])


def sanitized_env() -> dict:
    env = dict(os.environ)
    env[EXTRA_FLAGS_VAR] = shlex.join(SANITIZE)
    env["LD_PRELOAD"] = " ".join(filter(None, [LIBASAN, os.environ.get("LD_PRELOAD")]))
    env["ASAN_OPTIONS"] = "detect_leaks=0"  # CPython keeps its allocations at exit by design
    return env


@needs_sanitizers
def test_host_library_tests_clean_under_sanitizers(monkeypatch):
    from trt_neg.kernels import gdn_host, host

    # Built here, with the child's flags and cache: the child finds and loads these very builds.
    monkeypatch.setenv(EXTRA_FLAGS_VAR, shlex.join(SANITIZE))
    for library in (host, gdn_host):
        assert b"libasan.so" in library.library_path().read_bytes()  # a NEEDED entry: ASan is in
    # -s: a sanitiser report ends the child inside a test, before pytest would show what it captured.
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-s", "-p", "no:cacheprovider", *HOST_LIBRARY_TESTS],
                       cwd=ROOT, env=sanitized_env(), capture_output=True, text=True, timeout=600)
    status = r.returncode  # named: pytest's report of a failed comparison would repeat r's whole output
    assert status == 0, f"child pytest exit status {status}\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}"
    summary = r.stdout.splitlines()[-1]
    assert " passed" in summary and " failed" not in summary, summary
