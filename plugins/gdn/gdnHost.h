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
// (autoLaunchChunks()) and per sequence (useChunked()); `chunk` is the chunk size (a multiple
// of kTokenTile; the kernel's is pickChunkSize() of the device).
char const* forwardHost(GdnParams const& p, int numThreads, ContextAlgo algo = ContextAlgo::kAuto,
    int chunk = kHostChunkSize);

// GdnParams from the host library's C arguments (trtneg_gdn_forward_host; requestTypes nullptr
// = all context): nullptr, or the error (batch beyond kMaxSeqsPerCall, a request type other
// than 0 or 1). The CUDA simulation's harness builds its launches from the same arguments.
char const* paramsFromArgs(void const* qkv, void const* a, void const* b, void const* z, float const* aLog,
    float const* dtBias, float const* normWeight, float* statePool, int32_t const* slotMapping,
    int32_t const* requestTypes, int32_t const* lastTokenIds, void* out, int32_t dtype, int32_t batch,
    int32_t removePadding, int32_t maxSeqLen, int64_t numTokens, int64_t numSlots, int32_t numKHeads,
    int32_t numVHeads, int32_t headKDim, int32_t headVDim, float normEps, int32_t continueContext, GdnParams& p);

} // namespace gdn
} // namespace trt_neg
