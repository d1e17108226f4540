// Shared by the torch extension bindings of the kernels (plugins/neg/negTorch.cpp,
// plugins/gdn/gdnTorch.cpp): which tensors a launcher may dereference, and the dtype codes.
#pragma once

#include <torch/extension.h>

#include "hostDevice.h"

namespace trt_neg
{

// The memory the kernels read and write: CUDA memory, or host memory on the CPU simulation
// of CUDA (plugins/common/tests/cudaSim, -DTRTNEG_CUDA_SIM), where the bindings run in tests.
#if defined(TRTNEG_CUDA_SIM)
inline constexpr char const* kKernelDevice = "CPU (simulated CUDA)";
inline bool onKernelDevice(at::Tensor const& t)
{
    return t.is_cpu();
}
#else
inline constexpr char const* kKernelDevice = "CUDA";
inline bool onKernelDevice(at::Tensor const& t)
{
    return t.is_cuda();
}
#endif

// The kernels' dtype code of a floating-point tensor; `name` names it in the error.
inline DType dtypeOf(at::Tensor const& t, char const* name)
{
    switch (t.scalar_type())
    {
    case at::kFloat: return DType::kFLOAT32;
    case at::kHalf: return DType::kFLOAT16;
    case at::kBFloat16: return DType::kBFLOAT16;
    default: TORCH_CHECK(false, name, ": dtype must be float32, float16 or bfloat16, got ", t.scalar_type());
    }
    return DType::kFLOAT32;
}

} // namespace trt_neg
