// Gated DeltaNet, chunked (WY / UT-transform) form of the context phase: the per-chunk
// maths, one definition for the CUDA kernel (gdnKernel.cu) and the CPU host library
// (gdnHost.cpp), like gdnMath.h's columnStep() for the per-token scan.
//
// One chunk of n <= C tokens of one value head, state S0 [dk, dv] at the chunk start, log
// gates g_t (decay_t = exp(g_t)). Write G(s, t) = g_{s+1} + ... + g_t (log decay from just
// after token s through token t). Unrolling the scan (gdnMath.h) over the chunk gives, for
// every state column j (the columns stay independent):
//
//   u_t = beta_t (v_t - e^{G(-1,t)} k_t . S0[:, j]) - sum_{s<t} A[t, s] u_s,
//                                         A[t, s] = beta_t e^{G(s,t)} k_t . k_s   (UT system)
//   o_t = e^{G(-1,t)} q_t . S0[:, j] + sum_{s<=t} P[t, s] u_s,
//                                         P[t, s] = e^{G(s,t)} q_t . k_s
//   S[:, j] = e^{G(-1,n-1)} S0[:, j] + sum_s e^{G(s,n-1)} k_s u_s
//
// (u_t is the scan's d_t). A and P are shared by all columns: the block computes them
// once per chunk (chunkPairEntry), then each thread runs its column through
// project -> solve -> output -> state. The scan does ~4*dk dependent FMAs and 3 block
// barriers per token; here a chunk costs 4 barriers and the per-column work is
// independent dot products (ILP) instead of a per-token dependency chain.
//
// Numerics: every exponent is a *direct* partial sum of g (gateSum), never a difference
// of cumulative sums c_t - c_s. With large |g| (decay near 0) c_t reaches -1e4 inside a
// chunk and c_t - c_s would lose ~|c| * 2^-24 ~ 1e-3 of absolute precision in the exponent;
// with g = -inf it would be inf - inf = NaN. All exponents are <= 0, so nothing overflows.
#pragma once

#include "gdnMath.h"
#include "gdnParams.h"

#include <cstddef>
#if defined(TRTNEG_CUDA_SIM)
#include <cuda_runtime_api.h> // float4 (load4)
#endif

#if defined(__CUDA_ARCH__)
#define TRTNEG_UNROLL _Pragma("unroll")
#else
#define TRTNEG_UNROLL
#endif

