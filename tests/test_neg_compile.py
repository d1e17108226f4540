"""Compile checks for the NEG C++/CUDA sources, and the plugin core's C++ tests.

* nvcc compiles the fused kernel for sm_80, sm_89 and sm_90 (one call, three -gencode);
* g++ builds and runs plugins/neg/tests/negPluginCoreTest.cpp (fields, shapes, types,
  serialisation round trip) -- the plain-C++ core of the TensorRT adapter;
* the torch extension binding is syntax-checked against the installed torch's headers, and
  nvcc compiles the kernel with the flags torch's extension build adds; where torch is a CUDA
  build (no GPU needed), both extensions are built for real by ``trt_neg.kernels.cuda_ext``;
* the TensorRT adapter itself is syntax-checked, and run against a mock of TensorRT's runtime
  (plugins/neg/tests/negPluginAdapterTest.cpp), only where TensorRT headers exist
  (``TRT_INCLUDE_DIR`` or the NGC default location); they are not on the CI machines.
"""

import os
import re
import shutil
from pathlib import Path

import pytest
from _build import (ARCHS, GENCODE, GXX, NO_SPILLS, NVCC, PLUGIN_FIELDS, PLUGINS, check_sass, cuda_include, run,
                    run_plugin_core_test, tensorrt_adapter_syntax, torch_binding_syntax, torch_extension_kernel,
                    trt_include)

NEG = PLUGINS / "neg"


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_nvcc_compiles_kernel_for_sm80_sm89_sm90(tmp_path):
    """Every kernel (head GEMV for three dtypes, tensor-core head for bf16/fp16; one block per row;
    split-V slice and merge) is compiled for every target without register spills (ptxas -v)."""
    obj = tmp_path / "negKernel.o"
    r = run([NVCC, "-std=c++17", "-O3", "-c", NEG / "negKernel.cu", "-o", obj, "-Werror", "all-warnings",
             "-Xptxas", "-v", *NO_SPILLS, *GENCODE])
    check_sass(obj)
    entries = set(re.findall(r"Compiling entry function '\S*?\d(neg(?:Head|HeadMma|Row|Slice|Merge)Kernel)I(\w+?)E\S*' for 'sm_(\d+)'",
                             r.stdout + r.stderr))
    kernels = {("negHeadKernel", "f"), ("negHeadKernel", "6__half"), ("negHeadKernel", "13__nv_bfloat16"),
               ("negHeadMmaKernel", "6__half"), ("negHeadMmaKernel", "13__nv_bfloat16"),
               ("negRowKernel", "Li1024"), ("negSliceKernel", "Li512"), ("negMergeKernel", "Li1024")}
    assert entries == {(name, arg, sm) for name, arg in kernels for sm in ARCHS}


@pytest.mark.skipif(GXX is None or cuda_include() is None, reason="g++ or CUDA headers missing")
def test_plugin_core_cpp_tests(tmp_path):
    run_plugin_core_test("neg", tmp_path)


@pytest.mark.skipif(GXX is None, reason="g++ missing")
def test_host_sources_compile_with_gxx_warnings_as_errors(tmp_path):
    """The shared __host__ __device__ headers must stay valid plain C++."""
    run([GXX, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-Wno-unknown-pragmas",
         NEG / "negHost.cpp"])


@pytest.mark.skipif(trt_include() is None or cuda_include() is None or GXX is None,
                    reason="TensorRT headers not available (set TRT_INCLUDE_DIR)")
def test_tensorrt_adapter_syntax():
    tensorrt_adapter_syntax(NEG / "negPlugin.cpp")


@pytest.mark.skipif(trt_include() is None or cuda_include() is None or GXX is None,
                    reason="TensorRT headers not available (set TRT_INCLUDE_DIR)")
