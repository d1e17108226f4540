// NEG per-row maths (DESIGN.md section 4), one definition for host and device.
//
// Everything a row needs apart from the parallel reductions lives here as
// TRTNEG_HD (= __host__ __device__ under nvcc) functions: activations, softplus, the
// gate, the NaN/tie rules expressed as an order key, and the sampling rule over
// sorted candidates.  The CPU host library runs these sequentially; the CUDA kernel
// uses the same functions element-wise and replaces only the sequential sums/scans
// by block-wide ones (so sums may differ by fp32 rounding, never in definition).
// Decisions where section 4 is silent are documented in docs/neg.md.
#pragma once

#include "../common/hostDevice.h"
#include "../common/philox.h"

namespace trt_neg
{

// Activation codes; Python names in trt_neg.neg.ACTIVATION_CODES.
enum NegActivation : int32_t
{
    kNEG_ACT_SILU = 0,
    kNEG_ACT_GELU = 1, // exact, erf-based
    kNEG_ACT_RELU = 2,
    kNEG_ACT_GELU_TANH = 3,
};

TRTNEG_HD bool negActivationValid(int32_t a)
{
    return a >= 0 && a <= 3;
}

// Status bits, OR-ed per row; equal to trt_neg.neg.NegStatus.
enum NegStatusBits : int32_t
{
    kNEG_OK = 0,
    kNEG_NO_FINITE_LOGIT = 1, // every logit NaN or +-inf
    kNEG_POS_INF_LOGIT = 2,   // some logit is +inf
    kNEG_NAN_ENTROPY = 4,     // H_hat is NaN (gate does not fire)
};

TRTNEG_HD float negActivation(float x, int32_t act)
{
    switch (act)
    {
    case kNEG_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case kNEG_ACT_RELU: return x < 0.0f ? 0.0f : x; // keeps NaN, like torch.relu
    case kNEG_ACT_GELU_TANH:
    {
        float const inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
        return 0.5f * x * (1.0f + tanhf(inner));
    }
    default: return x / (1.0f + expf(-x)); // silu
    }
}

// torch.nn.functional.softplus with beta=1, threshold=20.
TRTNEG_HD float negSoftplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

// NEG-Gate: strictly greater; NaN compares false so a NaN H_hat never fires.
TRTNEG_HD bool negFires(float entropy, float tau)
{
    return entropy > tau;
}

// NaN counts as -inf; -0 is folded into +0 so that equal logits tie (and ties go to
// the lowest id) exactly as float comparison says.
TRTNEG_HD float negSanitize(float z)
{
    if (z != z)
    {
        return -INFINITY;
    }
    return z == 0.0f ? 0.0f : z;
}

// Monotone map float -> uint32 (larger logit, larger key) after negSanitize.
TRTNEG_HD uint32_t negOrderKey(float z)
{
    uint32_t const b = floatToBits(negSanitize(z));
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

TRTNEG_HD float negKeyToFloat(uint32_t k)
{
    return bitsToFloat((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

// Candidate precedence (logit desc, id asc) as one integer: larger = earlier.
TRTNEG_HD uint64_t negCandidateKey(float z, uint32_t id)
{
    return (static_cast<uint64_t>(negOrderKey(z)) << 32) | static_cast<uint64_t>(0xFFFFFFFFu - id);
}

TRTNEG_HD uint32_t negCandidateId(uint64_t key)
{
    return 0xFFFFFFFFu - static_cast<uint32_t>(key);
}

TRTNEG_HD float negCandidateLogit(uint64_t key)
{
    return negKeyToFloat(static_cast<uint32_t>(key >> 32));
}

// Unnormalised softmax weight of candidate logit z given the scaled maximum
// m = max(z)/T.  +inf candidates share the mass equally (limit of the softmax);
// if the maximum is -inf no candidate has mass.
TRTNEG_HD float negSoftmaxWeight(float z, float m, float temperature)
{
    float const x = z / temperature;
    if (m == INFINITY)
    {
        return x == INFINITY ? 1.0f : 0.0f;
    }
    if (m == -INFINITY)
    {
        return 0.0f;
    }
    return expf(x - m);
}

// Sequential sampling over candidates sorted by (logit desc, id asc).  Returns the
// candidate index.  p = w / sum(w); c = cumsum(p); target = u * c[k-1]; first c > target;
// fallback (rounding only) the last candidate with p > 0, else 0.
TRTNEG_HD int32_t negSampleSorted(float const* sortedLogits, int32_t k, float temperature, float u)
{
    float const m = sortedLogits[0] / temperature;
    float s = 0.0f;
    for (int32_t i = 0; i < k; ++i)
    {
        s += negSoftmaxWeight(sortedLogits[i], m, temperature);
    }
    if (!(s > 0.0f))
    {
        return 0;
    }
    float c = 0.0f;
    int32_t lastPositive = 0;
    for (int32_t i = 0; i < k; ++i)
    {
        float const p = negSoftmaxWeight(sortedLogits[i], m, temperature) / s;
        c += p;
        if (p > 0.0f)
        {
            lastPositive = i;
        }
    }
    float const target = u * c;
    float c2 = 0.0f;
    for (int32_t i = 0; i < k; ++i)
    {
        c2 += negSoftmaxWeight(sortedLogits[i], m, temperature) / s;
        if (c2 > target)
        {
            return i;
        }
    }
    return lastPositive;
}

// Top-k selection of unique 64-bit candidate keys by radix select on 8-bit digits, from
// the most significant: each pass histograms the digit at `shift` of the keys that match
// the fixed high bits (`prefix` under `mask`) and fixes the digit holding the k-th largest.
// It stops once that digit's bucket is taken whole (at the latest when all 64 bits are
// fixed, since keys are unique); the selected keys are then exactly those whose fixed high
// bits are >= prefix.  The CUDA kernel runs the histogram in parallel and the decision on
// one thread; the host library runs the same steps sequentially.
struct NegRadixState
{
    uint64_t prefix;
    uint64_t mask;
    int32_t kRem; // how many of the k are still to be found under the prefix
    int32_t shift;
    bool done;
};

TRTNEG_HD NegRadixState negRadixStart(int32_t k)
{
    NegRadixState s;
    s.prefix = 0;
    s.mask = 0;
    s.kRem = k;
    s.shift = 56;
    s.done = false;
    return s;
}

// Whether key falls in this pass's histogram, and its bucket.
TRTNEG_HD bool negRadixCounts(NegRadixState const& s, uint64_t key)
{
    return (key & s.mask) == s.prefix;
}

TRTNEG_HD int32_t negRadixDigit(NegRadixState const& s, uint64_t key)
{
    return static_cast<int32_t>((key >> s.shift) & 0xFFu);
}

// Fixes this pass's digit from its 256-bucket histogram.
TRTNEG_HD void negRadixAdvance(NegRadixState& s, int32_t const* hist)
{
    int32_t cum = 0;
    for (int32_t b = 255; b >= 0; --b)
    {
        int32_t const c = hist[b];
        if (cum + c >= s.kRem)
        {
            s.prefix |= static_cast<uint64_t>(b) << s.shift;
            s.mask |= static_cast<uint64_t>(0xFFu) << s.shift;
            s.kRem -= cum;
            s.done = c == s.kRem || s.shift == 0;
            s.shift -= 8;
            return;
        }
        cum += c;
    }
    s.done = true; // fewer than k keys: unreachable for 1 <= k <= count
}

TRTNEG_HD bool negRadixSelected(NegRadixState const& s, uint64_t key)
{
    return (key & s.mask) >= s.prefix;
}

// How a row's vocabulary is cut into slices for the split-V path (small N: one block per
// row would leave most SMs idle, so each row is scanned by `splits` blocks, each keeping its
// slice's top min(k, slice) candidate keys; a second launch merges them).  The union of the
// slices' top-k holds the row's top-k, and candidate keys are unique, so the merge is exact.
constexpr int32_t kNegSplitTargetBlocks = 256; // ~2 waves of blocks on 132 SMs
constexpr int32_t kNegMaxSplits = 64;
constexpr int32_t kNegMinSliceLen = 2048; // auto plans keep slices at least this long

struct NegSplitPlan
{
    int32_t splits;   // slices per row; 1 = one block scans the whole row
    int32_t sliceLen; // elements per slice (a multiple of 4; the last slice may be shorter)
    int32_t perSlice; // candidate slots per slice = min(top_k, sliceLen)
};

// requested <= 0: automatic (from N and V); requested >= 1: that many slices, clamped to
// [1, kNegMaxSplits] and to non-empty slices.
TRTNEG_HD NegSplitPlan negSplitPlan(int64_t N, int64_t V, int32_t topK, int32_t requested)
{
    int64_t s;
    if (requested > 0)
    {
        s = requested;
    }
    else
    {
        s = N >= kNegSplitTargetBlocks || N < 1 ? 1 : (kNegSplitTargetBlocks + N - 1) / N;
        int64_t const byLen = V / kNegMinSliceLen;
        s = s < byLen ? s : byLen;
    }
    s = s < 1 ? 1 : (s > kNegMaxSplits ? kNegMaxSplits : s);
    int64_t const v = V < 1 ? 1 : V;
    int64_t len = (v + s - 1) / s;
    len = (len + 3) & ~static_cast<int64_t>(3);
    s = (v + len - 1) / len; // rounding len up may leave trailing slices empty: drop them
    if (s == 1)
    {
        len = v;
    }
    NegSplitPlan plan;
    plan.splits = static_cast<int32_t>(s);
    plan.sliceLen = static_cast<int32_t>(len);
    plan.perSlice = static_cast<int32_t>(topK < len ? topK : len);
    return plan;
}

// [begin, end) of slice s of a V-element row.
TRTNEG_HD int64_t negSliceBegin(NegSplitPlan const& plan, int32_t s)
{
    return static_cast<int64_t>(s) * plan.sliceLen;
}

TRTNEG_HD int64_t negSliceEnd(NegSplitPlan const& plan, int32_t s, int64_t V)
{
    int64_t const e = static_cast<int64_t>(s + 1) * plan.sliceLen;
    return e < V ? e : V;
}

// A row's status from its entropy and what the scan of its logits saw.
TRTNEG_HD int32_t negRowStatus(float entropy, bool anyFinite, bool anyPosInf)
{
    return (entropy != entropy ? kNEG_NAN_ENTROPY : kNEG_OK) | (anyFinite ? 0 : kNEG_NO_FINITE_LOGIT)
        | (anyPosInf ? kNEG_POS_INF_LOGIT : 0);
}

// Rows whose base logits would break a downstream sampler get one-hot guided logits.
TRTNEG_HD bool negOneHotRow(bool fired, int32_t status)
{
    return fired || (status & (kNEG_NO_FINITE_LOGIT | kNEG_POS_INF_LOGIT)) != 0;
}

} // namespace trt_neg
