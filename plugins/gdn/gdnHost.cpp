// CPU host build of the Gated DeltaNet op, callable from Python through ctypes
// (trt_neg/kernels/gdn_host.py). Build: g++ -O3 -std=c++17 -shared -fPIC [-fopenmp].
#include "gdnHost.h"

#include "gdnChunk.h"
#include "gdnMath.h"

#include <algorithm>
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

// The head's state in the pool; zeroed for a fresh context request.
float* headState(GdnParams const& p, int32_t seq, int32_t h, int64_t slot)
{
    int64_t const tile = static_cast<int64_t>(p.shape.headKDim) * p.shape.headVDim;
    float* S = p.statePool + (slot * p.shape.numVHeads + h) * tile;
    if (isContext(p.contextMask, seq) && !p.continueContext)
    {
        for (int64_t i = 0; i < tile; ++i)
        {
            S[i] = 0.0f;
        }
    }
    return S;
}

// Normalised q (scaled by dk^-0.5) and k of token `row` for value head h, and its gates.
void loadToken(GdnParams const& p, int64_t row, int32_t h, float* q, float* k, float& g, float& beta)
{
    GdnShape const& s = p.shape;
    int const dk = s.headKDim;
    int const hk = h / (s.numVHeads / s.numKHeads);
    int64_t const qOff = row * s.convDim() + static_cast<int64_t>(hk) * dk;
    int64_t const kOff = qOff + static_cast<int64_t>(s.numKHeads) * dk;
    float qq = 0.0f;
    float kk = 0.0f;
    for (int i = 0; i < dk; ++i)
    {
        q[i] = loadAsFloat(p.qkv, qOff + i, p.dtype);
        k[i] = loadAsFloat(p.qkv, kOff + i, p.dtype);
        qq += q[i] * q[i];
        kk += k[i] * k[i];
    }
    float qMul = 0.0f;
    float kMul = 0.0f;
    qkMultipliers(qq, kk, dk, qMul, kMul);
    for (int i = 0; i < dk; ++i)
    {
        q[i] *= qMul;
        k[i] *= kMul;
    }
    int64_t const gOff = row * s.numVHeads + h;
    logGateAndBeta(loadAsFloat(p.a, gOff, p.dtype), loadAsFloat(p.b, gOff, p.dtype), p.aLog[h], p.dtBias[h], g, beta);
}

float loadV(GdnParams const& p, int64_t row, int32_t h, int j)
{
    GdnShape const& s = p.shape;
    int64_t const off = row * s.convDim() + 2LL * s.numKHeads * s.headKDim + static_cast<int64_t>(h) * s.headVDim + j;
    return loadAsFloat(p.qkv, off, p.dtype);
}

