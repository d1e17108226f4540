// GPU check of the Gated DeltaNet kernel against the CPU host op (same maths, gdnMath.h and
// gdnChunk.h): a mixed batch (context + generation, permuted slots) per head config, dtype
// and context algorithm (scan, chunked at the device's chunk size, auto), the host run with
// the same algorithm and chunk size. Prints one line per case and exits non-zero on a
// mismatch. Built and run by tests/test_gdn_plugin_core.py::test_kernel_on_gpu (marked gpu):
//   nvcc -std=c++17 -O2 gdnKernelTest.cu ../gdnKernel.cu ../gdnHost.cpp -o gdnKernelTest
// and, with `--small-heads` (the head configs with dk, dv <= 16), on the CPU simulation of CUDA
// by tests/test_gdn_kernel_sim.py, so the program itself is tested before a GPU runs it.
#include "../gdnChunk.h"
#include "../gdnHost.h"
#include "../gdnKernel.h"
#include "../gdnMath.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

using namespace trt_neg;
using namespace trt_neg::gdn;

#define CUDA_OK(x)                                                                                                     \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t e_ = (x);                                                                                          \
        if (e_ != cudaSuccess)                                                                                         \
        {                                                                                                              \
            std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__);                      \
            std::exit(2);                                                                                              \
        }                                                                                                              \
    } while (0)

