// CPU simulation stand-in for <mma.h>: WMMA 16x16x16 with fp32 accumulation.  Every lane
// holds the whole tile (the hardware spreads it over the warp; no kernel of ours touches
// fragment elements directly), the *_sync calls require the whole warp, none of it exited,
// pointers must be 32-byte aligned with a leading dimension that is a multiple of 16 bytes,
// as the PTX ISA requires of wmma.load / wmma.store, and every lane must pass the same
// pointer, leading dimension and layout (the warp loads or stores one tile together).
#pragma once
#include "cudaSim.h"
#include "cuda_bf16.h"
#include "cuda_fp16.h"

namespace nvcuda
{
namespace wmma
{

struct matrix_a
{
};
struct matrix_b
{
};
struct accumulator
{
};
struct row_major
{
};
struct col_major
{
};
enum layout_t
{
    mem_row_major,
    mem_col_major,
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment
{
    static_assert(M == 16 && N == 16 && K == 16, "the simulation has the 16x16x16 shape only");
    static_assert(std::is_same<Use, accumulator>::value
            ? std::is_same<T, float>::value
            : (std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value),
        "the simulation has __half / __nv_bfloat16 A and B fragments and float accumulators only");
    static constexpr int num_elements = 256;
    float v[256]; // row-major 16x16: A is M x K, B is K x N, C is M x N
};

namespace detail
{
inline float toFloat(float x)
{
    return x;
}
inline float toFloat(__half x)
{
    return __half2float(x);
}
inline float toFloat(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T>
void checkPointer(T const* p, unsigned ldm, char const* what)
{
    if (reinterpret_cast<uintptr_t>(p) % 32 != 0)
    {
        cudasim::fault(std::string(what) + ": pointer not 32-byte aligned");
    }
    if ((ldm * sizeof(T)) % 16 != 0)
    {
        cudasim::fault(std::string(what) + ": leading dimension not a multiple of 16 bytes");
    }
}

// Whole-warp participation, as the *_sync operations require.
inline void warpOp()
{
    cudasim::syncwarp(0xFFFFFFFFu, cudasim::WarpOp::kWmma);
}

// The warp's lanes arrive together and agree on the tile: the same pointer, leading dimension
// and layout in every lane (else the GPU's result is undefined).
inline void warpUniform(void const* p, unsigned ldm, int layout, char const* what)
{
    cudasim::Block& b = *cudasim::currentBlock();
    int const me = cudasim::self().linear;
    b.warpSlots[me] = reinterpret_cast<uintptr_t>(p);
    b.warpAux[me] = (static_cast<uint64_t>(ldm) << 8) | static_cast<unsigned>(layout);
    warpOp();
    int const first = me & ~31;
    if (b.warpSlots[me] != b.warpSlots[first] || b.warpAux[me] != b.warpAux[first])
    {
        cudasim::fault(std::string(what) + ": the lanes of the warp pass different pointers, leading dimensions or layouts");
    }
}
} // namespace detail

template <typename Use, typename T, typename Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, float value)
{
    for (float& x : f.v)
    {
        x = value;
    }
}

template <typename T>
void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, row_major>& f, T const* p, unsigned ldm)
{
    detail::checkPointer(p, ldm, "wmma::load_matrix_sync(matrix_a)");
    detail::warpUniform(p, ldm, 0, "wmma::load_matrix_sync(matrix_a)");
    for (int i = 0; i < 16; ++i)
        for (int k = 0; k < 16; ++k)
            f.v[i * 16 + k] = detail::toFloat(p[i * ldm + k]);
    detail::warpOp();
}

template <typename T>
void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, col_major>& f, T const* p, unsigned ldm)
{
    detail::checkPointer(p, ldm, "wmma::load_matrix_sync(matrix_a)");
    detail::warpUniform(p, ldm, 1, "wmma::load_matrix_sync(matrix_a)");
    for (int i = 0; i < 16; ++i)
        for (int k = 0; k < 16; ++k)
            f.v[i * 16 + k] = detail::toFloat(p[k * ldm + i]);
    detail::warpOp();
}

template <typename T>
void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, row_major>& f, T const* p, unsigned ldm)
{
    detail::checkPointer(p, ldm, "wmma::load_matrix_sync(matrix_b)");
    detail::warpUniform(p, ldm, 0, "wmma::load_matrix_sync(matrix_b)");
    for (int k = 0; k < 16; ++k)
        for (int j = 0; j < 16; ++j)
            f.v[k * 16 + j] = detail::toFloat(p[k * ldm + j]);
    detail::warpOp();
}

template <typename T>
void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, col_major>& f, T const* p, unsigned ldm)
{
    detail::checkPointer(p, ldm, "wmma::load_matrix_sync(matrix_b)");
    detail::warpUniform(p, ldm, 1, "wmma::load_matrix_sync(matrix_b)");
    for (int k = 0; k < 16; ++k)
        for (int j = 0; j < 16; ++j)
            f.v[k * 16 + j] = detail::toFloat(p[j * ldm + k]);
    detail::warpOp();
}

template <typename TA, typename LA, typename TB, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, fragment<matrix_a, 16, 16, 16, TA, LA> const& a,
    fragment<matrix_b, 16, 16, 16, TB, LB> const& b, fragment<accumulator, 16, 16, 16, float> const& c)
{
    static_assert(std::is_same<TA, TB>::value, "A and B of one element type");
    detail::warpOp();
    float out[256];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j)
        {
            float acc = c.v[i * 16 + j];
            for (int k = 0; k < 16; ++k)
                acc = std::fma(a.v[i * 16 + k], b.v[k * 16 + j], acc);
            out[i * 16 + j] = acc;
        }
    std::memcpy(d.v, out, sizeof out);
    detail::warpOp();
}

inline void store_matrix_sync(float* p, fragment<accumulator, 16, 16, 16, float> const& f, unsigned ldm, layout_t layout)
{
    detail::checkPointer(p, ldm, "wmma::store_matrix_sync");
    detail::warpUniform(p, ldm, layout, "wmma::store_matrix_sync");
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 16; ++j)
            (layout == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.v[i * 16 + j];
    detail::warpOp();
}

} // namespace wmma
} // namespace nvcuda
