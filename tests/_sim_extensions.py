"""The torch extensions of the kernels -- the bindings plugins/neg/negTorch.cpp and
plugins/gdn/gdnTorch.cpp that :mod:`trt_neg.kernels.cuda_ext` builds on a GPU -- built on the
CPU simulation of CUDA instead, as real extension modules over CPU tensors.

Each is one translation unit (plugins/{neg,gdn}/tests/*TorchSim.cpp: the binding, the kernel
file compiled as C++, and cudaSim/simControl.h's C ABI) compiled by g++ against the installed
torch, with the simulation's stand-ins for c10/cuda's stream and device guard, and cached like
the host libraries.  :class:`SimulatedExtension` stands where ``cuda_ext.load()`` /
``load_gdn()`` return the module: each call runs on a freshly configured simulated device, in
the order and on the GPU its settings name, checks UBSan's log afterwards, and adds the
simulation's own message to a launch error.  Imported by name from the tests.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
from _build import GXX, PLUGINS, TORCH_EXTENSION_STD
from _cuda_sim import GDN_ARCHS, ORDERS, SIM, SIM_FLAGS, SimulatedKernelError, check_ubsan

from trt_neg.kernels.build import HostLibrary

H200_SHARED_OPTIN = GDN_ARCHS["sm_90"][2]  # cudaDevAttrMaxSharedMemoryPerBlockOptin on an H200 (227 KiB)

# The tests import this with pytest.importorskip: without a compiler or Python's headers they skip.
if GXX is None:
    raise ImportError("g++ is not installed: the extensions cannot be built")
if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
    raise ImportError(f"Python.h is not in {sysconfig.get_paths()['include']}: the extensions cannot be built "
                      "(install the Python development headers)")


@dataclass
class SimDevice:
    """The simulated GPU and the fibers' order for the next calls."""

    order: str = "forward"
    shuffle_seed: int = 0
    sm: tuple[int, int] = (9, 0)
    max_shared_optin: int = H200_SHARED_OPTIN


def _declare(lib: ctypes.CDLL) -> None:
    lib.trtneg_sim_configure.argtypes = [ctypes.c_int32, ctypes.c_uint32, ctypes.c_int32, ctypes.c_int32,
                                         ctypes.c_int32]
    lib.trtneg_sim_configure.restype = None
    lib.trtneg_sim_error_message.restype = ctypes.c_char_p
    lib.trtneg_sim_launches.restype = ctypes.c_int32


def _torch_flags(module: str) -> tuple[list[str], list[str]]:
    """Compile flags (torch's and Python's headers as system headers: they are not ours to
    warn about) and link arguments of a torch extension module named ``module``."""
    import torch.utils.cpp_extension as ext

    includes = [*ext.include_paths(), sysconfig.get_paths()["include"]]
    flags = [f"-I{SIM / 'torch'}", *SIM_FLAGS, TORCH_EXTENSION_STD, f"-DTORCH_EXTENSION_NAME={module}", "-DTORCH_API_INCLUDE_EXTENSION_H",
             f"-DTRTNEG_TORCH_VERSION={torch.__version__}",  # in the cache key: a new torch rebuilds
             *[a for inc in includes for a in ("-isystem", inc)]]
    libs = [f"-L{p}" for p in ext.library_paths()] + ["-lc10", "-ltorch", "-ltorch_cpu", "-ltorch_python"]
    libs += [f"-Wl,-rpath,{p}" for p in ext.library_paths()]
    return flags, libs


def _library(kind: str, module: str, kernel_sources: list[Path]) -> HostLibrary:
    flags, libs = _torch_flags(module)
    common = PLUGINS / "common"
    sources = [PLUGINS / kind / f"{kind}Torch.cpp", *kernel_sources, common / "torchBinding.h",
               common / "hostDevice.h", common / "cudaLaunch.h", *sorted(SIM.rglob("*.h")), *sorted(SIM.rglob("*.cuh"))]
    return HostLibrary(f"{kind}_torch_sim", PLUGINS / kind / "tests" / f"{kind}TorchSim.cpp", sources, flags,
                       _declare, libs)


class SimulatedExtension:
    """An extension module built on the simulation, with the module's functions: each call
    configures the simulated device from :attr:`device` first, then checks UBSan's log."""

    def __init__(self, library: HostLibrary, module: str):
        path = library.path()
        spec = importlib.util.spec_from_file_location(module, path)
        self.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)
        self.control = library.load()  # the same shared object, for simControl.h's C ABI
        self.device = SimDevice()
        self.calls = 0

    def reset(self) -> "SimulatedExtension":
        """The default device (an H200, threads forward) and the call count at zero."""
        self.device, self.calls = SimDevice(), 0
        return self

    def launches(self) -> int:
        """Kernel launches of the latest call."""
        return int(self.control.trtneg_sim_launches())

    def __getattr__(self, name: str):
        fn = getattr(self.module, name)

        @functools.wraps(fn)
        def call(*args, **kwargs):
            d = self.device
            self.control.trtneg_sim_configure(ORDERS[d.order], d.shuffle_seed, d.sm[0], d.sm[1], d.max_shared_optin)
            self.calls += 1
            # Deterministic mode fills torch.empty's memory (the bindings' outputs and workspace)
            # with NaN / the largest integer, as the harnesses poison theirs: nothing reads zeros
            # it never wrote.
            deterministic = torch.are_deterministic_algorithms_enabled()
            warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
            torch.use_deterministic_algorithms(True)
            try:
                result = fn(*args, **kwargs)
            except RuntimeError as e:
                check_ubsan()
                seen = self.control.trtneg_sim_error_message().decode()
                if seen:
                    raise SimulatedKernelError(f"{e}\nsimulation: {seen}") from e
                raise
            finally:
                torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            check_ubsan()
            return result

        return call


_KINDS = {
    "neg": ("trt_neg_neg_sim", ("negKernel.cu", "negKernel.h", "negMath.h")),
    "gdn": ("trt_neg_gdn_sim", ("gdnKernel.cu", "gdnKernel.h", "gdnMath.h", "gdnChunk.h", "gdnParams.h")),
}


@functools.lru_cache(maxsize=None)
def _libraries() -> dict[str, HostLibrary]:
    """Both libraries, built side by side on first use (each compile is mostly torch's headers,
    about half a minute of one core)."""
    from concurrent.futures import ThreadPoolExecutor

    libs = {kind: _library(kind, module, [PLUGINS / kind / f for f in files] + [PLUGINS / "common" / "philox.h"])
            for kind, (module, files) in _KINDS.items()}
    with ThreadPoolExecutor(len(libs)) as pool:
        list(pool.map(HostLibrary.path, libs.values()))
    return libs


@functools.lru_cache(maxsize=None)
def _extension(kind: str) -> SimulatedExtension:
    return SimulatedExtension(_libraries()[kind], _KINDS[kind][0])


def neg_extension() -> SimulatedExtension:
    """negTorch.cpp over negKernel.cu on the simulation (loaded once per process; cached on disk)."""
    return _extension("neg")


def gdn_extension() -> SimulatedExtension:
    """gdnTorch.cpp over gdnKernel.cu on the simulation (loaded once per process; cached on disk)."""
    return _extension("gdn")
