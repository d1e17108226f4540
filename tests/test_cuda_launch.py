"""plugins/common/cudaLaunch.h's launch helpers on the CPU simulation of CUDA
(plugins/common/tests/cudaSim), which keeps each kernel's dynamic shared-memory opt-in and
refuses a launch above it, as a GPU does."""

import pytest
from _build import GXX, PLUGINS, run

SIM = PLUGINS / "common" / "tests" / "cudaSim"

# Two enqueues of one kernel with different shapes, in either order: the one that needs less
# must not take the opt-in from under the one that needs more (each sets, then launches).
_OPT_IN = r"""
#include <cuda_runtime_api.h>
#include <cudaLaunch.h>
#include <cstdio>
__global__ void tile(float* out)
{
    TRTNEG_DYNAMIC_SHARED(float, s);
    s[threadIdx.x] = 1.0f;
    if (threadIdx.x == 0)
        *out = s[0];
}
__global__ void otherTile(float* out)
{
    if (threadIdx.x == 0)
        *out = 2.0f;
}
template <typename K>
static int optin(K kernel)
{
    cudaFuncAttributes a{};
    return cudaFuncGetAttributes(&a, kernel) == cudaSuccess ? a.maxDynamicSharedSizeBytes : -1;
}
int main()
{
    cudasim::configure(cudasim::Order::kForward, 0, 9, 0); // 48 KB default, 227 KB opt-in
    float out = 0.0f;
    int const kBig = 160 * 1024, kSmall = 64 * 1024;
    std::printf("default %d\n", optin(tile));
    int rc = trt_neg::allowDynamicShared(tile, kBig); // separate statements: argument order is unspecified
    std::printf("big %d %d\n", rc, optin(tile));
    rc = trt_neg::allowDynamicShared(tile, kSmall);
    std::printf("small %d %d\n", rc, optin(tile));
    std::printf("launch big %d\n", trt_neg::launchKernel(tile, dim3(1), dim3(32), kBig, nullptr, &out));
    std::printf("launch small %d\n", trt_neg::launchKernel(tile, dim3(1), dim3(32), kSmall, nullptr, &out));
    rc = trt_neg::allowDynamicShared(tile, 228 * 1024);
    std::printf("beyond %d %d\n", rc != cudaSuccess, optin(tile));
    std::printf("other %d\n", optin(otherTile));
    std::printf("launch other big %d\n",
        trt_neg::launchKernel(otherTile, dim3(1), dim3(32), kBig, nullptr, &out) != cudaSuccess);
    return 0;
}
"""


@pytest.mark.skipif(GXX is None, reason="g++ missing")
def test_allow_dynamic_shared_raises_a_kernels_opt_in_and_never_lowers_it(tmp_path):
    cpp, exe = tmp_path / "optin.cpp", tmp_path / "optin"
    cpp.write_text(_OPT_IN)
    run([GXX, "-std=c++17", "-O1", "-pthread", "-DTRTNEG_CUDA_SIM", f"-I{SIM}", f"-I{PLUGINS / 'common'}", "-Wall",
         "-Wextra", "-Werror", "-Wno-unknown-pragmas", cpp, "-o", exe])
    lines = run([exe]).stdout.splitlines()
    assert lines == [
        f"default {48 * 1024}",
        f"big 0 {160 * 1024}",
        f"small 0 {160 * 1024}",  # a smaller need leaves the larger opt-in in place
        "launch big 0",
        "launch small 0",
        f"beyond 1 {160 * 1024}",  # refused above the device's opt-in limit, nothing changed
        f"other {48 * 1024}",  # the opt-in is per kernel
        "launch other big 1",
    ]
