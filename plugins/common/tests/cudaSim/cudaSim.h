// A CPU simulation of the small part of CUDA our kernels use, so that the kernels' own code
// (indexing, barriers, warp shuffles, shared-memory reuse, the launchers' plans and workspace
// carving) runs and is tested on machines without a GPU.  Compile a .cu file as C++ with this
// folder first on the include path and -DTRTNEG_CUDA_SIM (see tests/_cuda_sim.py).
//
// Model: the blocks of a launch run one after another, each on a fresh OS thread (so
// `__shared__`, which becomes `static thread_local`, is fresh per block); the block's threads
// are fibers (ucontext) run one at a time up to their next barrier.  What the simulation checks
// beyond the results:
//   * __syncthreads() reached by some threads while others wait at a warp-level op, or warp
//     ops (shuffles, __syncwarp, WMMA) with a lane of their mask absent: reported as errors;
//   * races between barriers: the fibers (and the blocks) run in the order `Order` picks --
//     forward, reverse or shuffled -- and the tests compare the orders' results;
//   * cub's BlockReduce returns its aggregate to thread 0 only (other threads get a poison
//     value), and a reuse of its storage without a barrier shows up as a wrong result;
//   * WMMA pointers must be 32-byte aligned with a legal leading dimension;
//   * launch configuration limits (block size, grid dimensions, dynamic shared memory);
//   * dynamic shared memory above the default 48 KB without the kernel's opt-in
//     (cudaFuncSetAttribute), and writes past the launch's dynamic shared memory.
// Reductions run sequentially in thread order, so sums equal a sequential loop's bits.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <math.h>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <ucontext.h>
#include <utility>
#include <vector>

// ---- qualifiers -------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__ __restrict
#define __constant__ static

// ---- runtime types ----------------------------------------------------------------------
enum cudaError_t
{
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorLaunchFailure = 719,
};
using cudaError = cudaError_t;
struct CUstream_st;
using cudaStream_t = CUstream_st*;
enum cudaDeviceAttr
{
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute
{
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
};

struct dim3
{
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1)
        : x(x_)
        , y(y_)
        , z(z_)
    {
    }
};

