"""Compile checks for the NEG C++/CUDA sources, and the plugin core's C++ tests.

* nvcc compiles the fused kernel for sm_80, sm_89 and sm_90 (one call, three -gencode);
* g++ builds and runs plugins/neg/tests/negPluginCoreTest.cpp (fields, shapes, types,
  serialisation round trip) -- the plain-C++ core of the TensorRT adapter;
* the TensorRT adapter itself is syntax-checked only where TensorRT headers exist
  (``TRT_INCLUDE_DIR`` or the NGC default location); they are not on the CI machines.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEG = ROOT / "plugins" / "neg"
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
GXX = shutil.which("g++")


def _cuda_include():
    if NVCC:
        inc = Path(NVCC).resolve().parents[1] / "include"
        if (inc / "cuda_runtime_api.h").exists():
            return inc
    for p in (Path("/usr/local/cuda/include"),):
        if (p / "cuda_runtime_api.h").exists():
            return p
    return None


def _trt_include():
    for p in (os.environ.get("TRT_INCLUDE_DIR"), "/usr/include/x86_64-linux-gnu", "/usr/local/tensorrt/include"):
        if p and (Path(p) / "NvInferRuntime.h").exists():
            return Path(p)
    return None


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_nvcc_compiles_kernel_for_sm80_sm89_sm90(tmp_path):
    cmd = [NVCC, "-std=c++17", "-O3", "-c", str(NEG / "negKernel.cu"), "-o", str(tmp_path / "negKernel.o"),
           "-Werror", "all-warnings"]
    for sm in ("80", "89", "90"):
        cmd += ["-gencode", f"arch=compute_{sm},code=sm_{sm}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    cuobjdump = Path(NVCC).parent / "cuobjdump"
    if cuobjdump.exists():
        listing = subprocess.run([str(cuobjdump), "--list-elf", str(tmp_path / "negKernel.o")], capture_output=True,
                                 text=True)
        assert listing.returncode == 0, listing.stderr
        for sm in ("80", "89", "90"):
            assert f"sm_{sm}" in listing.stdout


@pytest.mark.skipif(GXX is None or _cuda_include() is None, reason="g++ or CUDA headers missing")
def test_plugin_core_cpp_tests(tmp_path):
    exe = tmp_path / "negPluginCoreTest"
    cmd = [GXX, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{_cuda_include()}",
           str(NEG / "tests" / "negPluginCoreTest.cpp"), str(NEG / "negPluginCore.cpp"),
           str(ROOT / "plugins" / "common" / "pluginFields.cpp"), "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0 and "ALL OK" in run.stdout, run.stdout + run.stderr


@pytest.mark.skipif(GXX is None, reason="g++ missing")
def test_host_sources_compile_with_gxx_warnings_as_errors(tmp_path):
    """The shared __host__ __device__ headers must stay valid plain C++."""
    cmd = [GXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-Wno-unknown-pragmas",
           str(NEG / "negHost.cpp")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]


@pytest.mark.skipif(_trt_include() is None or _cuda_include() is None, reason="TensorRT headers not available")
def test_tensorrt_adapter_syntax():
    cmd = [GXX, "-std=c++17", "-fsyntax-only", "-Wall", "-Wno-deprecated-declarations", "-Wno-unused-parameter",
           f"-I{_trt_include()}", f"-I{_cuda_include()}", str(NEG / "negPlugin.cpp")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-4000:]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None or NVCC is None, reason="cmake/nvcc missing")
def test_cmake_build_and_ctest(tmp_path):
    b = tmp_path / "build"
    env = dict(os.environ, CUDACXX=NVCC)
    for cmd in (["cmake", "-S", str(ROOT / "plugins"), "-B", str(b), "-DCMAKE_CUDA_ARCHITECTURES=90"],
                ["cmake", "--build", str(b), "-j2"], ["ctest", "--test-dir", str(b), "--output-on-failure"]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        assert r.returncode == 0, (cmd, r.stdout[-3000:], r.stderr[-3000:])
