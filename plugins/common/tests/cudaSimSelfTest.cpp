// The CPU simulation of CUDA (cudaSim/) must catch what it claims to catch: each kernel here
// has one deliberate defect (or none), and the test checks the simulation's verdict.
// Build: g++ -std=c++17 -pthread -DTRTNEG_CUDA_SIM -Iplugins/common/tests/cudaSim ...
#include <cub/block/block_reduce.cuh>
#include <cuda_runtime_api.h>
#include <mma.h>

#include "../cudaLaunch.h"
#include "../testCheck.h"

#include <string>

using trt_neg::launchKernel;

namespace
{

constexpr int kThreads = 64;

// Thread 0 sums what every thread stored; `fenced` says whether a barrier comes in between.
__global__ void sumStores(bool fenced, int* out)
{
    __shared__ int stored[kThreads];
    stored[threadIdx.x] = static_cast<int>(threadIdx.x) + 1;
    if (fenced)
    {
        __syncthreads();
    }
    if (threadIdx.x == 0)
    {
        int s = 0;
        for (int i = 0; i < kThreads; ++i)
        {
            s += stored[i];
        }
        *out = s;
    }
}

// Half of warp 0 waits at __syncthreads while the other half shuffles: never completes.
__global__ void divergentBarrier(int* out)
{
    int v = static_cast<int>(threadIdx.x);
    if (threadIdx.x < 16)
    {
        __syncthreads();
    }
    else
    {
        v += __shfl_xor_sync(0xFFFFFFFFu, v, 1);
    }
    out[threadIdx.x] = v;
}

// A butterfly sum over each warp: every lane ends with the warp's total.
__global__ void warpSum(int* out)
{
    int v = static_cast<int>(threadIdx.x);
    for (int o = 16; o > 0; o >>= 1)
    {
        v += __shfl_xor_sync(0xFFFFFFFFu, v, o);
    }
    out[threadIdx.x] = v;
}

// cub's BlockReduce hands the aggregate to thread 0 only.
__global__ void reduceSeenBy(int reader, float* out)
{
    using Reduce = cub::BlockReduce<float, kThreads>;
    __shared__ Reduce::TempStorage tmp;
    float const s = Reduce(tmp).Sum(1.0f);
    if (static_cast<int>(threadIdx.x) == reader)
    {
        *out = s;
    }
}

// Two reductions on one storage; `fenced` puts the barrier cub requires between them.
__global__ void reuseReduceStorage(bool fenced, int* out)
{
    using Reduce = cub::BlockReduce<int, kThreads>;
    __shared__ Reduce::TempStorage tmp;
    int const a = Reduce(tmp).Sum(1);
    if (fenced)
    {
        __syncthreads();
    }
    int const b = Reduce(tmp).Sum(2);
    if (threadIdx.x == 0)
    {
        out[0] = a;
        out[1] = b;
    }
}

// Each block reads the shared variable before writing its own index there.
__global__ void sharedIsPerBlock(int* out)
{
    __shared__ int slot;
    if (threadIdx.x == 0)
    {
        out[blockIdx.x] = slot;
        slot = static_cast<int>(blockIdx.x) + 100;
    }
}

// A WMMA load from a pointer that is 16-byte but not 32-byte aligned.
__global__ void misalignedWmma(float* out)
{
    using namespace nvcuda;
    __shared__ __align__(32) __half tile[16 * 16 + 8];
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    wmma::load_matrix_sync(a, tile + 8, 16);
    out[threadIdx.x] = 0.0f;
}

// A float4 load: the GPU needs a 16-byte aligned address.
__global__ void vectorLoad(float const* p, float* out)
{
    float4 const v = *reinterpret_cast<float4 const*>(p);
    out[threadIdx.x] = v.x + v.w;
}

// Dynamic shared memory: reads element `read` before any write, then writes element `write`.
__global__ void dynamicShared(int read, int write, int* out)
{
    TRTNEG_DYNAMIC_SHARED(int, smem);
    if (threadIdx.x == 0)
    {
        *out = smem[read];
        smem[write] = 7;
    }
}

// A float4 store: the GPU needs a 16-byte aligned address too.
__global__ void vectorStore(float* p)
{
    if (threadIdx.x == 0)
    {
        *reinterpret_cast<float4*>(p) = make_float4(1.0f, 2.0f, 3.0f, 4.0f);
    }
}

// Thread i reads p[i + offset] into out[i] (a large offset: past the end of p).
__global__ void loadShifted(int const* p, int offset, int* out)
{
    out[threadIdx.x] = p[threadIdx.x + offset];
}

// Thread i stores i + 1 at p[i + offset] (offset 1: the last thread writes past the end).
__global__ void storeShifted(int* p, int offset)
{
    p[threadIdx.x + offset] = static_cast<int>(threadIdx.x) + 1;
}

// Each thread reads what a thread of the other warp stored; between them only a __syncwarp
// (`fenced`: a __syncthreads). A warp op is no block-wide barrier.
__global__ void crossWarpRead(bool fenced, int* out)
{
    __shared__ int stored[kThreads];
    stored[threadIdx.x] = static_cast<int>(threadIdx.x) + 1;
    if (fenced)
    {
        __syncthreads();
    }
    else
    {
        __syncwarp();
    }
    out[threadIdx.x] = stored[(threadIdx.x + 32) % kThreads];
}

// Warp ops may name exited lanes and lanes past the end of the block ("all non-exited threads
// named in mask"): lanes 8..15 of each warp exit; the rest sync and swap with lane ^ 1.
__global__ void partialWarps(int* out)
{
    if ((threadIdx.x & 31) >= 8 && (threadIdx.x & 31) < 16)
    {
        return;
    }
    __syncwarp();
    out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, static_cast<int>(threadIdx.x), 1);
}

