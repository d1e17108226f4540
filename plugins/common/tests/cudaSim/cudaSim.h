// A CPU simulation of the small part of CUDA our kernels use, so that the kernels' own code
// (indexing, barriers, warp shuffles, shared-memory reuse, the launchers' plans and workspace
// carving) runs and is tested on machines without a GPU.  Compile a .cu file as C++ with this
// folder first on the include path and -DTRTNEG_CUDA_SIM (see tests/_cuda_sim.py).
//
// Model: the blocks of a launch run one after another, each on a fresh OS thread (so
// `__shared__`, which becomes `static thread_local`, is fresh per block, and poisoned like
// dynamic shared memory: garbage, not zeros, as on a GPU); the block's threads
// are fibers (a stack each) run one at a time up to their next barrier.  A warp op completes when
// every non-exited lane of its mask is at the same op with the same mask; its lanes then run
// on at once, so one warp runs ahead of the others up to its next __syncthreads().  What the
// simulation checks beyond the results:
//   * __syncthreads() reached by some threads while others wait at a warp-level op, lanes of
//     one mask at different warp ops or masks, a shuffle reading a lane that takes no part
//     (not in the mask, exited, past the block), WMMA without all 32 lanes: reported as errors;
//   * races between barriers: the fibers (and the blocks) run in the order `Order` picks --
//     forward, reverse or shuffled -- and the tests compare the orders' results (a warp op is
//     no block-wide barrier, so a __syncthreads missing between warps shows up too);
//   * cub's BlockReduce returns its aggregate to thread 0 only (other threads get a poison
//     value), and a reuse of its storage without a barrier shows up as a wrong result;
//   * WMMA pointers must be 32-byte aligned with a legal leading dimension, the same in every lane;
//   * cub's collectives need the block dimensions of their template arguments;
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
#include <link.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>
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
    cudaErrorMemoryAllocation = 2,
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
enum cudaMemcpyKind
{
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
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
    // The virtual architecture the kernels' code was compiled for, as cudaFuncGetAttributes
    // reports it in ptxVersion (major * 10 + minor); 0: the device's own, as a build for this
    // GPU gives. Lower models a build for an older architecture list run through PTX JIT.
    int codeArch = 0;
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

// The runtime's error state. `code` is what cudaGetLastError would return: a kernel fault
// (cudaErrorLaunchFailure) is sticky, as a GPU's is; any other error is cleared by reading it,
// and launchKernel's own cudaGetLastError reads a launch's configuration error at once, as on
// a GPU. `message` says what the simulation saw for the latest error recorded (the first
// fault, once one happened); reading the code leaves it, so harnesses can still report it.
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
    if (lastError().code != cudaErrorLaunchFailure)
    {
        lastError() = {code, message};
    }
}