namespace trt_neg
{
namespace gdn
{

// How the context phase of a sequence is computed (the launcher's and the host library's
// `algo` argument). kAuto: chunked for segments of >= kChunkMinTokens tokens, else scan.
enum class ContextAlgo : int32_t
{
    kAuto = 0,
    kScan = 1,
    kChunked = 2,
};

// Segments shorter than this use the scan under kAuto (generation = 1 token always does).
// Provisional: below ~16 tokens a chunk is mostly padding and fixed cost; the GPU check
// (trt_neg/gpu_check/sec_gdn.py) times both paths at several lengths to confirm it.
constexpr int kChunkMinTokens = 16;

// Chunk sizes the launcher tries, largest first: the largest whose shared memory fits the
// device's opt-in limit (chunkedSharedBytes). For dk = dv = 128: 64 on sm_90 (213 KB of
// 227 KB), 32 on sm_80 (134.5 KB of 163 KB), 16 on sm_86/89 (98.3 KB of 99 KB). 64 is
// FLA's chunk size: the C x C work (A, P, the solve) grows as C^2 per chunk while the
// per-token state traffic shrinks as 1/C; 128 would not fit (the state tile alone is 64 KB).
constexpr int kChunkSizes[] = {64, 32, 16};
constexpr int kHostChunkSize = 64; // the host library's default (no shared-memory limit)
// The host library's largest chunk: its per-thread scratch grows as C^2 (about 4 MB at 1024),
// and an allocation failure inside an OpenMP region ends the process instead of raising.
constexpr int kHostMaxChunkSize = 1024;

// Token tile of the column loops (register accumulators); chunks are padded to it.
constexpr int kTokenTile = 8;
// Key-dimension tile of the state update; the chunked path needs dk % kKeyTile == 0.
constexpr int kKeyTile = 8;

TRTNEG_HD bool chunkedSupported(GdnShape const& s)
{
    return s.headKDim % kKeyTile == 0;
}

TRTNEG_HD int roundUpTo(int x, int m)
{
    return (x + m - 1) / m * m;
}

// Float offsets of the chunk scratch (after the [dk, dv] state tile in shared memory; a
// plain buffer on the host). K and Q rows are padded to dk + 4 floats: 16-byte aligned rows
// whose banks differ by 4 from row to row, so the pair phase (one row per lane) is
// conflict-free. U and O are [C, dv] with the state's column layout (column j = thread j).
struct ChunkLayout
{
    int chunk, ldk, ldm, ld;
    int64_t k, q, m, u, o, g, beta, eStart, eEnd, red, size;
};

TRTNEG_HD ChunkLayout chunkLayout(GdnShape const& s, int chunk)
{
    ChunkLayout L{};
    int const nWarps = (s.headVDim + 31) / 32;
    L.chunk = chunk;
    L.ldk = s.headKDim + 4;
    L.ldm = chunk + 4; // rows 16-byte aligned; P^T stores of one warp (stride ldm) spread over banks
    L.ld = s.headVDim;
    L.k = 0;
    L.q = L.k + static_cast<int64_t>(chunk) * L.ldk;
    L.m = L.q + static_cast<int64_t>(chunk) * L.ldk; // A (strict lower) and P^T (upper + diagonal)
    L.u = L.m + static_cast<int64_t>(chunk) * L.ldm;
    L.o = L.u + static_cast<int64_t>(chunk) * L.ld;
    L.g = L.o + static_cast<int64_t>(chunk) * L.ld;
    L.beta = L.g + chunk;
    L.eStart = L.beta + chunk;
    L.eEnd = L.eStart + chunk;
    L.red = L.eEnd + chunk; // per-token, per-warp partial sums of the gated norm (>= the scan's)
    int64_t const red = static_cast<int64_t>(chunk) * nWarps;
    L.size = L.red + (red > kScanReduceFloats ? red : kScanReduceFloats);
    return L;
}

// Dynamic shared memory of the chunked kernel: the fp32 state tile plus the chunk scratch.
inline size_t chunkedSharedBytes(GdnShape const& s, int chunk)
{
    size_t const tile = static_cast<size_t>(s.headKDim) * s.headVDim;
    return sizeof(float) * (tile + static_cast<size_t>(chunkLayout(s, chunk).size));
}

// Largest chunk size whose shared memory fits `maxSharedBytes` (the device's
// cudaDevAttrMaxSharedMemoryPerBlockOptin); 0: none fits or dk unsupported -> scan only.
inline int pickChunkSize(GdnShape const& s, int64_t maxSharedBytes)
{
    if (!chunkedSupported(s))
        return 0;
    for (int c : kChunkSizes)
    {
        if (static_cast<int64_t>(chunkedSharedBytes(s, c)) <= maxSharedBytes)
            return c;
    }
    return 0;
}

// kAuto's per-launch rule (the kernel's launcher and the host library): chunk-capable only
// when some context segment can reach kChunkMinTokens, so pure generation steps -- and mixed
// steps whose context requests are all short -- keep the scan kernel's occupancy. Packed
// tokens bound the longest context segment from above: every generation request holds at
// least 1 token (TensorRT-LLM: exactly 1), while a context request may hold 0 (an empty prompt
// chunk), so only the generation requests are subtracted. The bound may over-estimate (costs
// a chunk-capable launch) but never under-estimates.
inline bool autoLaunchChunks(GdnParams const& p)
{
    int64_t contexts = 0;
    for (int32_t seq = 0; seq < p.batch; ++seq)
    {
        contexts += isContext(p.contextMask, seq) ? 1 : 0;
    }
    if (contexts == 0)
        return false;
    int64_t const longest = p.removePadding ? p.numTokens - (p.batch - contexts) : p.maxSeqLen;
    return longest >= kChunkMinTokens;
}

// Per-launch decision: the chunk size the kernel is launched with (0 = scan-only launch, the
// small shared-memory footprint). Returns -1 when kChunked is forced but impossible.
inline int launchChunkSize(GdnParams const& p, ContextAlgo algo, int64_t maxSharedBytes)
{
    if (algo == ContextAlgo::kScan)
        return 0;
    int const fit = pickChunkSize(p.shape, maxSharedBytes);
    if (algo == ContextAlgo::kChunked)
        return fit > 0 ? fit : -1;
    return autoLaunchChunks(p) ? fit : 0;
}

// Per-sequence decision (inside the kernel and the host library): chunk > 0 is the
// launch's chunk size.
TRTNEG_HD bool useChunked(ContextAlgo algo, int64_t len, int chunk)
{
    return chunk > 0 && len > 0
        && (algo == ContextAlgo::kChunked || (algo == ContextAlgo::kAuto && len >= kChunkMinTokens));
}

// Entry e of the lower triangle (diagonal included), row by row: (0,0), (1,0), (1,1), ...
TRTNEG_HD void lowerTriangleEntry(int e, int& t, int& s)
{
    t = static_cast<int>((sqrtf(8.0f * static_cast<float>(e) + 1.0f) - 1.0f) * 0.5f);
    while (t * (t + 1) / 2 > e)
        --t;
    while ((t + 1) * (t + 2) / 2 <= e)
        ++t;
    s = e - t * (t + 1) / 2;
}

// Four consecutive floats (16-byte aligned on the device: one vector load).
TRTNEG_HD void load4(float const* p, float& x0, float& x1, float& x2, float& x3)
{
#if defined(__CUDA_ARCH__) || defined(TRTNEG_CUDA_SIM) // the CUDA simulation checks the alignment
    float4 const v = *reinterpret_cast<float4 const*>(p);
    x0 = v.x;
    x1 = v.y;
    x2 = v.z;
    x3 = v.w;
#else
    x0 = p[0];
    x1 = p[1];
    x2 = p[2];
    x3 = p[3];
#endif
}

// G(s, t) = g_{s+1} + ... + g_t, summed in ascending order (0 when s >= t).
TRTNEG_HD float gateSum(float const* g, int s, int t)
{
    float sum = 0.0f;
    for (int r = s + 1; r <= t; ++r)
        sum += g[r];
    return sum;
}

// Decays of token t of an n-token chunk: eStart[t] = e^{G(-1,t)} (chunk start through t),
// eEnd[t] = e^{G(t,n-1)} (after t through the chunk end). Padding rows (t >= n) get
// finite values (their g is 0 and their beta, k, q are 0).
TRTNEG_HD void chunkGates(float const* g, int n, int t, float* eStart, float* eEnd)
{
    eStart[t] = expf(gateSum(g, -1, t));
    eEnd[t] = expf(gateSum(g, t, n - 1));
}

// Dot products x.y and x2.y of dk-float rows (dk % 4 == 0), four partial sums each for ILP.
TRTNEG_HD void dotRows2(float const* x, float const* x2, float const* y, int dk, float& xy, float& x2y)
{
    float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < dk; i += 4)
    {
        float y4[4];
        float v4[4];
        float w4[4];
        load4(y + i, y4[0], y4[1], y4[2], y4[3]);
        load4(x + i, v4[0], v4[1], v4[2], v4[3]);
        load4(x2 + i, w4[0], w4[1], w4[2], w4[3]);
        TRTNEG_UNROLL
        for (int c = 0; c < 4; ++c)
        {
            a[c] += v4[c] * y4[c];
            b[c] += w4[c] * y4[c];
        }
    }
    xy = (a[0] + a[1]) + (a[2] + a[3]);
    x2y = (b[0] + b[1]) + (b[2] + b[3]);
}

// Pair (t, s), s <= t, of the chunk: P[t, s] stored transposed at M[s, t] (upper triangle
// and diagonal) and, for s < t, A[t, s] at M[t, s] (strict lower triangle).
TRTNEG_HD void chunkPairEntry(float const* K, float const* Q, int ldk, int dk, float const* g, float const* beta, int t,
    int s, float* M, int ldm)
{
    float const w = expf(gateSum(g, s, t));
    float kk = 0.0f;
    float qk = 0.0f;
    dotRows2(K + t * ldk, Q + t * ldk, K + s * ldk, dk, kk, qk);
    M[s * ldm + t] = w * qk;
    if (s < t)
        M[t * ldm + s] = beta[t] * w * kk;
}

// Column j, step 1, tokens [0, nPad) (nPad % kTile == 0). col[i * colStride] = S0[i, j].
// On entry u[t * ld] = v_t,j (0 on padding rows). On exit u[t * ld] = beta_t (v_t,j -
// eStart_t k_t . S0[:, j]) (the UT system's right-hand side), o[t * ld] = eStart_t q_t . S0[:, j].
template <int kTile>
TRTNEG_HD void chunkColumnProject(float const* col, int colStride, float const* K, float const* Q, int ldk, int dk,
    int nPad, float const* beta, float const* eStart, float* u, float* o, int ld)
{
    for (int t0 = 0; t0 < nPad; t0 += kTile)
    {
        float ks[kTile];
        float qs[kTile];
        TRTNEG_UNROLL
        for (int tt = 0; tt < kTile; ++tt)
        {
            ks[tt] = 0.0f;
            qs[tt] = 0.0f;
        }
        for (int i = 0; i < dk; i += 4)
        {
            float const s0 = col[i * colStride];
            float const s1 = col[(i + 1) * colStride];
            float const s2 = col[(i + 2) * colStride];
            float const s3 = col[(i + 3) * colStride];
            TRTNEG_UNROLL
            for (int tt = 0; tt < kTile; ++tt)
            {
                float k0, k1, k2, k3, q0, q1, q2, q3;
                load4(K + (t0 + tt) * ldk + i, k0, k1, k2, k3);
                load4(Q + (t0 + tt) * ldk + i, q0, q1, q2, q3);
                ks[tt] += k0 * s0;
                ks[tt] += k1 * s1;
                ks[tt] += k2 * s2;
                ks[tt] += k3 * s3;
                qs[tt] += q0 * s0;
                qs[tt] += q1 * s1;
                qs[tt] += q2 * s2;
                qs[tt] += q3 * s3;
            }
        }
        TRTNEG_UNROLL
        for (int tt = 0; tt < kTile; ++tt)
        {
            int const t = t0 + tt;
            u[t * ld] = beta[t] * (u[t * ld] - eStart[t] * ks[tt]);
            o[t * ld] = eStart[t] * qs[tt];
        }
    }
}

// Column j, step 2: u <- (I + A)^{-1} u by forward substitution over the n real tokens
// (A = strict lower triangle of M; four partial sums per row for ILP).
TRTNEG_HD void chunkColumnSolve(float const* M, int ldm, int n, float* u, int ld)
{
    for (int t = 1; t < n; ++t)
    {
        float const* a = M + t * ldm;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int s0 = 0; s0 < t; s0 += 4)
        {
            float a4[4];
            load4(a + s0, a4[0], a4[1], a4[2], a4[3]);
            TRTNEG_UNROLL
            for (int c = 0; c < 4; ++c)
            {
                if (s0 + c < t)
                    acc[c] += a4[c] * u[(s0 + c) * ld];
            }
        }
        u[t * ld] -= (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
}

// Column j, step 3, tokens [0, nPad): o_t += sum_{s<=t} P[t, s] u_s (P^T read from M's
// upper triangle, kTile outputs at a time; the lower-triangle values are masked out).
template <int kTile>
TRTNEG_HD void chunkColumnOutput(float const* M, int ldm, int nPad, float const* u, float* o, int ld)
{
    for (int t0 = 0; t0 < nPad; t0 += kTile)
    {
        float acc[kTile];
        TRTNEG_UNROLL
        for (int tt = 0; tt < kTile; ++tt)
            acc[tt] = o[(t0 + tt) * ld];
        for (int s = 0; s < t0 + kTile; ++s)
        {
            float const us = u[s * ld];
            float p[kTile];
            TRTNEG_UNROLL
            for (int tt = 0; tt < kTile; tt += 4)
                load4(M + s * ldm + t0 + tt, p[tt], p[tt + 1], p[tt + 2], p[tt + 3]);
            TRTNEG_UNROLL
            for (int tt = 0; tt < kTile; ++tt)
            {
                if (s <= t0 + tt)
                    acc[tt] += p[tt] * us;
            }
        }
        TRTNEG_UNROLL
        for (int tt = 0; tt < kTile; ++tt)
            o[(t0 + tt) * ld] = acc[tt];
    }
}

// Column j, step 4: S[:, j] = chunkDecay S0[:, j] + sum_{s<n} k_s (eEnd_s u_s), in place
// (dk % kTile == 0). Scales u by eEnd (u is not needed afterwards).
template <int kTile>
TRTNEG_HD void chunkColumnState(float* col, int colStride, float const* K, int ldk, int dk, int n, float const* eEnd,
    float chunkDecay, float* u, int ld)
{
    for (int s = 0; s < n; ++s)
        u[s * ld] *= eEnd[s];
    for (int i0 = 0; i0 < dk; i0 += kTile)
    {
        float acc[kTile];
        TRTNEG_UNROLL
        for (int ii = 0; ii < kTile; ++ii)
            acc[ii] = chunkDecay * col[(i0 + ii) * colStride];
        for (int s = 0; s < n; ++s)
        {
            float const us = u[s * ld];
            float k[kTile];
            TRTNEG_UNROLL
            for (int ii = 0; ii < kTile; ii += 4)
                load4(K + s * ldk + i0 + ii, k[ii], k[ii + 1], k[ii + 2], k[ii + 3]);
            TRTNEG_UNROLL
            for (int ii = 0; ii < kTile; ++ii)
                acc[ii] += k[ii] * us;
        }
        TRTNEG_UNROLL
        for (int ii = 0; ii < kTile; ++ii)
            col[(i0 + ii) * colStride] = acc[ii];
    }
}

// The four column steps of one chunk for column j (u, o point at column j of U, O).
TRTNEG_HD void chunkColumn(float* col, int colStride, float const* scratch, ChunkLayout const& L, int dk, int n,
    float* u, float* o)
{
    int const nPad = roundUpTo(n, kTokenTile);
    float const* K = scratch + L.k;
    chunkColumnProject<kTokenTile>(
        col, colStride, K, scratch + L.q, L.ldk, dk, nPad, scratch + L.beta, scratch + L.eStart, u, o, L.ld);
    chunkColumnSolve(scratch + L.m, L.ldm, n, u, L.ld);
    chunkColumnOutput<kTokenTile>(scratch + L.m, L.ldm, nPad, u, o, L.ld);
    chunkColumnState<kKeyTile>(col, colStride, K, L.ldk, dk, n, scratch + L.eEnd, scratch[L.eStart + n - 1], u, L.ld);
}

} // namespace gdn
} // namespace trt_neg