namespace cudasim
{

// The device the simulation stands for (tests may change it).
struct Device
{
    int major = 9, minor = 0;
    int smCount = 132;
    int maxSharedPerBlock = 48 * 1024;
    int maxSharedOptin = 227 * 1024;
    // What cudaFuncGetAttributes reports as a kernel's maxThreadsPerBlock: on a GPU the
    // kernel's registers bound it; the simulation has none, so tests lower it to take a
    // launcher's fallback for kernels that would not fit.
    int funcMaxThreadsPerBlock = 1024;
};

// Fiber and block order: the orders differ wherever code depends on an unsynchronised order.
enum class Order : int
{
    kForward = 0,
    kReverse = 1,
    kShuffled = 2,
};

struct Config
{
    Device device;
    Order order = Order::kForward;
    uint32_t shuffleSeed = 0;
    size_t stackBytes = 256 * 1024;
};

inline Config& config()
{
    static Config c;
    return c;
}

// The first error of the last launch (reported like a sticky CUDA error, with a message).
struct ErrorState
{
    cudaError_t code = cudaSuccess;
    std::string message;
};

inline ErrorState& lastError()
{
    static ErrorState e;
    return e;
}

inline void recordError(cudaError_t code, std::string const& message)
{
    if (lastError().code == cudaSuccess)
    {
        lastError() = {code, message};
    }
}

// The configuration of the last launch that passed its checks (tests read the launchers'
// plans from it; they reset it before a call).
struct LaunchRecord
{
    int launches = 0; // since the last reset
    dim3 grid, block;
    size_t sharedBytes = 0;
};

inline LaunchRecord& lastLaunch()
{
    static LaunchRecord r;
    return r;
}

// Per kernel: the dynamic shared memory cudaFuncSetAttribute opted it in to. As on a GPU,
// a launch above the default 48 KB (Device::maxSharedPerBlock) needs it.
inline std::map<uintptr_t, int>& sharedOptins()
{
    static std::map<uintptr_t, int> m;
    return m;
}

template <typename F>
uintptr_t kernelKey(F* kernel)
{
    return reinterpret_cast<uintptr_t>(kernel);
}

// Bytes after a launch's dynamic shared memory, poisoned and checked after each block.
constexpr size_t kSharedGuardBytes = 256;
constexpr unsigned char kSharedPoison = 0xA5;

struct Fiber
{
    enum State
    {
        kReady,
        kAtBlockBarrier,
        kAtWarpBarrier,
        kDone,
    };
    ucontext_t ctx{};
    dim3 tid;
    int linear = 0;
    State state = kReady;
    unsigned warpMask = 0; // lanes a warp barrier waits for
    char* stack = nullptr;
};

// Aborts the block: thrown inside a fiber, caught at its entry, so the block stops cleanly.
struct KernelFault
{
};

struct Block
{
    dim3 index, dims, grid; // blockIdx, blockDim, gridDim
    std::vector<Fiber> fibers;
    ucontext_t scheduler{};
    Fiber* current = nullptr;
    std::function<void()> body;
    std::vector<uint64_t> warpSlots; // one 8-byte slot per thread, for shuffles
    std::vector<unsigned char> dynamicSmem;
    bool failed = false;
};

inline Block*& currentBlock()
{
    static thread_local Block* b = nullptr;
    return b;
}

inline Fiber& self()
{
    return *currentBlock()->current;
}

// Reports a kernel error and ends the block (the other launches of the stream still run,
// as on a GPU only the sticky error would say).
[[noreturn]] inline void fault(std::string const& message)
{
    Block& b = *currentBlock();
    char where[128];
    std::snprintf(where, sizeof where, " [block (%u,%u,%u) thread (%u,%u,%u)]", b.index.x, b.index.y,
        b.index.z, self().tid.x, self().tid.y, self().tid.z);
    recordError(cudaErrorLaunchFailure, message + where);
    b.failed = true;
    throw KernelFault{};
}

inline void yieldTo(Fiber::State state, unsigned mask = 0)
{
    Block& b = *currentBlock();
    Fiber& f = *b.current;
    f.state = state;
    f.warpMask = mask;
    swapcontext(&f.ctx, &b.scheduler);
    if (b.failed)
    {
        throw KernelFault{};
    }
}

inline void syncthreads()
{
    yieldTo(Fiber::kAtBlockBarrier);
}

// Waits until every lane of `mask` in this thread's warp has reached a warp barrier.
inline void syncwarp(unsigned mask)
{
    Block& b = *currentBlock();
    int const lane = self().linear & 31;
    int const warpBase = self().linear & ~31;
    int const lanes = static_cast<int>(b.fibers.size()) - warpBase;
    unsigned const present = lanes >= 32 ? 0xFFFFFFFFu : ((1u << lanes) - 1u);
    if (!(mask >> lane & 1u))
    {
        fault("warp op: the calling lane is not in its own mask");
    }
    if (mask & ~present)
    {
        fault("warp op: mask names lanes beyond the block");
    }
    yieldTo(Fiber::kAtWarpBarrier, mask);
}

inline void fiberEntry()
{
    Block& b = *currentBlock();
    try
    {
        b.body();
    }
    catch (KernelFault const&)
    {
    }
    b.current->state = Fiber::kDone;
    // uc_link returns to the scheduler.
}

// Stacks are reused across blocks (blocks run one at a time).
inline std::vector<std::vector<char>>& stackPool()
{
    static std::vector<std::vector<char>> pool;
    return pool;
}

inline std::vector<int> orderOf(int n, uint32_t salt)
{
    std::vector<int> idx(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i)
    {
        idx[i] = config().order == Order::kReverse ? n - 1 - i : i;
    }
    if (config().order == Order::kShuffled)
    {
        std::mt19937 rng(config().shuffleSeed * 2654435761u + salt);
        std::shuffle(idx.begin(), idx.end(), rng);
    }
    return idx;
}

// Runs one block to completion on the calling OS thread.
inline void runBlock(Block& b, uint32_t salt)
{
    int const n = static_cast<int>(b.dims.x * b.dims.y * b.dims.z);
    auto& pool = stackPool();
    while (static_cast<int>(pool.size()) < n)
    {
        pool.emplace_back(config().stackBytes);
    }
    b.fibers.assign(static_cast<size_t>(n), Fiber{});
    b.warpSlots.assign(static_cast<size_t>(n), 0);
    for (int i = 0; i < n; ++i)
    {
        Fiber& f = b.fibers[i];
        f.linear = i;
        f.tid = dim3(i % b.dims.x, (i / b.dims.x) % b.dims.y, i / (b.dims.x * b.dims.y));
        f.stack = pool[i].data();
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = pool[i].size();
        f.ctx.uc_link = &b.scheduler;
        makecontext(&f.ctx, fiberEntry, 0);
    }
    currentBlock() = &b;
    uint32_t phase = 0;
    for (;;)
    {
        for (int i : orderOf(n, salt * 7919u + phase++))
        {
            Fiber& f = b.fibers[i];
            if (f.state == Fiber::kReady)
            {
                b.current = &f;
                swapcontext(&b.scheduler, &f.ctx);
            }
        }
        if (b.failed)
        {
            // Unwind every waiting fiber so its stack frames end (they rethrow KernelFault).
            for (Fiber& f : b.fibers)
            {
                if (f.state != Fiber::kDone)
                {
                    b.current = &f;
                    swapcontext(&b.scheduler, &f.ctx);
                }
            }
            break;
        }
        bool released = false;
        // Warp barriers: released when every lane of the mask waits at one.
        for (Fiber& f : b.fibers)
        {
            if (f.state != Fiber::kAtWarpBarrier)
            {
                continue;
            }
            int const base = f.linear & ~31;
            bool all = true;
            for (int l = 0; l < 32 && all; ++l)
            {
                if (f.warpMask >> l & 1u)
                {
                    all = b.fibers[base + l].state == Fiber::kAtWarpBarrier;
                }
            }
            if (all)
            {
                for (int l = 0; l < 32; ++l)
                {
                    if (f.warpMask >> l & 1u)
                    {
                        b.fibers[base + l].state = Fiber::kReady;
                    }
                }
                released = true;
            }
        }
        if (released)
        {
            continue;
        }
        int waiting = 0, done = 0, atWarp = 0;
        for (Fiber const& f : b.fibers)
        {
            waiting += f.state == Fiber::kAtBlockBarrier;
            done += f.state == Fiber::kDone;
            atWarp += f.state == Fiber::kAtWarpBarrier;
        }
        if (done == n)
        {
            break;
        }
        if (atWarp == 0 && waiting + done == n)
        {
            for (Fiber& f : b.fibers)
            {
                if (f.state == Fiber::kAtBlockBarrier)
                {
                    f.state = Fiber::kReady;
                }
            }
            continue;
        }
        // Nothing can move: a divergent barrier or a warp op missing lanes.
        for (Fiber& f : b.fibers)
        {
            if (f.state == Fiber::kAtWarpBarrier)
            {
                b.current = &f;
                break;
            }
        }
        char msg[160];
        std::snprintf(msg, sizeof msg,
            "deadlock: %d thread(s) at __syncthreads, %d at a warp op whose lanes never all arrive, %d exited", waiting,
            atWarp, done);
        recordError(cudaErrorLaunchFailure, std::string(msg) + " [block (" + std::to_string(b.index.x) + ","
                + std::to_string(b.index.y) + ")]");
        b.failed = true;
        for (Fiber& f : b.fibers)
        {
            if (f.state != Fiber::kDone)
            {
                b.current = &f;
                swapcontext(&b.scheduler, &f.ctx);
            }
        }
        break;
    }
    currentBlock() = nullptr;
}

// A kernel launch: checks the configuration, then runs every block (in `Order`).
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t, Args&&... args)
{
    if (lastError().code != cudaSuccess)
    {
        return lastError().code; // sticky, as a failed kernel's error is
    }
    unsigned long long const threads = 1ull * block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0
        || grid.x > 0x7FFFFFFFu || grid.y > 65535 || grid.z > 65535)
    {
        char msg[160];
        std::snprintf(msg, sizeof msg, "invalid launch configuration: grid (%u,%u,%u) block (%u,%u,%u)", grid.x, grid.y,
            grid.z, block.x, block.y, block.z);
        recordError(cudaErrorInvalidConfiguration, msg);
        return cudaErrorInvalidConfiguration;
    }
    if (smem > static_cast<size_t>(config().device.maxSharedOptin))
    {
        recordError(cudaErrorInvalidValue, "dynamic shared memory beyond the device's opt-in limit");
        return cudaErrorInvalidValue;
    }
    if (smem > static_cast<size_t>(config().device.maxSharedPerBlock))
    {
        auto const optin = sharedOptins().find(kernelKey(kernel));
        if (optin == sharedOptins().end() || smem > static_cast<size_t>(optin->second))
        {
            recordError(cudaErrorInvalidValue,
                "dynamic shared memory above the default limit without cudaFuncSetAttribute"
                "(cudaFuncAttributeMaxDynamicSharedMemorySize) for this kernel");
            return cudaErrorInvalidValue;
        }
    }
    ++lastLaunch().launches;
    lastLaunch().grid = grid;
    lastLaunch().block = block;
    lastLaunch().sharedBytes = smem;
    std::tuple<std::decay_t<Params>...> const bound(std::forward<Args>(args)...);
    unsigned long long const blocks = 1ull * grid.x * grid.y * grid.z;
    std::vector<int> const order = orderOf(static_cast<int>(blocks), 0x9E3779B9u);
    for (int linear : order)
    {
        Block b;
        b.grid = grid;
        b.dims = block;
        b.index = dim3(linear % grid.x, (linear / grid.x) % grid.y, linear / (grid.x * grid.y));
        // poison: uninitialised reads give garbage, not zeros; the guard after it catches overruns
        b.dynamicSmem.assign(smem + kSharedGuardBytes, kSharedPoison);
        b.body = [&bound, kernel]() { std::apply(kernel, bound); };
        // A fresh OS thread per block: `__shared__` (static thread_local) starts fresh.
        std::thread t([&b, linear]() { runBlock(b, static_cast<uint32_t>(linear)); });
        t.join();
        if (b.failed)
        {
            return cudaErrorLaunchFailure;
        }
        for (size_t i = smem; i < b.dynamicSmem.size(); ++i)
        {
            if (b.dynamicSmem[i] != kSharedPoison)
            {
                char msg[160];
                std::snprintf(msg, sizeof msg,
                    "write past the dynamic shared memory (%zu bytes) at byte %zu [block (%u,%u,%u)]", smem, i,
                    b.index.x, b.index.y, b.index.z);
                recordError(cudaErrorLaunchFailure, msg);
                return cudaErrorLaunchFailure;
            }
        }
    }
    return cudaSuccess;
}

