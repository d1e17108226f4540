// "Device" memory for the C ABI harnesses that run a launcher on the CPU simulation of CUDA
// (plugins/*/tests/*KernelSim.cpp). Every device buffer is a copy of the caller's array in
// its own mapping: 256-byte aligned (as cudaMalloc) or shifted by `misalign` bytes, with an
// inaccessible page after it, and the bytes around it poisoned and checked after the launch,
// so an out-of-bounds read faults and an out-of-bounds write is reported.
// The runtime's memory API (cudaMalloc, cudaMemcpy, cudaFree, cudaDeviceSynchronize) serves
// programs written for a GPU, such as plugins/gdn/tests/gdnKernelTest.cu, from the same buffers.
#pragma once

#include "cudaSim.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <map>
#include <memory>

namespace cudasim
{

constexpr unsigned char kPoison = 0xFF; // NaN as fp32, -1 as int32

// The inaccessible pages around the live device buffers: `where` says where an access to
// them lands ("past the end of <buffer>").
struct GuardPage
{
    uintptr_t begin, end;
    std::string where;
};

inline std::vector<GuardPage>& guardPages()
{
    static std::vector<GuardPage> pages;
    return pages;
}

// SIGSEGV inside a simulated kernel at a guard page: a kernel fault (the launch fails with
// the buffer's name), not the end of the process. Any other SIGSEGV goes to the handler that
// was installed before (pytest's faulthandler, say), as that handler asked to be run, or to
// the default action.
inline struct sigaction& previousSegvAction()
{
    static struct sigaction previous;
    return previous;
}

inline void onSegv(int sig, siginfo_t* info, void* context)
{
    auto const address = reinterpret_cast<uintptr_t>(info->si_addr);
    // The address first: thread-local state (inKernel) may allocate on a thread's first use,
    // which a fault inside malloc must not reach.
    GuardPage const* hit = nullptr;
    if (info->si_code == SEGV_ACCERR)
    {
        for (GuardPage const& g : guardPages())
        {
            hit = address >= g.begin && address < g.end ? &g : hit;
        }
    }
    if (hit && inKernel())
    {
        char const* access = "access";
#if defined(__x86_64__) && defined(REG_ERR)
        // The page fault's error code: bit 1 is set for a write.
        access = (static_cast<ucontext_t*>(context)->uc_mcontext.gregs[REG_ERR] & 2) ? "write" : "read";
#endif
        abandonFiber(std::string("invalid ") + access + ": " + access + " " + hit->where);
    }
    // Not ours: the handler installed before runs as the kernel would have run it (its mask,
    // SA_NODEFER, SA_RESETHAND), and this one stays installed for later kernel faults. When it
    // returns, a caused fault recurs; once the saved action is the default, the default action
    // happens (a sent SIGSEGV, which would not recur, is sent again).
    struct sigaction& previous = previousSegvAction();
    bool const callable = (previous.sa_flags & SA_SIGINFO)
        ? previous.sa_sigaction != nullptr
        : (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN);
    if (!callable)
    {
        struct sigaction fallback{};
        fallback.sa_handler = SIG_DFL;
        sigemptyset(&fallback.sa_mask);
        sigaction(SIGSEGV, &fallback, nullptr);
        if (info->si_code <= 0)
        {
            raise(SIGSEGV);
        }
        return;
    }
    struct sigaction const call = previous;
    if (call.sa_flags & SA_RESETHAND)
    {
        previous = {};
        previous.sa_handler = SIG_DFL;
        sigemptyset(&previous.sa_mask);
    }
    sigset_t mask = call.sa_mask;
    if (!(call.sa_flags & SA_NODEFER))
    {
        sigaddset(&mask, SIGSEGV);
    }
    sigset_t saved;
    pthread_sigmask(SIG_BLOCK, &mask, &saved);
    if (call.sa_flags & SA_SIGINFO)
    {
        call.sa_sigaction(sig, info, context);
    }
    else
    {
        call.sa_handler(sig);
    }
    pthread_sigmask(SIG_SETMASK, &saved, nullptr);
}

// SA_ONSTACK: a stack overflow elsewhere still reaches faulthandler's handler on its own
// stack (block threads have no alternate stack, so a guard-page fault runs on the fiber's).
// SA_NODEFER: abandonFiber never returns, so SIGSEGV must not stay blocked.
inline void installSegvHandler()
{
    static bool const installed = [] {
        struct sigaction action{};
        action.sa_sigaction = onSegv;
        action.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
        sigemptyset(&action.sa_mask);
        return sigaction(SIGSEGV, &action, &previousSegvAction()) == 0;
    }();
    (void) installed;
}

// One simulated device allocation: [guard pages][poison ... data ... poison][guard pages].
// Without a source the data starts as poison too (outputs never written stay NaN). The guards
// span kGuardPages on each side, so an access up to that far outside is blamed on this
// buffer, not on a neighbouring mapping (mmap places new mappings either side).
constexpr size_t kGuardPages = 16;

class DeviceBuffer
{
public:
    DeviceBuffer(std::string name, void const* src, size_t bytes, size_t misalign)
        : name_(std::move(name))
        , bytes_(bytes)
    {
        size_t const page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
        size_t const span = ((bytes + misalign + 255) / 256) * 256;
        size_t const dataPages = (span + page - 1) / page;
        mapBytes_ = (dataPages + 2 * kGuardPages) * page;
        void* m = mmap(nullptr, mapBytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
        {
            throw std::bad_alloc();
        }
        map_ = static_cast<unsigned char*>(m);
        size_t const guard = kGuardPages * page;
        mprotect(map_, guard, PROT_NONE);
        mprotect(map_ + guard + dataPages * page, guard, PROT_NONE);
        installSegvHandler();
        auto const base = reinterpret_cast<uintptr_t>(map_);
        guardPages().push_back({base, base + guard, "before the start of " + name_});
        guardPages().push_back({base + guard + dataPages * page, base + mapBytes_, "past the end of " + name_});
        lo_ = map_ + guard;
        hi_ = map_ + guard + dataPages * page;
        std::memset(lo_, kPoison, hi_ - lo_);
        data_ = hi_ - span + misalign; // the span ends at the guard page
        if (src)
        {
            std::memcpy(data_, src, bytes);
        }
    }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
    ~DeviceBuffer()
    {
        auto const base = reinterpret_cast<uintptr_t>(map_);
        auto& pages = guardPages();
        pages.erase(std::remove_if(pages.begin(), pages.end(),
                        [&](GuardPage const& g) { return g.begin >= base && g.end <= base + mapBytes_; }),
            pages.end());
        munmap(map_, mapBytes_);
    }

    template <typename T = void>
    T* get() const
    {
        return reinterpret_cast<T*>(data_);
    }

    size_t bytes() const
    {
        return bytes_;
    }

    bool faultReported = false; // an out-of-bounds write into it was reported (cudaMalloc's)

    // The poisoned bytes around the data are still poison (else: an out-of-bounds write).
    bool intact(std::string& why) const
    {
        for (unsigned char const* q = lo_; q < hi_; ++q)
        {
            if ((q < data_ || q >= data_ + bytes_) && *q != kPoison)
            {
                why = name_ + ": out-of-bounds write at byte offset "
                    + std::to_string(static_cast<long long>(q - data_));
                return false;
            }
        }
        return true;
    }

private:
    std::string name_;
    size_t bytes_ = 0, mapBytes_ = 0;
    unsigned char* map_ = nullptr;
    unsigned char* lo_ = nullptr;
    unsigned char* hi_ = nullptr;
    unsigned char* data_ = nullptr;
};

struct Buffers
{
    std::vector<std::unique_ptr<DeviceBuffer>> all;

