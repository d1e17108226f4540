// Plain C++ checks of the TrtNegGatedDeltaRule plugin core (no TensorRT, no GPU):
// field parsing and serialisation round trip, type/shape rules, workspace, and the
// enqueue path (makeParams -> the CPU op) on host memory. Built and run by
// tests/test_gdn_plugin_core.py:  g++ -std=c++17 gdnCoreTest.cpp ../gdnPluginCore.cpp ../gdnHost.cpp
#include "../gdnHost.h"
#include "../gdnPluginCore.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace trt_neg::gdn;

static int gFailures = 0;

#define CHECK(cond)                                                                                                    \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                               \
            ++gFailures;                                                                                               \
        }                                                                                                              \
    } while (0)

static bool contains(std::string const& s, char const* part)
{
    return s.find(part) != std::string::npos;
}

struct Fields
{
    std::vector<int32_t> ints;
    float eps{1e-5f};
    std::vector<FieldView> v;
};

// num_k_heads, num_v_heads, head_k_dim, head_v_dim, type_id (+ optional extras).
static Fields makeFields(int32_t hk, int32_t hv, int32_t dk, int32_t dv, int32_t type, bool extras)
{
    Fields f;
    f.ints = {hk, hv, dk, dv, type, 1, 1, 0};
    f.v = {{"num_k_heads", &f.ints[0], kFIELD_INT32, 1}, {"num_v_heads", &f.ints[1], kFIELD_INT32, 1},
        {"head_k_dim", &f.ints[2], kFIELD_INT32, 1}, {"head_v_dim", &f.ints[3], kFIELD_INT32, 1},
        {"type_id", &f.ints[4], kFIELD_INT32, 1}};
    if (extras)
    {
        f.v.push_back({"remove_input_padding", &f.ints[5], kFIELD_INT32, 1});
        f.v.push_back({"gated_norm", &f.ints[6], kFIELD_INT32, 1});
        f.v.push_back({"norm_eps", &f.eps, kFIELD_FLOAT32, 1});
        f.v.push_back({"continue_context", &f.ints[7], kFIELD_INT32, 1});
    }
    return f;
}

static void testFields()
{
    // Defaults and the 9B's shapes.
    Fields f = makeFields(16, 32, 128, 128, kTRT_BF16, false);
    GdnPluginConfig c;
    CHECK(GdnPluginConfig::fromFields(f.v.data(), static_cast<int32_t>(f.v.size()), c).empty());
    CHECK(c.shape.numKHeads == 16 && c.shape.numVHeads == 32 && c.shape.headKDim == 128 && c.shape.headVDim == 128);
    CHECK(c.typeId == kTRT_BF16 && c.removeInputPadding == 1 && c.gatedNorm == 1 && c.continueContext == 0);
    CHECK(c.normEps == 1e-6f);
    CHECK(c.shape.convDim() == 2 * 16 * 128 + 32 * 128);
    CHECK(c.nbInputs() == 11 && GdnPluginConfig::nbOutputs() == 1 && c.workspaceSize() == 0);

    // All fields, then serialise and parse back: identical.
    Fields g = makeFields(2, 4, 8, 16, kTRT_HALF, true);
    g.ints[5] = 0;
    g.ints[6] = 0;
    g.ints[7] = 1;
    g.eps = 3e-5f;
    GdnPluginConfig d;
    CHECK(GdnPluginConfig::fromFields(g.v.data(), static_cast<int32_t>(g.v.size()), d).empty());
    std::vector<FieldView> ser = d.toFields();
    CHECK(ser.size() == GdnPluginConfig::fieldNames().size());
    for (size_t i = 0; i < ser.size(); ++i)
    {
        CHECK(std::strcmp(ser[i].name, GdnPluginConfig::fieldNames()[i].name) == 0);
        CHECK(ser[i].type == GdnPluginConfig::fieldNames()[i].type);
    }
    GdnPluginConfig e;
    CHECK(GdnPluginConfig::fromFields(ser.data(), static_cast<int32_t>(ser.size()), e).empty());
    CHECK(std::memcmp(&e.shape, &d.shape, sizeof e.shape) == 0);
    CHECK(e.typeId == kTRT_HALF && e.removeInputPadding == 0 && e.gatedNorm == 0 && e.continueContext == 1);
    CHECK(e.normEps == 3e-5f && e.nbInputs() == 9);

    // Errors.
    GdnPluginConfig x;
    Fields m = makeFields(16, 32, 128, 128, kTRT_BF16, false);
    CHECK(contains(GdnPluginConfig::fromFields(m.v.data(), 4, x), "missing field 'type_id'"));
    Fields u = makeFields(16, 32, 128, 128, kTRT_BF16, false);
    int32_t one = 1;
    u.v.push_back({"bogus", &one, kFIELD_INT32, 1});
    CHECK(contains(GdnPluginConfig::fromFields(u.v.data(), static_cast<int32_t>(u.v.size()), x), "unknown field"));
    Fields t = makeFields(16, 32, 128, 128, kTRT_BF16, true);
    t.v[7].type = kFIELD_INT32; // norm_eps as int
    CHECK(contains(GdnPluginConfig::fromFields(t.v.data(), static_cast<int32_t>(t.v.size()), x), "norm_eps"));
    Fields dup = makeFields(16, 32, 128, 128, kTRT_BF16, false);
    dup.v.push_back(dup.v[0]);
    CHECK(contains(GdnPluginConfig::fromFields(dup.v.data(), static_cast<int32_t>(dup.v.size()), x), "twice"));
    Fields r = makeFields(3, 4, 8, 8, kTRT_BF16, false);
    CHECK(contains(GdnPluginConfig::fromFields(r.v.data(), 5, x), "multiple"));
    Fields ty = makeFields(1, 1, 8, 8, kTRT_INT32, false);
    CHECK(contains(GdnPluginConfig::fromFields(ty.v.data(), 5, x), "type_id"));
    Fields big = makeFields(1, 1, 256, 256, kTRT_FLOAT, false);
    CHECK(contains(GdnPluginConfig::fromFields(big.v.data(), 5, x), "24576"));
    Fields len = makeFields(1, 1, 8, 8, kTRT_FLOAT, false);
    len.v[0].length = 2;
    CHECK(!GdnPluginConfig::fromFields(len.v.data(), 5, x).empty());
}