// Writes y for token `row`, head h from the raw outputs o[0..dv) (gated norm when z is set).
void storeRow(GdnParams const& p, int64_t row, int32_t h, float const* o)
{
    int const dv = p.shape.headVDim;
    int64_t const outOff = row * p.shape.valueDim() + static_cast<int64_t>(h) * dv;
    if (p.z)
    {
        float oo = 0.0f;
        for (int j = 0; j < dv; ++j)
        {
            oo += o[j] * o[j];
        }
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

// Per-token scan over tokens [begin, begin + len) (gdnMath.h columnStep per column).
void scanHead(GdnParams const& p, int32_t h, float* S, int64_t begin, int64_t len, std::vector<float>& scratch)
{
    int const dk = p.shape.headKDim;
    int const dv = p.shape.headVDim;
    scratch.resize(static_cast<size_t>(2 * dk + dv));
    float* q = scratch.data();
    float* k = q + dk;
    float* o = k + dk;
    for (int64_t t = 0; t < len; ++t)
    {
        int64_t const row = begin + t;
        float g = 0.0f;
        float beta = 0.0f;
        loadToken(p, row, h, q, k, g, beta);
        float const decay = expf(g);
        for (int j = 0; j < dv; ++j)
        {
            o[j] = columnStep(S + j, dv, k, q, dk, loadV(p, row, h, j), decay, beta);
        }
        storeRow(p, row, h, o);
    }
}

// Chunked (UT-transform) form over the same tokens: gdnChunk.h, in the kernel's order.
void chunkedHead(GdnParams const& p, int32_t h, float* S, int64_t begin, int64_t len, int chunk,
    std::vector<float>& scratch)
{
    int const dk = p.shape.headKDim;
    int const dv = p.shape.headVDim;
    ChunkLayout const L = chunkLayout(p.shape, chunk);
    scratch.assign(static_cast<size_t>(L.size), 0.0f);
    float* x = scratch.data();
    for (int64_t t0 = 0; t0 < len; t0 += chunk)
    {
        int const n = static_cast<int>(len - t0 < chunk ? len - t0 : chunk);
        int const nPad = roundUpTo(n, kTokenTile);
        for (int t = 0; t < nPad; ++t) // load; padding rows are inert (k = q = g = beta = 0)
        {
            float* q = x + L.q + t * L.ldk;
            float* k = x + L.k + t * L.ldk;
            if (t < n)
            {
                loadToken(p, begin + t0 + t, h, q, k, x[L.g + t], x[L.beta + t]);
            }
            else
            {
                std::fill(q, q + dk, 0.0f);
                std::fill(k, k + dk, 0.0f);
                x[L.g + t] = 0.0f;
                x[L.beta + t] = 0.0f;
            }
        }
        for (int t = 0; t < nPad; ++t)
        {
            chunkGates(x + L.g, n, t, x + L.eStart, x + L.eEnd);
        }
        for (int e = 0; e < nPad * (nPad + 1) / 2; ++e)
        {
            int t = 0;
            int s = 0;
            lowerTriangleEntry(e, t, s);
            chunkPairEntry(x + L.k, x + L.q, L.ldk, dk, x + L.g, x + L.beta, t, s, x + L.m, L.ldm);
        }
        for (int j = 0; j < dv; ++j)
        {
            for (int t = 0; t < nPad; ++t)
            {
                x[L.u + t * L.ld + j] = t < n ? loadV(p, begin + t0 + t, h, j) : 0.0f;
            }
            chunkColumn(S + j, dv, x, L, dk, n, x + L.u + j, x + L.o + j);
        }
        for (int t = 0; t < n; ++t)
        {
            storeRow(p, begin + t0 + t, h, x + L.o + t * L.ld);
        }
    }
}

// One (sequence, value head): its token range through the scan or the chunked form.
void runHead(GdnParams const& p, int32_t seq, int32_t h, int64_t slot, ContextAlgo algo, int chunk,
    std::vector<float>& scratch)
{
    float* S = headState(p, seq, h, slot);
    int64_t begin = 0;
    int64_t len = 0;
    tokenRange(p, seq, begin, len);
    if (useChunked(algo, len, chunk))
    {
        chunkedHead(p, h, S, begin, len, chunk, scratch);
    }
    else
    {
        scanHead(p, h, S, begin, len, scratch);
    }
    if (!p.removePadding)
    {
        int const dv = p.shape.headVDim;
        for (int64_t t = len; t < p.maxSeqLen; ++t)
        {
            int64_t const outOff = (begin + t) * p.shape.valueDim() + static_cast<int64_t>(h) * dv;
            for (int j = 0; j < dv; ++j)
            {
                storeFromFloat(p.out, outOff + j, p.dtype, 0.0f);
            }
        }
    }
}

} // namespace

char const* forwardHost(GdnParams const& p, int numThreads, ContextAlgo algo, int chunk)
{
    if (char const* err = validate(p))
    {
        return fail(err);
    }
    if (algo != ContextAlgo::kScan && (chunk < kTokenTile || chunk > kHostMaxChunkSize || chunk % kTokenTile != 0))
    {
        return fail("gdn: chunk_size must be a multiple of " + std::to_string(kTokenTile) + " in ["
            + std::to_string(kTokenTile) + ", " + std::to_string(kHostMaxChunkSize) + "], got "
            + std::to_string(chunk));
    }
    if (algo == ContextAlgo::kChunked && !chunkedSupported(p.shape))
    {
        return fail("gdn: the chunked path needs head_k_dim % " + std::to_string(kKeyTile) + " == 0");
    }
    if (algo == ContextAlgo::kAuto && (!chunkedSupported(p.shape) || !autoLaunchChunks(p)))
    {
        algo = ContextAlgo::kScan; // as the launcher does: the scan handles every shape and short launches
    }
    // Host-side checks the GPU kernel cannot report: token ranges and slots.
    std::vector<int64_t> slots(static_cast<size_t>(p.batch));
    int64_t prevEnd = 0;
    for (int32_t b = 0; b < p.batch; ++b)
    {
        int64_t const last = p.lastTokenIds[b];
        std::string const at = "gdn: last_token_ids[" + std::to_string(b) + "] = " + std::to_string(last);
        if (p.removePadding)
        {
            if (last < prevEnd || last > p.numTokens)
                return fail(at + ": packed layout needs non-decreasing cumulative counts in ["
                    + std::to_string(prevEnd) + ", num_tokens = " + std::to_string(p.numTokens) + "]");
            prevEnd = last;
        }
        else
        {
            if (last < 0 || last > p.maxSeqLen)
                return fail(at + ": padded layout needs a length in [0, max_seq_len = "
                    + std::to_string(p.maxSeqLen) + "]");
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

    // Packed rows past the last sequence (last_token_ids[B-1] .. num_tokens; every row when
    // B = 0) belong to no sequence: zeros, as the padded layout's padding and the kernel.
    if (p.removePadding && p.out)
    {
        int64_t const tailBegin = p.batch > 0 ? p.lastTokenIds[p.batch - 1] : 0;
        for (int64_t i = tailBegin * p.shape.valueDim(); i < p.numTokens * p.shape.valueDim(); ++i)
        {
            storeFromFloat(p.out, i, p.dtype, 0.0f);
        }
    }
    if (p.batch == 0)
    {
        return nullptr;
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
            runHead(p, b, static_cast<int32_t>(w % p.shape.numVHeads), slots[static_cast<size_t>(b)], algo, chunk,
                scratch);
        }
    }
#else
    (void) numThreads;
    std::vector<float> scratch;
    for (int64_t w = 0; w < work; ++w)
    {
        int32_t const b = static_cast<int32_t>(w / p.shape.numVHeads);
        runHead(p, b, static_cast<int32_t>(w % p.shape.numVHeads), slots[static_cast<size_t>(b)], algo, chunk,
                scratch);
    }
#endif
    return nullptr;
}

char const* paramsFromArgs(void const* qkv, void const* a, void const* b, void const* z, float const* aLog,
    float const* dtBias, float const* normWeight, float* statePool, int32_t const* slotMapping,
    int32_t const* requestTypes, int32_t const* lastTokenIds, void* out, int32_t dtype, int32_t batch,
    int32_t removePadding, int32_t maxSeqLen, int64_t numTokens, int64_t numSlots, int32_t numKHeads,
    int32_t numVHeads, int32_t headKDim, int32_t headVDim, float normEps, int32_t continueContext, GdnParams& p)
{
    p = GdnParams{};
    p.shape = GdnShape{numKHeads, numVHeads, headKDim, headVDim};
    p.dtype = static_cast<DType>(dtype);
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
        return fail("gdn: batch must be in [0, 4096]");
    }
    for (int32_t i = 0; i < batch; ++i)
    {
        int32_t const t = requestTypes ? requestTypes[i] : kCONTEXT;
        if (t != kCONTEXT && t != kGENERATION)
        {
            return fail("gdn: request type must be 0 (context) or 1 (generation), got " + std::to_string(t));
        }
        setContext(p.contextMask, i, t == kCONTEXT);
    }
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
    int32_t numThreads, int32_t algo, int32_t chunk)
{
    using namespace trt_neg::gdn;
    GdnParams p;
    if (paramsFromArgs(qkv, a, b, z, aLog, dtBias, normWeight, statePool, slotMapping, requestTypes, lastTokenIds, out,
            dtype, batch, removePadding, maxSeqLen, numTokens, numSlots, numKHeads, numVHeads, headKDim, headVDim,
            normEps, continueContext, p))
    {
        return 1;
    }
    if (algo < 0 || algo > 2)
    {
        tError = "gdn: algo must be 0 (auto), 1 (scan) or 2 (chunked), got " + std::to_string(algo);
        return 1;
    }
    char const* err = forwardHost(p, numThreads, static_cast<ContextAlgo>(algo), chunk);
    return err ? 1 : 0;
}

// The launcher's decisions for a device with `maxSharedBytes` of opt-in shared memory per
// block (tests of the per-architecture budget): out[0] = pickChunkSize, out[1] =
// chunkedSharedBytes at that size (0 if none), out[2] = launchChunkSize for a packed call
// with `numTokens` tokens of `batch` sequences: requestTypes[b] (0 context, 1 generation)
// when given, else the first sequence is a context request iff hasContext and the rest are
// generation requests. Returns non-zero for a shape the op refuses.
int trtneg_gdn_chunk_plan(int32_t numKHeads, int32_t numVHeads, int32_t headKDim, int32_t headVDim,
    int64_t maxSharedBytes, int64_t numTokens, int32_t batch, int32_t hasContext, int32_t const* requestTypes,
    int32_t algo, int64_t* out)
{
    using namespace trt_neg::gdn;
    GdnParams p;
    p.shape = GdnShape{numKHeads, numVHeads, headKDim, headVDim};
    if (char const* err = validateShape(p.shape)) // the op's own rule: the plan sizes nothing it would refuse
    {
        tError = err;
        return 1;
    }
    p.batch = batch < 0 ? 0 : (batch > kMaxSeqsPerCall ? kMaxSeqsPerCall : batch);
    p.numTokens = numTokens;
    for (int32_t b = 0; b < p.batch; ++b)
    {
        setContext(p.contextMask, b, requestTypes ? requestTypes[b] == kCONTEXT : (b == 0 && hasContext != 0));
    }
    int const c = pickChunkSize(p.shape, maxSharedBytes);
    out[0] = c;
    out[1] = c > 0 ? static_cast<int64_t>(chunkedSharedBytes(p.shape, c)) : 0;
    out[2] = launchChunkSize(p, static_cast<ContextAlgo>(algo), maxSharedBytes);
    return 0;
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
