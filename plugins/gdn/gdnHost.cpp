// CPU host build of the Gated DeltaNet op, callable from Python through ctypes
// (trt_neg/kernels/gdn_host.py). Build: g++ -O3 -std=c++17 -shared -fPIC [-fopenmp].
#include "gdnHost.h"

#include "gdnMath.h"

#include <cstdio>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace trt_neg
{
namespace gdn
{
namespace
{

thread_local std::string tError;

char const* fail(std::string msg)
{
    tError = std::move(msg);
    return tError.c_str();
}

// One (sequence, value head): the token loop of the recurrence over that head's state.
void runHead(GdnParams const& p, int32_t seq, int32_t h, int64_t slot, std::vector<float>& scratch)
{
    GdnShape const& s = p.shape;
    int const dk = s.headKDim;
    int const dv = s.headVDim;
    int const hk = h / (s.numVHeads / s.numKHeads);
    int64_t const convDim = s.convDim();
    int64_t const valueDim = s.valueDim();
    float const qScale = 1.0f / sqrtf(static_cast<float>(dk));

    scratch.resize(static_cast<size_t>(2 * dk + dv));
    float* q = scratch.data();
    float* k = q + dk;
    float* o = k + dk;

    float* S = p.statePool + (slot * s.numVHeads + h) * static_cast<int64_t>(dk) * dv;
    if (isContext(p.contextMask, seq) && !p.continueContext)
    {
        for (int64_t i = 0; i < static_cast<int64_t>(dk) * dv; ++i)
        {
            S[i] = 0.0f;
        }
    }

    int64_t begin = 0;
    int64_t len = 0;
    tokenRange(p, seq, begin, len);
    for (int64_t t = 0; t < len; ++t)
    {
        int64_t const row = begin + t;
        int64_t const qOff = row * convDim + static_cast<int64_t>(hk) * dk;
        int64_t const kOff = qOff + static_cast<int64_t>(s.numKHeads) * dk;
        int64_t const vOff = row * convDim + 2LL * s.numKHeads * dk + static_cast<int64_t>(h) * dv;
        float qq = 0.0f;
        float kk = 0.0f;
        for (int i = 0; i < dk; ++i)
        {
            q[i] = loadAsFloat(p.qkv, qOff + i, p.dtype);
            k[i] = loadAsFloat(p.qkv, kOff + i, p.dtype);
            qq += q[i] * q[i];
            kk += k[i] * k[i];
        }
        float const qMul = invNorm(qq, kL2NormEps) * qScale;
        float const kMul = invNorm(kk, kL2NormEps);
        for (int i = 0; i < dk; ++i)
        {
            q[i] *= qMul;
            k[i] *= kMul;
        }
        float decay = 0.0f;
        float beta = 0.0f;
        int64_t const gOff = row * s.numVHeads + h;
        gateAndBeta(loadAsFloat(p.a, gOff, p.dtype), loadAsFloat(p.b, gOff, p.dtype), p.aLog[h], p.dtBias[h], decay,
            beta);
        float oo = 0.0f;
        for (int j = 0; j < dv; ++j)
        {
            float const v = loadAsFloat(p.qkv, vOff + j, p.dtype);
            o[j] = columnStep(S + j, dv, k, q, dk, v, decay, beta);
            oo += o[j] * o[j];
        }
        int64_t const outOff = row * valueDim + static_cast<int64_t>(h) * dv;
        if (p.z)
        {
            float const invRms = invNorm(oo / static_cast<float>(dv), p.normEps);
            for (int j = 0; j < dv; ++j)
            {
                float const zj = loadAsFloat(p.z, outOff + j, p.dtype);
                storeFromFloat(p.out, outOff + j, p.dtype, gatedNorm(o[j], invRms, p.normWeight[j], zj));
            }
        }
        else
        {
            for (int j = 0; j < dv; ++j)
            {
                storeFromFloat(p.out, outOff + j, p.dtype, o[j]);
            }
        }
    }
    if (!p.removePadding)
    {
        for (int64_t t = len; t < p.maxSeqLen; ++t)
        {
            int64_t const outOff = (begin + t) * valueDim + static_cast<int64_t>(h) * dv;
            for (int j = 0; j < dv; ++j)
            {
                storeFromFloat(p.out, outOff + j, p.dtype, 0.0f);
            }
        }
    }
}

} // namespace

char const* forwardHost(GdnParams const& p, int numThreads)
{
    if (char const* err = validate(p))
    {
        return fail(err);
    }
    if (p.batch == 0)
    {
        return nullptr;
    }
    // Host-side checks the GPU kernel cannot report: token ranges and slots.
    std::vector<int64_t> slots(static_cast<size_t>(p.batch));
    int64_t prevEnd = 0;
    for (int32_t b = 0; b < p.batch; ++b)
    {
        int64_t begin = 0;
        int64_t len = 0;
        tokenRange(p, b, begin, len);
        if (p.removePadding)
        {
            if (p.lastTokenIds[b] < prevEnd || p.lastTokenIds[b] > p.numTokens)
                return fail("gdn: last_token_ids must be non-decreasing cumulative counts <= num_tokens (sequence "
                    + std::to_string(b) + ")");
            prevEnd = p.lastTokenIds[b];
        }
        else if (p.lastTokenIds[b] < 0 || (static_cast<int64_t>(b) + 1) * p.maxSeqLen > p.numTokens)
        {
            return fail("gdn: padded layout: bad length or too few rows for sequence " + std::to_string(b));
        }
        int64_t const slot = p.slotMapping ? p.slotMapping[b] : b;
        if (slot < 0 || (p.numSlots > 0 && slot >= p.numSlots))
            return fail("gdn: slot " + std::to_string(slot) + " of sequence " + std::to_string(b)
                + " is outside [0, " + std::to_string(p.numSlots) + ")");
        for (int32_t c = 0; c < b; ++c)
        {
            if (slots[static_cast<size_t>(c)] == slot)
                return fail("gdn: sequences " + std::to_string(c) + " and " + std::to_string(b)
                    + " share slot " + std::to_string(slot));
        }
        slots[static_cast<size_t>(b)] = slot;
    }

    int64_t const work = static_cast<int64_t>(p.batch) * p.shape.numVHeads;
#if defined(_OPENMP)
    int const threads = numThreads > 0 ? numThreads : omp_get_max_threads();
#pragma omp parallel num_threads(threads)
    {
        std::vector<float> scratch;
#pragma omp for schedule(dynamic)
        for (int64_t w = 0; w < work; ++w)
        {
            int32_t const b = static_cast<int32_t>(w / p.shape.numVHeads);
            runHead(p, b, static_cast<int32_t>(w % p.shape.numVHeads), slots[static_cast<size_t>(b)], scratch);
        }
    }
#else
    (void) numThreads;
    std::vector<float> scratch;
    for (int64_t w = 0; w < work; ++w)
    {
        int32_t const b = static_cast<int32_t>(w / p.shape.numVHeads);
        runHead(p, b, static_cast<int32_t>(w % p.shape.numVHeads), slots[static_cast<size_t>(b)], scratch);
    }
#endif
    return nullptr;
}

} // namespace gdn
} // namespace trt_neg

