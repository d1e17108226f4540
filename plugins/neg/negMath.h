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

// Rows whose base logits would break a downstream sampler get one-hot guided logits.
TRTNEG_HD bool negOneHotRow(bool fired, int32_t status)
{
    return fired || (status & (kNEG_NO_FINITE_LOGIT | kNEG_POS_INF_LOGIT)) != 0;
}

} // namespace trt_neg