def test_tensorrt_adapter_against_mock(tmp_path):
    """The IPluginV3 adapter called the way TensorRT calls it, against the mock of
    plugins/common/tests/trtMock.h (TensorRT's headers, no libnvinfer, a stub launcher):
    capabilities, serialisation, types, formats, shapes, the workspace enqueue claims for
    every row count up to the profile's, and the error messages."""
    exe = tmp_path / "negPluginAdapterTest"
    run([GXX, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-isystem", trt_include(), "-isystem",
         cuda_include(), NEG / "tests" / "negPluginAdapterTest.cpp", NEG / "negPlugin.cpp", NEG / "negPluginCore.cpp",
         PLUGIN_FIELDS, "-o", exe])
    assert "all checks passed" in run([exe]).stdout


@pytest.mark.skipif(GXX is None or cuda_include() is None, reason="g++ or CUDA headers missing")
def test_torch_binding_syntax(tmp_path):
    torch_binding_syntax(NEG / "negTorch.cpp", tmp_path)


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_kernel_compiles_with_the_torch_extensions_nvcc_flags(tmp_path):
    torch_extension_kernel(NEG / "negKernel.cu", tmp_path)


def test_cuda_ext_leaves_the_language_standard_to_torch():
    # torch.utils.cpp_extension puts its own -std first; one of ours would come later and win,
    # and torch 2.14's headers refuse C++17 (seen: the extension build failed with -std=c++17).
    from trt_neg.kernels import cuda_ext

    assert [f for f in (*cuda_ext.EXTRA_CFLAGS, *cuda_ext.EXTRA_CUDA_CFLAGS) if f.startswith(("-std", "--std"))] == []


def _toolkit(root: Path, nvcc: bool = True) -> Path:
    (root / "include").mkdir(parents=True)
    (root / "include" / "cuda_runtime_api.h").write_text("")
    if nvcc:
        (root / "bin").mkdir()
        (root / "bin" / "nvcc").write_text("")
    return root


def _fake_nvcc_on_path(tmp_path, monkeypatch, top: Path) -> None:
    """An ``nvcc`` wrapper script on PATH whose --dryrun names ``top`` as its toolkit, on
    stderr, as nvcc does (``#$ TOP=<toolkit>/bin/..``)."""
    bin_dir = tmp_path / "wrappers" / "bin"
    bin_dir.mkdir(parents=True)
    nvcc = bin_dir / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho '#$ _HERE_={top}/bin' >&2\necho '#$ TOP={top}/bin/..' >&2\n")
    nvcc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


