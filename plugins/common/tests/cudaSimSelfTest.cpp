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

    // __shared__ starts fresh in every block (zero here), whatever the block order.
    int firstSeen[4] = {-1, -1, -1, -1};
    reset(Order::kShuffled);
    CHECK(launchKernel(sharedIsPerBlock, dim3(4), dim3(32), 0, nullptr, firstSeen) == cudaSuccess);
    CHECK(firstSeen[0] == 0 && firstSeen[1] == 0 && firstSeen[2] == 0 && firstSeen[3] == 0);

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

    // Launch limits.
    reset(Order::kForward);
    CHECK(launchKernel(warpSum, dim3(1), dim3(2048), 0, nullptr, lanes) == cudaErrorInvalidConfiguration);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
    CHECK(cudaGetLastError() == cudaSuccess); // not sticky, as on a GPU
    CHECK(launchKernel(warpSum, dim3(1, 70000), dim3(32), 0, nullptr, lanes) == cudaErrorInvalidConfiguration);
    return checkSummary("CUDA SIM SELF-TEST OK");
}
