// Gated DeltaNet op: the parameter block shared by the CPU host library, the CUDA
// launcher and the TensorRT adapter. Plain C++ (no CUDA, no TensorRT types).
//
// Tensors (row-major; T = tokens; dtype = `dtype` unless noted):
//   qkv            [T, 2*Hk*dk + Hv*dv]   post-conv1d+SiLU channels, flat [q | k | v]
//   a, b           [T, Hv]                raw in_proj_a / in_proj_b outputs
//   z              [T, Hv*dv]             in_proj_z output (gated norm gate); null: no norm
//   aLog, dtBias   [Hv] fp32              A_log and dt_bias
//   normWeight     [dv] fp32              RMSNormGated weight (shared by every head)
//   statePool      [numSlots, Hv, dk, dv] fp32: one layer's slice of TensorRT-LLM's
//                  rnn_state [layers, slots, Hv, dk, dv] (state_size=dk, rnn_head_size=dv)
//   slotMapping    [B] int32 (device)     slot of each sequence; null: slot = sequence index
//   lastTokenIds   [B] int32 (device)     packed: inclusive cumulative token counts
//                                         (sequence b owns tokens [last[b-1], last[b]),
//                                         last[B-1] <= T); padded: the length of
//                                         sequence b, in [0, maxSeqLen]
//   out            [T, Hv*dv]             y (gated-normed when z != null, raw o otherwise)
// Token layout: packed (`removePadding`, T = total tokens; rows past last[B-1] are written
// as zeros) or padded ([B, maxSeqLen, C]; positions past a sequence's length are written as
// zeros). The host library rejects lengths and slots outside these ranges; the kernel
// cannot report them: it clamps lengths (tokenRange), skips a sequence whose range leaves
// the rows, and treats a negative slot, or one >= numSlots where numSlots is known (> 0: the
// torch binding; the TensorRT plugin gets TensorRT-LLM's pool as a bare pointer), as padding
// (zero output rows, no state touched). Slots must be distinct within a call: two sequences
// in one slot race on its state (the host library refuses it; the kernel cannot see it).
//
// Request types come from the host (TensorRT-LLM's host_request_types, 0 = context,
// 1 = generation) and travel to the kernel *by value* as a bitmask (`contextMask`), so
// the launch needs no host-to-device copy and stays CUDA-graph safe. A context request
// starts from a zero state (TensorRT-LLM does not clear a slot when it hands it out; the
// Mamba selective-scan kernels behave the same way) unless `continueContext` is set, in
// which case it continues from the slot's state (chunked prefill). A generation request
// always continues from the slot's state. Context and generation requests may be mixed
// in any order within one call.
#pragma once

#include <cstdint>

#include "../common/hostDevice.h"

namespace trt_neg
{
namespace gdn
{

constexpr int32_t kMaxSeqsPerCall = 4096; // bitmask capacity (512 bytes by value)
constexpr int32_t kMaskWords = kMaxSeqsPerCall / 32;

enum RequestType : int32_t
{
    kCONTEXT = 0,
    kGENERATION = 1,
};

struct GdnShape
{
    int32_t numKHeads{0}; // Hk
    int32_t numVHeads{0}; // Hv (a multiple of Hk)
    int32_t headKDim{0};  // dk
    int32_t headVDim{0};  // dv

    TRTNEG_HD int64_t convDim() const
    {
        return 2LL * numKHeads * headKDim + static_cast<int64_t>(numVHeads) * headVDim;
    }
    TRTNEG_HD int64_t valueDim() const
    {
        return static_cast<int64_t>(numVHeads) * headVDim;
    }
    TRTNEG_HD int64_t stateFloatsPerSlot() const
    {
        return static_cast<int64_t>(numVHeads) * headKDim * headVDim;
    }
};

// Dynamic shared memory of the scan-only kernel (gdnKernel.cu: the fp32 state tile [dk, dv],
// q and k [dk] each, and blockSum2's 2 x 32 partial sums), in bytes. One definition for the
// launcher (kernelSharedBytes) and the plugin's field validation, so they cannot drift.
constexpr int32_t kScanReduceFloats = 2 * 32;

inline int64_t scanSharedBytes(GdnShape const& s)
{
    return static_cast<int64_t>(sizeof(float))
        * (static_cast<int64_t>(s.headKDim) * s.headVDim + 2LL * s.headKDim + kScanReduceFloats);
}

// The smallest cudaDevAttrMaxSharedMemoryPerBlockOptin among the supported targets: 99 KB
// on sm_86 / sm_89 (sm_80: 163 KB, sm_90: 227 KB). A head whose scan footprint exceeds it
// could not launch on every target, so the plugin rejects it when parsing its fields.
constexpr int64_t kMinOptinSharedBytes = 99 * 1024; // 101,376 B

struct ContextMask
{
    uint32_t bits[kMaskWords];
};

struct GdnParams
{
    GdnShape shape;
    DType dtype{DType::kFLOAT32};
    float normEps{1e-6f};

