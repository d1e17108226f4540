// Launch interface of the fused NEG CUDA op (plain C++; no TensorRT, no torch).
//
// Two or three launches per step (documented in docs/neg.md):
//   1. negHeadKernel: the NEG-Head MLP for all rows as a row-tiled GEMV
//      (each warp owns one output neuron j and up to kNegHeadRows rows, so W1 is read
//      ceil(N / kNegHeadRows) times, mostly from L2), writing w2[j]*act(W1 h + b1)[j]
//      into the workspace;
//   2. one-block-per-row path (large N): negRowKernel, one 1024-thread block per row:
//      sum + softplus + gate, one pass over the logits (argmax, status, guided logits),
//      and for fired rows a radix select of the top-k candidate keys, a bitonic sort,
//      softmax and the Philox draw;
//   2'. split-V path (small N, see negSplitPlan): negSliceKernel, `splits` blocks per row,
//      each scanning one slice of the vocabulary and keeping its slice's top-k keys, then
//      negMergeKernel, one block per row, merging them and drawing.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../common/hostDevice.h"
#include "negMath.h"

namespace trt_neg
{

constexpr int32_t kNegMaxTopK = 1024;
constexpr int32_t kNegMaxVocab = 1 << 30; // keeps every strided int index below 2^31
constexpr int32_t kNegRowThreads = 1024;
constexpr int32_t kNegSliceThreads = 512;
constexpr int32_t kNegHeadRows = 8;
constexpr int32_t kNegHeadWarps = 8;

// How the NEG-Head GEMM runs.  The tensor-core tiles are opt-in until a GPU run of
// trt_neg.gpu_check has timed them against the GEMV (and cuBLAS) and checked their numbers.
enum NegHeadAlgo : int32_t
{
    kNEG_HEAD_GEMV = 0, // row-tiled GEMV on CUDA cores, any dtype (default)
    kNEG_HEAD_MMA = 1,  // WMMA tensor-core tiles; bf16/fp16 hidden, H % 8 == 0, sm_80+; else the GEMV
};

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
    int32_t splits{0}; // 0: automatic (negSplitPlan); 1: one block per row; > 1: that many slices
    int32_t headAlgo{0}; // NegHeadAlgo

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

    float* guided{nullptr};   // optional [N, V]; must not overlap logits (read again after the guided write)
    int32_t* token{nullptr};  // [N]
    float* entropy{nullptr};  // optional [N]
    int32_t* fired{nullptr};  // optional [N]
    int32_t* status{nullptr}; // optional [N]
};

inline size_t negAlign256(size_t x)
{
    return (x + 255) & ~static_cast<size_t>(255);
}

// The split-V path's part of the workspace, after the head terms: per row its entropy, per
// (row, slice) the slice's argmax key and status flags, and perSlice candidate keys.
struct NegSplitLayout
{
    size_t ent{0}, best{0}, flags{0}, cand{0}; // byte offsets
    size_t bytes{0};
};

inline NegSplitLayout negSplitLayout(int64_t N, NegSplitPlan const& plan)
{
    NegSplitLayout l;
    if (plan.splits <= 1 || N < 1)
    {
        return l;
    }
    size_t const slots = static_cast<size_t>(N) * static_cast<size_t>(plan.splits);
    l.ent = 0;
    l.best = l.ent + negAlign256(static_cast<size_t>(N) * sizeof(float));
    l.flags = l.best + negAlign256(slots * sizeof(uint64_t));
    l.cand = l.flags + negAlign256(slots * sizeof(int32_t));
    l.bytes = l.cand + negAlign256(slots * static_cast<size_t>(plan.perSlice) * sizeof(uint64_t));
    return l;
}

// Bytes of the head terms (N x d floats; d = 0 when the entropies are given).
inline size_t negTermsBytes(int64_t N, int64_t d)
{
    return negAlign256(static_cast<size_t>(N > 0 ? N : 0) * static_cast<size_t>(d > 0 ? d : 0) * sizeof(float));
}

// Workspace bytes for one call: N rows, head width d (0 without the head pass), V logits per
// row (0 for an entropy-only call), the plan that negStepLaunch will pick.
inline size_t negStepWorkspaceSize(int64_t N, int64_t d, int64_t V, int32_t topK, int32_t splits)
{
    size_t const terms = negTermsBytes(N, d);
    if (V < 1)
    {
        return terms;
    }
    return terms + negSplitLayout(N, negSplitPlan(N, V, topK, splits)).bytes;
}

// Workspace bytes enough for any N <= maxN with automatic plans (what the plugin reserves).
inline size_t negWorkspaceSize(int64_t maxN, int64_t d, int64_t V, int32_t topK)
{
    size_t split = 0;
    int64_t const lastSplitN = maxN < kNegSplitTargetBlocks ? maxN : kNegSplitTargetBlocks;
    for (int64_t n = 1; n <= lastSplitN && V >= 1; ++n)
    {
        size_t const b = negSplitLayout(n, negSplitPlan(n, V, topK, 0)).bytes;
        split = b > split ? b : split;
    }
    return negTermsBytes(maxN, d) + split;
}

// Whether the tensor-core head can run these params (else kNEG_HEAD_MMA falls back to the GEMV).
inline bool negHeadMmaOk(NegStepParams const& p)
{
    return (p.hiddenType == DType::kBFLOAT16 || p.hiddenType == DType::kFLOAT16) && p.H % 8 == 0 && reinterpret_cast<uintptr_t>(p.hidden) % 16 == 0
        && reinterpret_cast<uintptr_t>(p.w1) % 16 == 0;
}

// Validates params (returns cudaErrorInvalidValue on bad input) and enqueues the op.
cudaError_t negStepLaunch(NegStepParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream);

} // namespace trt_neg