static void testTypesAndDims()
{
    Fields f = makeFields(2, 4, 8, 16, kTRT_BF16, false);
    GdnPluginConfig c;
    CHECK(GdnPluginConfig::fromFields(f.v.data(), 5, c).empty());
    int32_t const want[12] = {kTRT_BF16, kTRT_BF16, kTRT_BF16, kTRT_FLOAT, kTRT_FLOAT, kTRT_INT64, kTRT_INT32,
        kTRT_INT32, kTRT_INT32, kTRT_BF16, kTRT_FLOAT, kTRT_BF16};
    for (int32_t pos = 0; pos < 11; ++pos)
    {
        CHECK(c.expectedType(pos) == want[pos]);
    }
    // Position nbInputs() is the output.
    CHECK(c.expectedType(c.nbInputs()) == kTRT_BF16);

    int64_t const conv = 2 * 2 * 8 + 4 * 16; // 96
    int64_t qkv[2] = {-1, conv}, ab[2] = {-1, 4}, z[2] = {-1, 64}, hv[1] = {4}, one[1] = {1}, batch[1] = {-1},
            w[1] = {16};
    DimsView dims[11] = {{2, qkv}, {2, ab}, {2, ab}, {1, hv}, {1, hv}, {1, one}, {1, batch}, {1, batch}, {1, batch},
        {2, z}, {1, w}};
    CHECK(c.checkInputDims(dims, 11).empty());
    CHECK(contains(c.checkInputDims(dims, 10), "expected 11 inputs"));
    int64_t badQkv[2] = {-1, conv + 1};
    dims[0] = {2, badQkv};
    CHECK(contains(c.checkInputDims(dims, 11), "last dim must be 96"));
    dims[0] = {2, qkv};
    int64_t badW[1] = {8};
    dims[10] = {1, badW};
    CHECK(contains(c.checkInputDims(dims, 11), "norm_weight"));
    dims[10] = {1, w};
    int64_t rank3[3] = {2, 5, conv};
    dims[0] = {3, rank3};
    CHECK(contains(c.checkInputDims(dims, 11), "rank"));
    dims[0] = {2, qkv};
    int64_t tokensA[2] = {7, 4}, tokensQ[2] = {8, conv};
    dims[0] = {2, tokensQ};
    dims[1] = {2, tokensA};
    CHECK(contains(c.checkInputDims(dims, 11), "leading dims"));

    int64_t q3[3] = {3, 10, conv};
    std::vector<int64_t> od = c.outputDims(DimsView{3, q3});
    CHECK(od.size() == 3 && od[0] == 3 && od[1] == 10 && od[2] == 64);
}

