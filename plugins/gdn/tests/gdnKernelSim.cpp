// The Gated DeltaNet CUDA op -- gdnKernel.cu itself, launcher included -- run on the CPU
// simulation of CUDA (plugins/common/tests/cudaSim), with a C ABI for ctypes
// (tests/_cuda_sim.py). Every device buffer is guarded and poisoned (cudaSim/simDevice.h):
// an out-of-bounds read faults, an out-of-bounds write is reported, and output rows the
// kernel never writes stay NaN.
#include "../gdnKernel.cu"

#include "../../common/tests/cudaSim/simDevice.h"

namespace
{

thread_local std::string gSimError;

int fail(std::string msg)
{
    gSimError = std::move(msg);
    return 1;
}

} // namespace

extern "C"
{

char const* trtneg_sim_last_error()
{
    return gSimError.c_str();
}

// gdn::launch on the simulated device. The arguments up to continueContext are
// trtneg_gdn_forward_host's (gdnHost.cpp; host arrays, nullptr = absent, requestTypes
// nullptr = all context); statePool and out are copied back only when the launch succeeds.
// algo: ContextAlgo. order, shuffleSeed: cudasim::Order and its seed. The device: compute
// capability smMajor.smMinor, maxSharedOptin (cudaDevAttrMaxSharedMemoryPerBlockOptin) and
// funcMaxThreads (the kernels' maxThreadsPerBlock from cudaFuncGetAttributes).
// launchedSharedBytes (out): the dynamic shared memory of the kernel launch, -1 if none.
// Returns 0, or 1 with trtneg_sim_last_error() naming the cause.
int trtneg_gdn_forward_sim(void const* qkv, void const* a, void const* b, void const* z, float const* aLog,
    float const* dtBias, float const* normWeight, float* statePool, int32_t const* slotMapping,
    int32_t const* requestTypes, int32_t const* lastTokenIds, void* out, int32_t dtype, int32_t batch,
    int32_t removePadding, int32_t maxSeqLen, int64_t numTokens, int64_t numSlots, int32_t numKHeads,
    int32_t numVHeads, int32_t headKDim, int32_t headVDim, float normEps, int32_t continueContext, int32_t algo,
    int32_t order, uint32_t shuffleSeed, int32_t smMajor, int32_t smMinor, int32_t maxSharedOptin,
    int32_t funcMaxThreads, int64_t* launchedSharedBytes)
{
    using namespace trt_neg;
    using namespace trt_neg::gdn;
    cudasim::Config& sim = cudasim::config();
    sim.order = static_cast<cudasim::Order>(order);
    sim.shuffleSeed = shuffleSeed;
    sim.device.major = smMajor;
    sim.device.minor = smMinor;
    sim.device.maxSharedOptin = maxSharedOptin;
    sim.device.funcMaxThreadsPerBlock = funcMaxThreads;
    cudasim::lastError() = {};
    cudasim::lastLaunch() = {};
    *launchedSharedBytes = -1;
    if (batch < 0 || batch > kMaxSeqsPerCall)
    {
        return fail("gdn sim: batch must be in [0, 4096]");
    }
    try
    {
        GdnParams p;
        p.shape = GdnShape{numKHeads, numVHeads, headKDim, headVDim};
        p.dtype = static_cast<DType>(dtype);
        p.normEps = normEps;
        p.batch = batch;
        p.removePadding = removePadding;
        p.maxSeqLen = maxSeqLen;
        p.numTokens = numTokens;
        p.numSlots = numSlots;
        p.continueContext = continueContext;
        for (int32_t i = 0; i < batch; ++i)
        {
            setContext(p.contextMask, i, !requestTypes || requestTypes[i] == kCONTEXT);
        }

        cudasim::Buffers dev;
        size_t const rows = static_cast<size_t>(numTokens > 0 ? numTokens : 0);
        size_t const elem = static_cast<size_t>(dtypeSize(p.dtype));
        size_t const heads = static_cast<size_t>(numVHeads);
        size_t const valueBytes = rows * static_cast<size_t>(p.shape.valueDim()) * elem;
        size_t const poolFloats = static_cast<size_t>(numSlots) * static_cast<size_t>(p.shape.stateFloatsPerSlot());
        auto const bytes = [](void const* x) { return static_cast<unsigned char const*>(x); };
        p.qkv = dev.add("qkv", bytes(qkv), rows * static_cast<size_t>(p.shape.convDim()) * elem);
        p.a = dev.add("a", bytes(a), rows * heads * elem);
        p.b = dev.add("b", bytes(b), rows * heads * elem);
        p.z = dev.add("z", bytes(z), valueBytes, 0, z != nullptr);
        p.aLog = dev.add("A_log", aLog, heads);
        p.dtBias = dev.add("dt_bias", dtBias, heads);
        p.normWeight = dev.add("norm_weight", normWeight, static_cast<size_t>(headVDim), 0, normWeight != nullptr);
        p.statePool = dev.add("state_pool", statePool, poolFloats);
        p.slotMapping = dev.add("slot_mapping", slotMapping, static_cast<size_t>(batch), 0, slotMapping != nullptr);
        p.lastTokenIds = dev.add("last_token_ids", lastTokenIds, static_cast<size_t>(batch));
        p.out = dev.add<unsigned char>("out", nullptr, valueBytes);

        cudaError_t const e = launch(p, nullptr, static_cast<ContextAlgo>(algo));
        if (cudasim::lastLaunch().launches > 0)
        {
            *launchedSharedBytes = static_cast<int64_t>(cudasim::lastLaunch().sharedBytes);
        }
        if (e != cudaSuccess)
        {
            return fail(cudasim::describeLaunchError(e));
        }
        std::string why;
        if (!dev.intact(why))
        {
            return fail(why);
        }
        cudasim::copyBack(statePool, p.statePool, poolFloats * sizeof(float));
        cudasim::copyBack(out, p.out, valueBytes);
        return 0;
    }
    catch (std::exception const& ex)
    {
        return fail(ex.what());
    }
}

} // extern "C"
