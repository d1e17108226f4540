"""Compiler helpers of the C++/CUDA tests (tests/test_neg_compile.py, tests/test_gdn_plugin_core.py).

Imported by name: pytest puts tests/ on sys.path (rootdir conftest, no package).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
PLUGIN_FIELDS = PLUGINS / "common" / "pluginFields.cpp"
NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if Path("/usr/local/cuda/bin/nvcc").exists() else None)
GXX = shutil.which("g++")
ARCHS = ("80", "89", "90")
# nvcc flags that embed SASS for every target GPU (sm_80, sm_89, sm_90).
GENCODE = [f"-gencode=arch=compute_{sm},code=sm_{sm}" for sm in ARCHS]
# With -Werror all-warnings, a register spill to local memory fails the compile test.
NO_SPILLS = ["-Xptxas", "-warn-spills"]
# The language standard torch.utils.cpp_extension builds extensions with (torch 2.13 and 2.14 pass
# it to both g++ and nvcc; 2.14's headers refuse anything older). cuda_ext passes none of its own,
# so the CPU builds of the bindings and of the kernels as torch compiles them use this one; the
# host libraries and the plain nvcc compile test stay on C++17, so both standards are covered.
TORCH_EXTENSION_STD = "-std=c++20"


def cuda_include() -> Path | None:
    """The CUDA headers: next to nvcc, else /usr/local/cuda[-*]/include."""
    if NVCC:
        inc = Path(NVCC).resolve().parents[1] / "include"
        if (inc / "cuda_runtime_api.h").exists():
            return inc
    for p in (Path("/usr/local/cuda/include"), *sorted(Path("/usr/local").glob("cuda-*/include"))):
        if (p / "cuda_runtime_api.h").exists():
            return p
    return None


def trt_include() -> Path | None:
    """TensorRT headers: ``TRT_INCLUDE_DIR``, else the NGC container's locations."""
    for p in (os.environ.get("TRT_INCLUDE_DIR"), "/usr/include/x86_64-linux-gnu", "/usr/local/tensorrt/include"):
        if p and (Path(p) / "NvInferRuntime.h").exists():
            return Path(p)
    return None


def _gxx_accepts(flag: str) -> bool:
    if GXX is None:
        return False
    return subprocess.run([GXX, flag, "-x", "c++", "-fsyntax-only", "-"], input="", capture_output=True).returncode == 0


# Locals left uninitialised start as 0xFE bytes, not as whatever the stack held, so a forgotten
# initialisation cannot pass a test by reading a lucky zero. g++ 12 and newer (CI has 12; Ubuntu
# 22.04's default g++ 11 lacks it: there the builds go without it rather than fail).
PATTERN_INIT = ["-ftrivial-auto-var-init=pattern"] if _gxx_accepts("-ftrivial-auto-var-init=pattern") else []


def run(cmd, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd``; assert it succeeded, showing the command and the tail of its output."""
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    return r


# Each plugin's plain-C++ core test (fields, shapes, types, serialisation; for GDN also the
# enqueue path into the host op): its sources under plugins/ and what it prints when it passes.
PLUGIN_CORE_TESTS = {
    "neg": (("neg/tests/negPluginCoreTest.cpp", "neg/negPluginCore.cpp"), "ALL OK"),
    "gdn": (("gdn/tests/gdnCoreTest.cpp", "gdn/gdnPluginCore.cpp", "gdn/gdnHost.cpp"), "all checks passed"),
}


def run_plugin_core_test(plugin: str, scratch: Path, flags=(), runner=()) -> None:
    """Build ``plugin``'s core test with g++ (warnings as errors, then ``flags``) and run it
    (under ``runner``, a command prefix, when given); assert it passed."""
    sources, passed = PLUGIN_CORE_TESTS[plugin]
    includes = [f"-I{cuda_include()}"] if plugin == "neg" else []  # negKernel.h names CUDA's types
    exe = scratch / f"{plugin}PluginCoreTest"
    run([GXX, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", *includes, *flags,
         *[PLUGINS / s for s in sources], PLUGIN_FIELDS, "-o", exe])
    out = run([*runner, exe]).stdout
    assert passed in out, out[-3000:]


def check_sass(obj: Path) -> None:
    """``obj`` holds SASS for every target in ARCHS (where cuobjdump exists)."""
    cuobjdump = Path(NVCC).parent / "cuobjdump"
    if cuobjdump.exists():
        listing = run([cuobjdump, "--list-elf", obj]).stdout
        for sm in ARCHS:
            assert f"sm_{sm}" in listing


def tensorrt_adapter_syntax(source: Path) -> None:
    """g++ -fsyntax-only of a TensorRT adapter against the TensorRT and CUDA headers, warnings as errors."""
    run([GXX, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-isystem", trt_include(),
         "-isystem", cuda_include(), source])


def torch_binding_syntax(source: Path, scratch: Path) -> None:
    """g++ -fsyntax-only of a torch extension binding (negTorch.cpp, gdnTorch.cpp) against the
    installed torch's headers and the CUDA headers. A CPU wheel of torch ships c10/cuda's
    headers but not the one CMake generates for CUDA builds, so an empty stand-in is put in
    ``scratch``; everything else is torch's own. Catches binding errors that would otherwise
    first show when the GPU check builds the extension."""
    import sysconfig

    import torch.utils.cpp_extension as ext

    stand_in = scratch / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text("#pragma once\n")
    includes = [scratch, *ext.include_paths(), cuda_include(), sysconfig.get_paths()["include"], PLUGINS]
    run([GXX, TORCH_EXTENSION_STD, "-fsyntax-only", "-DTORCH_EXTENSION_NAME=trt_neg_syntax_check",
         *[a for inc in includes for a in ("-I", inc)], source])


def torch_extension_kernel(source: Path, scratch: Path) -> None:
    """nvcc of a kernel file as torch.utils.cpp_extension compiles it into the extension
    (trt_neg.kernels.cuda_ext): torch's own nvcc flags, which take away __half/__nv_bfloat16's
    implicit conversions and operators, and cuda_ext's; PTX only (no ptxas: fast) for every
    target in ARCHS, warnings as errors."""
    import torch.utils.cpp_extension as ext

    from trt_neg.kernels import cuda_ext

    ptx = [f"-gencode=arch=compute_{sm},code=compute_{sm}" for sm in ARCHS]
    run([NVCC, *ext.COMMON_NVCC_FLAGS, TORCH_EXTENSION_STD, *cuda_ext.EXTRA_CUDA_CFLAGS, f"-I{PLUGINS}", "-Werror", "all-warnings", *ptx,
         "-c", source, "-o", scratch / (source.stem + ".o")])