// cudaGetLastError: the pending error, cleared unless it is sticky (the message stays).
inline cudaError_t takeError()
{
    cudaError_t const code = lastError().code;
    if (code != cudaErrorLaunchFailure)
    {
        lastError().code = cudaSuccess;
    }
    return code;
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

// A fresh simulated device for the next launches (harnesses and simControl.h call this first):
// the fibers' and blocks' order, the GPU's compute capability and opt-in shared memory; the
// sticky error, the launch record and the kernels' shared-memory opt-ins cleared.
inline void configure(Order order, uint32_t shuffleSeed, int smMajor, int smMinor = 0,
    int maxSharedOptin = Device{}.maxSharedOptin)
{
    Config& c = config();
    c = {};
    c.order = order;
    c.shuffleSeed = shuffleSeed;
    c.device.major = smMajor;
    c.device.minor = smMinor;
    c.device.maxSharedOptin = maxSharedOptin;
    lastError() = {};
    lastLaunch() = {};
    sharedOptins().clear();
}

template <typename F>
uintptr_t kernelKey(F* kernel)
{
    return reinterpret_cast<uintptr_t>(kernel);
}

// Shared memory starts as these bytes (garbage, as on a GPU): NaN as fp32, -1 as a signed
// integer, the largest unsigned value.
constexpr unsigned char kSharedPoison = 0xFF;
// Bytes after a launch's dynamic shared memory, set to kSharedGuard and checked after each block.
constexpr size_t kSharedGuardBytes = 256;
constexpr unsigned char kSharedGuard = 0xA5;

// The warp-level operations. The lanes of one operation must all be at the same kind with
// the same mask ("all non-exited threads named in mask must execute the same intrinsic with
// the same mask"); a shuffle waits twice (values written, then read).
enum class WarpOp : int
{
    kSyncwarp,
    kShflXor,
    kShflIdx,
    kShflRead,
    kWmma, // every lane of the warp, none exited (the fragments are spread over all 32)
};

// ---- fibers' context switch ------------------------------------------------------------
// On x86-64 a fiber's context is its stack pointer: the switch pushes the callee-saved
// registers on the old stack and pops them from the new one. glibc's swapcontext also saves
// the signal mask with a system call on every switch (about 460 ns a round trip here, against
// 17 ns), which made the switches most of the simulation's time. The fibers never change the
// x87/SSE control words, so those are not switched. ucontext serves other architectures and
// -DTRTNEG_CUDA_SIM_UCONTEXT (the self-test runs both).
#if defined(__x86_64__) && !defined(TRTNEG_CUDA_SIM_UCONTEXT)
#define TRTNEG_CUDA_SIM_STACK_SWITCH 1
namespace
{
// switchStacks(save, load): saves the caller's context in *save and resumes `load`'s.
__attribute__((naked, noinline)) void switchStacks(void** /*save*/, void* /*load*/)
{
    asm volatile(
        "pushq %rbp\n\t"
        "pushq %rbx\n\t"
        "pushq %r12\n\t"
        "pushq %r13\n\t"
        "pushq %r14\n\t"
        "pushq %r15\n\t"
        "movq %rsp, (%rdi)\n\t"
        "movq %rsi, %rsp\n\t"
        "popq %r15\n\t"
        "popq %r14\n\t"
        "popq %r13\n\t"
        "popq %r12\n\t"
        "popq %rbx\n\t"
        "popq %rbp\n\t"
        "ret\n\t");
}
} // namespace

// The stack switch returns into another stack, which a shadow stack (x86 CET; off unless
// glibc's tunables turn it on) takes for an attack: such a process is refused with a message.
inline void requireNoShadowStack()
{
    static bool const active = [] {
        unsigned long features = 0;
        long const kArchShstkStatus = 0x5005; // arch_prctl(ARCH_SHSTK_STATUS), Linux 6.6+
        return syscall(SYS_arch_prctl, kArchShstkStatus, &features) == 0 && (features & 1u) != 0;
    }();
    if (active)
    {
        std::fprintf(stderr, "cudasim: this process runs with a shadow stack; build the simulation with "
                             "-DTRTNEG_CUDA_SIM_UCONTEXT\n");
        std::abort();
    }
}
#endif

inline constexpr bool useStackSwitch()
{
#if defined(TRTNEG_CUDA_SIM_STACK_SWITCH)
    return true;
#else
    return false;
#endif
}

struct FiberContext
{
    void* sp = nullptr;       // the stack switch's
    ucontext_t* uc = nullptr; // ucontext's (storage kept by the block, only when it is used)
};

// A context that starts `entry` (which must never return) on `stack`; `uc`: its ucontext
// storage, used when the stack switch is not.
inline void contextInit(FiberContext& c, ucontext_t* uc, char* stack, size_t bytes, void (*entry)())
{
#if defined(TRTNEG_CUDA_SIM_STACK_SWITCH)
    requireNoShadowStack();
    auto const top = (reinterpret_cast<uintptr_t>(stack) + bytes) & ~uintptr_t{15};
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                        // entry's return address: none (rsp % 16 == 8 on entry)
    *--sp = reinterpret_cast<void*>(entry); // where the first switch's `ret` goes
    for (int i = 0; i < 6; ++i)
    {
        *--sp = nullptr; // rbp, rbx, r12..r15
    }
    c.sp = sp;
    (void) uc;
#else
    c.uc = uc;
    getcontext(c.uc);
    c.uc->uc_stack.ss_sp = stack;
    c.uc->uc_stack.ss_size = bytes;
    c.uc->uc_link = nullptr;
    makecontext(c.uc, entry, 0);
#endif
}

inline void contextSwitch(FiberContext& save, FiberContext const& load)
{
#if defined(TRTNEG_CUDA_SIM_STACK_SWITCH)
    switchStacks(&save.sp, load.sp);
#else
    swapcontext(save.uc, load.uc);
#endif
}

struct Fiber
{
    enum State
    {
        kReady,
        kAtBlockBarrier,
        kAtWarpBarrier,
        kDone,
    };
    FiberContext ctx;
    dim3 tid;
    int linear = 0;
    State state = kReady;
    unsigned warpMask = 0;    // lanes a warp barrier waits for
    WarpOp warpOp = WarpOp::kSyncwarp;
    unsigned warpArrived = 0; // on release: the lanes that took part (the mask less exited lanes)
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
    FiberContext scheduler;
    std::vector<ucontext_t> ucontexts; // the fibers' and the scheduler's, without the stack switch
    Fiber* current = nullptr;
    std::function<void()> body;
    std::vector<uint64_t> warpSlots; // one 8-byte slot per thread, for shuffles
    std::vector<uint64_t> warpAux;   // and one more (WMMA's leading dimension and layout)
    std::vector<unsigned char> dynamicSmem;
    bool failed = false;
};

inline Block*& currentBlock()
{
    static thread_local Block* b = nullptr;
    return b;
}

namespace
{
// A thread-local of this module alone (internal linkage): function-local statics of inline
// functions, such as currentBlock()'s, are unique symbols that another module loaded in the
// same process (the other simulation harness) may provide.
thread_local char tlsAnchor;
} // namespace

// `__shared__` variables are `static thread_local`: zero-initialised thread-local storage
// (.tbss) of a fresh OS thread per block. A GPU's shared memory starts as garbage, so each
// block's thread poisons this module's .tbss first (kSharedPoison bytes), and reading a
// __shared__ variable before writing it gives garbage here too. Kernels' __shared__
// variables have no initialisers (nvcc refuses them); the module's other thread-locals must
// not be used on a block's thread before being set (currentBlock() is set after this).
inline void poisonStaticShared()
{
    struct Find
    {
        uintptr_t anchor; // an address inside this module's TLS block, in this thread
        unsigned char* bss = nullptr;
        size_t bytes = 0;
    } find{reinterpret_cast<uintptr_t>(&tlsAnchor), nullptr, 0}; // also allocates the block
    dl_iterate_phdr(
        [](dl_phdr_info* info, size_t, void* arg) -> int {
            auto& f = *static_cast<Find*>(arg);
            for (int i = 0; i < info->dlpi_phnum; ++i)
            {
                ElfW(Phdr) const& ph = info->dlpi_phdr[i];
                auto const data = reinterpret_cast<uintptr_t>(info->dlpi_tls_data);
                if (ph.p_type == PT_TLS && data != 0 && f.anchor >= data && f.anchor < data + ph.p_memsz)
                {
                    f.bss = static_cast<unsigned char*>(info->dlpi_tls_data) + ph.p_filesz;
                    f.bytes = ph.p_memsz - ph.p_filesz;
                    return 1;
                }
            }
            return 0;
        },
        &find);
    if (!find.bss)
    {
        throw std::runtime_error("cudasim: this module's thread-local storage was not found");
    }
    std::memset(find.bss, kSharedPoison, find.bytes);
    currentBlock() = nullptr;
}

inline Fiber& self()
{
    return *currentBlock()->current;
}

// Reports a kernel error and ends the block (the other launches of the stream still run,
// as on a GPU only the sticky error would say).
inline void recordFault(std::string const& message)
{
    Block& b = *currentBlock();
    char where[128];
    std::snprintf(where, sizeof where, " [block (%u,%u,%u) thread (%u,%u,%u)]", b.index.x, b.index.y,
        b.index.z, self().tid.x, self().tid.y, self().tid.z);
    recordError(cudaErrorLaunchFailure, message + where);
    b.failed = true;
}

[[noreturn]] inline void fault(std::string const& message)
{
    recordFault(message);
    throw KernelFault{};
}

// Whether the calling code is a simulated kernel's thread (a fiber of a running block).
inline bool inKernel()
{
    Block const* b = currentBlock();
    return b != nullptr && b->current != nullptr;
}

// fault() for a signal handler (a read of a device buffer's guard page, simDevice.h), where
// no exception may be thrown: the fault is recorded, the block fails, and the fiber is left
// for good (its frames are dropped, not unwound).
[[noreturn]] inline void abandonFiber(std::string const& message)
{
    recordFault(message);
    Block& b = *currentBlock();
    Fiber& f = *b.current;
    f.state = Fiber::kDone;
    contextSwitch(f.ctx, b.scheduler);
    std::abort(); // never resumed
}

inline void yieldTo(Fiber::State state, unsigned mask = 0, WarpOp op = WarpOp::kSyncwarp)
{
    Block& b = *currentBlock();
    Fiber& f = *b.current;
    f.state = state;
    f.warpMask = mask;
    f.warpOp = op;
    contextSwitch(f.ctx, b.scheduler);
    if (b.failed)
    {
        throw KernelFault{};
    }
}

inline void syncthreads()
{
    yieldTo(Fiber::kAtBlockBarrier);
}

// Waits until every lane of `mask` in this thread's warp has reached the same warp operation
// `op` with the same mask, or has exited (lanes past the end of the block count as exited):
// "all non-exited threads named in mask must execute the same intrinsic with the same mask".
// WMMA needs the whole warp. Returns the lanes that took part.
inline unsigned syncwarp(unsigned mask, WarpOp op = WarpOp::kSyncwarp)
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
    if (op == WarpOp::kWmma && (mask & ~present))
    {
        fault("wmma: the warp has lanes beyond the block (WMMA needs all 32)");
    }
    yieldTo(Fiber::kAtWarpBarrier, mask, op);
    return self().warpArrived;
}