template <typename T>
T* dynamicSmem()
{
    return reinterpret_cast<T*>(currentBlock()->dynamicSmem.data());
}

} // namespace cudasim

// ---- vector types -----------------------------------------------------------------------
// A copy from or to a vector type is a vector load or store on the GPU, which faults on an
// address that is not a multiple of the vector's size ("misaligned address"); so here.
namespace cudasim
{
inline void checkAligned(void const* p, size_t align, char const* what)
{
    if (reinterpret_cast<uintptr_t>(p) % align != 0)
    {
        std::string const msg = std::string("misaligned address: ") + what;
        if (!currentBlock())
        {
            throw std::runtime_error(msg);
        }
        fault(msg);
    }
}
} // namespace cudasim

#define TRTNEG_SIM_VECTOR(Name, T, A, ...)                                                                             \
    struct alignas(A) Name                                                                                             \
    {                                                                                                                  \
        T __VA_ARGS__;                                                                                                 \
        Name() = default;                                                                                              \
        Name(Name const& o)                                                                                            \
        {                                                                                                              \
            cudasim::checkAligned(&o, A, #Name " load");                                                               \
            std::memcpy(static_cast<void*>(this), &o, sizeof(Name));                                                   \
        }                                                                                                              \
        Name& operator=(Name const& o)                                                                                 \
        {                                                                                                              \
            cudasim::checkAligned(&o, A, #Name " load");                                                               \
            cudasim::checkAligned(this, A, #Name " store");                                                            \
            std::memcpy(static_cast<void*>(this), &o, sizeof(Name));                                                   \
            return *this;                                                                                              \
        }                                                                                                              \
    };

TRTNEG_SIM_VECTOR(float2, float, 8, x, y)
TRTNEG_SIM_VECTOR(float4, float, 16, x, y, z, w)
TRTNEG_SIM_VECTOR(uint2, unsigned, 8, x, y)
TRTNEG_SIM_VECTOR(uint4, unsigned, 16, x, y, z, w)
#undef TRTNEG_SIM_VECTOR

inline float2 make_float2(float x, float y)
{
    float2 v;
    v.x = x;
    v.y = y;
    return v;
}
inline float4 make_float4(float x, float y, float z, float w)
{
    float4 v;
    v.x = x;
    v.y = y;
    v.z = z;
    v.w = w;
    return v;
}
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w)
{
    uint4 v;
    v.x = x;
    v.y = y;
    v.z = z;
    v.w = w;
    return v;
}

// ---- built-in variables -----------------------------------------------------------------
#define threadIdx (::cudasim::self().tid)
#define blockIdx (::cudasim::currentBlock()->index)
#define blockDim (::cudasim::currentBlock()->dims)
#define gridDim (::cudasim::currentBlock()->grid)
constexpr int warpSize = 32;

// ---- device functions -------------------------------------------------------------------
inline void __syncthreads()
{
    cudasim::syncthreads();
}

inline void __syncwarp(unsigned mask = 0xFFFFFFFFu)
{
    cudasim::syncwarp(mask);
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int laneMask, int width = 32)
{
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles move at most 8 bytes here");
    cudasim::Block& b = *cudasim::currentBlock();
    int const me = cudasim::self().linear;
    int const lane = me & 31;
    int const src = (me & ~31) + ((lane ^ laneMask) & (width - 1)) + (lane & ~(width - 1));
    std::memcpy(&b.warpSlots[me], &value, sizeof(T));
    cudasim::syncwarp(mask);
    if (!(mask >> (src & 31) & 1u))
    {
        cudasim::fault("__shfl_xor_sync: source lane not in the mask");
    }
    T out;
    std::memcpy(&out, &b.warpSlots[src], sizeof(T));
    cudasim::syncwarp(mask); // every lane has read before a later shuffle overwrites the slots
    return out;
}

template <typename T>
T __shfl_sync(unsigned mask, T value, int srcLane, int width = 32)
{
    cudasim::Block& b = *cudasim::currentBlock();
    int const me = cudasim::self().linear;
    int const lane = me & 31;
    int const src = (me & ~31) + (lane & ~(width - 1)) + (srcLane & (width - 1));
    std::memcpy(&b.warpSlots[me], &value, sizeof(T));
    cudasim::syncwarp(mask);
    T out;
    std::memcpy(&out, &b.warpSlots[src], sizeof(T));
    cudasim::syncwarp(mask);
    return out;
}

// Fibers never run at the same time, so a plain read-modify-write is atomic.
template <typename T>
T atomicAdd(T* address, T value)
{
    T const old = *address;
    *address = old + value;
    return old;
}

template <typename T>
T atomicMax(T* address, T value)
{
    T const old = *address;
    *address = old > value ? old : value;
    return old;
}

[[noreturn]] inline void __trap()
{
    cudasim::fault("__trap()");
}

inline float __uint_as_float(unsigned u)
{
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

inline unsigned __float_as_uint(float f)
{
    unsigned u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}

inline float __expf(float x)
{
    return std::exp(x);
}

inline float __logf(float x)
{
    return std::log(x);
}

inline float __fdividef(float a, float b)
{
    return a / b;
}

template <typename T>
T __ldg(T const* p)
{
    return *p;
}

inline int min(int a, int b)
{
    return a < b ? a : b;
}
inline int max(int a, int b)
{
    return a > b ? a : b;
}
inline long long min(long long a, long long b)
{
    return a < b ? a : b;
}
inline long long max(long long a, long long b)
{
    return a > b ? a : b;
}
inline unsigned min(unsigned a, unsigned b)
{
    return a < b ? a : b;
}
inline unsigned max(unsigned a, unsigned b)
{
    return a > b ? a : b;
}
inline float min(float a, float b)
{
    return fminf(a, b);
}
inline float max(float a, float b)
{
    return fmaxf(a, b);
}
using std::isfinite;
using std::isinf;
using std::isnan;

// ---- runtime API ------------------------------------------------------------------------
inline cudaError_t cudaGetLastError()
{
    cudasim::ErrorState const e = cudasim::lastError();
    // A launch failure stays (sticky); configuration errors are cleared by reading them.
    if (e.code != cudaErrorLaunchFailure)
    {
        cudasim::lastError() = {};
    }
    return e.code;
}

inline cudaError_t cudaPeekAtLastError()
{
    return cudasim::lastError().code;
}

inline char const* cudaGetErrorString(cudaError_t e)
{
    switch (e)
    {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    default: return "unspecified launch failure";
    }
}

inline cudaError_t cudaGetDevice(int* device)
{
    *device = 0;
    return cudaSuccess;
}

inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device)
{
    if (device != 0)
    {
        return cudaErrorInvalidValue;
    }
    cudasim::Device const& d = cudasim::config().device;
    switch (attr)
    {
    case cudaDevAttrComputeCapabilityMajor: *value = d.major; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *value = d.minor; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = d.smCount; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = d.maxSharedPerBlock; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = d.maxSharedOptin; return cudaSuccess;
    }
    return cudaErrorInvalidValue;
}

template <typename F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attr, int value)
{
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0
        || value > cudasim::config().device.maxSharedOptin)
    {
        return cudaErrorInvalidValue;
    }
    cudasim::sharedOptins()[cudasim::kernelKey(kernel)] = value;
    return cudaSuccess;
}

// The fields our launchers read; the rest stay zero (the simulation has no registers).
struct cudaFuncAttributes
{
    size_t sharedSizeBytes;
    size_t constSizeBytes;
    size_t localSizeBytes;
    int maxThreadsPerBlock;
    int numRegs;
    int maxDynamicSharedSizeBytes;
};

template <typename F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F* kernel)
{
    *attr = {};
    attr->maxThreadsPerBlock = cudasim::config().device.funcMaxThreadsPerBlock;
    auto const optin = cudasim::sharedOptins().find(cudasim::kernelKey(kernel));
    attr->maxDynamicSharedSizeBytes = optin == cudasim::sharedOptins().end()
        ? cudasim::config().device.maxSharedPerBlock
        : optin->second;
    return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr)
{
    std::memset(p, value, bytes);
    return cudaSuccess;
}

inline cudaError_t cudaMemcpyAsync(void* dst, void const* src, size_t bytes, int /*kind*/, cudaStream_t = nullptr)
{
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}
