// Portability macros and scalar helpers shared by host (g++) and device (nvcc) code.
// The same per-row maths compiles for the CPU host library (tested against the torch
// reference) and for the CUDA kernels, so the two cannot drift apart.
#pragma once

#include <cstdint>
#include <cstring>
#include <cmath>

#if defined(__CUDACC__)
#define TRTNEG_HD __host__ __device__ __forceinline__
#define TRTNEG_DEVICE __device__ __forceinline__
#else
#define TRTNEG_HD inline
#define TRTNEG_DEVICE inline
#endif

namespace trt_neg
{

// Data type codes shared by the host library, the CUDA launcher and the plugin core.
// Values equal nvinfer1::DataType (kFLOAT=0, kHALF=1, kBF16=7) so the adapter can cast.
enum class DType : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
    kBFLOAT16 = 7,
};

TRTNEG_HD float bitsToFloat(uint32_t b)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(b);
#else
    float f;
    std::memcpy(&f, &b, sizeof f);
    return f;
#endif
}

TRTNEG_HD uint32_t floatToBits(float f)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t b;
    std::memcpy(&b, &f, sizeof b);
    return b;
#endif
}

// bf16 -> fp32 is exact: the bf16 bits are the upper half of the fp32 bits.
TRTNEG_HD float bf16BitsToFloat(uint16_t h)
{
    return bitsToFloat(static_cast<uint32_t>(h) << 16);
}

// IEEE binary16 -> fp32, exact (subnormals, inf and NaN included).
TRTNEG_HD float fp16BitsToFloat(uint16_t h)
{
    uint32_t const sign = static_cast<uint32_t>(h & 0x8000u) << 16;
    uint32_t const exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0x1Fu)
    {
        bits = sign | 0x7F800000u | (mant << 13);
    }
    else if (exp != 0)
    {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    }
    else if (mant == 0)
    {
        bits = sign;
    }
    else
    {
        // Subnormal: normalise.
        int e = -1;
        do
        {
            ++e;
            mant <<= 1;
        } while ((mant & 0x400u) == 0);
        bits = sign | (static_cast<uint32_t>(112 - e) << 23) | ((mant & 0x3FFu) << 13);
    }
    return bitsToFloat(bits);
}

TRTNEG_HD float loadAsFloat(void const* base, int64_t idx, DType t)
{
    switch (t)
    {
    case DType::kBFLOAT16: return bf16BitsToFloat(static_cast<uint16_t const*>(base)[idx]);
    case DType::kFLOAT16: return fp16BitsToFloat(static_cast<uint16_t const*>(base)[idx]);
    default: return static_cast<float const*>(base)[idx];
    }
}

TRTNEG_HD int dtypeSize(DType t)
{
    return t == DType::kFLOAT32 ? 4 : 2;
}

TRTNEG_HD bool dtypeValid(int32_t t)
{
    return t == 0 || t == 1 || t == 7;
}

} // namespace trt_neg
