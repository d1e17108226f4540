// Gated DeltaNet CUDA kernel: context phase (prompt) and generation phase (one token),
// reading/writing the fp32 state in TensorRT-LLM's paged RNN state pool through the slot
// mapping. One block owns one (value head, sequence); its threads own one state column
// each (the columns of S are independent given q, k, decay, beta -- gdnMath.h) and the
// whole [dk, dv] fp32 tile stays in shared memory for the call: one global read and one
// write of the state per call, whichever path runs.
//
// Two paths over a sequence's tokens, both the maths the CPU host library runs (so the
// host tests cover this kernel):
// * scan (gdnMath.h columnStep): token after token, ~4*dk dependent FMAs and 3 block
//   barriers per token. Cheapest for generation and short segments.
// * chunked (gdnChunk.h, the WY/UT form of flash-linear-attention's chunk_gated_delta_rule):
//   C tokens at a time -- the block loads and normalises the chunk's q, k, gates, computes
//   the C x C matrices A (UT system) and P (intra-chunk attention) once, then every thread
//   runs its column through project / solve / output / state update with independent dot
//   products (ILP) and 4 block barriers per chunk. Long prompts are no longer bound by the
//   per-token latency chain.
//
// Dispatch (gdnChunk.h):
// * per launch, launchChunkSize(): ContextAlgo::kAuto (the plugin's choice) launches the
//   chunk-capable configuration when the call has a context request and a segment can reach
//   kChunkMinTokens (16) tokens, with the largest chunk size C in {64, 32, 16} whose shared
//   memory fits cudaDevAttrMaxSharedMemoryPerBlockOptin (dk = dv = 128: C = 64 on sm_90,
//   213 KB; 32 on sm_80, 134.5 KB; 16 on sm_86/sm_89, 98.3 KB), else the scan-only kernel
//   (65.3 KB, fewer registers: pure generation steps keep its occupancy). dk % 8 != 0, or a
//   head too wide for the chunk-capable kernel's registers: scan only.
// * per sequence (block), useChunked(): chunked when the segment has >= 16 tokens.
// kScan / kChunked force a path (tests and the GPU check). Details: docs/gdn_kernel.md.
#include "gdnChunk.h"
#include "gdnKernel.h"
#include "gdnMath.h"
#include "../common/cudaLaunch.h"

