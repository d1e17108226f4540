// CPU reference implementation of the Gated DeltaNet op (same maths as the CUDA kernel,
// from gdnMath.h). Used by the ctypes host library (gdnHost.cpp) and by C++ tests.
#pragma once

#include "gdnParams.h"

namespace trt_neg
{
namespace gdn
{

// Runs the op on the CPU. Every pointer in `p` is host memory. Returns nullptr on success,
// else an error message (valid until the next call on this thread). numThreads <= 0: all.
char const* forwardHost(GdnParams const& p, int numThreads);

} // namespace gdn
} // namespace trt_neg
