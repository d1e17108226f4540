// CPU simulation stand-in for c10/cuda/CUDAStream.h (see cudaSim.h): the one stream of the
// simulation, whose launches run at once.  Only what the torch bindings use.
#pragma once

#include <c10/core/Device.h>
#include <cuda_runtime_api.h>

namespace c10::cuda
{

class CUDAStream
{
public:
    cudaStream_t stream() const
    {
        return nullptr;
    }
};

inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex /*device*/ = -1)
{
    return {};
}

} // namespace c10::cuda