    // nullptr in, nullptr out: an optional input or output stays absent on the "device".
    template <typename T>
    T* add(char const* name, T const* src, size_t count, size_t misalign = 0, bool present = true)
    {
        if (!present)
        {
            return nullptr;
        }
        all.push_back(std::make_unique<DeviceBuffer>(name, src, count * sizeof(T), misalign));
        return all.back()->get<T>();
    }

    // Every buffer's surroundings are intact; else `why` names the first out-of-bounds write.
    bool intact(std::string& why) const
    {
        for (auto const& b : all)
        {
            if (!b->intact(why))
            {
                return false;
            }
        }
        return true;
    }
};

// A launcher's error as the harnesses report it: the cudaError_t name and the simulation's message.
inline std::string describeLaunchError(cudaError_t e)
{
    std::string const what = lastError().message;
    return std::string(cudaGetErrorString(e)) + (what.empty() ? "" : ": " + what);
}

// Copies `bytes` from a device buffer back to the caller's array when both exist.
inline void copyBack(void* dst, void const* src, size_t bytes)
{
    if (dst && src)
    {
        std::memcpy(dst, src, bytes);
    }
}

// cudaMalloc's allocations, by address.
inline std::map<void const*, std::unique_ptr<DeviceBuffer>>& allocations()
{
    static std::map<void const*, std::unique_ptr<DeviceBuffer>> m;
    return m;
}

// What a synchronisation reports: the sticky kernel fault, or else an out-of-bounds write
// into the margins of a live allocation (made sticky, as a GPU's memory fault is).
inline cudaError_t synchronize()
{
    std::string why;
    for (auto const& entry : allocations())
    {
        if (!entry.second->faultReported && !entry.second->intact(why))
        {
            entry.second->faultReported = true; // once: the error itself is what stays
            recordError(cudaErrorLaunchFailure, why);
            break;
        }
    }
    return lastError().code == cudaErrorLaunchFailure ? cudaErrorLaunchFailure : cudaSuccess;
}

} // namespace cudasim

// ---- memory API (a GPU program's, over guarded device buffers) ----------------------------
inline cudaError_t cudaMalloc(void** ptr, size_t bytes)
{
    static int count = 0;
    std::unique_ptr<cudasim::DeviceBuffer> buffer;
    try
    {
        buffer = std::make_unique<cudasim::DeviceBuffer>(
            "cudaMalloc #" + std::to_string(++count) + " (" + std::to_string(bytes) + " bytes)", nullptr, bytes, 0);
    }
    catch (std::bad_alloc const&)
    {
        return cudaErrorMemoryAllocation;
    }
    *ptr = buffer->get();
    cudasim::allocations()[*ptr] = std::move(buffer);
    return cudaSuccess;
}

template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t bytes)
{
    return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}

