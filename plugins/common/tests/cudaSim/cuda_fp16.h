// CPU simulation stand-in for <cuda_fp16.h>: the storage type and the conversions our kernels use.
#pragma once
#include "cudaSim.h"
#include "../../hostDevice.h"

struct alignas(2) __half
{
    uint16_t bits;
};
struct alignas(4) __half2
{
    __half x, y;
};

inline float __half2float(__half h)
{
    return trt_neg::fp16BitsToFloat(h.bits);
}

inline float2 __half22float2(__half2 h)
{
    return make_float2(__half2float(h.x), __half2float(h.y));
}