namespace trt_neg
{
namespace gdn
{
namespace
{

constexpr int kWarp = 32;

// Sums (x, y) over the block; every thread gets the totals. `red` holds 2 * 32 floats.
__device__ __forceinline__ void blockSum2(float& x, float& y, float* red)
{
    for (int off = kWarp / 2; off > 0; off >>= 1)
    {
        x += __shfl_xor_sync(0xFFFFFFFFu, x, off);
        y += __shfl_xor_sync(0xFFFFFFFFu, y, off);
    }
    int const warp = threadIdx.x / kWarp;
    int const lane = threadIdx.x % kWarp;
    int const nWarps = (blockDim.x + kWarp - 1) / kWarp;
    __syncthreads(); // red may still be read by the previous call
    if (lane == 0)
    {
        red[warp] = x;
        red[kWarp + warp] = y;
    }
    __syncthreads();
    x = 0.0f;
    y = 0.0f;
    for (int w = 0; w < nWarps; ++w)
    {
        x += red[w];
        y += red[kWarp + w];
    }
}

__device__ __forceinline__ float warpSum(float x)
{
    for (int off = kWarp / 2; off > 0; off >>= 1)
    {
        x += __shfl_xor_sync(0xFFFFFFFFu, x, off);
    }
    return x;
}

// Where one (value head, sequence) block reads its inputs.
struct HeadView
{
    int h;       // value head
    int hk;      // its key head
    int64_t begin;
    int64_t len;
};

template <DType kDT>
__device__ __forceinline__ float loadV(GdnParams const& p, HeadView const& hv, int64_t row, int j)
{
    GdnShape const& s = p.shape;
    int64_t const vOff = 2LL * s.numKHeads * s.headKDim + static_cast<int64_t>(hv.h) * s.headVDim + j;
    return loadAsFloat(p.qkv, row * s.convDim() + vOff, kDT);
}

// Raw q, k of token `row` into q[i], k[i] for i = first, first + stride, ... < dk; returns
// this thread's partial sums of q^2 and k^2 (the caller reduces them over its threads).
template <DType kDT>
__device__ __forceinline__ void loadQK(
    GdnParams const& p, HeadView const& hv, int64_t row, int first, int stride, float* q, float* k, float& qq, float& kk)
{
    GdnShape const& s = p.shape;
    int const dk = s.headKDim;
    int64_t const qOff = row * s.convDim() + static_cast<int64_t>(hv.hk) * dk;
    int64_t const kOff = qOff + static_cast<int64_t>(s.numKHeads) * dk;
    qq = 0.0f;
    kk = 0.0f;
    for (int i = first; i < dk; i += stride)
    {
        float const qi = loadAsFloat(p.qkv, qOff + i, kDT);
        float const ki = loadAsFloat(p.qkv, kOff + i, kDT);
        q[i] = qi;
        k[i] = ki;
        qq += qi * qi;
        kk += ki * ki;
    }
}

// Per-token scan (gdnMath.h columnStep). S: the state tile; scratch: >= 2*dk + 64 floats.
template <DType kDT>
__device__ void scanSegment(GdnParams const& p, HeadView const& hv, float* S, float* scratch)
{
    GdnShape const& s = p.shape;
    int const dk = s.headKDim;
    int const dv = s.headVDim;
    int const j = threadIdx.x;
    bool const ownsColumn = j < dv;
    int64_t const valueDim = s.valueDim();
    float* q = scratch;  // [dk]
    float* k = q + dk;   // [dk]
    float* red = k + dk; // [2 * 32]
    float const aLog = p.aLog[hv.h];
    float const dtBias = p.dtBias[hv.h];
    float const w = (p.z && ownsColumn) ? p.normWeight[j] : 0.0f;

    for (int64_t t = 0; t < hv.len; ++t)
    {
        int64_t const row = hv.begin + t;
        float qq = 0.0f;
        float kk = 0.0f;
        loadQK<kDT>(p, hv, row, threadIdx.x, blockDim.x, q, k, qq, kk);
        blockSum2(qq, kk, red); // its barriers also publish q, k and (t == 0) the state tile
        float qMul = 0.0f;
        float kMul = 0.0f;
        qkMultipliers(qq, kk, dk, qMul, kMul);
        for (int i = threadIdx.x; i < dk; i += blockDim.x)
        {
            q[i] *= qMul;
            k[i] *= kMul;
        }
        __syncthreads();

        int64_t const gOff = row * s.numVHeads + hv.h;
        float decay = 0.0f;
        float beta = 0.0f;
        gateAndBeta(loadAsFloat(p.a, gOff, kDT), loadAsFloat(p.b, gOff, kDT), aLog, dtBias, decay, beta);

        float o = 0.0f;
        if (ownsColumn)
        {
            o = columnStep(S + j, dv, k, q, dk, loadV<kDT>(p, hv, row, j), decay, beta);
        }
        int64_t const outOff = row * valueDim + static_cast<int64_t>(hv.h) * dv + j;
        if (p.z)
        {
            float oo = o * o;
            float unused = 0.0f;
            blockSum2(oo, unused, red);
            if (ownsColumn)
            {
                float const invRms = invNorm(oo / static_cast<float>(dv), p.normEps);
                storeFromFloat(p.out, outOff, kDT, gatedNorm(o, invRms, w, loadAsFloat(p.z, outOff, kDT)));
            }
        }
        else if (ownsColumn)
        {
            storeFromFloat(p.out, outOff, kDT, o);
        }
        __syncthreads(); // q, k are rewritten by the next token
    }
}

// Chunked form (gdnChunk.h) with chunk size L.chunk. S: the state tile; x: the chunk scratch.
template <DType kDT>
__device__ void chunkedSegment(GdnParams const& p, HeadView const& hv, ChunkLayout const& L, float* S, float* x)
{
    GdnShape const& s = p.shape;
    int const dk = s.headKDim;
    int const dv = s.headVDim;
    int const j = threadIdx.x;
    bool const ownsColumn = j < dv;
    int const warp = threadIdx.x / kWarp;
    int const lane = threadIdx.x % kWarp;
    int const nWarps = blockDim.x / kWarp;
    int64_t const valueDim = s.valueDim();
    float const aLog = p.aLog[hv.h];
    float const dtBias = p.dtBias[hv.h];
    float const w = (p.z && ownsColumn) ? p.normWeight[j] : 0.0f;

    for (int64_t t0 = 0; t0 < hv.len; t0 += L.chunk)
    {
        int const n = static_cast<int>(hv.len - t0 < L.chunk ? hv.len - t0 : L.chunk);
        int const nPad = roundUpTo(n, kTokenTile);

        // 1. One warp per token: normalised q, k rows and the gates; padding rows inert.
        for (int t = warp; t < nPad; t += nWarps)
        {
            float* q = x + L.q + t * L.ldk;
            float* k = x + L.k + t * L.ldk;
            if (t < n)
            {
                int64_t const row = hv.begin + t0 + t;
                float qq = 0.0f;
                float kk = 0.0f;
                loadQK<kDT>(p, hv, row, lane, kWarp, q, k, qq, kk);
                float qMul = 0.0f;
                float kMul = 0.0f;
                qkMultipliers(warpSum(qq), warpSum(kk), dk, qMul, kMul);
                __syncwarp();
                for (int i = lane; i < dk; i += kWarp)
                {
                    q[i] *= qMul;
                    k[i] *= kMul;
                }
                if (lane == 0)
                {
                    int64_t const gOff = row * s.numVHeads + hv.h;
                    logGateAndBeta(loadAsFloat(p.a, gOff, kDT), loadAsFloat(p.b, gOff, kDT), aLog, dtBias,
                        x[L.g + t], x[L.beta + t]);
                }
            }
            else
            {
                for (int i = lane; i < dk; i += kWarp)
                {
                    q[i] = 0.0f;
                    k[i] = 0.0f;
                }
                if (lane == 0)
                {
                    x[L.g + t] = 0.0f;
                    x[L.beta + t] = 0.0f;
                }
            }
        }
        __syncthreads();

        // 2. Block-wide: per-token decays and the pair matrices A, P (lower triangle of nPad).
        for (int t = threadIdx.x; t < nPad; t += blockDim.x)
        {
            chunkGates(x + L.g, n, t, x + L.eStart, x + L.eEnd);
        }
        for (int e = threadIdx.x; e < nPad * (nPad + 1) / 2; e += blockDim.x)
        {
            int t = 0;
            int sIdx = 0;
            lowerTriangleEntry(e, t, sIdx);
            chunkPairEntry(x + L.k, x + L.q, L.ldk, dk, x + L.g, x + L.beta, t, sIdx, x + L.m, L.ldm);
        }
        __syncthreads();

        // 3. Per column: v, then project -> solve -> output -> state (no barriers needed).
        float* u = x + L.u + j;
        float* o = x + L.o + j;
        if (ownsColumn)
        {
            for (int t = 0; t < nPad; ++t)
            {
                u[t * L.ld] = t < n ? loadV<kDT>(p, hv, hv.begin + t0 + t, j) : 0.0f;
            }
            chunkColumn(S + j, dv, x, L, dk, n, u, o);
        }

        // 4. Outputs: per-token sums of o^2 over the columns (warp shuffles, then per warp).
        if (p.z)
        {
            float* red = x + L.red; // [C, nWarps]
            for (int t = 0; t < n; ++t)
            {
                float const ot = ownsColumn ? o[t * L.ld] : 0.0f;
                float const sum = warpSum(ot * ot);
                if (lane == 0)
                {
                    red[t * nWarps + warp] = sum;
                }
            }
            __syncthreads();
            if (ownsColumn)
            {
                for (int t = 0; t < n; ++t)
                {
                    float oo = 0.0f;
                    for (int ww = 0; ww < nWarps; ++ww)
                    {
                        oo += red[t * nWarps + ww];
                    }
                    float const invRms = invNorm(oo / static_cast<float>(dv), p.normEps);
                    int64_t const outOff = (hv.begin + t0 + t) * valueDim + static_cast<int64_t>(hv.h) * dv + j;
                    float const y = gatedNorm(o[t * L.ld], invRms, w, loadAsFloat(p.z, outOff, kDT));
                    storeFromFloat(p.out, outOff, kDT, y);
                }
            }
        }
        else if (ownsColumn)
        {
            for (int t = 0; t < n; ++t)
            {
                int64_t const outOff = (hv.begin + t0 + t) * valueDim + static_cast<int64_t>(hv.h) * dv + j;
                storeFromFloat(p.out, outOff, kDT, o[t * L.ld]);
            }
        }
        __syncthreads(); // the next chunk rewrites the scratch
    }
}

// kChunkCapable = false: the scan-only kernel (shared memory: kernelSharedBytes; few
// registers, so up to 1024 columns per block). true: `chunk` is the chunk size (shared
// memory: chunkedSharedBytes) and each block picks its path with useChunked().
template <DType kDT, bool kChunkCapable>
__global__ void gdnKernel(GdnParams const p, ContextAlgo const algo, int const chunk)
{
    GdnShape const& s = p.shape;
    int const dk = s.headKDim;
    int const dv = s.headVDim;
    int const seq = blockIdx.y;
    int64_t const tile = static_cast<int64_t>(dk) * dv;

    TRTNEG_DYNAMIC_SHARED(float4, smem4); // float4: 16-byte alignment for the chunk rows
    float* S = reinterpret_cast<float*>(smem4); // [dk, dv]
    float* scratch = S + tile;

    HeadView hv{};
    hv.h = blockIdx.x;
    hv.hk = hv.h / (s.numVHeads / s.numKHeads);
    tokenRange(p, seq, hv.begin, hv.len);
    int64_t const slot = p.slotMapping ? p.slotMapping[seq] : seq;
    // A bad token range (last_token_ids) leaves no row safe to touch. A slot outside the pool
    // (the host library reports both) is skipped like a padding slot: zero output rows and no
    // state read or written, so the caller never sees what the buffer held. Both conditions
    // are the same for every thread of the block, so the barriers below stay uniform.
    if (hv.begin < 0 || hv.begin + hv.len > p.numTokens)
    {
        return;
    }
    bool const slotInPool = slot >= 0 && (p.numSlots <= 0 || slot < p.numSlots);
    float* gS = slotInPool ? p.statePool + (slot * s.numVHeads + hv.h) * tile : nullptr;
    if (slotInPool)
    {
        bool const fresh = isContext(p.contextMask, seq) && !p.continueContext;
        for (int64_t idx = threadIdx.x; idx < tile; idx += blockDim.x)
        {
            S[idx] = fresh ? 0.0f : gS[idx];
        }
        // Either path's first barrier publishes the state tile before any column reads it.
        if (kChunkCapable && useChunked(algo, hv.len, chunk))
        {
            chunkedSegment<kDT>(p, hv, chunkLayout(s, chunk), S, scratch);
        }
        else
        {
            scanSegment<kDT>(p, hv, S, scratch);
        }
    }

    // Rows this block writes as zeros (its head's columns): the padded layout's padding
    // (t >= len), and the sequence's own rows when its slot was skipped.
    int64_t const zeroFrom = slotInPool ? hv.len : 0;
    if (!p.removePadding && threadIdx.x < dv)
    {
        for (int64_t t = zeroFrom; t < p.maxSeqLen; ++t)
        {
            int64_t const outOff = (hv.begin + t) * s.valueDim() + static_cast<int64_t>(hv.h) * dv + threadIdx.x;
            storeFromFloat(p.out, outOff, kDT, 0.0f);
        }
    }
    // Packed rows past the last sequence belong to no sequence: its blocks zero them (each
    // head its own columns), as the padded layout's padding above.
    if (p.removePadding && threadIdx.x < dv)
    {
        int64_t const end = seq == p.batch - 1 ? p.numTokens : hv.begin + hv.len;
        for (int64_t row = hv.begin + zeroFrom; row < end; ++row)
        {
            int64_t const outOff = row * s.valueDim() + static_cast<int64_t>(hv.h) * dv + threadIdx.x;
            storeFromFloat(p.out, outOff, kDT, 0.0f);
        }
    }
    if (slotInPool)
    {
        __syncthreads();
        for (int64_t idx = threadIdx.x; idx < tile; idx += blockDim.x)
        {
            gS[idx] = S[idx];
        }
    }
}

template <DType kDT>
cudaError_t launchTyped(GdnParams const& p, ContextAlgo algo, cudaStream_t stream)
{
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess)
        return err;
    int maxOptin = 0;
    err = cudaDeviceGetAttribute(&maxOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (err != cudaSuccess)
        return err;
    int const threads = ((p.shape.headVDim + kWarp - 1) / kWarp) * kWarp;
    int chunk = launchChunkSize(p, algo, maxOptin);
    if (chunk > 0)
    {
        // The chunk-capable kernel holds more registers: very wide heads (dv > ~512) may not
        // fit one block; they use the scan.
        cudaFuncAttributes attr{};
        err = cudaFuncGetAttributes(&attr, gdnKernel<kDT, true>);
        if (err != cudaSuccess)
            return err;
        if (threads > attr.maxThreadsPerBlock)
            chunk = algo == ContextAlgo::kChunked ? -1 : 0;
    }
    if (chunk < 0)
        return cudaErrorInvalidValue; // kChunked forced, but dk % 8 != 0 or it does not fit
    size_t const smem = chunk > 0 ? chunkedSharedBytes(p.shape, chunk) : kernelSharedBytes(p.shape);
    if (smem > static_cast<size_t>(maxOptin))
        return cudaErrorInvalidValue; // dk * dv too large for a shared-memory state tile
    auto kernel = chunk > 0 ? gdnKernel<kDT, true> : gdnKernel<kDT, false>;
    err = allowDynamicShared(kernel, smem);
    if (err != cudaSuccess)
        return err;
    dim3 const grid(static_cast<unsigned>(p.shape.numVHeads), static_cast<unsigned>(p.batch));
    return launchKernel(kernel, grid, dim3(static_cast<unsigned>(threads)), smem, stream, p, algo, chunk);
}

} // namespace

static_assert(kScanReduceFloats == 2 * kWarp, "scanSegment's reduction scratch is blockSum2's [2 * 32] floats");

size_t kernelSharedBytes(GdnShape const& shape)
{
    return static_cast<size_t>(scanSharedBytes(shape)); // gdnParams.h: shared with the plugin's validation
}

cudaError_t launch(GdnParams const& p, cudaStream_t stream, ContextAlgo algo)
{
    if (validate(p) != nullptr)
        return cudaErrorInvalidValue;
    if (p.batch == 0)
    {
        // No sequence owns any row: zeros, as a launch writes rows past the last sequence.
        size_t const bytes = static_cast<size_t>(p.numTokens) * static_cast<size_t>(p.shape.valueDim())
            * static_cast<size_t>(dtypeSize(p.dtype));
        return p.removePadding && p.out && p.numTokens > 0 && bytes > 0 ? cudaMemsetAsync(p.out, 0, bytes, stream) : cudaSuccess;
    }
    switch (p.dtype)
    {
    case DType::kFLOAT16: return launchTyped<DType::kFLOAT16>(p, algo, stream);
    case DType::kBFLOAT16: return launchTyped<DType::kBFLOAT16>(p, algo, stream);
    default: return launchTyped<DType::kFLOAT32>(p, algo, stream);
    }
}

} // namespace gdn
} // namespace trt_neg
