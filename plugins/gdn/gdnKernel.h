// CUDA launcher of the Gated DeltaNet op (context and generation phases, mixed batches).
// Plain C++ header: needs only cuda_runtime_api.h, no TensorRT.
#pragma once

#include "gdnChunk.h"
#include "gdnParams.h"

#include <cstddef>
#include <cuda_runtime_api.h>

namespace trt_neg
{
namespace gdn
{

// Dynamic shared memory of a scan-only launch: the fp32 state tile [dk, dv], q and k, and
// the reduction scratch. 65.3 KB for dk = dv = 128 (opted in above the 48 KB default). A
// chunk-capable launch needs chunkedSharedBytes() (gdnChunk.h) instead. = scanSharedBytes()
// (gdnParams.h), the figure the plugin validates head dims against.
size_t kernelSharedBytes(GdnShape const& shape);

// Launches the op on `stream`. Every pointer in `p` is device memory (contextMask travels
// by value). Grid: (Hv, batch); block: one thread per state column (dv rounded up to 32).
// `algo`: kAuto (the plugin's), or a forced path for tests; the dispatch rule is in
// gdnKernel.cu's header and gdnChunk.h. Returns cudaSuccess, cudaErrorInvalidValue for bad
// parameters (validate()) or a forced kChunked that cannot run, or the launch error.
// Packed rows past the last sequence (every row when batch = 0) are written as zeros.
cudaError_t launch(GdnParams const& p, cudaStream_t stream, ContextAlgo algo = ContextAlgo::kAuto);

} // namespace gdn
} // namespace trt_neg