// As on a GPU, a sticky fault is what any later call returns first.
inline cudaError_t cudaFree(void* ptr)
{
    if (cudaError_t const e = cudasim::synchronize())
    {
        return e;
    }
    return ptr == nullptr || cudasim::allocations().erase(ptr) == 1 ? cudaSuccess : cudaErrorInvalidValue;
}

inline cudaError_t cudaDeviceSynchronize()
{
    return cudasim::synchronize();
}

namespace cudasim
{
// Whether [p, p + bytes) lies inside one cudaMalloc allocation.
inline bool inAllocation(void const* p, size_t bytes)
{
    auto& all = allocations();
    auto it = all.upper_bound(p);
    if (it == all.begin())
    {
        return false;
    }
    --it;
    auto const begin = reinterpret_cast<uintptr_t>(it->first);
    auto const end = begin + it->second->bytes();
    auto const at = reinterpret_cast<uintptr_t>(p); // >= begin (upper_bound)
    return at <= end && bytes <= end - at;           // no overflow for a huge (negative) count
}
} // namespace cudasim

// Synchronous, as cudaMemcpy is: an earlier fault first; then the device side(s) the kind
// names must lie inside a cudaMalloc allocation (else cudaErrorInvalidValue, as a GPU's
// range check gives).
inline cudaError_t cudaMemcpy(void* dst, void const* src, size_t bytes, cudaMemcpyKind kind)
{
    if (cudaError_t const e = cudasim::synchronize())
    {
        return e;
    }
    if (bytes == 0)
    {
        return cudaSuccess;
    }
    bool const deviceSrc = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    bool const deviceDst = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    if ((deviceSrc && !cudasim::inAllocation(src, bytes)) || (deviceDst && !cudasim::inAllocation(dst, bytes)))
    {
        return cudaErrorInvalidValue;
    }
    return cudaMemcpyAsync(dst, src, bytes, kind);
}
