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

// The inaccessible pages around the live device buffers, and what a read of one means.
struct GuardPage
{
    uintptr_t begin, end;
    std::string what; // "a read past the end of <buffer>"
};

inline std::vector<GuardPage>& guardPages()
{
    static std::vector<GuardPage> pages;
    return pages;
}

// SIGSEGV inside a simulated kernel at a guard page: a kernel fault (the launch fails with
// the buffer's name), not the end of the process. Any other SIGSEGV goes to the handler that
// was installed before (pytest's faulthandler, say), or to the default action.
inline struct sigaction& previousSegvAction()
{
    static struct sigaction previous;
    return previous;
}

inline void onSegv(int sig, siginfo_t* info, void* context)
{
    auto const address = reinterpret_cast<uintptr_t>(info->si_addr);
    if (inKernel())
    {
        for (GuardPage const& g : guardPages())
        {
            if (address >= g.begin && address < g.end)
            {
                sigset_t segv;
                sigemptyset(&segv);
                sigaddset(&segv, SIGSEGV);
                pthread_sigmask(SIG_UNBLOCK, &segv, nullptr); // the handler never returns
                abandonFiber("invalid read: " + g.what);
            }
        }
    }
    struct sigaction const& previous = previousSegvAction();
    if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction)
    {
        previous.sa_sigaction(sig, info, context);
        return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN && previous.sa_handler)
    {
        previous.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL); // returning re-runs the access, which now ends the process
}

inline void installSegvHandler()
{
    static bool const installed = [] {
        struct sigaction action{};
        action.sa_sigaction = onSegv;
        action.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&action.sa_mask);
        return sigaction(SIGSEGV, &action, &previousSegvAction()) == 0;
    }();
    (void) installed;
}

// One simulated device allocation: [guard page][poison ... data ... poison][guard page].
// Without a source the data starts as poison too (outputs never written stay NaN).
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
        mapBytes_ = (dataPages + 2) * page;
        void* m = mmap(nullptr, mapBytes_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
        {
            throw std::runtime_error(name_ + ": mmap failed");
        }
        map_ = static_cast<unsigned char*>(m);
        mprotect(map_, page, PROT_NONE);
        mprotect(map_ + (dataPages + 1) * page, page, PROT_NONE);
        installSegvHandler();
        auto const base = reinterpret_cast<uintptr_t>(map_);
        guardPages().push_back({base, base + page, "a read before the start of " + name_});
        guardPages().push_back({base + (dataPages + 1) * page, base + (dataPages + 2) * page,
            "a read past the end of " + name_});
        lo_ = map_ + page;
        hi_ = map_ + (dataPages + 1) * page;
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
        if (!entry.second->intact(why))
        {
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
    auto buffer = std::make_unique<cudasim::DeviceBuffer>(
        "cudaMalloc #" + std::to_string(++count) + " (" + std::to_string(bytes) + " bytes)", nullptr, bytes, 0);
    *ptr = buffer->get();
    cudasim::allocations()[*ptr] = std::move(buffer);
    return cudaSuccess;
}

template <typename T>
cudaError_t cudaMalloc(T** ptr, size_t bytes)
{
    return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}

inline cudaError_t cudaFree(void* ptr)
{
    if (ptr == nullptr)
    {
        return cudaSuccess;
    }
    cudaError_t const e = cudasim::synchronize();
    if (cudasim::allocations().erase(ptr) == 0)
    {
        return cudaErrorInvalidValue;
    }
    return e;
}

inline cudaError_t cudaDeviceSynchronize()
{
    return cudasim::synchronize();
}

// Synchronous, as cudaMemcpy is: it reports an earlier fault first.
inline cudaError_t cudaMemcpy(void* dst, void const* src, size_t bytes, cudaMemcpyKind kind)
{
    if (cudaError_t const e = cudasim::synchronize())
    {
        return e;
    }
    return cudaMemcpyAsync(dst, src, bytes, kind);
}