// ---------------------------------------------------------------------------------------
// C ABI for ctypes. Returns 0 on success, else non-zero with trtneg_gdn_last_error().
extern "C"
{

char const* trtneg_gdn_last_error()
{
    return trt_neg::gdn::tError.c_str();
}

int trtneg_gdn_forward_host(void const* qkv, void const* a, void const* b, void const* z, float const* aLog,
    float const* dtBias, float const* normWeight, float* statePool, int32_t const* slotMapping,
    int32_t const* requestTypes, int32_t const* lastTokenIds, void* out, int32_t dtype, int32_t batch,
    int32_t removePadding, int32_t maxSeqLen, int64_t numTokens, int64_t numSlots, int32_t numKHeads,
    int32_t numVHeads, int32_t headKDim, int32_t headVDim, float normEps, int32_t continueContext,
    int32_t numThreads)
{
    using namespace trt_neg::gdn;
    GdnParams p;
    p.shape = GdnShape{numKHeads, numVHeads, headKDim, headVDim};
    p.dtype = static_cast<trt_neg::DType>(dtype);
    p.normEps = normEps;
    p.batch = batch;
    p.removePadding = removePadding;
    p.maxSeqLen = maxSeqLen;
    p.numTokens = numTokens;
    p.numSlots = numSlots;
    p.continueContext = continueContext;
    p.qkv = qkv;
    p.a = a;
    p.b = b;
    p.z = z;
    p.aLog = aLog;
    p.dtBias = dtBias;
    p.normWeight = normWeight;
    p.statePool = statePool;
    p.slotMapping = slotMapping;
    p.lastTokenIds = lastTokenIds;
    p.out = out;
    if (batch < 0 || batch > kMaxSeqsPerCall)
    {
        tError = "gdn: batch must be in [0, 4096]";
        return 1;
    }
    for (int32_t i = 0; i < batch; ++i)
    {
        int32_t const t = requestTypes ? requestTypes[i] : kCONTEXT;
        if (t != kCONTEXT && t != kGENERATION)
        {
            tError = "gdn: request type must be 0 (context) or 1 (generation), got " + std::to_string(t);
            return 1;
        }
        setContext(p.contextMask, i, t == kCONTEXT);
    }
    char const* err = forwardHost(p, numThreads);
    return err ? 1 : 0;
}

// fp32 -> dtype with the kernel's store routine (tests of its rounding).
void trtneg_gdn_convert(float const* in, int64_t n, int32_t dtype, void* out)
{
    for (int64_t i = 0; i < n; ++i)
    {
        trt_neg::gdn::storeFromFloat(out, i, static_cast<trt_neg::DType>(dtype), in[i]);
    }
}

} // extern "C"
