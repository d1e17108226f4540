// Launch interface of the fused NEG CUDA op (plain C++; no TensorRT, no torch).
//
// Two launches per step (documented in docs/neg.md):
//   1. negHeadKernel: the NEG-Head MLP for all rows as a row-tiled GEMV
//      (each warp owns one output neuron j and up to kNegHeadRows rows, so W1 is read
//      ceil(N / kNegHeadRows) times, mostly from L2), writing w2[j]*act(W1 h + b1)[j]
//      into the workspace;
//   2. negRowKernel: one 1024-thread block per row: sum + softplus + gate, one pass over
//      the logits (argmax, status, guided logits), and for fired rows a radix select
//      of the top-k, a bitonic sort of the candidates, softmax, Philox draw.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common/hostDevice.h"

namespace trt_neg
{

constexpr int32_t kNegMaxTopK = 1024;
constexpr int32_t kNegRowThreads = 1024;
constexpr int32_t kNegHeadRows = 8;
constexpr int32_t kNegHeadWarps = 8;

struct NegStepParams
{
    int32_t N{0};
    int32_t H{0};
    int32_t d{0};
    int32_t V{0};
    DType hiddenType{DType::kFLOAT32}; // W1 has the same dtype as hidden
    int32_t activation{0};
    int32_t topK{8};
    float temperature{1.0f};

    void const* hidden{nullptr};     // [N, H]
    float const* logits{nullptr};    // [N, V] fp32; nullptr: compute entropy only
    void const* w1{nullptr};         // [d, H]
    float const* b1{nullptr};        // [d]
    float const* w2{nullptr};        // [d]
    float const* b2{nullptr};        // device scalar
    float const* tau{nullptr};       // device scalar
    float const* entropyIn{nullptr}; // optional [N]: skip the head, gate these entropies

    int64_t const* seeds{nullptr};     // optional [N]; else `seed` for every row
    uint64_t seed{0};
    int64_t const* offsets64{nullptr}; // [N] absolute positions (int64) ...
    int32_t const* offsets32{nullptr}; // ... or int32 (TensorRT positions); else 0

    float* guided{nullptr};   // optional [N, V]
    int32_t* token{nullptr};  // [N]
    float* entropy{nullptr};  // optional [N]
    int32_t* fired{nullptr};  // optional [N]
    int32_t* status{nullptr}; // optional [N]
};

inline size_t negAlign256(size_t x)
{
    return (x + 255) & ~static_cast<size_t>(255);
}

// Workspace bytes for up to maxN rows with head width d (the per-neuron head terms).
inline size_t negWorkspaceSize(int64_t maxN, int64_t d)
{
    return negAlign256(static_cast<size_t>(maxN > 0 ? maxN : 0) * static_cast<size_t>(d > 0 ? d : 0) * sizeof(float));
}

// Validates params (returns cudaErrorInvalidValue on bad input) and enqueues the op.
cudaError_t negStepLaunch(NegStepParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream);

} // namespace trt_neg
