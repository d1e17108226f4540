// CPU simulation stand-in for c10/cuda/CUDAGuard.h (see cudaSim.h): the simulation has one
// device, the CPU, and the guard refuses any other, as the real one refuses a non-CUDA device
// (so a binding that builds its guard before checking the device fails here as on a GPU).
#pragma once

#include <c10/core/Device.h>
#include <c10/util/Exception.h>

namespace c10::cuda
{

struct CUDAGuard
{
    explicit CUDAGuard(c10::Device device)
    {
        TORCH_CHECK(device.is_cpu(), "CUDAGuard (simulated): not the simulation's device: ", device);
    }
    CUDAGuard(CUDAGuard const&) = delete;
    CUDAGuard& operator=(CUDAGuard const&) = delete;
};

} // namespace c10::cuda
