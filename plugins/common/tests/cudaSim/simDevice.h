// "Device" memory for the C ABI harnesses that run a launcher on the CPU simulation of CUDA
// (plugins/*/tests/*KernelSim.cpp). Every device buffer is a copy of the caller's array in
// its own mapping: 256-byte aligned (as cudaMalloc) or shifted by `misalign` bytes, with an
// inaccessible page after it, and the bytes around it poisoned and checked after the launch,
// so an out-of-bounds read faults and an out-of-bounds write is reported.
#pragma once

#include "cudaSim.h"

#include <sys/mman.h>
#include <unistd.h>

#include <memory>

namespace cudasim
{

constexpr unsigned char kPoison = 0xFF; // NaN as fp32, -1 as int32

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

} // namespace cudasim
