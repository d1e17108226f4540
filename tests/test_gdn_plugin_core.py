"""Compile and C++ checks for the Gated DeltaNet sources (plugins/gdn).

* g++ builds and runs plugins/gdn/tests/gdnCoreTest.cpp: plugin fields (parse, serialise
  round trip, errors), type/shape rules, and the enqueue path (makeParams -> CPU op);
* the shared headers and the host library compile as plain C++ with warnings as errors;
* nvcc compiles the kernel (scan-only and chunk-capable variants) and the GPU check
  harness for sm_80, sm_89 and sm_90;
* the TensorRT adapter is syntax-checked, and run against a mock of TensorRT's runtime
  (plugins/gdn/tests/gdnPluginAdapterTest.cpp), where TensorRT headers exist
  (``TRT_INCLUDE_DIR`` or the NGC default location);
* on a GPU machine (``gpu`` marker) the harness runs the kernel against the host op.
"""

from __future__ import annotations

import re

import pytest
from _build import (ARCHS, GENCODE, GXX, NO_SPILLS, NVCC, PLUGIN_FIELDS, PLUGINS, check_sass, cuda_include, run,
                    run_plugin_core_test, tensorrt_adapter_syntax, torch_binding_syntax, torch_extension_kernel,
                    trt_include)

GDN = PLUGINS / "gdn"


@pytest.mark.skipif(GXX is None, reason="g++ missing")
def test_plugin_core_cpp_tests(tmp_path):
    run_plugin_core_test("gdn", tmp_path)


@pytest.mark.skipif(GXX is None, reason="g++ missing")
def test_host_sources_compile_with_gxx_warnings_as_errors():
    """gdnMath.h / gdnParams.h are __host__ __device__ code: they must stay valid plain C++."""
    for src in ("gdnHost.cpp", "gdnPluginCore.cpp"):
        run([GXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", "-fsyntax-only", GDN / src])


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_nvcc_compiles_kernel_for_sm80_sm89_sm90(tmp_path):
    """Both kernel variants -- scan-only and chunk-capable (gdnChunk.h) -- for the three
    activation dtypes are compiled for every target (read from ptxas -v)."""
    obj = tmp_path / "gdnKernel.o"
    r = run([NVCC, "-std=c++17", "-O3", "-c", GDN / "gdnKernel.cu", "-o", obj, "-Werror", "all-warnings",
             "-Xptxas", "-v", *NO_SPILLS, *GENCODE])
    check_sass(obj)
    entries = set(re.findall(r"Compiling entry function '\S*gdnKernelILNS_5DTypeE(\d+)ELb([01])E\S*' for 'sm_(\d+)'",
                             r.stdout + r.stderr))
    assert entries == {(dt, chunked, sm) for dt in ("0", "1", "7") for chunked in "01" for sm in ARCHS}
    # The GPU check harness (run by test_kernel_on_gpu where a GPU exists) compiles too.
    run([NVCC, "-std=c++17", "-O1", "-c", GDN / "tests" / "gdnKernelTest.cu", "-o", tmp_path / "t.o",
          "-gencode=arch=compute_90,code=sm_90"])


@pytest.mark.skipif(trt_include() is None or cuda_include() is None or GXX is None,
                    reason="TensorRT headers not available (set TRT_INCLUDE_DIR)")
def test_tensorrt_adapter_syntax():
    tensorrt_adapter_syntax(GDN / "gdnPlugin.cpp")


@pytest.mark.skipif(trt_include() is None or cuda_include() is None or GXX is None,
                    reason="TensorRT headers not available (set TRT_INCLUDE_DIR)")
def test_tensorrt_adapter_against_mock(tmp_path):
    """The IPluginV3 adapter called the way TensorRT calls it, against the mock of
    plugins/common/tests/trtMock.h (TensorRT's headers, no libnvinfer, a stub launcher):
    capabilities, serialisation, types, formats, shapes, enqueue, the profile's batch limit
    and the error messages."""
    exe = tmp_path / "gdnPluginAdapterTest"
    run([GXX, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-isystem", trt_include(), "-isystem",
         cuda_include(), GDN / "tests" / "gdnPluginAdapterTest.cpp", GDN / "gdnPlugin.cpp", GDN / "gdnPluginCore.cpp",
         PLUGIN_FIELDS, "-o", exe])
    assert "all checks passed" in run([exe]).stdout


@pytest.mark.skipif(GXX is None or cuda_include() is None, reason="g++ or CUDA headers missing")
def test_torch_binding_syntax(tmp_path):
    torch_binding_syntax(PLUGINS / "gdn" / "gdnTorch.cpp", tmp_path)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_kernel_compiles_with_the_torch_extensions_nvcc_flags(tmp_path):
    torch_extension_kernel(GDN / "gdnKernel.cu", tmp_path)


@pytest.mark.gpu
@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_kernel_on_gpu(tmp_path):
    """The CUDA kernel vs the CPU host op: mixed context/generation batch, 5 head configs incl.
    the 9B's (16/32 heads, 128x128), fp32/fp16/bf16, with and without the fused gated norm."""
    exe = tmp_path / "gdnKernelTest"
    run([NVCC, "-std=c++17", "-O2", "-arch=native", GDN / "tests" / "gdnKernelTest.cu", GDN / "gdnKernel.cu",
         GDN / "gdnHost.cpp", "-o", exe])
    r = run([exe])
    print(r.stdout)
    assert "all cases passed" in r.stdout


def test_tensorrt_skips_say_how_to_enable_them():
    for test in (test_tensorrt_adapter_syntax, test_tensorrt_adapter_against_mock):
        reasons = [mark.kwargs["reason"] for mark in test.pytestmark if mark.name == "skipif"]
        assert reasons == ["TensorRT headers not available (set TRT_INCLUDE_DIR)"], test.__name__