    int32_t batch{0};         // sequences in this call
    int32_t removePadding{1}; // 1: packed tokens; 0: [B, maxSeqLen, C]
    int32_t maxSeqLen{0};     // padded layout only
    int64_t numTokens{0};     // rows of qkv / out
    int64_t numSlots{0};      // slots in statePool (bounds check; 0 = unknown, unchecked)
    int32_t continueContext{0};

    void const* qkv{nullptr};
    void const* a{nullptr};
    void const* b{nullptr};
    void const* z{nullptr};
    float const* aLog{nullptr};
    float const* dtBias{nullptr};
    float const* normWeight{nullptr};
    float* statePool{nullptr};
    int32_t const* slotMapping{nullptr};
    int32_t const* lastTokenIds{nullptr};
    void* out{nullptr};

    ContextMask contextMask{};
};

inline void setContext(ContextMask& m, int32_t seq, bool isContext)
{
    uint32_t const bit = 1u << (seq & 31);
    if (isContext)
    {
        m.bits[seq >> 5] |= bit;
    }
    else
    {
        m.bits[seq >> 5] &= ~bit;
    }
}

TRTNEG_HD bool isContext(ContextMask const& m, int32_t seq)
{
    return (m.bits[seq >> 5] >> (seq & 31)) & 1u;
}

// Token range of sequence `seq` ([begin, begin + len)); the row index of token t is begin + t.
TRTNEG_HD void tokenRange(GdnParams const& p, int32_t seq, int64_t& begin, int64_t& len)
{
    if (p.removePadding)
    {
        begin = seq == 0 ? 0 : p.lastTokenIds[seq - 1];
        len = p.lastTokenIds[seq] - begin;
    }
    else
    {
        begin = static_cast<int64_t>(seq) * p.maxSeqLen;
        len = p.lastTokenIds[seq];
        len = len > p.maxSeqLen ? p.maxSeqLen : len;
    }
    len = len < 0 ? 0 : len;
}

// Checks the head counts and dims; returns nullptr when valid, else a static message.
inline char const* validateShape(GdnShape const& s)
{
    if (s.numKHeads <= 0 || s.numVHeads <= 0 || s.headKDim <= 0 || s.headVDim <= 0)
        return "gdn: head counts and dims must be positive";
    if (s.numVHeads % s.numKHeads != 0)
        return "gdn: num_v_heads must be a multiple of num_k_heads";
    if (s.headVDim > 1024)
        return "gdn: head_v_dim must be <= 1024 (one CUDA thread per state column)";
    return nullptr;
}

// Checks shape fields and pointers; returns nullptr when valid, else a static message.
inline char const* validate(GdnParams const& p)
{
    if (char const* err = validateShape(p.shape))
        return err;
    if (!dtypeValid(static_cast<int32_t>(p.dtype)))
        return "gdn: dtype must be float32, float16 or bfloat16";
    if (p.batch < 0 || p.batch > kMaxSeqsPerCall)
        return "gdn: batch must be in [0, 4096]";
    if (!p.removePadding && p.maxSeqLen <= 0 && p.batch > 0)
        return "gdn: padded layout needs max_seq_len > 0";
    // The kernel writes every padded row of a sequence (zeros past its length).
    if (!p.removePadding && p.numTokens < static_cast<int64_t>(p.batch) * p.maxSeqLen)
        return "gdn: padded layout needs num_tokens >= batch * max_seq_len rows";
    if (!(p.normEps >= 0.0f))
        return "gdn: norm eps must be >= 0";
    // Token rows are read or written only when there are some: a call of zero-length sequences
    // (its context slots reset) may pass the null data pointers of empty tensors for them.
    if (p.batch > 0)
    {
        if (!p.statePool)
            return "gdn: state_pool is a null pointer (a pool of no slots?)";
        if (!p.aLog || !p.dtBias)
            return "gdn: A_log or dt_bias is a null pointer";
        if (!p.lastTokenIds)
            return "gdn: last_token_ids is a null pointer";
    }
    if (p.batch > 0 && p.numTokens > 0 && (!p.qkv || !p.a || !p.b || !p.out))
        return "gdn: qkv, a, b or the output is a null pointer";
    if (p.z && !p.normWeight)
        return "gdn: z given without norm weight";
    return nullptr;
}

} // namespace gdn
} // namespace trt_neg