// A fiber's first frame: runs the kernel body, then hands back to the scheduler for good.
[[noreturn]] inline void fiberEntry()
{
    Block& b = *currentBlock();
    try
    {
        b.body();
    }
    catch (KernelFault const&)
    {
    }
    Fiber& f = *b.current;
    f.state = Fiber::kDone;
    contextSwitch(f.ctx, b.scheduler);
    std::abort(); // a finished fiber is never resumed
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

// Whether the warp operation fiber `f` waits at can complete: every lane of its mask is at the
// same operation with the same mask, or (except for WMMA) has exited. `arrived`: those at it.
inline bool warpGroupComplete(Block const& b, Fiber const& f, unsigned& arrived)
{
    int const n = static_cast<int>(b.fibers.size());
    int const base = f.linear & ~31;
    arrived = 0;
    for (int l = 0; l < 32; ++l)
    {
        if (!(f.warpMask >> l & 1u))
        {
            continue;
        }
        bool const exitedOk = f.warpOp != WarpOp::kWmma;
        if (base + l >= n)
        {
            if (!exitedOk)
            {
                return false;
            }
            continue;
        }
        Fiber const& g = b.fibers[base + l];
        if (g.state == Fiber::kAtWarpBarrier && g.warpMask == f.warpMask && g.warpOp == f.warpOp)
        {
            arrived |= 1u << l;
        }
        else if (!(g.state == Fiber::kDone && exitedOk))
        {
            return false;
        }
    }
    return true;
}

// Runs one block to completion on the calling OS thread.
//
// Scheduling: each pass visits the fibers in `Order`; a fiber runs until it waits at a barrier
// or exits. When the last lane of a warp operation arrives (or the last missing lane exits),
// its lanes run on at once, before the pass moves on -- so a warp runs ahead of the other
// warps up to its next __syncthreads (the first warps in forward order, the last ones in
// reverse). A warp operation is no block-wide barrier: a __syncthreads missing between one
// warp's shared-memory writes and another warp's reads shows up in some order.
inline void runBlock(Block& b, uint32_t salt)
{
    int const n = static_cast<int>(b.dims.x * b.dims.y * b.dims.z);
    auto& pool = stackPool();
    while (static_cast<int>(pool.size()) < n)
    {
        pool.emplace_back(config().stackBytes);
    }
    b.fibers.assign(static_cast<size_t>(n), Fiber{});
    if (!useStackSwitch())
    {
        b.ucontexts.assign(static_cast<size_t>(n) + 1, ucontext_t{});
        b.scheduler.uc = &b.ucontexts[n];
    }
    b.warpSlots.assign(static_cast<size_t>(n), 0);
    b.warpAux.assign(static_cast<size_t>(n), 0);
    for (int i = 0; i < n; ++i)
    {
        Fiber& f = b.fibers[i];
        f.linear = i;
        f.tid = dim3(i % b.dims.x, (i / b.dims.x) % b.dims.y, i / (b.dims.x * b.dims.y));
        f.stack = pool[i].data();
        contextInit(f.ctx, b.ucontexts.empty() ? nullptr : &b.ucontexts[i], f.stack, pool[i].size(), fiberEntry);
    }
    currentBlock() = &b;
    std::vector<int> rank(static_cast<size_t>(n));
    std::vector<int> work; // fibers to run now, last first
    // Releases the warp operation `f` waits at if it can complete; its lanes run next (in the
    // pass's relative order) when `runNow`.
    auto release = [&](Fiber const& f, bool runNow) {
        unsigned arrived = 0;
        if (f.state != Fiber::kAtWarpBarrier || !warpGroupComplete(b, f, arrived))
        {
            return false;
        }
        int const base = f.linear & ~31;
        std::vector<int> lanes;
        for (int l = 0; l < 32; ++l)
        {
            if (arrived >> l & 1u)
            {
                Fiber& g = b.fibers[base + l];
                g.state = Fiber::kReady;
                g.warpArrived = arrived;
                lanes.push_back(base + l);
            }
        }
        if (runNow)
        {
            std::sort(lanes.begin(), lanes.end(), [&](int x, int y) { return rank[x] > rank[y]; });
            work.insert(work.end(), lanes.begin(), lanes.end());
        }
        return true;
    };
    uint32_t phase = 0;
    for (;;)
    {
        std::vector<int> const order = orderOf(n, salt * 7919u + phase++);
        for (int k = 0; k < n; ++k)
        {
            rank[order[k]] = k;
        }
        for (int i : order)
        {
            work.assign(1, i);
            while (!work.empty() && !b.failed)
            {
                Fiber& f = b.fibers[work.back()];
                work.pop_back();
                if (f.state != Fiber::kReady)
                {
                    continue;
                }
                b.current = &f;
                contextSwitch(b.scheduler, f.ctx);
                if (f.state == Fiber::kAtWarpBarrier)
                {
                    release(f, true);
                }
                else if (f.state == Fiber::kDone)
                {
                    // An exited lane may complete the warp operations its warp waits at.
                    int const base = f.linear & ~31;
                    for (int l = 0; l < 32 && base + l < n; ++l)
                    {
                        Fiber const& g = b.fibers[base + l];
                        if (g.state == Fiber::kAtWarpBarrier && (g.warpMask >> (f.linear & 31) & 1u))
                        {
                            release(g, true);
                        }
                    }
                }
            }
            if (b.failed)
            {
                break;
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
                    contextSwitch(b.scheduler, f.ctx);
                }
            }
            break;
        }
        bool released = false;
        for (Fiber const& f : b.fibers)
        {
            released |= release(f, false);
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
        // Nothing can move: a divergent barrier, a warp op missing lanes, or lanes of one mask
        // at different warp operations or with different masks.
        std::string detail;
        for (Fiber& f : b.fibers)
        {
            if (f.state != Fiber::kAtWarpBarrier)
            {
                continue;
            }
            b.current = &f;
            int const base = f.linear & ~31;
            for (int l = 0; l < 32 && base + l < n && detail.empty(); ++l)
            {
                Fiber const& g = b.fibers[base + l];
                if ((f.warpMask >> l & 1u) && g.state == Fiber::kAtWarpBarrier
                    && (g.warpMask != f.warpMask || g.warpOp != f.warpOp))
                {
                    char d[200];
                    std::snprintf(d, sizeof d,
                        "; lanes %d and %d of warp %d wait at different warp operations or masks (0x%08x, 0x%08x)",
                        f.linear & 31, l, f.linear >> 5, f.warpMask, g.warpMask);
                    detail = d;
                }
            }
            if (!detail.empty())
            {
                break;
            }
        }
        char msg[160];
        std::snprintf(msg, sizeof msg,
            "deadlock: %d thread(s) at __syncthreads, %d at a warp op whose lanes never all arrive, %d exited", waiting,
            atWarp, done);
        recordError(cudaErrorLaunchFailure, std::string(msg) + detail + " [block (" + std::to_string(b.index.x) + ","
                + std::to_string(b.index.y) + ")]");
        b.failed = true;
        for (Fiber& f : b.fibers)
        {
            if (f.state != Fiber::kDone)
            {
                b.current = &f;
                contextSwitch(b.scheduler, f.ctx);
            }
        }
        break;
    }
    currentBlock() = nullptr;
}

// A kernel launch with the cudaGetLastError that follows it in launchKernel: checks the
// configuration, then runs every block (in `Order`). A configuration error is returned and
// read (cleared), as on a GPU; a kernel fault is sticky and every later launch returns it.
// (A GPU reports a fault at the next synchronisation, after the launch returned.)
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t, Args&&... args)
{
    if (lastError().code == cudaErrorLaunchFailure)
    {
        return cudaErrorLaunchFailure; // sticky, as a failed kernel's error is
    }
    unsigned long long const threads = 1ull * block.x * block.y * block.z;
    if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0
        || grid.x > 0x7FFFFFFFu || grid.y > 65535 || grid.z > 65535)
    {
        char msg[160];
        std::snprintf(msg, sizeof msg, "invalid launch configuration: grid (%u,%u,%u) block (%u,%u,%u)", grid.x, grid.y,
            grid.z, block.x, block.y, block.z);
        recordError(cudaErrorInvalidConfiguration, msg);
        return takeError();
    }
    if (smem > static_cast<size_t>(config().device.maxSharedOptin))
    {
        recordError(cudaErrorInvalidValue, "dynamic shared memory beyond the device's opt-in limit");
        return takeError();
    }
    if (smem > static_cast<size_t>(config().device.maxSharedPerBlock))
    {
        auto const optin = sharedOptins().find(kernelKey(kernel));
        if (optin == sharedOptins().end() || smem > static_cast<size_t>(optin->second))
        {
            recordError(cudaErrorInvalidValue,
                "dynamic shared memory above the default limit without cudaFuncSetAttribute"
                "(cudaFuncAttributeMaxDynamicSharedMemorySize) for this kernel");
            return takeError();
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
        b.dynamicSmem.assign(smem + kSharedGuardBytes, kSharedGuard);
        std::memset(b.dynamicSmem.data(), kSharedPoison, smem);
        b.body = [&bound, kernel]() { std::apply(kernel, bound); };
        // A fresh OS thread per block: `__shared__` (static thread_local) starts fresh.
        // `__shared__` poisoned, as a GPU's shared memory starts as garbage.
        std::thread t([&b, linear]() {
            poisonStaticShared();
            runBlock(b, static_cast<uint32_t>(linear));
        });
        t.join();
        if (b.failed)
        {
            return cudaErrorLaunchFailure;
        }
        for (size_t i = smem; i < b.dynamicSmem.size(); ++i)
        {
            if (b.dynamicSmem[i] != kSharedGuard)
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
    return takeError(); // cudaSuccess, unless an earlier call left an error no one read
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
// Read-only, as the built-ins are.
#define threadIdx (static_cast<dim3 const&>(::cudasim::self().tid))
#define blockIdx (static_cast<dim3 const&>(::cudasim::currentBlock()->index))
#define blockDim (static_cast<dim3 const&>(::cudasim::currentBlock()->dims))
#define gridDim (static_cast<dim3 const&>(::cudasim::currentBlock()->grid))
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

namespace cudasim
{
// A shuffle's `width`: a power of 2 up to 32, else the result is undefined on a GPU.
inline void checkWidth(int width, char const* what)
{
    if (width < 1 || width > 32 || (width & (width - 1)) != 0)
    {
        fault(std::string(what) + ": width must be a power of 2 from 1 to 32");
    }
}

// Exchanges `value` among the lanes of `mask`: `source(lane)` names the lane to read (or the
// caller's own). Reading a lane that does not take part (not in the mask, exited, or beyond
// the block) is a fault: "If the target thread is inactive, the retrieved value is undefined."
template <typename T, typename Source>
T shuffle(unsigned mask, T value, WarpOp op, char const* what, Source source)
{
    static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles move at most 8 bytes");
    static_assert(std::is_trivially_copyable<T>::value, "shuffles move plain values");
    Block& b = *currentBlock();
    int const me = self().linear;
    int const lane = me & 31;
    std::memcpy(&b.warpSlots[me], &value, sizeof(T));
    unsigned const arrived = syncwarp(mask, op);
    int const src = source(lane);
    if (src != lane && !(arrived >> src & 1u))
    {
        fault(std::string(what) + ": source lane " + std::to_string(src)
            + " does not take part (not in the mask, exited or beyond the block): its value is undefined");
    }
    T out;
    std::memcpy(&out, &b.warpSlots[(me & ~31) + src], sizeof(T));
    syncwarp(mask, WarpOp::kShflRead); // every lane has read before a later shuffle overwrites the slots
    return out;
}
} // namespace cudasim

// PTX shfl.sync.bfly with c = ((32 - width) << 8) | 31: lane ^ laneMask, unless that lies past
// the end of the caller's group of `width` lanes (then the caller's own value); a lane may
// read an earlier group.
template <typename T>
T __shfl_xor_sync(unsigned mask, T value, int laneMask, int width = 32)
{
    cudasim::checkWidth(width, "__shfl_xor_sync");
    return cudasim::shuffle(mask, value, cudasim::WarpOp::kShflXor, "__shfl_xor_sync", [&](int lane) {
        int const j = lane ^ (laneMask & 31);
        int const maxLane = (lane & ~(width - 1)) | (width - 1);
        return j <= maxLane ? j : lane;
    });
}

// PTX shfl.sync.idx: lane srcLane modulo width of the caller's group.
template <typename T>
T __shfl_sync(unsigned mask, T value, int srcLane, int width = 32)
{
    cudasim::checkWidth(width, "__shfl_sync");
    return cudasim::shuffle(mask, value, cudasim::WarpOp::kShflIdx, "__shfl_sync",
        [&](int lane) { return (lane & ~(width - 1)) | (srcLane & (width - 1)); });
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
    static_assert(std::is_integral<T>::value && sizeof(T) >= 4, "CUDA's atomicMax takes 32- and 64-bit integers");
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
// A launch failure stays (sticky); other errors are cleared by reading them.
inline cudaError_t cudaGetLastError()
{
    return cudasim::takeError();
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
    case cudaErrorMemoryAllocation: return "out of memory";
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
    int ptxVersion;
    int binaryVersion;
    int maxDynamicSharedSizeBytes;
};

template <typename F>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, F* kernel)
{
    *attr = {};
    cudasim::Device const& device = cudasim::config().device;
    attr->maxThreadsPerBlock = device.funcMaxThreadsPerBlock;
    attr->binaryVersion = device.major * 10 + device.minor;
    attr->ptxVersion = device.codeArch != 0 ? device.codeArch : attr->binaryVersion;
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

inline cudaError_t cudaMemcpyAsync(
    void* dst, void const* src, size_t bytes, cudaMemcpyKind /*kind*/, cudaStream_t = nullptr)
{
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}
