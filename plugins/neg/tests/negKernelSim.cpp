// The fused NEG CUDA op -- negKernel.cu itself, launcher included, and the TensorRT plugin's
// enqueue (negPluginEnqueue) -- run on the CPU simulation of CUDA (plugins/common/tests/cudaSim),
// with a C ABI for ctypes (tests/_cuda_sim.py).  One translation unit: the sources are included.
// Every device buffer is guarded and poisoned (cudaSim/simDevice.h), so an out-of-bounds
// read faults and an out-of-bounds write is reported.  The workspace starts poisoned too.
#include "../negKernel.cu"
#include "../negPluginCore.cpp"
#include "../../common/pluginFields.cpp"

#include "../../common/tests/cudaSim/simDevice.h"
#include "../../common/tests/cudaSim/simHarness.h"

using cudasim::simFail;

extern "C"
{

// The whole op through negStepLaunch.  Pointers are host arrays (nullptr = absent); the
// outputs are copied back only when the launch succeeds.  `offsetsAreInt32` passes positions
// as int32 (TensorRT's) instead of int64.  hiddenMisalign / logitsMisalign / guidedMisalign:
// bytes by which hidden, the logits and the guided rows sit off cudaMalloc's alignment.  order: cudasim::Order;
// smMajor: the simulated GPU; codeArch: the architecture its code was compiled for (0: smMajor's).
// Returns 0, or 1 with trtneg_sim_last_error() naming the cause (a cudaError_t name and the
// simulation's message).
int trtneg_neg_step_sim(void const* hidden, int32_t hiddenDtype, int32_t N, int32_t H, float const* logits, int32_t V,
    void const* w1, float const* b1, float const* w2, float b2, int32_t d, float tau, float const* entropyIn,
    int32_t activation, int32_t topK, float temperature, int64_t const* seeds, int64_t seed, void const* offsets,
    int32_t offsetsAreInt32, float* guided, int32_t* token, float* entropy, int32_t* fired, int32_t* status,
    int32_t splits, int32_t headAlgo, int32_t hiddenMisalign, int32_t logitsMisalign, int32_t guidedMisalign,
    int32_t order, uint32_t shuffleSeed, int32_t smMajor, int32_t codeArch)
{
    using namespace trt_neg;
    cudasim::configure(static_cast<cudasim::Order>(order), shuffleSeed, smMajor);
    cudasim::config().device.codeArch = codeArch;
    try
    {
        cudasim::Buffers dev;
        size_t const n = static_cast<size_t>(N > 0 ? N : 0);
        size_t const hBytes = static_cast<size_t>(dtypeSize(static_cast<DType>(hiddenDtype)));
        NegStepParams p;
        p.N = N;
        p.H = H;
        p.d = d;
        p.V = V;
        p.hiddenType = static_cast<DType>(hiddenDtype);
        p.activation = activation;
        p.topK = topK;
        p.temperature = temperature;
        p.splits = splits;
        p.headAlgo = headAlgo;
        bool const head = entropyIn == nullptr;
        p.hidden = dev.add(
            "hidden", static_cast<unsigned char const*>(hidden), n * H * hBytes, hiddenMisalign, head && hidden);
        p.w1 = dev.add("W1", static_cast<unsigned char const*>(w1), static_cast<size_t>(d) * H * hBytes, 0, head && w1);
        p.b1 = dev.add("b1", b1, static_cast<size_t>(d), 0, head && b1);
        p.w2 = dev.add("w2", w2, static_cast<size_t>(d), 0, head && w2);
        p.b2 = dev.add("b2", &b2, 1, 0, head);
        p.tau = dev.add("tau", &tau, 1);
        p.entropyIn = dev.add("entropy_in", entropyIn, n, 0, !head);
        p.logits = dev.add("logits", logits, n * V, logitsMisalign, logits != nullptr);
        p.seeds = dev.add("seeds", seeds, n, 0, seeds != nullptr);
        p.seed = static_cast<uint64_t>(seed);
        if (offsets && offsetsAreInt32)
        {
            p.offsets32 = dev.add("offsets", static_cast<int32_t const*>(offsets), n);
        }
        else if (offsets)
        {
            p.offsets64 = dev.add("offsets", static_cast<int64_t const*>(offsets), n);
        }
        float* dGuided = dev.add<float>("guided", nullptr, n * V, guidedMisalign, guided != nullptr);
        int32_t* dToken = dev.add<int32_t>("token", nullptr, n, 0, token != nullptr);
        float* dEntropy = dev.add<float>("entropy", nullptr, n, 0, entropy != nullptr);
        int32_t* dFired = dev.add<int32_t>("fired", nullptr, n, 0, fired != nullptr);
        int32_t* dStatus = dev.add<int32_t>("status", nullptr, n, 0, status != nullptr);
        p.guided = dGuided;
        p.token = dToken;
        p.entropy = dEntropy;
        p.fired = dFired;
        p.status = dStatus;
        size_t const wsBytes
            = negStepWorkspaceSize(N, head ? d : 0, logits ? V : 0, topK, splits);
        unsigned char* ws = dev.add<unsigned char>("workspace", nullptr, wsBytes, 0, wsBytes > 0);
        if (ws)
        {
            std::memset(ws, 0xA5, wsBytes); // not zeroed, as a fresh cudaMalloc is not
        }
        cudaError_t const e = negStepLaunch(p, ws, wsBytes, nullptr);
        if (e != cudaSuccess)
        {
            return simFail(cudasim::describeLaunchError(e));
        }
        std::string why;
        if (!dev.intact(why))
        {
            return simFail(why);
        }
        cudasim::copyBack(guided, dGuided, n * V * sizeof(float));
        cudasim::copyBack(token, dToken, n * sizeof(int32_t));
        cudasim::copyBack(entropy, dEntropy, n * sizeof(float));
        cudasim::copyBack(fired, dFired, n * sizeof(int32_t));
        cudasim::copyBack(status, dStatus, n * sizeof(int32_t));
        return 0;
    }
    catch (std::exception const& ex)
    {
        return simFail(ex.what());
    }
}

// The plugin's enqueue with the plugin's fields and I/O (negPluginCore.h's orders): hidden
// [N, H] of TensorType hiddenType, positions [N] of TensorType positionsType; the workspace is
// what getWorkspaceSize reserves for a profile of up to maxRows rows.
int trtneg_neg_plugin_sim(int32_t hiddenSize, int32_t headHiddenSize, int32_t vocabSize, int32_t topK,
    float temperature, int64_t seed, int32_t activation, int32_t N, int32_t maxRows, void const* hidden,
    int32_t hiddenType, float const* logits, void const* w1, float const* b1, float const* w2, float b2, float tau,
    void const* positions, int32_t positionsType, float* guided, int32_t* token, float* entropy, int32_t* fired)
{
    using namespace trt_neg;
    cudasim::configure(cudasim::Order::kForward, 0, cudasim::Device{}.major); // the default H200
    try
    {
        NegPluginConfig cfg;
        cfg.hiddenSize = hiddenSize;
        cfg.headHiddenSize = headHiddenSize;
        cfg.vocabSize = vocabSize;
        cfg.topK = topK;
        cfg.temperature = temperature;
        cfg.seed = seed;
        cfg.activation = activation;
        cfg.validate();
        cudasim::Buffers dev;
        size_t const n = static_cast<size_t>(N), H = static_cast<size_t>(hiddenSize), V = static_cast<size_t>(vocabSize);
        size_t const d = static_cast<size_t>(headHiddenSize);
        size_t const hBytes = hiddenType == static_cast<int32_t>(TensorType::kFLOAT) ? 4 : 2;
        size_t const posBytes = positionsType == static_cast<int32_t>(TensorType::kINT64) ? 8 : 4;
        void const* inputs[kNEG_NB_INPUTS];
        inputs[kNEG_IN_HIDDEN] = dev.add("hidden", static_cast<unsigned char const*>(hidden), n * H * hBytes);
        inputs[kNEG_IN_LOGITS] = dev.add("logits", logits, n * V);
        inputs[kNEG_IN_W1] = dev.add("W1", static_cast<unsigned char const*>(w1), d * H * hBytes);
        inputs[kNEG_IN_B1] = dev.add("b1", b1, d);
        inputs[kNEG_IN_W2] = dev.add("w2", w2, d);
        inputs[kNEG_IN_B2] = dev.add("b2", &b2, 1);
        inputs[kNEG_IN_TAU] = dev.add("tau", &tau, 1);
        inputs[kNEG_IN_POSITIONS] = dev.add("positions", static_cast<unsigned char const*>(positions), n * posBytes);
        void* outputs[kNEG_NB_OUTPUTS];
        outputs[kNEG_OUT_GUIDED] = dev.add<float>("guided", nullptr, n * V);
        outputs[kNEG_OUT_TOKEN] = dev.add<int32_t>("token", nullptr, n);
        outputs[kNEG_OUT_ENTROPY] = dev.add<float>("entropy", nullptr, n);
        outputs[kNEG_OUT_FIRED] = dev.add<int32_t>("fired", nullptr, n);
        size_t const wsBytes = negPluginWorkspaceSize(cfg, maxRows);
        unsigned char* ws = dev.add<unsigned char>("workspace", nullptr, wsBytes, 0, wsBytes > 0);
        cudaError_t const e
            = negPluginEnqueue(cfg, N, hiddenType, positionsType, inputs, outputs, ws, nullptr);
        if (e != cudaSuccess)
        {
            return simFail(cudasim::describeLaunchError(e));
        }
        std::string why;
        if (!dev.intact(why))
        {
            return simFail(why);
        }
        cudasim::copyBack(guided, outputs[kNEG_OUT_GUIDED], n * V * sizeof(float));
        cudasim::copyBack(token, outputs[kNEG_OUT_TOKEN], n * sizeof(int32_t));
        cudasim::copyBack(entropy, outputs[kNEG_OUT_ENTROPY], n * sizeof(float));
        cudasim::copyBack(fired, outputs[kNEG_OUT_FIRED], n * sizeof(int32_t));
        return 0;
    }
    catch (std::exception const& ex)
    {
        return simFail(ex.what());
    }
}

} // extern "C"
