// CPU simulation stand-in for c10/cuda/CUDAGuard.h (see cudaSim.h): the simulation has one
// device, so the guard only takes the binding's device as the real one does.
#pragma once

#include <c10/core/Device.h>

namespace c10::cuda
{

struct CUDAGuard
{
    explicit CUDAGuard(c10::Device /*device*/) {}
    CUDAGuard(CUDAGuard const&) = delete;
    CUDAGuard& operator=(CUDAGuard const&) = delete;
};

} // namespace c10::cuda
