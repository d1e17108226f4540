// CPU build of the NEG op from the same __host__ __device__ maths as the CUDA kernel
// (negMath.h).  Exposed with a C ABI for ctypes (trt_neg/kernels/host.py) so the
// per-row definition is tested against the torch reference without a GPU.
#include "negMath.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

using namespace trt_neg;

namespace
{
thread_local std::string gLastError;

int fail(std::string msg)
{
    gLastError = std::move(msg);
    return 1;
}

// The k largest of count unique keys by the kernel's radix select (negMath.h), run
// sequentially; unordered, as the kernel leaves them before its sort.
template <typename KeyAt>
void selectTopKeys(KeyAt keyAt, int64_t count, int32_t k, std::vector<uint64_t>& out)
{
    NegRadixState st = negRadixStart(k);
    int32_t hist[256];
    while (!st.done)
    {
        std::fill(hist, hist + 256, 0);
        for (int64_t j = 0; j < count; ++j)
        {
            uint64_t const key = keyAt(j);
            if (negRadixCounts(st, key))
                ++hist[negRadixDigit(st, key)];
        }
        negRadixAdvance(st, hist);
    }
    out.clear();
    for (int64_t j = 0; j < count && static_cast<int32_t>(out.size()) < k; ++j)
    {
        uint64_t const key = keyAt(j);
        if (negRadixSelected(st, key))
            out.push_back(key);
    }
}

struct ScanResult
{
    uint64_t best = 0; // argmax candidate key
    bool anyFinite = false;
    bool anyPosInf = false;
};

ScanResult scanLogits(float const* z, int64_t lo, int64_t hi)
{
    ScanResult r;
    for (int64_t i = lo; i < hi; ++i)
    {
        float const v = z[i];
        uint64_t const key = negCandidateKey(v, static_cast<uint32_t>(i));
        r.best = key > r.best ? key : r.best;
        r.anyFinite |= std::isfinite(v);
        r.anyPosInf |= (v == INFINITY);
    }
    return r;
}

// Gate + gated top-k sampling + guided logits for one row (entropy already known), in the
// CUDA kernel's steps: with plan.splits > 1, slice by slice (argmax key, flags and the
// slice's top min(k, slice) keys, 0-padded to perSlice), then the merge over the slices.
void sampleRow(float const* z, int64_t V, float entropy, float tau, int32_t topK, float temperature, uint64_t seed,
    uint64_t offset, NegSplitPlan const& plan, float* guided, int32_t* token, int32_t* fired, int32_t* status)
{
    bool const fire = negFires(entropy, tau);
    int32_t const k = static_cast<int32_t>(std::min<int64_t>(topK, V));
    auto const logitKeys = [z](int64_t lo)
    { return [z, lo](int64_t j) { return negCandidateKey(z[lo + j], static_cast<uint32_t>(lo + j)); }; };
    ScanResult row;
    std::vector<uint64_t> top;
    if (plan.splits <= 1)
    {
        row = scanLogits(z, 0, V);
        if (fire)
            selectTopKeys(logitKeys(0), V, k, top);
    }
    else
    {
        std::vector<uint64_t> cand(static_cast<size_t>(plan.splits) * plan.perSlice, 0);
        for (int32_t s = 0; s < plan.splits; ++s)
        {
            int64_t const lo = negSliceBegin(plan, s), hi = negSliceEnd(plan, s, V);
            ScanResult const r = scanLogits(z, lo, hi);
            row.best = std::max(row.best, r.best);
            row.anyFinite |= r.anyFinite;
            row.anyPosInf |= r.anyPosInf;
            if (fire)
            {
                int32_t const kk = static_cast<int32_t>(std::min<int64_t>(plan.perSlice, hi - lo));
                selectTopKeys(logitKeys(lo), hi - lo, kk, top);
                std::copy(top.begin(), top.end(), cand.begin() + static_cast<size_t>(s) * plan.perSlice);
            }
        }
        if (fire)
            selectTopKeys([&cand](int64_t j) { return cand[j]; }, static_cast<int64_t>(cand.size()), k, top);
    }
    int32_t const st = negRowStatus(entropy, row.anyFinite, row.anyPosInf);
    int32_t tok = static_cast<int32_t>(negCandidateId(row.best));
    if (fire)
    {
        std::sort(top.begin(), top.end(), std::greater<uint64_t>());
        std::vector<float> vals(top.size());
        for (size_t i = 0; i < top.size(); ++i)
            vals[i] = negCandidateLogit(top[i]);
        float const u = philoxUniform(seed, offset);
        int32_t const c = negSampleSorted(vals.data(), k, temperature, u);
        tok = static_cast<int32_t>(negCandidateId(top[c]));
    }
    if (guided)
    {
        if (negOneHotRow(fire, st))
        {
            std::fill(guided, guided + V, -INFINITY);
            guided[tok] = 0.0f;
        }
        else
        {
            for (int64_t i = 0; i < V; ++i)
                guided[i] = z[i] != z[i] ? -INFINITY : z[i];
        }
    }
    *token = tok;
    *fired = fire ? 1 : 0;
    *status = st;
}

int checkSampling(int64_t N, int64_t V, int32_t topK, float temperature)
{
    if (N < 0)
        return fail("N: must be >= 0");
    if (V < 1 || V > 0x7FFFFFFFLL)
        return fail("vocab_size: must be in [1, 2^31)");
    if (topK < 1)
        return fail("top_k: must be >= 1");
    if (!(temperature > 0.0f) || std::isinf(temperature))
        return fail("temperature: must be finite and > 0");
    return 0;
}

// The thread count of one call's parallel regions: numThreads, or OpenMP's default for 0. Given to
// each region as a num_threads clause, never through omp_set_num_threads: the library shares
// libgomp with torch, where that setting would outlive the call as torch's own thread count.
int callThreads(int32_t numThreads)
{
#if defined(_OPENMP)
    return numThreads > 0 ? numThreads : omp_get_max_threads();
#else
    (void) numThreads;
    return 1;
#endif
}
} // namespace