@pytest.fixture
def no_toolkit_env(monkeypatch, tmp_path):
    from trt_neg.kernels import cuda_ext

    for var in ("CUDA_HOME", "CUDA_PATH", "PYTORCH_NVCC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(cuda_ext, "DEFAULT_TOOLKIT", str(tmp_path / "no-default-toolkit"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    return cuda_ext


def test_cuda_toolkit_takes_torchs_guess_when_it_holds_the_headers(no_toolkit_env, tmp_path):
    home = _toolkit(tmp_path / "cuda-13.0")
    assert no_toolkit_env.cuda_toolkit(str(home)) == str(home)


def test_cuda_toolkit_behind_an_nvcc_wrapper_is_the_one_nvcc_reports(no_toolkit_env, tmp_path, monkeypatch):
    """torch guesses CUDA_HOME as <dir>/bin/nvcc's <dir>: /usr/local for a wrapper script at
    /usr/local/bin/nvcc (as on this project's machines), where no CUDA header is; the build then
    failed in ninja ("cuda_runtime_api.h: No such file or directory", seen with torch 2.6/2.7 CUDA
    wheels). nvcc's own --dryrun names the real toolkit."""
    home = _toolkit(tmp_path / "cuda-13.0")
    _fake_nvcc_on_path(tmp_path, monkeypatch, home)
    torch_guess = str(tmp_path / "wrappers")
    assert Path(no_toolkit_env.cuda_toolkit(torch_guess)) == home


def test_cuda_toolkit_falls_back_to_the_default_folder(no_toolkit_env, tmp_path, monkeypatch):
    default = _toolkit(tmp_path / "usr-local-cuda")
    monkeypatch.setattr(no_toolkit_env, "DEFAULT_TOOLKIT", str(default))
    assert no_toolkit_env.cuda_toolkit(None) == str(default)


def test_cuda_toolkit_error_names_every_folder_tried(no_toolkit_env, tmp_path, monkeypatch):
    _fake_nvcc_on_path(tmp_path, monkeypatch, tmp_path / "headerless")
    with pytest.raises(RuntimeError) as e:
        no_toolkit_env.cuda_toolkit(str(tmp_path / "wrappers"))  # torch's guess: the folder above bin/nvcc
    msg = str(e.value)
    assert msg.startswith("no CUDA toolkit found to build the extensions with: "
                          f"{tmp_path / 'wrappers'} (torch's guess) lacks include/cuda_runtime_api.h; ")
    assert (f"{tmp_path / 'headerless'} (the toolkit of nvcc on PATH ({tmp_path / 'wrappers' / 'bin' / 'nvcc'})) "
            "lacks include/cuda_runtime_api.h and bin/nvcc") in msg
    assert f"{tmp_path / 'no-default-toolkit'} (the default) lacks" in msg and msg.endswith("or set $CUDA_HOME to it")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(RuntimeError, match=re.escape(
            "no CUDA toolkit found to build the extensions with: no nvcc on PATH; "
            f"{tmp_path / 'no-default-toolkit'} (the default) lacks include/cuda_runtime_api.h and bin/nvcc. Install")):
        no_toolkit_env.cuda_toolkit(None)


def test_cuda_toolkit_needs_nvcc_too_unless_pytorch_nvcc_names_it(no_toolkit_env, tmp_path, monkeypatch):
    """Headers without bin/nvcc (pip's nvidia/cuda_runtime folder, say) are no toolkit: torch runs
    <CUDA_HOME>/bin/nvcc, unless $PYTORCH_NVCC names the compiler."""
    headers_only = _toolkit(tmp_path / "cuda_runtime", nvcc=False)
    monkeypatch.setenv("CUDA_HOME", str(headers_only))
    with pytest.raises(RuntimeError, match=re.escape(f"$CUDA_HOME={headers_only}: no CUDA toolkit there "
                                                     "(bin/nvcc missing)")):
        no_toolkit_env.cuda_toolkit(None)
    monkeypatch.setenv("PYTORCH_NVCC", "/opt/cuda/bin/nvcc")
    assert no_toolkit_env.cuda_toolkit(None) == str(headers_only)


@pytest.mark.parametrize("var", ["CUDA_HOME", "CUDA_PATH"])
def test_cuda_toolkit_explicit_setting_is_checked_not_overruled(no_toolkit_env, tmp_path, monkeypatch, var):
    good = _toolkit(tmp_path / "cuda")
    monkeypatch.setenv(var, str(good))
    assert no_toolkit_env.cuda_toolkit("/somewhere/else") == str(good)
    monkeypatch.setenv(var, str(tmp_path))
    with pytest.raises(RuntimeError, match=re.escape(f"${var}={tmp_path}: no CUDA toolkit there "
                                                     "(include/cuda_runtime_api.h and bin/nvcc missing)")):
        no_toolkit_env.cuda_toolkit(str(good))


@pytest.mark.skipif(NVCC is None, reason="nvcc not installed")
def test_the_real_nvcc_reports_its_toolkit():
    from trt_neg.kernels import cuda_ext

    top = cuda_ext._nvcc_top(NVCC)
    assert top is not None and (Path(top) / "include" / "cuda_runtime_api.h").is_file(), top


def _cuda_torch_build_skip() -> str | None:
    import torch
    from torch.utils import cpp_extension

    from trt_neg.kernels import cuda_ext

    if torch.version.cuda is None:
        return "needs a CUDA build of torch (no GPU needed); CI has the CPU wheel"
    if shutil.which("ninja") is None:
        return "needs ninja on PATH for torch.utils.cpp_extension"
    try:
        toolkit = cuda_ext.cuda_toolkit(cpp_extension.CUDA_HOME)  # the one the build will use
    except RuntimeError as e:
        return str(e)
    release = cuda_ext.nvcc_release(cuda_ext.toolkit_nvcc(toolkit))
    if release is None or release.split(".")[0] != torch.version.cuda.split(".")[0]:
        # a toolkit of another CUDA major version than torch's does not build against torch's headers
        return f"the toolkit's CUDA ({release or '?'}, {toolkit}) is not torch's ({torch.version.cuda})"
    return None


_CUDA_TORCH_SKIP = _cuda_torch_build_skip()


@pytest.mark.slow
@pytest.mark.skipif(_CUDA_TORCH_SKIP is not None, reason=str(_CUDA_TORCH_SKIP))
def test_torch_extensions_build_with_cuda_torch(tmp_path, monkeypatch):
    """The GPU check's first step, without its GPU: cuda_ext builds both extensions with
    torch.utils.cpp_extension (nvcc for sm_90, torch's flags, linked against torch's CUDA
    libraries), they import, and their argument checks refuse host tensors."""
    import torch

    from trt_neg.kernels import cuda_ext

    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME)  # _build sets it: restored after
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    # The two questions _build asks of the GPU before it builds: an H200 answers these.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (9, 0))
    neg = cuda_ext._build("trt_neg_cuda_build_check", cuda_ext.NEG_SOURCES, verbose=False)
    gdn = cuda_ext._build("trt_neg_gdn_cuda_build_check", cuda_ext.GDN_SOURCES, verbose=False)
    assert {"neg_step"} <= set(dir(neg)) and {"gdn_forward", "chunk_size", "shared_bytes"} <= set(dir(gdn))

    x = torch.zeros(2, 8)
    with pytest.raises(RuntimeError, match="hidden: must be a CUDA tensor"):
        neg.neg_step(hidden=x, logits=x, w1=x, b1=x[0], w2=x[0], b2=x[0, :1], tau=x[0, :1],
                     seeds=torch.zeros(2, dtype=torch.int64), offsets=torch.zeros(2, dtype=torch.int64),
                     entropy_in=None, activation=0, top_k=1, temperature=1.0, with_guided=False, splits=0,
                     head_algo=0)
    with pytest.raises(RuntimeError, match="qkv: must be a CUDA tensor"):
        gdn.gdn_forward(qkv=x, a=x, b=x, z=None, a_log=x[0], dt_bias=x[0], norm_weight=None, state_pool=x,
                        slot_mapping=None, last_token_ids=torch.ones(1, dtype=torch.int32), request_types=[0],
                        num_k_heads=1, num_v_heads=1, head_k_dim=2, head_v_dim=2, norm_eps=1e-6,
                        remove_padding=True, continue_context=False, algo=0)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None or NVCC is None, reason="cmake/nvcc missing")
def test_cmake_build_and_ctest(tmp_path):
    b = tmp_path / "build"
    env = dict(os.environ, CUDACXX=NVCC)
    for cmd in (["cmake", "-S", str(PLUGINS), "-B", str(b), "-DCMAKE_CUDA_ARCHITECTURES=90"],
                ["cmake", "--build", str(b), "-j2"], ["ctest", "--test-dir", str(b), "--output-on-failure"]):
        run(cmd, env=env)


def test_tensorrt_skips_say_how_to_enable_them():
    for test in (test_tensorrt_adapter_syntax, test_tensorrt_adapter_against_mock):
        reasons = [mark.kwargs["reason"] for mark in test.pytestmark if mark.name == "skipif"]
        assert reasons == ["TensorRT headers not available (set TRT_INCLUDE_DIR)"], test.__name__
