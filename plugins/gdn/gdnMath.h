// Gated DeltaNet per-token maths (DESIGN.md section 3), one definition for host and device.
//
// Per value head h, with fp32 state S [dk, dv] (row i = key dimension, column j = value
// dimension) and one token (q, k already l2-normalised, q also scaled by dk^-0.5):
//
//     decay = exp(g),  g = -exp(A_log[h]) * softplus(a + dt_bias[h]),  beta = sigmoid(b)
//     S     = S * decay
//     d_j   = beta * (v_j - sum_i S[i, j] k_i)        (d = beta (v - S^T k))
//     S[:,j]+= k d_j                                   (S += k (x) d)
//     o_j   = sum_i S[i, j] q_i                        (o = S^T q)
//
// Column j of S only ever meets v_j, d_j and o_j, so the columns are independent given
// (q, k, decay, beta): gdnColumnStep() is the whole recurrence for one column. The CUDA
// kernel gives one thread per column (the state tile lives in shared memory); the host
// library loops over the columns. Both call the functions below, so they cannot drift
// apart; only the block-wide sums (norms) are reduced in a different order on the GPU.
//
// The gated output norm (Qwen3.5 "RMSNormGated", plain, not zero-centred) is fused:
//     y_j = w_j * o_j * rsqrt(mean_j(o^2) + eps) * silu(z_j)
#pragma once

#include "../common/hostDevice.h"

namespace trt_neg
{
namespace gdn
{

// Epsilon of the q/k l2 normalisation (FLA / transformers convention: x * rsqrt(sum x^2 + eps)).
constexpr float kL2NormEps = 1e-6f;

TRTNEG_HD float softplus(float x)
{
    // torch.nn.functional.softplus(beta=1, threshold=20).
    return x > 20.0f ? x : log1pf(expf(x));
}

TRTNEG_HD float sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

TRTNEG_HD float silu(float x)
{
    return x / (1.0f + expf(-x));
}

// 1 / sqrt(sumsq + eps); the same expression on host and device (no rsqrtf approximation).
TRTNEG_HD float invNorm(float sumsq, float eps)
{
    return 1.0f / sqrtf(sumsq + eps);
}

// Log-decay g = log(decay) <= 0 and write strength beta of one (token, value head). The
// chunked path (gdnChunk.h) works with g itself (sums of g, never ratios of decays).
TRTNEG_HD void logGateAndBeta(float a, float b, float aLog, float dtBias, float& g, float& beta)
{
    g = -expf(aLog) * softplus(a + dtBias);
    beta = sigmoid(b);
}

// Decay exp(g) and write strength beta of one (token, value head): the scan's form.
TRTNEG_HD void gateAndBeta(float a, float b, float aLog, float dtBias, float& decay, float& beta)
{
    float g = 0.0f;
    logGateAndBeta(a, b, aLog, dtBias, g, beta);
    decay = expf(g);
}

// Multipliers that l2-normalise q and k (q also scaled by dk^-0.5) from their sums of squares.
TRTNEG_HD void qkMultipliers(float qq, float kk, int dk, float& qMul, float& kMul)
{
    qMul = invNorm(qq, kL2NormEps) * (1.0f / sqrtf(static_cast<float>(dk)));
    kMul = invNorm(kk, kL2NormEps);
}

// One token of the gated delta rule for one column of S.
//   col[i * stride] is S[i, j] (updated in place); k, q are the normalised key/query (dk).
//   Returns o_j.
TRTNEG_HD float columnStep(float* col, int stride, float const* k, float const* q, int dk, float v, float decay,
    float beta)
{
    float kv = 0.0f;
    for (int i = 0; i < dk; ++i)
    {
        float const s = col[i * stride] * decay;
        col[i * stride] = s;
        kv += s * k[i];
    }
    float const d = beta * (v - kv);
    float o = 0.0f;
    for (int i = 0; i < dk; ++i)
    {
        float const s = col[i * stride] + k[i] * d;
        col[i * stride] = s;
        o += s * q[i];
    }
    return o;
}

// Gated RMS norm of one output element, given invRms = invNorm(mean(o^2)) over the head.
TRTNEG_HD float gatedNorm(float o, float invRms, float w, float z)
{
    return w * (o * invRms) * silu(z);
}

// fp32 -> IEEE binary16 bits, round to nearest even (overflow to inf, NaN kept quiet).
TRTNEG_HD uint16_t floatToFp16Bits(float f)
{
    uint32_t const x = floatToBits(f);
    uint32_t const sign = (x >> 16) & 0x8000u;
    uint32_t const absx = x & 0x7FFFFFFFu;
    if (absx >= 0x7F800000u)
    {
        return static_cast<uint16_t>(sign | (absx > 0x7F800000u ? 0x7E00u : 0x7C00u));
    }
    if (absx >= 0x477FF000u) // rounds to >= 65520 -> inf
    {
        return static_cast<uint16_t>(sign | 0x7C00u);
    }
    if (absx < 0x38800000u) // below the smallest normal half (2^-14): subnormal or zero
    {
        if (absx < 0x33000000u) // < 2^-25: rounds to zero
        {
            return static_cast<uint16_t>(sign);
        }
        uint32_t const e = absx >> 23;
        uint32_t const mant = (absx & 0x7FFFFFu) | 0x800000u;
        uint32_t const shift = 126u - e; // 14..24
        uint32_t const half = mant >> shift;
        uint32_t const rem = mant & ((1u << shift) - 1u);
        uint32_t const mid = 1u << (shift - 1u);
        uint32_t const up = (rem > mid || (rem == mid && (half & 1u))) ? 1u : 0u;
        return static_cast<uint16_t>(sign | (half + up));
    }
    uint32_t const e = (absx >> 23) - 112u;
    uint32_t const mant = absx & 0x7FFFFFu;
    uint32_t h = (e << 10) | (mant >> 13);
    uint32_t const rem = mant & 0x1FFFu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
    {
        ++h;
    }
    return static_cast<uint16_t>(sign | h);
}

// fp32 -> bf16 bits, round to nearest even (NaN kept quiet).
TRTNEG_HD uint16_t floatToBf16Bits(float f)
{
    uint32_t const x = floatToBits(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u)
    {
        return static_cast<uint16_t>((x >> 16) | 0x40u);
    }
    uint32_t const rounding = 0x7FFFu + ((x >> 16) & 1u);
    return static_cast<uint16_t>((x + rounding) >> 16);
}

TRTNEG_HD void storeFromFloat(void* base, int64_t idx, DType t, float v)
{
    switch (t)
    {
    case DType::kBFLOAT16: static_cast<uint16_t*>(base)[idx] = floatToBf16Bits(v); break;
    case DType::kFLOAT16: static_cast<uint16_t*>(base)[idx] = floatToFp16Bits(v); break;
    default: static_cast<float*>(base)[idx] = v; break;
    }
}

} // namespace gdn
} // namespace trt_neg