extern "C"
{

char const* trtneg_last_error()
{
    return gLastError.c_str();
}

int trtneg_has_openmp()
{
#if defined(_OPENMP)
    return 1;
#else
    return 0;
#endif
}

void trtneg_philox4x32_10(uint32_t const* counter, uint32_t const* key, uint32_t* out)
{
    Philox4 c;
    for (int i = 0; i < 4; ++i)
        c.v[i] = counter[i];
    Philox4 const r = philox4x32_10(c, key[0], key[1]);
    for (int i = 0; i < 4; ++i)
        out[i] = r.v[i];
}

float trtneg_philox_uniform(uint64_t seed, uint64_t offset)
{
    return philoxUniform(seed, offset);
}

// Gate + gated sampling for N rows given entropies (NEG-Head already applied).
// The CUDA kernel's split-V plan for (N, V, top_k, requested): {splits, sliceLen, perSlice}.
void trtneg_split_plan(int64_t N, int64_t V, int32_t topK, int32_t requested, int32_t* out)
{
    NegSplitPlan const plan = negSplitPlan(N, V, topK, requested);
    out[0] = plan.splits;
    out[1] = plan.sliceLen;
    out[2] = plan.perSlice;
}

// splits: 0 = the CUDA kernel's automatic plan for (N, V, top_k); 1 = one pass per row;
// > 1 = that many slices (clamped as negSplitPlan does).
int trtneg_gated_sample_host(float const* logits, int64_t N, int64_t V, float const* entropy, float tau, int32_t topK,
    float temperature, int64_t const* seeds, int64_t const* offsets, float* guided, int32_t* token, int32_t* fired,
    int32_t* status, int32_t numThreads, int32_t splits)
{
    if (checkSampling(N, V, topK, temperature))
        return 1;
    if (splits < 0)
        return fail("splits: must be >= 0 (0 = automatic)");
    NegSplitPlan const plan = negSplitPlan(N, V, static_cast<int32_t>(std::min<int64_t>(topK, V)), splits);
    [[maybe_unused]] int const threads = callThreads(numThreads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t n = 0; n < N; ++n)
    {
        sampleRow(logits + n * V, V, entropy[n], tau, topK, temperature, static_cast<uint64_t>(seeds[n]),
            static_cast<uint64_t>(offsets[n]), plan, guided ? guided + n * V : nullptr, token + n, fired + n, status + n);
    }
    return 0;
}

// NEG-Head: entropy[n] = softplus(b2 + sum_j w2[j] * act(b1[j] + W1[j,:] . h[n,:])), fp32 maths.
int trtneg_neg_head_host(void const* hidden, int32_t hiddenDtype, int64_t N, int64_t H, void const* w1,
    int32_t w1Dtype, float const* b1, float const* w2, float b2, int64_t d, int32_t activation, float* entropy,
    int32_t numThreads)
{
    if (!dtypeValid(hiddenDtype))
        return fail("hidden: dtype must be float32, float16 or bfloat16");
    if (!dtypeValid(w1Dtype))
        return fail("fc1_weight: dtype must be float32, float16 or bfloat16");
    if (!negActivationValid(activation))
        return fail("activation: unknown activation code");
    if (N < 0 || H < 1 || d < 1)
        return fail("shapes: need N >= 0, H >= 1, d >= 1");
    [[maybe_unused]] int const threads = callThreads(numThreads);
    DType const hT = static_cast<DType>(hiddenDtype), wT = static_cast<DType>(w1Dtype);
    std::vector<float> h(static_cast<size_t>(N * H));
    for (int64_t i = 0; i < N * H; ++i)
        h[i] = loadAsFloat(hidden, i, hT);
    std::vector<float> terms(static_cast<size_t>(N * d));
#pragma omp parallel num_threads(threads)
    {
        std::vector<float> wrow(static_cast<size_t>(H));
#pragma omp for schedule(static)
        for (int64_t j = 0; j < d; ++j)
        {
            for (int64_t i = 0; i < H; ++i)
                wrow[i] = loadAsFloat(w1, j * H + i, wT);
            for (int64_t n = 0; n < N; ++n)
            {
                float const* hr = h.data() + n * H;
                float acc = 0.0f;
                for (int64_t i = 0; i < H; ++i)
                    acc += wrow[i] * hr[i];
                terms[n * d + j] = w2[j] * negActivation(acc + b1[j], activation);
            }
        }
    }
    for (int64_t n = 0; n < N; ++n)
    {
        float s = 0.0f;
        for (int64_t j = 0; j < d; ++j)
            s += terms[n * d + j];
        entropy[n] = negSoftplus(s + b2);
    }
    return 0;
}

// The whole op: head + gate + gated sampling + guided logits.
int trtneg_neg_step_host(void const* hidden, int32_t hiddenDtype, int64_t N, int64_t H, float const* logits, int64_t V,
    void const* w1, int32_t w1Dtype, float const* b1, float const* w2, float b2, int64_t d, float tau,
    int32_t activation, int32_t topK, float temperature, int64_t const* seeds, int64_t const* offsets, float* guided,
    int32_t* token, float* entropy, int32_t* fired, int32_t* status, int32_t numThreads, int32_t splits)
{
    if (checkSampling(N, V, topK, temperature))
        return 1;
    if (trtneg_neg_head_host(hidden, hiddenDtype, N, H, w1, w1Dtype, b1, w2, b2, d, activation, entropy, numThreads))
        return 1;
    return trtneg_gated_sample_host(
        logits, N, V, entropy, tau, topK, temperature, seeds, offsets, guided, token, fired, status, numThreads, splits);
}

} // extern "C"
