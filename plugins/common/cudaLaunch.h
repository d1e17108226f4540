// One kernel launch helper for every launcher: the triple-chevron launch plus the launch
// error, or, in the CPU simulation of CUDA (tests/cudaSim, -DTRTNEG_CUDA_SIM), the simulated
// launch -- so the launchers' own code (plans, grids, workspace carving) runs in the tests.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <mutex>
#include <utility>

// Declares `name`, the block's dynamic shared memory as `type` elements: nvcc's
// `extern __shared__` array, or in the simulation the launch's buffer (fresh per block).
#if defined(TRTNEG_CUDA_SIM)
#define TRTNEG_DYNAMIC_SHARED(type, name) type* const name = ::cudasim::dynamicSmem<type>()
#else
#define TRTNEG_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

namespace trt_neg
{

template <typename... Params, typename... Args>
cudaError_t launchKernel(
    void (*kernel)(Params...), dim3 grid, dim3 block, size_t sharedBytes, cudaStream_t stream, Args&&... args)
{
#if defined(TRTNEG_CUDA_SIM)
    return cudasim::launch(kernel, grid, block, sharedBytes, stream, std::forward<Args>(args)...);
#else
    kernel<<<grid, block, sharedBytes, stream>>>(std::forward<Args>(args)...);
    return cudaGetLastError();
#endif
}

// Lets `kernel` launch with `bytes` of dynamic shared memory on the current device: raises its
// cudaFuncAttributeMaxDynamicSharedMemorySize to `bytes` when below, and never lowers it. The
// attribute is one per kernel and device, shared by every enqueue in the process (TensorRT may
// enqueue two engines' plugins on two threads): a launcher that set its own size each time could
// lower another's between that one's set and its launch, which then fails with
// cudaErrorInvalidValue. Raises go one at a time, each after a fresh read; a size that already
// fits takes no lock.
template <typename... Params>
cudaError_t allowDynamicShared(void (*kernel)(Params...), size_t bytes)
{
    static std::mutex raising;
    cudaFuncAttributes attr{};
    cudaError_t err = cudaFuncGetAttributes(&attr, kernel);
    if (err != cudaSuccess || bytes <= static_cast<size_t>(attr.maxDynamicSharedSizeBytes))
    {
        return err;
    }
    std::lock_guard<std::mutex> const lock(raising);
    err = cudaFuncGetAttributes(&attr, kernel);
    if (err != cudaSuccess || bytes <= static_cast<size_t>(attr.maxDynamicSharedSizeBytes))
    {
        return err;
    }
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

} // namespace trt_neg
