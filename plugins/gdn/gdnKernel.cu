// Gated DeltaNet CUDA kernel: per-token scan (context phase over a prompt, generation
// phase = one token), reading/writing the fp32 state in TensorRT-LLM's paged RNN state
// pool through the slot mapping.
//
// Choice: a sequential per-token scan, not the chunked (WY/UT) form. One block owns one
// (value head, sequence); its threads own one state column each (the columns of S are
// independent given q, k, decay, beta -- see gdnMath.h), and the whole [dk, dv] fp32
// tile stays in shared memory for the entire prompt, so global state traffic is one read
// and one write per call. The per-token work is the same gdn::columnStep() the CPU host
// library runs, which is what makes the host tests meaningful for this kernel. Cost:
// prompt tokens are processed one after another per head (O(T) steps of ~4*dk FMAs per
// thread with 3 block barriers), so long prefills are latency-bound; the chunked form
// (reference: trt_neg/reference/ops.py chunk_gated_delta_rule) is the follow-up.
#include "gdnKernel.h"
#include "gdnMath.h"

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

template <DType kDT>
__global__ void gdnScanKernel(GdnParams const p)
{
    GdnShape const& s = p.shape;
    int const dk = s.headKDim;
    int const dv = s.headVDim;
    int const h = blockIdx.x;
    int const seq = blockIdx.y;
    int const j = threadIdx.x;
    bool const ownsColumn = j < dv;
    int const hk = h / (s.numVHeads / s.numKHeads);
    int64_t const convDim = s.convDim();
    int64_t const valueDim = s.valueDim();
    int64_t const tile = static_cast<int64_t>(dk) * dv;

    extern __shared__ float smem[];
    float* S = smem;     // [dk, dv]
    float* q = S + tile; // [dk]
    float* k = q + dk;   // [dk]
    float* red = k + dk; // [2 * 32]

    int64_t begin = 0;
    int64_t len = 0;
    tokenRange(p, seq, begin, len);
    int64_t const slot = p.slotMapping ? p.slotMapping[seq] : seq;
    // Invalid slot or token range: nothing safe to touch (the host library reports these).
    if (slot < 0 || (p.numSlots > 0 && slot >= p.numSlots) || begin < 0 || begin + len > p.numTokens)
    {
        return;
    }

    float* gS = p.statePool + (slot * s.numVHeads + h) * tile;
    bool const fresh = isContext(p.contextMask, seq) && !p.continueContext;
    for (int64_t idx = threadIdx.x; idx < tile; idx += blockDim.x)
    {
        S[idx] = fresh ? 0.0f : gS[idx];
    }
    float const qScale = 1.0f / sqrtf(static_cast<float>(dk));
    float const aLog = p.aLog[h];
    float const dtBias = p.dtBias[h];
    float const w = (p.z && ownsColumn) ? p.normWeight[j] : 0.0f;

    for (int64_t t = 0; t < len; ++t)
    {
        int64_t const row = begin + t;
        int64_t const qOff = row * convDim + static_cast<int64_t>(hk) * dk;
        int64_t const kOff = qOff + static_cast<int64_t>(s.numKHeads) * dk;
        float qq = 0.0f;
        float kk = 0.0f;
        for (int i = threadIdx.x; i < dk; i += blockDim.x)
        {
            float const qi = loadAsFloat(p.qkv, qOff + i, kDT);
            float const ki = loadAsFloat(p.qkv, kOff + i, kDT);
            q[i] = qi;
            k[i] = ki;
            qq += qi * qi;
            kk += ki * ki;
        }
        blockSum2(qq, kk, red); // its barriers also publish q, k and (t == 0) the state tile
        float const qMul = invNorm(qq, kL2NormEps) * qScale;
        float const kMul = invNorm(kk, kL2NormEps);
        for (int i = threadIdx.x; i < dk; i += blockDim.x)
        {
            q[i] *= qMul;
            k[i] *= kMul;
        }
        __syncthreads();

        int64_t const gOff = row * s.numVHeads + h;
        float decay = 0.0f;
        float beta = 0.0f;
        gateAndBeta(loadAsFloat(p.a, gOff, kDT), loadAsFloat(p.b, gOff, kDT), aLog, dtBias, decay, beta);

        float o = 0.0f;
        if (ownsColumn)
        {
            float const v = loadAsFloat(p.qkv, row * convDim + 2LL * s.numKHeads * dk + static_cast<int64_t>(h) * dv + j, kDT);
            o = columnStep(S + j, dv, k, q, dk, v, decay, beta);
        }
        int64_t const outOff = row * valueDim + static_cast<int64_t>(h) * dv + j;
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

    if (!p.removePadding && ownsColumn)
    {
        for (int64_t t = len; t < p.maxSeqLen; ++t)
        {
            storeFromFloat(p.out, (begin + t) * valueDim + static_cast<int64_t>(h) * dv + j, kDT, 0.0f);
        }
    }
    __syncthreads();
    for (int64_t idx = threadIdx.x; idx < tile; idx += blockDim.x)
    {
        gS[idx] = S[idx];
    }
}

template <DType kDT>
cudaError_t launchTyped(GdnParams const& p, cudaStream_t stream)
{
    size_t const smem = kernelSharedBytes(p.shape);
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess)
        return err;
    int maxOptin = 0;
    err = cudaDeviceGetAttribute(&maxOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (err != cudaSuccess)
        return err;
    if (smem > static_cast<size_t>(maxOptin))
        return cudaErrorInvalidValue; // dk * dv too large for a shared-memory state tile
    err = cudaFuncSetAttribute(gdnScanKernel<kDT>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess)
        return err;
    int const threads = ((p.shape.headVDim + kWarp - 1) / kWarp) * kWarp;
    dim3 const grid(static_cast<unsigned>(p.shape.numVHeads), static_cast<unsigned>(p.batch));
    gdnScanKernel<kDT><<<grid, threads, smem, stream>>>(p);
    return cudaGetLastError();
}

} // namespace

size_t kernelSharedBytes(GdnShape const& shape)
{
    return sizeof(float)
        * (static_cast<size_t>(shape.headKDim) * shape.headVDim + 2 * static_cast<size_t>(shape.headKDim) + 2 * kWarp);
}

cudaError_t launch(GdnParams const& p, cudaStream_t stream)
{
    if (validate(p) != nullptr)
        return cudaErrorInvalidValue;
    if (p.batch == 0)
        return cudaSuccess;
    switch (p.dtype)
    {
    case DType::kFLOAT16: return launchTyped<DType::kFLOAT16>(p, stream);
    case DType::kBFLOAT16: return launchTyped<DType::kBFLOAT16>(p, stream);
    default: return launchTyped<DType::kFLOAT32>(p, stream);
    }
}

} // namespace gdn
} // namespace trt_neg
