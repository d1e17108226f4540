"""The CPU simulation of CUDA (plugins/common/tests/cudaSim) catches what it claims to:
a missing barrier (in some thread order), a divergent barrier, cub's thread-0-only aggregate
and its storage reused without a barrier, misaligned WMMA and vector accesses, launch limits,
and `__shared__` starting fresh in every block.  The kernels' own tests on it are
tests/test_neg_kernel_sim.py and tests/test_gdn_kernel_sim.py."""

import pytest
from _build import GXX, PLUGINS, run

SIM = PLUGINS / "common" / "tests" / "cudaSim"


@pytest.mark.skipif(GXX is None, reason="g++ missing")
def test_simulation_self_test(tmp_path):
    exe = tmp_path / "cudaSimSelfTest"
    run([GXX, "-std=c++17", "-O1", "-pthread", "-DTRTNEG_CUDA_SIM", f"-I{SIM}", "-Wall", "-Wextra", "-Werror",
         "-Wno-unknown-pragmas", PLUGINS / "common" / "tests" / "cudaSimSelfTest.cpp", "-o", exe])
    assert "CUDA SIM SELF-TEST OK" in run([exe]).stdout
