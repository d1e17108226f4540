// CPU reference implementation of the Gated DeltaNet op (same maths as the CUDA kernel,
// from gdnMath.h and gdnChunk.h). Used by the ctypes host library (gdnHost.cpp) and by C++ tests.
#pragma once

#include "gdnChunk.h"
#include "gdnParams.h"

namespace trt_neg
{
namespace gdn
{

// Runs the op on the CPU. Every pointer in `p` is host memory. Returns nullptr on success,
// else an error message (valid until the next call on this thread). numThreads <= 0: all.
// `algo` picks the context-phase form exactly as the kernel does: per launch
// (autoLaunchChunks()) and per sequence (useChunked()); `chunk` is the chunk size (a multiple of kTokenTile; the kernel's is
// pickChunkSize() of the device).
char const* forwardHost(GdnParams const& p, int numThreads, ContextAlgo algo = ContextAlgo::kAuto,
    int chunk = kHostChunkSize);

} // namespace gdn
} // namespace trt_neg
