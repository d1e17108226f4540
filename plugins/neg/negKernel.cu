// Fused NEG CUDA op: NEG-Head + softplus + gate + argmax + gated top-k sampling +
// guided logits.  Per-element maths comes from negMath.h (shared with the host build).
#include "negKernel.h"
#include "negMath.h"
#include "../common/cudaLaunch.h"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <climits>
#include <type_traits>

namespace trt_neg
{
namespace
{

struct MaxOp
{
    template <typename T>
    __device__ __forceinline__ T operator()(T a, T b) const
    {
        return a > b ? a : b;
    }
};

struct MinOp
{
    template <typename T>
    __device__ __forceinline__ T operator()(T a, T b) const
    {
        return a < b ? a : b;
    }
};

struct OrOp
{
    __device__ __forceinline__ int operator()(int a, int b) const
    {
        return a | b;
    }
};

// 16-byte vector loads converted to fp32.
template <typename T>
struct VecLoad;

template <>
struct VecLoad<float>
{
    static constexpr int kN = 4;
    __device__ __forceinline__ static void load(float const* p, float (&o)[kN])
    {
        float4 const v = *reinterpret_cast<float4 const*>(p);
        o[0] = v.x;
        o[1] = v.y;
        o[2] = v.z;
        o[3] = v.w;
    }
    __device__ __forceinline__ static float one(float const* p)
    {
        return *p;
    }
};

template <>
struct VecLoad<__nv_bfloat16>
{
    static constexpr int kN = 8;
    __device__ __forceinline__ static void load(__nv_bfloat16 const* p, float (&o)[kN])
    {
        uint4 const v = *reinterpret_cast<uint4 const*>(p);
        uint32_t const w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i)
        {
            o[2 * i] = __uint_as_float(w[i] << 16);
            o[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
        }
    }
    __device__ __forceinline__ static float one(__nv_bfloat16 const* p)
    {
        return __bfloat162float(*p);
    }
};

template <>
struct VecLoad<__half>
{
    static constexpr int kN = 8;
    __device__ __forceinline__ static void load(__half const* p, float (&o)[kN])
    {
        uint4 const v = *reinterpret_cast<uint4 const*>(p);
        __half2 const* h = reinterpret_cast<__half2 const*>(&v);
#pragma unroll
        for (int i = 0; i < 4; ++i)
        {
            float2 const f = __half22float2(h[i]);
            o[2 * i] = f.x;
            o[2 * i + 1] = f.y;
        }
    }
    __device__ __forceinline__ static float one(__half const* p)
    {
        return __half2float(*p);
    }
};

// terms[n, j] = w2[j] * act(b1[j] + W1[j, :] . hidden[n, :]) for a tile of rows.
template <typename T>
__global__ void __launch_bounds__(kNegHeadWarps * 32) negHeadKernel(
    T const* hidden, T const* w1, float const* b1, float const* w2, int N, int H, int d, int act, bool vec, float* terms)
{
    using L = VecLoad<T>;
    int const warp = threadIdx.x >> 5;
    int const lane = threadIdx.x & 31;
    int const j = blockIdx.x * kNegHeadWarps + warp;
    int const n0 = blockIdx.y * kNegHeadRows;
    if (j >= d)
    {
        return;
    }
    int const rows = min(kNegHeadRows, N - n0);
    float acc[kNegHeadRows];
#pragma unroll
    for (int r = 0; r < kNegHeadRows; ++r)
    {
        acc[r] = 0.0f;
    }
    T const* wrow = w1 + static_cast<size_t>(j) * H;
    T const* h0 = hidden + static_cast<size_t>(n0) * H;
    if (vec)
    {
        for (int i = lane * L::kN; i < H; i += 32 * L::kN)
        {
            float w[L::kN];
            L::load(wrow + i, w);
#pragma unroll
            for (int r = 0; r < kNegHeadRows; ++r)
            {
                if (r < rows)
                {
                    float x[L::kN];
                    L::load(h0 + static_cast<size_t>(r) * H + i, x);
#pragma unroll
                    for (int e = 0; e < L::kN; ++e)
                    {
                        acc[r] = fmaf(w[e], x[e], acc[r]);
                    }
                }
            }
        }
    }
    else
    {
        for (int i = lane; i < H; i += 32)
        {
            float const w = L::one(wrow + i);
#pragma unroll
            for (int r = 0; r < kNegHeadRows; ++r)
            {
                if (r < rows)
                {
                    acc[r] = fmaf(w, L::one(h0 + static_cast<size_t>(r) * H + i), acc[r]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < kNegHeadRows; ++r)
    {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
        {
            acc[r] += __shfl_xor_sync(0xFFFFFFFFu, acc[r], o);
        }
    }
    if (lane == 0)
    {
        float const bj = b1[j], wj = w2[j];
        for (int r = 0; r < rows; ++r)
        {
            terms[static_cast<size_t>(n0 + r) * d + j] = wj * negActivation(acc[r] + bj, act);
        }
    }
}

// The NEG-Head on tensor cores (opt-in, kNEG_HEAD_MMA; bf16/fp16 hidden): a 64-row x 64-neuron
// tile of W1 h per block of 4 warps, K in steps of 32 through shared memory, WMMA 16x16x16
// with fp32 accumulation (products of bf16/fp16 values are exact; the tensor cores' fp32 sums
// are not IEEE round-to-nearest, so the result differs from the GEMV's in the last bits), then
// the same epilogue as negHeadKernel.  Needs sm_80+, H % 8 == 0 and 16-byte aligned hidden /
// W1 (negHeadMmaOk plus the compiled-code check in launchHead).
constexpr int kMmaRows = 64, kMmaCols = 64, kMmaK = 32, kMmaThreads = 128;

template <typename T>
__global__ void __launch_bounds__(kMmaThreads) negHeadMmaKernel(
    T const* hidden, T const* w1, float const* b1, float const* w2, int N, int H, int d, int act, float* terms)
{
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    using namespace nvcuda;
    constexpr int kLds = kMmaK + 8;    // 80-byte rows: 16-byte stores, 32-byte aligned fragments
    constexpr int kLdc = kMmaCols + 8; // floats; 72 keeps the accumulator stores off shared bank conflicts
    __shared__ __align__(32) T sA[kMmaRows * kLds];
    __shared__ __align__(32) T sB[kMmaCols * kLds];
    __shared__ __align__(32) float sC[kMmaRows * kLdc];
    int const n0 = blockIdx.y * kMmaRows;
    int const j0 = blockIdx.x * kMmaCols;
    int const warp = threadIdx.x >> 5;
    int const wm = (warp >> 1) * 32; // each warp: 32 rows x 32 neurons = 2 x 2 fragments
    int const wn = (warp & 1) * 32;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int a = 0; a < 2; ++a)
    {
#pragma unroll
        for (int b = 0; b < 2; ++b)
        {
            wmma::fill_fragment(acc[a][b], 0.0f);
        }
    }
    for (int k0 = 0; k0 < H; k0 += kMmaK)
    {
        for (int v = threadIdx.x; v < kMmaRows * (kMmaK / 8); v += kMmaThreads)
        {
            int const r = v / (kMmaK / 8);
            int const c = (v % (kMmaK / 8)) * 8;
            int const k = k0 + c; // H % 8 == 0: a vector of 8 is wholly inside or outside
            uint4 a = make_uint4(0u, 0u, 0u, 0u), b = make_uint4(0u, 0u, 0u, 0u);
            if (n0 + r < N && k < H)
            {
                a = *reinterpret_cast<uint4 const*>(hidden + static_cast<size_t>(n0 + r) * H + k);
            }
            if (j0 + r < d && k < H)
            {
                b = *reinterpret_cast<uint4 const*>(w1 + static_cast<size_t>(j0 + r) * H + k);
            }
            *reinterpret_cast<uint4*>(sA + r * kLds + c) = a;
            *reinterpret_cast<uint4*>(sB + r * kLds + c) = b;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kMmaK; kk += 16)
        {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[2]; // W1 rows = B columns
#pragma unroll
            for (int i = 0; i < 2; ++i)
            {
                wmma::load_matrix_sync(fa[i], sA + (wm + 16 * i) * kLds + kk, kLds);
                wmma::load_matrix_sync(fb[i], sB + (wn + 16 * i) * kLds + kk, kLds);
            }
#pragma unroll
            for (int a = 0; a < 2; ++a)
            {
#pragma unroll
                for (int b = 0; b < 2; ++b)
                {
                    wmma::mma_sync(acc[a][b], fa[a], fb[b], acc[a][b]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int a = 0; a < 2; ++a)
    {
#pragma unroll
        for (int b = 0; b < 2; ++b)
        {
            wmma::store_matrix_sync(sC + (wm + 16 * a) * kLdc + wn + 16 * b, acc[a][b], kLdc, wmma::mem_row_major);
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kMmaRows * kMmaCols; e += kMmaThreads)
    {
        int const n = n0 + e / kMmaCols;
        int const j = j0 + e % kMmaCols;
        if (n < N && j < d)
        {
            terms[static_cast<size_t>(n) * d + j] = w2[j] * negActivation(sC[(e / kMmaCols) * kLdc + e % kMmaCols] + b1[j], act);
        }
    }
#else
    __trap(); // launchHead never picks this kernel below sm_80: fail loudly rather than leave terms unwritten
#endif
}

__device__ __forceinline__ void visitLogit(float v, int i, bool fire, float* gz, unsigned long long& best, int& flags)
{
    unsigned long long const key = negCandidateKey(v, static_cast<uint32_t>(i));
    best = key > best ? key : best;
    flags |= (isfinite(v) ? 1 : 0) | (v == INFINITY ? 2 : 0);
    if (gz)
    {
        gz[i] = fire ? -INFINITY : (v != v ? -INFINITY : v);
    }
}

// Shared memory of every row-level kernel.  The cub temporaries share one union: each use
// is fenced by __syncthreads() before the next.
template <int kBlock>
struct RowSmem
{
    using RedF = cub::BlockReduce<float, kBlock>;
    using RedU = cub::BlockReduce<unsigned long long, kBlock>;
    using RedI = cub::BlockReduce<int, kBlock>;
    using ScanF = cub::BlockScan<float, kBlock>;
    union
    {
        typename RedF::TempStorage f;
        typename RedU::TempStorage u;
        typename RedI::TempStorage i;
        typename ScanF::TempStorage sf;
    } tmp;
    unsigned long long cand[kNegMaxTopK];
    int hist[256];
    NegRadixState radix;
    float f;
    float total;
    unsigned long long u;
    int i[4];
};

// Candidate keys of logits z[lo + j], j in [0, count).
struct LogitKeys
{
    float const* z;
    int lo;
    __device__ __forceinline__ unsigned long long operator()(int j) const
    {
        int const i = lo + j;
        return negCandidateKey(z[i], static_cast<uint32_t>(i));
    }
};

// Candidate keys already computed (the slices' survivors, read by the merge).
struct StoredKeys
{
    unsigned long long const* keys;
    __device__ __forceinline__ unsigned long long operator()(int j) const
    {
        return keys[j];
    }
};

// H_hat of row n: the head terms' sum + b2 through softplus, or the given entropy.  Warp 0
// alone sums, in a fixed order (lane l takes terms l, l+32, ...; then a fixed shuffle tree),
// so every kernel -- whatever its block size -- gets the same bits for a row, and which path
// the launcher picks for a batch never changes a row's H_hat or its gate.
template <int kBlock>
__device__ float rowEntropy(NegStepParams const& p, float const* terms, int n, RowSmem<kBlock>& sm)
{
    if (p.entropyIn)
    {
        return p.entropyIn[n];
    }
    if (threadIdx.x < 32)
    {
        float s = 0.0f;
        for (int j = threadIdx.x; j < p.d; j += 32)
        {
            s += terms[static_cast<size_t>(n) * p.d + j];
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
        {
            s += __shfl_xor_sync(0xFFFFFFFFu, s, o);
        }
        if (threadIdx.x == 0)
        {
            sm.f = negSoftplus(s + *p.b2);
        }
    }
    __syncthreads();
    float const ent = sm.f;
    __syncthreads();
    return ent;
}

// Block-wide max of the argmax keys and OR of the status flags; the results in every thread.
template <int kBlock>
__device__ void reduceArgmaxFlags(unsigned long long& best, int& flags, RowSmem<kBlock>& sm)
{
    best = typename RowSmem<kBlock>::RedU(sm.tmp.u).Reduce(best, MaxOp());
    __syncthreads();
    flags = typename RowSmem<kBlock>::RedI(sm.tmp.i).Reduce(flags, OrOp());
    if (threadIdx.x == 0)
    {
        sm.u = best;
        sm.i[0] = flags;
    }
    __syncthreads();
    best = sm.u;
    flags = sm.i[0];
    __syncthreads();
}

// One pass over z[lo, hi): the best candidate key (argmax), the finite / +inf flags, and the
// guided logits (-inf when fired, else the logit with NaN as -inf).  Results block-uniform.
template <int kBlock>
__device__ void scanLogits(float const* z, float* gz, int lo, int hi, bool fire, bool vec4,
    unsigned long long& bestOut, int& flagsOut, RowSmem<kBlock>& sm)
{
    unsigned long long best = 0;
    int flags = 0;
    if (vec4) // lo and hi are multiples of 4 and the rows 16-byte aligned
    {
        for (int i = lo + threadIdx.x * 4; i < hi; i += kBlock * 4)
        {
            float4 const v = *reinterpret_cast<float4 const*>(z + i);
            visitLogit(v.x, i, fire, gz, best, flags);
            visitLogit(v.y, i + 1, fire, gz, best, flags);
            visitLogit(v.z, i + 2, fire, gz, best, flags);
            visitLogit(v.w, i + 3, fire, gz, best, flags);
        }
    }
    else
    {
        for (int i = lo + threadIdx.x; i < hi; i += kBlock)
        {
            visitLogit(z[i], i, fire, gz, best, flags);
        }
    }
    reduceArgmaxFlags<kBlock>(best, flags, sm);
    bestOut = best;
    flagsOut = flags;
}

// Writes the k largest of count unique candidate keys (1 <= k <= min(count, kNegMaxTopK))
// to sm.cand[0, k), unordered: negMath.h's radix select, histograms in parallel.
template <int kBlock, typename KeyAt>
__device__ void selectTopKeys(KeyAt keyAt, int count, int k, RowSmem<kBlock>& sm)
{
    if (threadIdx.x == 0)
    {
        sm.radix = negRadixStart(k);
    }
    __syncthreads();
    NegRadixState st = sm.radix;
    while (!st.done) // block-uniform: every thread reads the state thread 0 wrote
    {
        for (int b = threadIdx.x; b < 256; b += kBlock)
        {
            sm.hist[b] = 0;
        }
        __syncthreads();
        for (int j = threadIdx.x; j < count; j += kBlock)
        {
            unsigned long long const key = keyAt(j);
            if (negRadixCounts(st, key))
            {
                atomicAdd(&sm.hist[negRadixDigit(st, key)], 1);
            }
        }
        __syncthreads();
        if (threadIdx.x == 0)
        {
            negRadixAdvance(sm.radix, sm.hist);
        }
        __syncthreads();
        st = sm.radix;
    }
    if (threadIdx.x == 0)
    {
        sm.i[0] = 0;
    }
    __syncthreads();
    for (int j = threadIdx.x; j < count; j += kBlock)
    {
        unsigned long long const key = keyAt(j);
        if (negRadixSelected(st, key))
        {
            int const slot = atomicAdd(&sm.i[0], 1);
            if (slot < k) // exactly k by construction; the guard keeps a broken input inside cand[]
            {
                sm.cand[slot] = key;
            }
        }
    }
    __syncthreads();
}

// Bitonic sort of sm.cand[0, k), descending (= logit desc, id asc).
template <int kBlock>
__device__ void sortKeysDesc(int k, RowSmem<kBlock>& sm)
{
    int P = 1;
    while (P < k)
    {
        P <<= 1;
    }
    for (int i = k + threadIdx.x; i < P; i += kBlock)
    {
        sm.cand[i] = 0ull; // below every real key
    }
    for (int size = 2; size <= P; size <<= 1)
    {
        for (int stride = size >> 1; stride > 0; stride >>= 1)
        {
            __syncthreads();
            for (int i = threadIdx.x; i < P; i += kBlock)
            {
                int const j = i ^ stride;
                if (j > i)
                {
                    bool const desc = (i & size) == 0;
                    unsigned long long const a = sm.cand[i], b = sm.cand[j];
                    if (desc ? (a < b) : (a > b))
                    {
                        sm.cand[i] = b;
                        sm.cand[j] = a;
                    }
                }
            }
        }
    }
    __syncthreads();
}

__device__ __forceinline__ uint64_t rowSeed(NegStepParams const& p, int n)
{
    return p.seeds ? static_cast<uint64_t>(p.seeds[n]) : p.seed;
}

__device__ __forceinline__ uint64_t rowOffset(NegStepParams const& p, int n)
{
    return p.offsets64 ? static_cast<uint64_t>(p.offsets64[n])
                       : (p.offsets32 ? static_cast<uint64_t>(static_cast<int64_t>(p.offsets32[n])) : 0ull);
}

// Softmax over the sorted candidates sm.cand[0, k) and the Philox draw (negSampleSorted's
// rule with block-wide sums); returns the chosen candidate index.  One candidate per thread.
template <int kBlock>
__device__ int drawCandidate(int k, float temperature, uint64_t seed, uint64_t offset, RowSmem<kBlock>& sm)
{
    static_assert(kBlock >= kNegMaxTopK, "one thread per candidate");
    int const tid = threadIdx.x;
    float const m = negCandidateLogit(sm.cand[0]) / temperature;
    float const w = tid < k ? negSoftmaxWeight(negCandidateLogit(sm.cand[tid]), m, temperature) : 0.0f;
    float const s = typename RowSmem<kBlock>::RedF(sm.tmp.f).Sum(w);
    if (tid == 0)
    {
        sm.f = s;
    }
    __syncthreads();
    float const total = sm.f;
    int choice = 0;
    if (total > 0.0f)
    {
        float const prob = w / total;
        float c;
        typename RowSmem<kBlock>::ScanF(sm.tmp.sf).InclusiveSum(prob, c);
        if (tid == k - 1)
        {
            sm.total = c;
        }
        __syncthreads();
        float const target = philoxUniform(seed, offset) * sm.total;
        int const first
            = typename RowSmem<kBlock>::RedI(sm.tmp.i).Reduce((tid < k && c > target) ? tid : INT_MAX, MinOp());
        __syncthreads();
        int const lastPos = typename RowSmem<kBlock>::RedI(sm.tmp.i).Reduce((tid < k && prob > 0.0f) ? tid : 0, MaxOp());
        if (tid == 0)
        {
            sm.i[0] = first != INT_MAX ? first : lastPos;
        }
        __syncthreads();
        choice = sm.i[0];
    }
    __syncthreads();
    return choice;
}

// The fired row's token: top-k of the keys, sorted, drawn from.
template <int kBlock, typename KeyAt>
__device__ int sampleFired(NegStepParams const& p, int n, KeyAt keyAt, int count, RowSmem<kBlock>& sm)
{
    int const k = min(p.topK, p.V);
    selectTopKeys<kBlock>(keyAt, count, k, sm);
    sortKeysDesc<kBlock>(k, sm);
    int const choice = drawCandidate<kBlock>(k, p.temperature, rowSeed(p, n), rowOffset(p, n), sm);
    return static_cast<int>(negCandidateId(sm.cand[choice]));
}

// One-hot guided logits where needed, then the row's outputs.
template <int kBlock>
__device__ void finishRow(NegStepParams const& p, int n, bool fire, int status, int token)
{
    float* gz = p.guided ? p.guided + static_cast<size_t>(n) * p.V : nullptr;
    if (!fire && gz && negOneHotRow(false, status))
    {
        for (int i = threadIdx.x; i < p.V; i += kBlock)
        {
            gz[i] = -INFINITY;
        }
    }
    __syncthreads();
    if (threadIdx.x == 0)
    {
        if (gz && negOneHotRow(fire, status))
        {
            gz[token] = 0.0f;
        }
        p.token[n] = token;
        if (p.fired)
        {
            p.fired[n] = fire ? 1 : 0;
        }
        if (p.status)
        {
            p.status[n] = status;
        }
    }
}

__device__ __forceinline__ bool rowsVec4(NegStepParams const& p)
{
    return (p.V % 4 == 0) && (reinterpret_cast<uintptr_t>(p.logits) % 16 == 0)
        && (!p.guided || reinterpret_cast<uintptr_t>(p.guided) % 16 == 0);
}

// One block per row: the whole step for row blockIdx.x.
template <int kBlock>
__global__ void __launch_bounds__(kBlock, 1) negRowKernel(NegStepParams p, float const* terms)
{
    __shared__ RowSmem<kBlock> sm;
    int const n = blockIdx.x;
    float const ent = rowEntropy<kBlock>(p, terms, n, sm);
    if (threadIdx.x == 0 && p.entropy)
    {
        p.entropy[n] = ent;
    }
    if (!p.logits)
    {
        return;
    }
    bool const fire = negFires(ent, *p.tau);
    float const* z = p.logits + static_cast<size_t>(n) * p.V;
    float* gz = p.guided ? p.guided + static_cast<size_t>(n) * p.V : nullptr;
    unsigned long long best;
    int flags;
    scanLogits<kBlock>(z, gz, 0, p.V, fire, rowsVec4(p), best, flags, sm);
    int const status = negRowStatus(ent, (flags & 1) != 0, (flags & 2) != 0);
    int const token = fire ? sampleFired<kBlock>(p, n, LogitKeys{z, 0}, p.V, sm) : static_cast<int>(negCandidateId(best));
    finishRow<kBlock>(p, n, fire, status, token);
}

// Split-V, first launch: block (n, s) scans slice s of row n, records its argmax key and
// flags, and for a fired row its slice's top min(k, slice) keys (0-padded to perSlice).
template <int kBlock>
__global__ void __launch_bounds__(kBlock) negSliceKernel(NegStepParams p, float const* terms, NegSplitPlan plan,
    float* rowEnt, unsigned long long* sliceBest, int* sliceFlags, unsigned long long* sliceCand)
{
    __shared__ RowSmem<kBlock> sm;
    int const n = blockIdx.x;
    int const s = blockIdx.y;
    float const ent = rowEntropy<kBlock>(p, terms, n, sm);
    if (s == 0 && threadIdx.x == 0)
    {
        rowEnt[n] = ent; // the merge gates on these bits, not on a re-summed entropy
        if (p.entropy)
        {
            p.entropy[n] = ent;
        }
    }
    bool const fire = negFires(ent, *p.tau);
    float const* z = p.logits + static_cast<size_t>(n) * p.V;
    float* gz = p.guided ? p.guided + static_cast<size_t>(n) * p.V : nullptr;
    int const lo = static_cast<int>(negSliceBegin(plan, s));
    int const hi = static_cast<int>(negSliceEnd(plan, s, p.V));
    unsigned long long best;
    int flags;
    scanLogits<kBlock>(z, gz, lo, hi, fire, rowsVec4(p), best, flags, sm);
    size_t const slot = static_cast<size_t>(n) * plan.splits + s;
    if (threadIdx.x == 0)
    {
        sliceBest[slot] = best;
        sliceFlags[slot] = flags;
    }
    if (fire)
    {
        int const kk = min(plan.perSlice, hi - lo);
        selectTopKeys<kBlock>(LogitKeys{z, lo}, hi - lo, kk, sm);
        unsigned long long* out = sliceCand + slot * plan.perSlice;
        for (int i = threadIdx.x; i < plan.perSlice; i += kBlock)
        {
            out[i] = i < kk ? sm.cand[i] : 0ull;
        }
    }
}

// Split-V, second launch: one block per row merges the slices (argmax, flags, candidates),
// draws for fired rows and writes the outputs.
template <int kBlock>
__global__ void __launch_bounds__(kBlock, 1) negMergeKernel(NegStepParams p, NegSplitPlan plan, float const* rowEnt,
    unsigned long long const* sliceBest, int const* sliceFlags, unsigned long long const* sliceCand)
{
    static_assert(kBlock >= kNegMaxSplits, "one thread per slice");
    __shared__ RowSmem<kBlock> sm;
    int const n = blockIdx.x;
    float const ent = rowEnt[n];
    bool const fire = negFires(ent, *p.tau);
    size_t const row = static_cast<size_t>(n) * plan.splits;
    bool const mine = threadIdx.x < plan.splits;
    unsigned long long best = mine ? sliceBest[row + threadIdx.x] : 0ull;
    int flags = mine ? sliceFlags[row + threadIdx.x] : 0;
    reduceArgmaxFlags<kBlock>(best, flags, sm);
    int const status = negRowStatus(ent, (flags & 1) != 0, (flags & 2) != 0);
    int const token = fire
        ? sampleFired<kBlock>(p, n, StoredKeys{sliceCand + row * plan.perSlice}, plan.splits * plan.perSlice, sm)
        : static_cast<int>(negCandidateId(best));
    finishRow<kBlock>(p, n, fire, status, token);
}

// bf16/fp16 WMMA with fp32 accumulation needs code compiled for compute capability 8.0+:
// below that the kernel body is a trap. The device's own capability is not enough to know:
// a build for an older architecture list (TORCH_CUDA_ARCH_LIST="7.5+PTX", say) runs on an
// H100 through PTX JIT of the sm_75 body. cudaFuncGetAttributes reports the PTX the loaded
// code came from, and fails where no code fits this device.
template <typename T>
bool mmaHeadCompiledHere()
{
    cudaFuncAttributes attr{};
    return cudaFuncGetAttributes(&attr, negHeadMmaKernel<T>) == cudaSuccess && attr.ptxVersion >= 80;
}

template <typename T>
cudaError_t launchHead(NegStepParams const& p, float* terms, cudaStream_t stream)
{
    if constexpr (!std::is_same<T, float>::value) // fp32 has no 16x16x16 WMMA shape: the GEMV
    {
        if (p.headAlgo == kNEG_HEAD_MMA && negHeadMmaOk(p) && mmaHeadCompiledHere<T>())
        {
            dim3 const grid((p.d + kMmaCols - 1) / kMmaCols, (p.N + kMmaRows - 1) / kMmaRows);
            return launchKernel(negHeadMmaKernel<T>, grid, dim3(kMmaThreads), 0, stream,
                static_cast<T const*>(p.hidden), static_cast<T const*>(p.w1), p.b1, p.w2, p.N, p.H, p.d, p.activation,
                terms);
        }
    }
    constexpr int kVec = VecLoad<T>::kN;
    bool const vec = (p.H % kVec == 0) && (reinterpret_cast<uintptr_t>(p.hidden) % 16 == 0)
        && (reinterpret_cast<uintptr_t>(p.w1) % 16 == 0);
    dim3 const grid((p.d + kNegHeadWarps - 1) / kNegHeadWarps, (p.N + kNegHeadRows - 1) / kNegHeadRows);
    return launchKernel(negHeadKernel<T>, grid, dim3(kNegHeadWarps * 32), 0, stream, static_cast<T const*>(p.hidden),
        static_cast<T const*>(p.w1), p.b1, p.w2, p.N, p.H, p.d, p.activation, vec, terms);
}

} // namespace

cudaError_t negStepLaunch(NegStepParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream)
{
    if (p.N < 0 || (p.logits && (p.V < 1 || p.V > kNegMaxVocab)) || p.topK < 1 || p.topK > kNegMaxTopK
        || !(p.temperature > 0.0f) || p.splits < 0 || (p.headAlgo != kNEG_HEAD_GEMV && p.headAlgo != kNEG_HEAD_MMA)
        || !negActivationValid(p.activation)
        || !dtypeValid(static_cast<int32_t>(p.hiddenType)) || (p.logits && (!p.token || !p.tau))
        || (p.guided && static_cast<void const*>(p.guided) == static_cast<void const*>(p.logits)))
    {
        return cudaErrorInvalidValue;
    }
    if (p.N == 0)
    {
        return cudaSuccess;
    }
    bool const head = !p.entropyIn;
    if (head && (p.H < 1 || p.d < 1 || !p.hidden || !p.w1 || !p.b1 || !p.w2 || !p.b2))
    {
        return cudaErrorInvalidValue;
    }
    int64_t const d = head ? p.d : 0;
    int64_t const V = p.logits ? p.V : 0;
    size_t const need = negStepWorkspaceSize(p.N, d, V, p.topK, p.splits);
    if (workspaceBytes < need || (need > 0 && !workspace))
    {
        return cudaErrorInvalidValue;
    }
    float* terms = static_cast<float*>(workspace);
    if (head)
    {
        cudaError_t e;
        switch (p.hiddenType)
        {
        case DType::kBFLOAT16: e = launchHead<__nv_bfloat16>(p, terms, stream); break;
        case DType::kFLOAT16: e = launchHead<__half>(p, terms, stream); break;
        default: e = launchHead<float>(p, terms, stream); break;
        }
        if (e != cudaSuccess)
        {
            return e;
        }
    }
    NegSplitPlan const plan = negSplitPlan(p.N, V, p.topK, p.splits);
    if (!p.logits || plan.splits <= 1)
    {
        return launchKernel(negRowKernel<kNegRowThreads>, dim3(p.N), dim3(kNegRowThreads), 0, stream, p, terms);
    }
    NegSplitLayout const l = negSplitLayout(p.N, plan);
    char* base = static_cast<char*>(workspace) + negTermsBytes(p.N, d);
    auto* rowEnt = reinterpret_cast<float*>(base + l.ent);
    auto* best = reinterpret_cast<unsigned long long*>(base + l.best);
    auto* flags = reinterpret_cast<int*>(base + l.flags);
    auto* cand = reinterpret_cast<unsigned long long*>(base + l.cand);
    cudaError_t const e = launchKernel(negSliceKernel<kNegSliceThreads>, dim3(p.N, plan.splits),
        dim3(kNegSliceThreads), 0, stream, p, terms, plan, rowEnt, best, flags, cand);
    if (e != cudaSuccess)
    {
        return e;
    }
    return launchKernel(
        negMergeKernel<kNegRowThreads>, dim3(p.N), dim3(kNegRowThreads), 0, stream, p, plan, rowEnt, best, flags, cand);
}

} // namespace trt_neg
