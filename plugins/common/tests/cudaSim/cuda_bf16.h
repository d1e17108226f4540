// CPU simulation stand-in for <cuda_bf16.h>: the storage type and the conversions our kernels use.
#pragma once
#include "cudaSim.h"
#include "../../hostDevice.h"

struct alignas(2) __nv_bfloat16
{
    uint16_t bits;
};
struct alignas(4) __nv_bfloat162
{
    __nv_bfloat16 x, y;
};

inline float __bfloat162float(__nv_bfloat16 h)
{
    return trt_neg::bf16BitsToFloat(h.bits);
}

inline float2 __bfloat1622float2(__nv_bfloat162 h)
{
    return make_float2(__bfloat162float(h.x), __bfloat162float(h.y));
}
