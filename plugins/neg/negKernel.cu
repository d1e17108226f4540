// Fused NEG CUDA op: NEG-Head + softplus + gate + argmax + gated top-k sampling +
// guided logits.  Per-element maths comes from negMath.h (shared with the host build).
#include "negKernel.h"
#include "negMath.h"

#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>

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

template <int kBlock>
__global__ void __launch_bounds__(kBlock) negRowKernel(NegStepParams p, float const* terms)
{
    using RedF = cub::BlockReduce<float, kBlock>;
    using RedU = cub::BlockReduce<unsigned long long, kBlock>;
    using RedI = cub::BlockReduce<int, kBlock>;
    using ScanI = cub::BlockScan<int, kBlock>;
    using ScanF = cub::BlockScan<float, kBlock>;
    __shared__ union
    {
        typename RedF::TempStorage f;
        typename RedU::TempStorage u;
        typename RedI::TempStorage i;
        typename ScanI::TempStorage si;
        typename ScanF::TempStorage sf;
    } tmp;
    __shared__ unsigned long long cand[kNegMaxTopK];
    __shared__ int hist[256];
    __shared__ float shF;
    __shared__ float shTotal;
    __shared__ unsigned long long shU;
    __shared__ int shI[4];

    int const n = blockIdx.x;
    int const tid = threadIdx.x;

    // 1. Entropy and gate.
    float ent;
    if (p.entropyIn)
    {
        ent = p.entropyIn[n];
    }
    else
    {
        float s = 0.0f;
        for (int j = tid; j < p.d; j += kBlock)
        {
            s += terms[static_cast<size_t>(n) * p.d + j];
        }
        s = RedF(tmp.f).Sum(s);
        if (tid == 0)
        {
            shF = negSoftplus(s + *p.b2);
        }
        __syncthreads();
        ent = shF;
    }
    if (tid == 0 && p.entropy)
    {
        p.entropy[n] = ent;
    }
    if (!p.logits)
    {
        return;
    }
    bool const fire = negFires(ent, *p.tau);
    int const V = p.V;
    float const* z = p.logits + static_cast<size_t>(n) * V;
    float* gz = p.guided ? p.guided + static_cast<size_t>(n) * V : nullptr;

    // 2. One pass: argmax (logit desc, id asc), status flags, guided logits.
    unsigned long long best = 0;
    int flags = 0;
    bool const vec4 = (V % 4 == 0) && (reinterpret_cast<uintptr_t>(z) % 16 == 0)
        && (!gz || reinterpret_cast<uintptr_t>(gz) % 16 == 0);
    if (vec4)
    {
        for (int i = tid * 4; i < V; i += kBlock * 4)
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
        for (int i = tid; i < V; i += kBlock)
        {
            visitLogit(z[i], i, fire, gz, best, flags);
        }
    }
    __syncthreads();
    best = RedU(tmp.u).Reduce(best, MaxOp());
    __syncthreads();
    flags = RedI(tmp.i).Reduce(flags, OrOp());
    if (tid == 0)
    {
        shU = best;
        shI[0] = flags;
    }
    __syncthreads();
    best = shU;
    flags = shI[0];
    int status = (ent != ent) ? kNEG_NAN_ENTROPY : kNEG_OK;
    status |= (flags & 1) ? 0 : kNEG_NO_FINITE_LOGIT;
    status |= (flags & 2) ? kNEG_POS_INF_LOGIT : 0;
    int token = static_cast<int>(negCandidateId(best));

    if (fire)
    {
        // 3a. Radix select (8-bit digits, high to low) of the k-th largest order key.
        int const k = min(p.topK, V);
        uint32_t prefix = 0, mask = 0;
        int kRem = k;
        for (int shift = 24; shift >= 0; shift -= 8)
        {
            for (int b = tid; b < 256; b += kBlock)
            {
                hist[b] = 0;
            }
            __syncthreads();
            for (int i = tid; i < V; i += kBlock)
            {
                uint32_t const key = negOrderKey(z[i]);
                if ((key & mask) == prefix)
                {
                    atomicAdd(&hist[(key >> shift) & 255u], 1);
                }
            }
            __syncthreads();
            if (tid == 0)
            {
                int cum = 0;
                for (int b = 255; b >= 0; --b)
                {
                    int const c = hist[b];
                    if (cum + c >= kRem)
                    {
                        shI[1] = b;
                        shI[2] = kRem - cum;
                        break;
                    }
                    cum += c;
                }
            }
            __syncthreads();
            prefix |= static_cast<uint32_t>(shI[1]) << shift;
            mask |= 0xFFu << shift;
            kRem = shI[2];
            __syncthreads();
        }
        // 3b. Gather: all keys > prefix (k - kRem of them), and the kRem lowest ids == prefix.
        int const nGt = k - kRem;
        if (tid == 0)
        {
            shI[3] = 0;
        }
        __syncthreads();
        int tiesTaken = 0;
        for (int base = 0; base < V; base += kBlock)
        {
            int const i = base + tid;
            float const v = i < V ? z[i] : -INFINITY;
            uint32_t const key = negOrderKey(v);
            if (i < V && key > prefix)
            {
                cand[atomicAdd(&shI[3], 1)] = negCandidateKey(v, static_cast<uint32_t>(i));
            }
            if (tiesTaken < kRem) // uniform across the block
            {
                int const eq = (i < V && key == prefix) ? 1 : 0;
                int rank, total;
                ScanI(tmp.si).ExclusiveSum(eq, rank, total);
                if (eq && tiesTaken + rank < kRem)
                {
                    cand[nGt + tiesTaken + rank] = negCandidateKey(v, static_cast<uint32_t>(i));
                }
                tiesTaken += total;
                __syncthreads();
            }
        }
        // 3c. Bitonic sort of the candidates, descending by (logit, -id).
        int P = 1;
        while (P < k)
        {
            P <<= 1;
        }
        for (int i = k + tid; i < P; i += kBlock)
        {
            cand[i] = 0ull;
        }
        for (int size = 2; size <= P; size <<= 1)
        {
            for (int stride = size >> 1; stride > 0; stride >>= 1)
            {
                __syncthreads();
                int const i = tid;
                int const j = i ^ stride;
                if (i < P && j > i)
                {
                    bool const desc = (i & size) == 0;
                    unsigned long long const a = cand[i], b = cand[j];
                    if (desc ? (a < b) : (a > b))
                    {
                        cand[i] = b;
                        cand[j] = a;
                    }
                }
            }
        }
        __syncthreads();
        // 3d. Softmax over the candidates and the Philox draw.
        float const T = p.temperature;
        float const m = negCandidateLogit(cand[0]) / T;
        float const w = tid < k ? negSoftmaxWeight(negCandidateLogit(cand[tid]), m, T) : 0.0f;
        float const s = RedF(tmp.f).Sum(w);
        if (tid == 0)
        {
            shF = s;
        }
        __syncthreads();
        int choice = 0;
        if (shF > 0.0f)
        {
            float const prob = w / shF;
            float c;
            ScanF(tmp.sf).InclusiveSum(prob, c);
            if (tid == k - 1)
            {
                shTotal = c;
            }
            __syncthreads();
            uint64_t const seed = p.seeds ? static_cast<uint64_t>(p.seeds[n]) : p.seed;
            uint64_t const offset = p.offsets64 ? static_cast<uint64_t>(p.offsets64[n])
                                                : (p.offsets32 ? static_cast<uint64_t>(static_cast<int64_t>(p.offsets32[n])) : 0ull);
            float const target = philoxUniform(seed, offset) * shTotal;
            int const first = RedI(tmp.i).Reduce((tid < k && c > target) ? tid : INT_MAX, MinOp());
            __syncthreads();
            int const lastPos = RedI(tmp.i).Reduce((tid < k && prob > 0.0f) ? tid : 0, MaxOp());
            if (tid == 0)
            {
                shI[0] = first != INT_MAX ? first : lastPos;
            }
            __syncthreads();
            choice = shI[0];
        }
        token = static_cast<int>(negCandidateId(cand[choice]));
    }
    else if (gz && negOneHotRow(false, status))
    {
        for (int i = tid; i < V; i += kBlock)
        {
            gz[i] = -INFINITY;
        }
    }
    __syncthreads();
    if (tid == 0)
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

template <typename T>
cudaError_t launchHead(NegStepParams const& p, float* terms, cudaStream_t stream)
{
    constexpr int kVec = VecLoad<T>::kN;
    bool const vec = (p.H % kVec == 0) && (reinterpret_cast<uintptr_t>(p.hidden) % 16 == 0)
        && (reinterpret_cast<uintptr_t>(p.w1) % 16 == 0);
    dim3 const grid((p.d + kNegHeadWarps - 1) / kNegHeadWarps, (p.N + kNegHeadRows - 1) / kNegHeadRows);
    negHeadKernel<T><<<grid, kNegHeadWarps * 32, 0, stream>>>(static_cast<T const*>(p.hidden),
        static_cast<T const*>(p.w1), p.b1, p.w2, p.N, p.H, p.d, p.activation, vec, terms);
    return cudaGetLastError();
}

} // namespace

cudaError_t negStepLaunch(NegStepParams const& p, void* workspace, size_t workspaceBytes, cudaStream_t stream)
{
    if (p.N < 0 || (p.logits && p.V < 1) || p.topK < 1 || p.topK > kNegMaxTopK || !(p.temperature > 0.0f)
        || !negActivationValid(p.activation) || !dtypeValid(static_cast<int32_t>(p.hiddenType))
        || (p.logits && (!p.token || !p.tau)))
    {
        return cudaErrorInvalidValue;
    }
    if (p.N == 0)
    {
        return cudaSuccess;
    }
    float* terms = static_cast<float*>(workspace);
    if (!p.entropyIn)
    {
        if (p.H < 1 || p.d < 1 || !p.hidden || !p.w1 || !p.b1 || !p.w2 || !p.b2
            || workspaceBytes < negWorkspaceSize(p.N, p.d) || !workspace)
        {
            return cudaErrorInvalidValue;
        }
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
    negRowKernel<kNegRowThreads><<<p.N, kNegRowThreads, 0, stream>>>(p, terms);
    return cudaGetLastError();
}

} // namespace trt_neg
