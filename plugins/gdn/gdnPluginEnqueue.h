// What the TensorRT adapter's enqueue does, in plain C++ over the core and the launcher (the
// adapter adds TensorRT's descriptors and the error log). Apart from gdnPluginCore.h because
// it needs CUDA's headers, which the core and its own tests do not; the CUDA simulation runs
// it (plugins/gdn/tests/gdnKernelSim.cpp).
#pragma once

#include "gdnKernel.h"
#include "gdnPluginCore.h"

#include <string>

namespace trt_neg
{
namespace gdn
{

// batch = the length of last_token_ids; the kernel parameters from the raw inputs; the launch
// on `stream`. Returns "" or the error.
inline std::string pluginEnqueue(GdnPluginConfig const& config, DimsView const& qkvDims,
    DimsView const& lastTokenIdsDims, void const* const* inputs, void* output, cudaStream_t stream)
{
    GdnParams p;
    std::string const err
        = config.makeParams(inputs, output, qkvDims, lastTokenIdsDims.nbDims == 1 ? lastTokenIdsDims.d[0] : -1, p);
    if (!err.empty())
    {
        return err;
    }
    cudaError_t const rc = launch(p, stream);
    return rc == cudaSuccess ? "" : std::string("launch failed: ") + cudaGetErrorString(rc);
}

} // namespace gdn
} // namespace trt_neg