// The enqueue path on host memory: makeParams from raw "inputs" then the CPU op must equal
// a direct call with the same data.
static void testEnqueuePath()
{
    Fields f = makeFields(1, 2, 4, 8, kTRT_FLOAT, false);
    GdnPluginConfig c;
    CHECK(GdnPluginConfig::fromFields(f.v.data(), 5, c).empty());
    int32_t const B = 3;
    std::vector<int32_t> lens = {5, 1, 3};
    std::vector<int32_t> last = {5, 6, 9};
    int64_t const T = 9;
    int64_t const conv = c.shape.convDim();
    std::mt19937 rng(1234);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    auto fill = [&](std::vector<float>& v, size_t n)
    {
        v.resize(n);
        for (auto& x : v)
            x = nd(rng);
    };
    std::vector<float> qkv, a, b, z, aLog, dtBias, w;
    fill(qkv, T * conv);
    fill(a, T * 2);
    fill(b, T * 2);
    fill(z, T * 16);
    fill(aLog, 2);
    fill(dtBias, 2);
    fill(w, 8);
    int64_t const slots = 5;
    std::vector<float> pool0;
    fill(pool0, slots * c.shape.stateFloatsPerSlot());
    std::vector<float> pool1 = pool0, pool2 = pool0;
    std::vector<int32_t> reqTypes = {kGENERATION, kCONTEXT, kCONTEXT};
    std::vector<int32_t> slotMap = {4, 0, 2};
    int64_t statePtr = static_cast<int64_t>(reinterpret_cast<intptr_t>(pool1.data()));
    std::vector<float> out1(T * 16, -7.0f), out2(T * 16, -7.0f);
    void const* inputs[11] = {qkv.data(), a.data(), b.data(), aLog.data(), dtBias.data(), &statePtr, reqTypes.data(),
        last.data(), slotMap.data(), z.data(), w.data()};
    int64_t qd[2] = {T, conv};
    GdnParams p;
    CHECK(c.makeParams(inputs, out1.data(), DimsView{2, qd}, B, p).empty());
    CHECK(p.statePool == pool1.data() && p.numTokens == T && p.batch == B && p.z == z.data());
    CHECK(!isContext(p.contextMask, 0) && isContext(p.contextMask, 1) && isContext(p.contextMask, 2));
    p.numSlots = slots;
    CHECK(forwardHost(p, 1) == nullptr);

    // Direct parameters, built by hand.
    GdnParams q;
    q.shape = c.shape;
    q.dtype = trt_neg::DType::kFLOAT32;
    q.normEps = 1e-6f;
    q.batch = B;
    q.numTokens = T;
    q.numSlots = slots;
    q.qkv = qkv.data();
    q.a = a.data();
    q.b = b.data();
    q.z = z.data();
    q.aLog = aLog.data();
    q.dtBias = dtBias.data();
    q.normWeight = w.data();
    q.statePool = pool2.data();
    q.slotMapping = slotMap.data();
    q.lastTokenIds = last.data();
    q.out = out2.data();
    setContext(q.contextMask, 1, true);
    setContext(q.contextMask, 2, true);
    CHECK(forwardHost(q, 1) == nullptr);
    CHECK(std::memcmp(out1.data(), out2.data(), out1.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(pool1.data(), pool2.data(), pool1.size() * sizeof(float)) == 0);
    // Untouched slots (1, 3) keep their contents; context slots (0, 2) were reset, generation slot 4 carried.
    size_t const per = static_cast<size_t>(c.shape.stateFloatsPerSlot());
    CHECK(std::memcmp(pool1.data() + 1 * per, pool0.data() + 1 * per, per * sizeof(float)) == 0);
    CHECK(std::memcmp(pool1.data() + 3 * per, pool0.data() + 3 * per, per * sizeof(float)) == 0);
    for (float o : out1)
    {
        CHECK(std::isfinite(o));
    }

    // Bad request type is reported by makeParams.
    reqTypes[1] = 2;
    CHECK(contains(c.makeParams(inputs, out1.data(), DimsView{2, qd}, B, p), "host_request_types[1]"));
    reqTypes[1] = kCONTEXT;
    // Duplicate slot is reported by the host op.
    slotMap[2] = 4;
    CHECK(c.makeParams(inputs, out1.data(), DimsView{2, qd}, B, p).empty());
    char const* err = forwardHost(p, 1);
    CHECK(err != nullptr && contains(err, "share slot"));
}

int main()
{
    testFields();
    testTypesAndDims();
    testEnqueuePath();
    if (gFailures)
    {
        std::printf("%d check(s) failed\n", gFailures);
        return 1;
    }
    std::printf("gdnCoreTest: all checks passed\n");
    return 0;
}
