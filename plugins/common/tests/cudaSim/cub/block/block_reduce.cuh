// CPU simulation stand-in for cub::BlockReduce (see ../../cudaSim.h).  Sequential in thread
// order; the aggregate goes to thread 0 only (other threads get a poison value, as cub leaves
// theirs undefined).  Like cub, no barrier follows: reusing the storage needs __syncthreads().
#pragma once
#include "../../cudaSim.h"

#include <limits>

namespace cub
{

namespace simdetail
{
template <typename T>
T poison()
{
    if constexpr (std::is_floating_point<T>::value)
    {
        return std::numeric_limits<T>::quiet_NaN();
    }
    else
    {
        return static_cast<T>(0x5EADBEEF5EADBEEFull);
    }
}

// The calling thread's rank as cub computes it (RowMajorTid from the template's block
// dimensions); the block must have exactly those dimensions (cub's ranks collide otherwise,
// e.g. BlockReduce<T, 64> in a (32, 2) block ranks threads (x, 0) and (x, 1) alike).
template <int kDimX, int kDimY, int kDimZ>
int checkedThread(char const* what)
{
    auto const& b = *cudasim::currentBlock();
    if (b.dims.x != static_cast<unsigned>(kDimX) || b.dims.y != static_cast<unsigned>(kDimY)
        || b.dims.z != static_cast<unsigned>(kDimZ))
    {
        cudasim::fault(std::string(what) + ": the block's dimensions differ from the template's BLOCK_DIM_X/Y/Z");
    }
    dim3 const t = cudasim::self().tid;
    return static_cast<int>((kDimZ == 1 ? 0u : t.z * kDimX * kDimY) + (kDimY == 1 ? 0u : t.y * kDimX) + t.x);
}

struct Sum
{
    template <typename T>
    T operator()(T a, T b) const
    {
        return a + b;
    }
};
} // namespace simdetail

enum BlockReduceAlgorithm
{
    BLOCK_REDUCE_RAKING_COMMUTATIVE_ONLY,
    BLOCK_REDUCE_RAKING,
    BLOCK_REDUCE_WARP_REDUCTIONS,
};

template <typename T, int BLOCK_DIM_X, BlockReduceAlgorithm ALGORITHM = BLOCK_REDUCE_WARP_REDUCTIONS,
    int BLOCK_DIM_Y = 1, int BLOCK_DIM_Z = 1>
class BlockReduce
{
    static constexpr int kThreads = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;

public:
    struct TempStorage
    {
        T slot[kThreads];
    };

    explicit BlockReduce(TempStorage& storage)
        : storage_(storage)
    {
    }

    template <typename Op>
    T Reduce(T input, Op op)
    {
        return Reduce(input, op, kThreads);
    }

    // The inputs of threads [0, numValid) (all of them when numValid >= the block size, as cub).
    template <typename Op>
    T Reduce(T input, Op op, int numValid)
    {
        int const tid = simdetail::checkedThread<BLOCK_DIM_X, BLOCK_DIM_Y, BLOCK_DIM_Z>("cub::BlockReduce");
        storage_.slot[tid] = input;
        __syncthreads();
        if (tid != 0)
        {
            return simdetail::poison<T>();
        }
        T acc = storage_.slot[0];
        for (int i = 1; i < (numValid < kThreads ? numValid : kThreads); ++i)
        {
            acc = op(acc, storage_.slot[i]);
        }
        return acc;
    }

    T Sum(T input)
    {
        return Reduce(input, simdetail::Sum());
    }

    T Sum(T input, int numValid)
    {
        return Reduce(input, simdetail::Sum(), numValid);
    }

private:
    TempStorage& storage_;
};

} // namespace cub
