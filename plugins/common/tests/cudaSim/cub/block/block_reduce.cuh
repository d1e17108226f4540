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

template <int kThreads>
int checkedThread(char const* what)
{
    auto const& b = *cudasim::currentBlock();
    if (b.dims.x * b.dims.y * b.dims.z != static_cast<unsigned>(kThreads))
    {
        cudasim::fault(std::string(what) + ": block size differs from the template's BLOCK_DIM_X");
    }
    return cudasim::self().linear;
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

    template <typename Op>
    T Reduce(T input, Op op, int numValid)
    {
        int const tid = simdetail::checkedThread<kThreads>("cub::BlockReduce");
        storage_.slot[tid] = input;
        __syncthreads();
        if (tid != 0)
        {
            return simdetail::poison<T>();
        }
        T acc = storage_.slot[0];
        for (int i = 1; i < numValid; ++i)
        {
            acc = op(acc, storage_.slot[i]);
        }
        return acc;
    }

    T Sum(T input)
    {
        return Reduce(input, simdetail::Sum());
    }

private:
    TempStorage& storage_;
};

} // namespace cub
