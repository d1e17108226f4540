// CPU simulation stand-in for cub::BlockScan (see ../../cudaSim.h): sequential prefix sums
// in thread order, every thread gets its own; reusing the storage needs __syncthreads().
#pragma once
#include "block_reduce.cuh"

namespace cub
{

enum BlockScanAlgorithm
{
    BLOCK_SCAN_RAKING,
    BLOCK_SCAN_RAKING_MEMOIZE,
    BLOCK_SCAN_WARP_SCANS,
};

template <typename T, int BLOCK_DIM_X, BlockScanAlgorithm ALGORITHM = BLOCK_SCAN_RAKING, int BLOCK_DIM_Y = 1,
    int BLOCK_DIM_Z = 1>
class BlockScan
{
    static constexpr int kThreads = BLOCK_DIM_X * BLOCK_DIM_Y * BLOCK_DIM_Z;

public:
    struct TempStorage
    {
        T slot[kThreads];
    };

    explicit BlockScan(TempStorage& storage)
        : storage_(storage)
    {
    }

    void InclusiveSum(T input, T& output)
    {
        int const tid = simdetail::checkedThread<BLOCK_DIM_X, BLOCK_DIM_Y, BLOCK_DIM_Z>("cub::BlockScan");
        storage_.slot[tid] = input;
        __syncthreads();
        T acc = storage_.slot[0];
        for (int i = 1; i <= tid; ++i)
        {
            acc = acc + storage_.slot[i];
        }
        output = acc;
    }

    void ExclusiveSum(T input, T& output)
    {
        int const tid = simdetail::checkedThread<BLOCK_DIM_X, BLOCK_DIM_Y, BLOCK_DIM_Z>("cub::BlockScan");
        storage_.slot[tid] = input;
        __syncthreads();
        T acc{};
        for (int i = 0; i < tid; ++i)
        {
            acc = acc + storage_.slot[i];
        }
        output = acc;
    }

private:
    TempStorage& storage_;
};

} // namespace cub
