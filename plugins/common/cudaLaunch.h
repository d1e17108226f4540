// One kernel launch helper for every launcher: the triple-chevron launch plus the launch
// error, or, in the CPU simulation of CUDA (tests/cudaSim, -DTRTNEG_CUDA_SIM), the simulated
// launch -- so the launchers' own code (plans, grids, workspace carving) runs in the tests.
#pragma once

#include <cuda_runtime_api.h>

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

} // namespace trt_neg
