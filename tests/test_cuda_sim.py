"""The CPU simulation of CUDA (plugins/common/tests/cudaSim) catches what it claims to:
a missing barrier (in some thread order, also between warps with only a warp op between
them), a divergent barrier, mismatched warp-op masks, a shuffle reading a lane that takes no
part, cub's thread-0-only aggregate, its storage reused without a barrier and a block shape
other than its template's, misaligned or lane-divergent WMMA and misaligned vector accesses,
launch limits, and `__shared__` starting fresh in every block; and it accepts what a GPU
accepts (warp ops naming exited lanes, a launch after a configuration error) and follows its
semantics (shuffle widths, WMMA layouts, cub's num_valid).  The kernels' own tests on it are
tests/test_neg_kernel_sim.py and tests/test_gdn_kernel_sim.py."""

import pytest
import torch
from _build import GXX, PLUGINS, run
from _cuda_sim import CXX11_ABI

SIM = PLUGINS / "common" / "tests" / "cudaSim"


@pytest.mark.skipif(GXX is None, reason="g++ missing")
@pytest.mark.parametrize("switch", ["stack", "ucontext"])
def test_simulation_self_test(tmp_path, switch):
    """Both fiber switches: the x86-64 stack switch the tests use, and ucontext, the one other
    architectures get."""
    exe = tmp_path / "cudaSimSelfTest"
    defines = ["-DTRTNEG_CUDA_SIM_UCONTEXT"] if switch == "ucontext" else []
    run([GXX, "-std=c++17", "-O1", "-pthread", "-DTRTNEG_CUDA_SIM", *defines, f"-I{SIM}", "-Wall", "-Wextra",
         "-Werror", "-Wno-unknown-pragmas", PLUGINS / "common" / "tests" / "cudaSimSelfTest.cpp", "-o", exe])
    assert "CUDA SIM SELF-TEST OK" in run([exe]).stdout


# A kernel that reads a __shared__ variable before writing it, in a library of its own.
_UNINIT_SHARED = r"""
#include <cuda_runtime_api.h>
#include <cudaLaunch.h>
__global__ void readFirst(int* out)
{
    __shared__ int slot[4];
    if (threadIdx.x == 0)
    {
        *out = slot[2];
    }
    __syncthreads();
    slot[threadIdx.x % 4] = 5;
}
extern "C" int NAME()
{
    int out = 12345;
    cudasim::lastError() = {};
    return trt_neg::launchKernel(readFirst, dim3(2), dim3(32), 0, nullptr, &out) == cudaSuccess ? out : 99;
}
"""


@pytest.mark.skipif(GXX is None, reason="g++ missing")
def test_shared_memory_starts_poisoned_in_every_loaded_simulation(tmp_path):
    """__shared__ reads before writes see the poison (0xFF bytes: -1), in each of two simulation
    libraries loaded in one process, as the NEG and GDN harnesses are: the cudaSim functions'
    static locals are unique symbols the two share, so each must find its own thread-locals."""
    import ctypes

    libs = []
    for name in ("first_module", "second_module"):
        cpp, so = tmp_path / f"{name}.cpp", tmp_path / f"lib{name}.so"
        cpp.write_text(_UNINIT_SHARED.replace("NAME", name))
        run([GXX, "-std=c++17", "-O1", "-shared", "-fPIC", "-pthread", "-DTRTNEG_CUDA_SIM", f"-I{SIM}",
             f"-I{PLUGINS / 'common'}", "-Wall", "-Werror", "-Wno-unknown-pragmas", CXX11_ABI, cpp, "-o", so])
        libs.append(getattr(ctypes.CDLL(str(so)), name))
    assert [f() for f in (*libs, *libs[::-1])] == [-1, -1, -1, -1]


