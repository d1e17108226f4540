// The Gated DeltaNet CUDA op -- gdnKernel.cu itself, launcher included, and the TensorRT
// plugin's enqueue (gdn::pluginEnqueue) -- run on the CPU simulation of CUDA
// (plugins/common/tests/cudaSim), with a C ABI for ctypes (tests/_cuda_sim.py). Every device
// buffer is guarded and poisoned (cudaSim/simDevice.h): an out-of-bounds read faults, an
// out-of-bounds write is reported, and output rows the kernel never writes stay NaN.
#include "../gdnHost.cpp"
#include "../gdnKernel.cu"
#include "../gdnPluginCore.cpp"
#include "../gdnPluginEnqueue.h"
#include "../../common/pluginFields.cpp"

#include "../../common/tests/cudaSim/simDevice.h"
#include "../../common/tests/cudaSim/simHarness.h"

using cudasim::simFail;

extern "C"
{

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
    cudasim::configure(static_cast<cudasim::Order>(order), shuffleSeed, smMajor, smMinor, maxSharedOptin);
    cudasim::config().device.funcMaxThreadsPerBlock = funcMaxThreads;
    *launchedSharedBytes = -1;
    GdnParams p;
    if (char const* err = paramsFromArgs(qkv, a, b, z, aLog, dtBias, normWeight, statePool, slotMapping, requestTypes,
            lastTokenIds, out, dtype, batch, removePadding, maxSeqLen, numTokens, numSlots, numKHeads, numVHeads,
            headKDim, headVDim, normEps, continueContext, p))
    {
        return simFail(err);
    }
    try
    {
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
            return simFail(cudasim::describeLaunchError(e));
        }
        std::string why;
        if (!dev.intact(why))
        {
            return simFail(why);
        }
        cudasim::copyBack(statePool, p.statePool, poolFloats * sizeof(float));
        cudasim::copyBack(out, p.out, valueBytes);
        return 0;
    }
    catch (std::exception const& ex)
    {
        return simFail(ex.what());
    }
}

// The plugin's enqueue with the plugin's fields and its inputs in its order (gdnPluginCore.h):
// qkv, a, b and z of TensorType typeId with qkv's dims qkvDims ([T, C] packed, [B, Lmax, C]
// padded), A_log and dt_bias, the state pool of numSlots slots behind the host rnn_state_ptr,
// host_request_types, last_token_ids and slot_mapping of length `batch`, norm_weight. z and
// norm_weight are inputs only with gatedNorm. Host inputs sit in guarded buffers too.
// statePool and out are copied back only when enqueue succeeds. Returns 0, or 1 with
// trtneg_sim_last_error() giving enqueue's error (and the simulation's message).
int trtneg_gdn_plugin_sim(int32_t numKHeads, int32_t numVHeads, int32_t headKDim, int32_t headVDim, int32_t typeId,
    int32_t removeInputPadding, int32_t gatedNorm, float normEps, int32_t continueContext, int64_t const* qkvDims,
    int32_t qkvRank, int64_t batch, void const* qkv, void const* a, void const* b, float const* aLog,
    float const* dtBias, float* statePool, int64_t numSlots, int32_t const* requestTypes,
    int32_t const* lastTokenIds, int32_t const* slotMapping, void const* z, float const* normWeight, void* out)
{
    using namespace trt_neg;
    using namespace trt_neg::gdn;
    cudasim::configure(cudasim::Order::kForward, 0, cudasim::Device{}.major); // the default H200
    try
    {
        GdnPluginConfig cfg;
        cfg.shape = GdnShape{numKHeads, numVHeads, headKDim, headVDim};
        cfg.typeId = typeId;
        cfg.removeInputPadding = removeInputPadding != 0;
        cfg.gatedNorm = gatedNorm != 0;
        cfg.normEps = normEps;
        cfg.continueContext = continueContext != 0;
        cfg.validate();

        cudasim::Buffers dev;
        size_t rows = 1;
        for (int32_t i = 0; i + 1 < qkvRank; ++i)
        {
            rows *= static_cast<size_t>(qkvDims[i]);
        }
        size_t const elem = static_cast<size_t>(dtypeSize(cfg.kernelDType()));
        size_t const heads = static_cast<size_t>(numVHeads), seqs = static_cast<size_t>(batch > 0 ? batch : 0);
        size_t const valueBytes = rows * static_cast<size_t>(cfg.shape.valueDim()) * elem;
        size_t const poolFloats = static_cast<size_t>(numSlots) * static_cast<size_t>(cfg.shape.stateFloatsPerSlot());
        auto const bytes = [](void const* x) { return static_cast<unsigned char const*>(x); };
        float* const pool = dev.add("state_pool", statePool, poolFloats);
        int64_t const poolAddress = static_cast<int64_t>(reinterpret_cast<intptr_t>(pool));
        void const* inputs[11] = {};
        inputs[kIN_QKV] = dev.add("qkv", bytes(qkv), rows * static_cast<size_t>(cfg.shape.convDim()) * elem);
        inputs[kIN_A] = dev.add("a", bytes(a), rows * heads * elem);
        inputs[kIN_B] = dev.add("b", bytes(b), rows * heads * elem);
        inputs[kIN_A_LOG] = dev.add("A_log", aLog, heads);
        inputs[kIN_DT_BIAS] = dev.add("dt_bias", dtBias, heads);
        inputs[kIN_STATE_PTR] = dev.add("rnn_state_ptr", &poolAddress, 1);
        inputs[kIN_HOST_REQUEST_TYPES] = dev.add("host_request_types", requestTypes, seqs);
        inputs[kIN_LAST_TOKEN_IDS] = dev.add("last_token_ids", lastTokenIds, seqs);
        inputs[kIN_SLOT_MAPPING] = dev.add("slot_mapping", slotMapping, seqs);
        inputs[kIN_Z] = dev.add("z", bytes(z), valueBytes, 0, cfg.gatedNorm);
        inputs[kIN_NORM_WEIGHT] = dev.add("norm_weight", normWeight, static_cast<size_t>(headVDim), 0, cfg.gatedNorm);
        void* const y = dev.add<unsigned char>("out", nullptr, valueBytes);

        std::string const err = pluginEnqueue(cfg, DimsView{qkvRank, qkvDims}, DimsView{1, &batch}, inputs, y,
            static_cast<cudaStream_t>(nullptr));
        if (!err.empty())
        {
            std::string const sim = cudasim::lastError().message;
            return simFail(sim.empty() ? err : err + ": " + sim);
        }
        std::string why;
        if (!dev.intact(why))
        {
            return simFail(why);
        }
        cudasim::copyBack(statePool, pool, poolFloats * sizeof(float));
        cudasim::copyBack(out, y, valueBytes);
        return 0;
    }
    catch (std::exception const& ex)
    {
        return simFail(ex.what());
    }
}

} // extern "C"