// A shuffle reading a lane that does not take part: lanes 0..15 read lane 20 (`exited`: lanes
// 16..31 have exited; else they are at a shuffle of their own mask).
__global__ void shuffleFromOutside(bool exited, int* out)
{
    int const lane = static_cast<int>(threadIdx.x & 31);
    if (lane >= 16 && exited)
    {
        return;
    }
    int const v = lane < 16 ? __shfl_sync(0x0000FFFFu, lane, 20) : __shfl_sync(0xFFFF0000u, lane, 16);
    out[threadIdx.x] = v;
}

// Lane 0 shuffles with mask 0x3 while the rest of its warp uses the full mask.
__global__ void mismatchedMasks(int* out)
{
    unsigned const mask = threadIdx.x == 0 ? 0x3u : 0xFFFFFFFFu;
    out[threadIdx.x] = __shfl_xor_sync(mask, static_cast<int>(threadIdx.x), 1);
}

// Butterfly with a width: a lane may read an earlier group, a later group gives its own value.
__global__ void xorWithWidth(int width, int laneMask, int* out)
{
    out[threadIdx.x] = __shfl_xor_sync(0xFFFFFFFFu, static_cast<int>(threadIdx.x), laneMask, width);
}

struct AddOp
{
    __device__ int operator()(int a, int b) const
    {
        return a + b;
    }
};

// cub::BlockReduce<int, 64> in the block the launch gives; the sum of num_valid threads' ones.
__global__ void reduceInBlock(int numValid, int* out)
{
    using Reduce = cub::BlockReduce<int, kThreads>;
    __shared__ Reduce::TempStorage tmp;
    int const s = Reduce(tmp).Reduce(1, AddOp(), numValid);
    if (threadIdx.x == 0 && threadIdx.y == 0)
    {
        *out = s;
    }
}

// D = A B through WMMA, A and B 16x16 in the given layouts, D stored in `storeLayout`.
template <typename LA, typename LB>
__global__ void wmmaProduct(__half const* a, __half const* b, nvcuda::wmma::layout_t storeLayout, float* d)
{
    using namespace nvcuda;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, LA> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, LB> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    wmma::load_matrix_sync(fa, a, 16);
    wmma::load_matrix_sync(fb, b, 16);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(d, acc, 16, storeLayout);
}

// A WMMA load whose pointer differs between lanes.
__global__ void wmmaLaneDependentPointer(float* out)
{
    using namespace nvcuda;
    __shared__ __align__(32) __half tile[2 * 256];
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    wmma::load_matrix_sync(a, tile + (threadIdx.x & 1) * 256, 16);
    out[threadIdx.x] = 0.0f;
}

__half toHalf(int v) // small integers only
{
    __half h;
    h.bits = 0;
    if (v != 0)
    {
        int e = 0;
        while ((v >> (e + 1)) != 0)
        {
            ++e;
        }
        int const frac = (v << (10 - e)) & 0x3FF;
        h.bits = static_cast<uint16_t>(((e + 15) << 10) | frac);
    }
    return h;
}