template <typename T>
T* toDevice(std::vector<T> const& v)
{
    T* d = nullptr;
    CUDA_OK(cudaMalloc(&d, v.size() * sizeof(T) + 1));
    CUDA_OK(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

std::vector<uint8_t> encode(std::vector<float> const& v, DType t)
{
    std::vector<uint8_t> out(v.size() * dtypeSize(t));
    for (size_t i = 0; i < v.size(); ++i)
        storeFromFloat(out.data(), static_cast<int64_t>(i), t, v[i]);
    return out;
}

// Returns the max |gpu - cpu| / (1 + |cpu|) over outputs and states.
double runCase(int hk, int hv, int dk, int dv, DType dt, bool gated, ContextAlgo algo, int chunk, unsigned seed)
{
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    GdnShape shape{hk, hv, dk, dv};
    std::vector<int32_t> lens = {1, 150, 1, 37, 64, 1};
    std::vector<int32_t> types = {kGENERATION, kCONTEXT, kGENERATION, kCONTEXT, kCONTEXT, kGENERATION};
    std::vector<int32_t> slots = {7, 0, 3, 5, 1, 2};
    int const B = static_cast<int>(lens.size());
    std::vector<int32_t> last(B);
    int64_t T = 0;
    for (int i = 0; i < B; ++i)
        last[i] = static_cast<int32_t>(T += lens[i]);
    int64_t const numSlots = 8;
    auto rnd = [&](size_t n, float scale)
    {
        std::vector<float> v(n);
        for (auto& x : v)
            x = nd(rng) * scale;
        return v;
    };
    std::vector<float> qkv = rnd(T * shape.convDim(), 1.f), a = rnd(T * hv, 1.f), b = rnd(T * hv, 2.f),
                       z = rnd(T * shape.valueDim(), 1.f), aLog = rnd(hv, .5f), dtb = rnd(hv, .5f), w = rnd(dv, .3f),
                       pool = rnd(numSlots * shape.stateFloatsPerSlot(), .1f);
    for (auto& x : w)
        x += 1.0f;
    auto qkvB = encode(qkv, dt), aB = encode(a, dt), bB = encode(b, dt), zB = encode(z, dt);

    GdnParams p;
    p.shape = shape;
    p.dtype = dt;
    p.normEps = 1e-6f;
    p.batch = B;
    p.numTokens = T;
    p.numSlots = numSlots;
    for (int i = 0; i < B; ++i)
        setContext(p.contextMask, i, types[i] == kCONTEXT);

    // CPU.
    std::vector<float> poolCpu = pool;
    std::vector<uint8_t> outCpu(T * shape.valueDim() * dtypeSize(dt));
    GdnParams h = p;
    h.qkv = qkvB.data();
    h.a = aB.data();
    h.b = bB.data();
    h.z = gated ? zB.data() : nullptr;
    h.aLog = aLog.data();
    h.dtBias = dtb.data();
    h.normWeight = w.data();
    h.statePool = poolCpu.data();
    h.slotMapping = slots.data();
    h.lastTokenIds = last.data();
    h.out = outCpu.data();
    if (char const* err = forwardHost(h, 0, algo, chunk > 0 ? chunk : kHostChunkSize))
    {
        std::printf("host error: %s\n", err);
        std::exit(3);
    }

    // GPU.
    GdnParams d = p;
    d.qkv = toDevice(qkvB);
    d.a = toDevice(aB);
    d.b = toDevice(bB);
    d.z = gated ? toDevice(zB) : nullptr;
    d.aLog = toDevice(aLog);
    d.dtBias = toDevice(dtb);
    d.normWeight = toDevice(w);
    d.statePool = toDevice(pool);
    d.slotMapping = toDevice(slots);
    d.lastTokenIds = toDevice(last);
    std::vector<uint8_t> outGpu(outCpu.size());
    d.out = toDevice(outGpu);
    CUDA_OK(launch(d, nullptr, algo));
    CUDA_OK(cudaDeviceSynchronize());
    CUDA_OK(cudaMemcpy(outGpu.data(), d.out, outGpu.size(), cudaMemcpyDeviceToHost));
    std::vector<float> poolGpu(pool.size());
    CUDA_OK(cudaMemcpy(poolGpu.data(), d.statePool, pool.size() * sizeof(float), cudaMemcpyDeviceToHost));

    double worst = 0.0;
    for (int64_t i = 0; i < T * shape.valueDim(); ++i)
    {
        double const c = loadAsFloat(outCpu.data(), i, dt);
        double const g = loadAsFloat(outGpu.data(), i, dt);
        worst = std::fmax(worst, std::fabs(g - c) / (1.0 + std::fabs(c)));
        if (!std::isfinite(g))
            worst = INFINITY;
    }
    for (size_t i = 0; i < pool.size(); ++i)
        worst = std::fmax(worst, std::fabs(poolGpu[i] - poolCpu[i]) / (1.0 + std::fabs(poolCpu[i])));
    for (void const* ptr : {d.qkv, d.a, d.b, d.z, static_cast<void const*>(d.aLog), static_cast<void const*>(d.dtBias),
             static_cast<void const*>(d.normWeight), static_cast<void const*>(d.statePool),
             static_cast<void const*>(d.slotMapping), static_cast<void const*>(d.lastTokenIds),
             static_cast<void const*>(d.out)})
        cudaFree(const_cast<void*>(ptr));
    return worst;
}

int main(int argc, char** argv)
{
    bool const smallHeads = argc > 1 && std::strcmp(argv[1], "--small-heads") == 0;
    struct Cfg
    {
        int hk, hv, dk, dv;
    };
    Cfg const cfgs[] = {{2, 2, 16, 16}, {2, 4, 8, 16}, {1, 4, 16, 8}, {16, 32, 128, 128}, {4, 8, 128, 128}};
    DType const dts[] = {DType::kFLOAT32, DType::kFLOAT16, DType::kBFLOAT16};
    char const* names[] = {"fp32", "fp16", "bf16"};
    ContextAlgo const algos[] = {ContextAlgo::kScan, ContextAlgo::kChunked, ContextAlgo::kAuto};
    char const* algoNames[] = {"scan", "chunked", "auto"};
    int device = 0;
    int maxOptin = 0;
    CUDA_OK(cudaGetDevice(&device));
    CUDA_OK(cudaDeviceGetAttribute(&maxOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    int failures = 0;
    unsigned seed = 1;
    for (auto const& c : cfgs)
    {
        if (smallHeads && (c.dk > 16 || c.dv > 16))
            continue;
        int const chunk = pickChunkSize(GdnShape{c.hk, c.hv, c.dk, c.dv}, maxOptin);
        for (int a = 0; a < 3; ++a)
        {
            if (chunk == 0 && algos[a] == ContextAlgo::kChunked)
                continue; // the launcher refuses a forced chunked path that does not fit
            for (int t = 0; t < 3; ++t)
            {
                for (int gated = 0; gated < 2; ++gated)
                {
                    double const err = runCase(c.hk, c.hv, c.dk, c.dv, dts[t], gated != 0, algos[a], chunk, seed++);
                    // fp32: reduction order only; half types: +1 ulp of the output format.
                    double const tol = t == 0 ? 1e-4 : (t == 1 ? 2e-3 : 1.6e-2);
                    bool const ok = err <= tol;
                    failures += ok ? 0 : 1;
                    std::printf("%s Hk=%d Hv=%d dk=%d dv=%d %s gated=%d %s chunk=%d max_rel_err=%.3g (tol %.1g)\n",
                        ok ? "ok  " : "FAIL", c.hk, c.hv, c.dk, c.dv, names[t], gated, algoNames[a], chunk, err, tol);
                }
            }
        }
    }
    if (failures)
        std::printf("gdnKernelTest: %d case(s) failed\n", failures);
    else
        std::printf("gdnKernelTest: all cases passed\n");
    return failures ? 1 : 0;
}