def test_every_simulation_module_loaded_in_the_test_process_uses_torchs_cxx_abi():
    """The simulation modules that pytest loads share cudaSim's function-local statics (GNU
    unique symbols), std::string and std::map among them, so they must agree on the C++ library
    ABI, and the torch-extension simulations must use torch's (torch 2.6: the pre-C++11 one).
    A mix crashed the suite with "free(): invalid pointer" under torch 2.6."""
    from _cuda_sim import GDN_SIM, NEG_SIM

    _torch_flags = pytest.importorskip("_sim_extensions")._torch_flags  # g++ and Python's headers

    assert CXX11_ABI == f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    flag_sets = {"neg_sim": NEG_SIM.flags, "gdn_sim": GDN_SIM.flags, "torch extension": _torch_flags("m")[0]}
    abis = {name: [f for f in flags if f.startswith("-D_GLIBCXX_USE_CXX11_ABI")] for name, flags in flag_sets.items()}
    assert abis == {name: [CXX11_ABI] for name in flag_sets}


# A SIGSEGV that is not a simulated kernel's guard-page fault, with a handler installed before
# the simulation's. "caused" / "sent": one with SA_RESETHAND, which runs once and then leaves the
# default action. "survived": one that returns from a sent SIGSEGV, after which a kernel's read
# past a buffer must still be the simulation's launch failure.
_FOREIGN_SEGV = r"""
#include <cuda_runtime_api.h>
#include <cudaLaunch.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#include <cstdio>
#include <cstring>
static void previous(int)
{
    char const m[] = "previous handler ran\n";
    (void) !write(1, m, sizeof m - 1);
}
__global__ void readPast(int const* in, int* out)
{
    if (threadIdx.x == 0)
        *out = in[64]; // 256 bytes into a 16-byte buffer: its guard page
}
int main(int, char** argv)
{
    bool const survived = std::strcmp(argv[1], "survived") == 0;
    struct sigaction a{};
    a.sa_handler = previous;
    a.sa_flags = survived ? 0 : SA_RESETHAND;
    sigemptyset(&a.sa_mask);
    sigaction(SIGSEGV, &a, nullptr);
    int* in = nullptr;
    int out = 0;
    if (cudaMalloc(&in, 16) != cudaSuccess) // a guarded buffer: installs the simulation's handler
        return 3;
    if (std::strcmp(argv[1], "caused") != 0)
    {
        raise(SIGSEGV); // sent, not caused: nothing to re-run
        if (!survived)
            return 0;
        cudaError_t const e = trt_neg::launchKernel(readPast, dim3(1), dim3(32), 0, nullptr, in, &out);
        std::printf("launch: %s\n", e == cudaErrorLaunchFailure ? "failed" : "did not fail");
        return 0;
    }
    auto* page = static_cast<volatile int*>(mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    *page = 1; // protected, but no guard page of the simulation's
    return 4;
}
"""


@pytest.mark.skipif(GXX is None, reason="g++ missing")
def test_a_foreign_segfault_goes_to_the_previous_handler_as_it_asked(tmp_path):
    """The simulation's SIGSEGV handler passes any fault that is not a kernel's guard-page access
    to the handler installed before it, as the kernel would have run that handler: SA_RESETHAND's
    runs once, and the access that faulted then ends the process by the default action (chaining
    by a plain call ran it again on every retry of the access, for ever). A sent SIGSEGV reaches
    it too; and when that handler returns, the simulation's own handler is still installed, so a
    kernel's later read past a buffer still fails its launch."""
    import signal
    import subprocess

    src = tmp_path / "foreign_segv.cpp"
    src.write_text(_FOREIGN_SEGV)
    exe = tmp_path / "foreign_segv"
    run([GXX, "-std=c++17", "-O1", "-pthread", "-DTRTNEG_CUDA_SIM", f"-I{SIM}", f"-I{PLUGINS / 'common'}", "-Wall",
         "-Wextra", "-Werror", "-Wno-unknown-pragmas", src, "-o", exe])

    def outcome(mode):
        r = subprocess.run([exe, mode], capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout

    assert outcome("caused") == (-signal.SIGSEGV, "previous handler ran\n")
    assert outcome("sent") == (0, "previous handler ran\n")
    assert outcome("survived") == (0, "previous handler ran\nlaunch: failed\n")