// How a guard-page fault names the access: read or write where the fault's error code says.
#if defined(__x86_64__) && defined(REG_ERR)
char const* const kRead = "invalid read: read ";
char const* const kWrite = "invalid write: write ";
#else
char const* const kRead = "invalid access: access ";
char const* const kWrite = "invalid access: access ";
#endif

bool errorNames(std::string const& expected)
{
    return cudasim::lastError().message.find(expected) != std::string::npos;
}

void reset(cudasim::Order order)
{
    cudasim::config().order = order;
    cudasim::lastError() = {};
}

} // namespace

int main()
{
    using cudasim::Order;
    int sums[3] = {0, 0, 0};
    Order const orders[3] = {Order::kForward, Order::kReverse, Order::kShuffled};
    int const total = kThreads * (kThreads + 1) / 2;

    // A missing barrier: some order sees a store missing; with the barrier, none does.
    for (int i = 0; i < 3; ++i)
    {
        reset(orders[i]);
        CHECK(launchKernel(sumStores, dim3(1), dim3(kThreads), 0, nullptr, false, &sums[i]) == cudaSuccess);
    }
    CHECK(sums[0] != total || sums[1] != total || sums[2] != total);
    for (int i = 0; i < 3; ++i)
    {
        reset(orders[i]);
        CHECK(launchKernel(sumStores, dim3(1), dim3(kThreads), 0, nullptr, true, &sums[i]) == cudaSuccess);
        CHECK(sums[i] == total);
    }

    // A divergent barrier is reported (and the error is sticky until the next reset).
    int lanes[kThreads];
    reset(Order::kForward);
    CHECK(launchKernel(divergentBarrier, dim3(1), dim3(kThreads), 0, nullptr, lanes) == cudaErrorLaunchFailure);
    CHECK(errorNames("deadlock"));
    CHECK(launchKernel(warpSum, dim3(1), dim3(kThreads), 0, nullptr, lanes) == cudaErrorLaunchFailure);
    CHECK(cudaGetLastError() == cudaErrorLaunchFailure);

    // Shuffles: every lane holds its warp's sum.
    reset(Order::kReverse);
    CHECK(launchKernel(warpSum, dim3(1), dim3(kThreads), 0, nullptr, lanes) == cudaSuccess);
    CHECK(lanes[0] == 31 * 32 / 2 && lanes[31] == 31 * 32 / 2);
    CHECK(lanes[32] == (32 + 63) * 32 / 2 && lanes[63] == (32 + 63) * 32 / 2);

    // cub::BlockReduce: thread 0 has the sum; any other thread a poison value.
    float seen = 0.0f;
    reset(Order::kForward);
    CHECK(launchKernel(reduceSeenBy, dim3(1), dim3(kThreads), 0, nullptr, 0, &seen) == cudaSuccess);
    CHECK(seen == static_cast<float>(kThreads));
    CHECK(launchKernel(reduceSeenBy, dim3(1), dim3(kThreads), 0, nullptr, 5, &seen) == cudaSuccess);
    CHECK(seen != seen);

    // Reusing cub storage without a barrier gives a wrong aggregate in some order.
    int ab[2];
    bool wrong = false;
    for (Order o : orders)
    {
        reset(o);
        CHECK(launchKernel(reuseReduceStorage, dim3(1), dim3(kThreads), 0, nullptr, false, ab) == cudaSuccess);
        wrong |= ab[0] != kThreads || ab[1] != 2 * kThreads;
        reset(o);
        CHECK(launchKernel(reuseReduceStorage, dim3(1), dim3(kThreads), 0, nullptr, true, ab) == cudaSuccess);
        CHECK(ab[0] == kThreads && ab[1] == 2 * kThreads);
    }
    CHECK(wrong);

    // __shared__ starts fresh in every block, whatever the block order, and as garbage (the
    // poison bytes), not zeros.
    int firstSeen[4] = {-1, -1, -1, -1};
    int const poison = -1; // 0xFF bytes
    reset(Order::kShuffled);
    CHECK(launchKernel(sharedIsPerBlock, dim3(4), dim3(32), 0, nullptr, firstSeen) == cudaSuccess);
    CHECK(firstSeen[0] == poison && firstSeen[1] == poison && firstSeen[2] == poison && firstSeen[3] == poison);
    int dynSeen = 0;
    reset(Order::kForward);
    CHECK(launchKernel(dynamicShared, dim3(1), dim3(32), 64 * sizeof(int), nullptr, 3, 63, &dynSeen) == cudaSuccess);
    CHECK(dynSeen == poison);
    CHECK(launchKernel(dynamicShared, dim3(1), dim3(32), 64 * sizeof(int), nullptr, 0, 64, &dynSeen)
        == cudaErrorLaunchFailure);
    CHECK(errorNames("write past the dynamic shared memory"));

    // WMMA alignment rules.
    float sink[32];
    reset(Order::kForward);
    CHECK(launchKernel(misalignedWmma, dim3(1), dim3(32), 0, nullptr, sink) == cudaErrorLaunchFailure);
    CHECK(errorNames("32-byte aligned"));

    // Vector loads: aligned fine, misaligned a fault.
    alignas(16) float row[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    reset(Order::kForward);
    CHECK(launchKernel(vectorLoad, dim3(1), dim3(32), 0, nullptr, row + 4, sink) == cudaSuccess && sink[0] == 13.0f);
    CHECK(launchKernel(vectorLoad, dim3(1), dim3(32), 0, nullptr, row + 1, sink) == cudaErrorLaunchFailure);
    CHECK(errorNames("misaligned address: float4 load"));
    reset(Order::kForward);
    CHECK(launchKernel(vectorStore, dim3(1), dim3(32), 0, nullptr, row + 4) == cudaSuccess && row[7] == 4.0f);
    CHECK(launchKernel(vectorStore, dim3(1), dim3(32), 0, nullptr, row + 2) == cudaErrorLaunchFailure);
    CHECK(errorNames("misaligned address: float4 store"));

    // Launch limits. launchKernel's cudaGetLastError reads a configuration error, as on a GPU:
    // it is not sticky, and the next launch runs.
    reset(Order::kForward);
    CHECK(launchKernel(warpSum, dim3(1), dim3(2048), 0, nullptr, lanes) == cudaErrorInvalidConfiguration);
    CHECK(errorNames("invalid launch configuration"));
    CHECK(cudaGetLastError() == cudaSuccess);
    lanes[0] = -1;
    CHECK(launchKernel(warpSum, dim3(1), dim3(32), 0, nullptr, lanes) == cudaSuccess && lanes[0] == 31 * 32 / 2);
    CHECK(launchKernel(warpSum, dim3(1, 70000), dim3(32), 0, nullptr, lanes) == cudaErrorInvalidConfiguration);
    CHECK(launchKernel(warpSum, dim3(1), dim3(1, 1, 65), 0, nullptr, lanes) == cudaErrorInvalidConfiguration);
    CHECK(launchKernel(warpSum, dim3(1), dim3(32, 33), 0, nullptr, lanes) == cudaErrorInvalidConfiguration);
    CHECK(launchKernel(warpSum, dim3(0), dim3(32), 0, nullptr, lanes) == cudaErrorInvalidConfiguration);

    // A warp op is no block-wide barrier: a read of the other warp's store after a __syncwarp
    // only is wrong in some order (a warp runs ahead to its next __syncthreads).
    int crossed[kThreads];
    bool raced = false;
    for (Order o : orders)
    {
        reset(o);
        CHECK(launchKernel(crossWarpRead, dim3(1), dim3(kThreads), 0, nullptr, false, crossed) == cudaSuccess);
        for (int i = 0; i < kThreads; ++i)
        {
            raced |= crossed[i] != (i + 32) % kThreads + 1;
        }
        reset(o);
        CHECK(launchKernel(crossWarpRead, dim3(1), dim3(kThreads), 0, nullptr, true, crossed) == cudaSuccess);
        for (int i = 0; i < kThreads; ++i)
        {
            CHECK(crossed[i] == (i + 32) % kThreads + 1);
        }
    }
    CHECK(raced);

    // Exited lanes and lanes past the block's end may be named in a mask; reading one may not.
    int partial[48];
    for (Order o : orders)
    {
        reset(o);
        CHECK(launchKernel(partialWarps, dim3(1), dim3(48), 0, nullptr, partial) == cudaSuccess);
        CHECK(partial[0] == 1 && partial[7] == 6 && partial[16] == 17 && partial[33] == 32 && partial[39] == 38);
    }
    for (bool exited : {false, true})
    {
        reset(Order::kForward);
        CHECK(launchKernel(shuffleFromOutside, dim3(1), dim3(32), 0, nullptr, exited, lanes) == cudaErrorLaunchFailure);
        CHECK(errorNames("source lane 20 does not take part"));
    }
    reset(Order::kForward);
    CHECK(launchKernel(mismatchedMasks, dim3(1), dim3(32), 0, nullptr, lanes) == cudaErrorLaunchFailure);
    CHECK(errorNames("different warp operations or masks"));

    // Shuffle widths: xor 16 in groups of 16 reads the earlier group only; width 24 is undefined.
    reset(Order::kForward);
    CHECK(launchKernel(xorWithWidth, dim3(1), dim3(32), 0, nullptr, 16, 16, lanes) == cudaSuccess);
    CHECK(lanes[4] == 4 && lanes[20] == 4 && lanes[31] == 15);
    CHECK(launchKernel(xorWithWidth, dim3(1), dim3(32), 0, nullptr, 8, 1, lanes) == cudaSuccess);
    CHECK(lanes[0] == 1 && lanes[7] == 6 && lanes[9] == 8);
    CHECK(launchKernel(xorWithWidth, dim3(1), dim3(32), 0, nullptr, 24, 1, lanes) == cudaErrorLaunchFailure);
    CHECK(errorNames("width must be a power of 2"));

    // cub: the block must have the template's dimensions; num_valid past the block means all.
    int reduced = 0;
    reset(Order::kForward);
    CHECK(launchKernel(reduceInBlock, dim3(1), dim3(kThreads), 0, nullptr, 10, &reduced) == cudaSuccess && reduced == 10);
    CHECK(launchKernel(reduceInBlock, dim3(1), dim3(kThreads), 0, nullptr, 1000, &reduced) == cudaSuccess
        && reduced == kThreads);
    CHECK(launchKernel(reduceInBlock, dim3(1), dim3(32, 2), 0, nullptr, kThreads, &reduced) == cudaErrorLaunchFailure);
    CHECK(errorNames("dimensions differ"));

    // WMMA layouts: A row/col-major, B row/col-major, D stored row/col-major.
    alignas(32) __half aRow[256], aCol[256], bRow[256], bCol[256];
    float want[256];
    for (int i = 0; i < 16; ++i)
    {
        for (int k = 0; k < 16; ++k)
        {
            aRow[i * 16 + k] = aCol[k * 16 + i] = toHalf((i + 2 * k) % 5);
            bRow[i * 16 + k] = bCol[k * 16 + i] = toHalf((3 * i + k) % 4); // B[i][k], i = row
        }
    }
    for (int i = 0; i < 16; ++i)
    {
        for (int j = 0; j < 16; ++j)
        {
            float s = 0.0f;
            for (int k = 0; k < 16; ++k)
            {
                s += static_cast<float>(((i + 2 * k) % 5) * ((3 * k + j) % 4));
            }
            want[i * 16 + j] = s;
        }
    }
    using nvcuda::wmma::col_major;
    using nvcuda::wmma::row_major;
    alignas(32) float d[4][256];
    reset(Order::kReverse);
    CHECK(launchKernel(wmmaProduct<row_major, row_major>, dim3(1), dim3(32), 0, nullptr, aRow, bRow,
              nvcuda::wmma::mem_row_major, d[0]) == cudaSuccess);
    CHECK(launchKernel(wmmaProduct<col_major, col_major>, dim3(1), dim3(32), 0, nullptr, aCol, bCol,
              nvcuda::wmma::mem_row_major, d[1]) == cudaSuccess);
    CHECK(launchKernel(wmmaProduct<row_major, col_major>, dim3(1), dim3(32), 0, nullptr, aRow, bCol,
              nvcuda::wmma::mem_col_major, d[2]) == cudaSuccess);
    CHECK(launchKernel(wmmaProduct<col_major, row_major>, dim3(1), dim3(32), 0, nullptr, aCol, bRow,
              nvcuda::wmma::mem_col_major, d[3]) == cudaSuccess);
    bool layoutsOk = true;
    for (int i = 0; i < 16; ++i)
    {
        for (int j = 0; j < 16; ++j)
        {
            layoutsOk &= d[0][i * 16 + j] == want[i * 16 + j] && d[1][i * 16 + j] == want[i * 16 + j]
                && d[2][j * 16 + i] == want[i * 16 + j] && d[3][j * 16 + i] == want[i * 16 + j];
        }
    }
    CHECK(layoutsOk);
    CHECK(launchKernel(wmmaProduct<row_major, row_major>, dim3(1), dim3(48), 0, nullptr, aRow, bRow,
              nvcuda::wmma::mem_row_major, d[0]) == cudaErrorLaunchFailure); // a partial warp
    CHECK(errorNames("WMMA needs all 32"));
    reset(Order::kForward);
    CHECK(launchKernel(wmmaLaneDependentPointer, dim3(1), dim3(32), 0, nullptr, sink) == cudaErrorLaunchFailure);
    CHECK(errorNames("different pointers"));

    // The memory API: cudaMalloc'd memory starts as poison, copies round-trip, and a write past
    // an allocation is reported at the next synchronisation (sticky, as a GPU memory fault).
    reset(Order::kForward);
    int* dev = nullptr;
    int host[32];
    CHECK(cudaMalloc(&dev, 32 * sizeof(int)) == cudaSuccess && dev != nullptr);
    CHECK(reinterpret_cast<uintptr_t>(dev) % 256 == 0);
    CHECK(cudaMemcpy(host, dev, sizeof host, cudaMemcpyDeviceToHost) == cudaSuccess && host[5] == -1);
    CHECK(launchKernel(storeShifted, dim3(1), dim3(32), 0, nullptr, dev, 0) == cudaSuccess);
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    CHECK(cudaMemcpy(host, dev, sizeof host, cudaMemcpyDeviceToHost) == cudaSuccess && host[31] == 32);
    CHECK(launchKernel(storeShifted, dim3(1), dim3(32), 0, nullptr, dev, 1) == cudaSuccess);
    CHECK(cudaMemcpy(host, dev, sizeof host, cudaMemcpyDeviceToHost) == cudaErrorLaunchFailure);
    CHECK(errorNames("cudaMalloc #1 (128 bytes): out-of-bounds write at byte offset 128"));
    CHECK(cudaDeviceSynchronize() == cudaErrorLaunchFailure && cudaFree(dev) == cudaErrorLaunchFailure);
    reset(Order::kForward); // the fault is reported once; the error is what stays
    CHECK(cudaDeviceSynchronize() == cudaSuccess && cudaFree(dev) == cudaSuccess);
    CHECK(cudaFree(dev) == cudaErrorInvalidValue && cudaFree(nullptr) == cudaSuccess);
    // A read past the end reaches the guard page: a kernel fault naming the buffer, and the
    // process goes on (the other fibers of the block are unwound as after any fault).
    reset(Order::kForward);
    int* small = nullptr;
    int loaded[32];
    CHECK(cudaMalloc(&small, 4096) == cudaSuccess);
    CHECK(launchKernel(loadShifted, dim3(1), dim3(32), 0, nullptr, small, 0, loaded) == cudaSuccess);
    CHECK(loaded[0] == -1);
    CHECK(launchKernel(loadShifted, dim3(2), dim3(32), 0, nullptr, small, 1024 + 16, loaded)
        == cudaErrorLaunchFailure);
    CHECK(errorNames(kRead + std::string("past the end of cudaMalloc #2 (4096 bytes) [block (0,0,0) thread (0,0,0)]")));
    // 1.5 pages past the end (inside a neighbouring mapping, were the guards one page), and a
    // write: still this buffer's, and a write says so (where the fault's error code tells).
    int* other = nullptr;
    CHECK(cudaMalloc(&other, 4096) == cudaSuccess);
    reset(Order::kForward);
    CHECK(launchKernel(loadShifted, dim3(1), dim3(32), 0, nullptr, small, 1024 + 1536, loaded)
        == cudaErrorLaunchFailure);
    CHECK(errorNames(kRead + std::string("past the end of cudaMalloc #2")));
    reset(Order::kForward);
    CHECK(launchKernel(storeShifted, dim3(1), dim3(32), 0, nullptr, small, 1024 + 8) == cudaErrorLaunchFailure);
    CHECK(errorNames(kWrite + std::string("past the end of cudaMalloc #2")));
    reset(Order::kForward);
    CHECK(launchKernel(loadShifted, dim3(1), dim3(32), 0, nullptr, small, 0, loaded) == cudaSuccess);
    // cudaMemcpy checks the device side's range and its kind's direction.
    CHECK(cudaMemcpy(loaded, small + 1020, 8 * sizeof(int), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(small + 1016, loaded, 8 * sizeof(int), cudaMemcpyHostToDevice) == cudaSuccess);
    CHECK(cudaMemcpy(small, loaded, 8 * sizeof(int), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(loaded, small + 1000, static_cast<size_t>(-8), cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);
    CHECK(cudaMemcpy(loaded, nullptr, 0, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(cudaFree(small) == cudaSuccess && cudaFree(other) == cudaSuccess);
    return checkSummary("CUDA SIM SELF-TEST OK");
}
