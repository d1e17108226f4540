// Plain C++ checks of the TrtNegGatedDeltaRule plugin core (no TensorRT, no GPU):
// field parsing and serialisation round trip, type/shape rules, workspace, and the
// enqueue path (makeParams -> the CPU op) on host memory. Built and run by
// tests/test_gdn_plugin_core.py:
//   g++ -std=c++17 gdnCoreTest.cpp ../gdnPluginCore.cpp ../gdnHost.cpp ../../common/pluginFields.cpp
#include "../../common/testCheck.h"
#include "../gdnHost.h"
#include "../gdnPluginCore.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace trt_neg;
using namespace trt_neg::gdn;

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
static Fields makeFields(int32_t hk, int32_t hv, int32_t dk, int32_t dv, TensorType type, bool extras)
{
    Fields f;
    f.ints = {hk, hv, dk, dv, static_cast<int32_t>(type), 1, 1, 0};
    auto const i32 = FieldType::kINT32;
    f.v = {{"num_k_heads", &f.ints[0], i32, 1}, {"num_v_heads", &f.ints[1], i32, 1},
        {"head_k_dim", &f.ints[2], i32, 1}, {"head_v_dim", &f.ints[3], i32, 1}, {"type_id", &f.ints[4], i32, 1}};
    if (extras)
    {
        f.v.push_back({"remove_input_padding", &f.ints[5], i32, 1});
        f.v.push_back({"gated_norm", &f.ints[6], i32, 1});
        f.v.push_back({"norm_eps", &f.eps, FieldType::kFLOAT32, 1});
        f.v.push_back({"continue_context", &f.ints[7], i32, 1});
    }
    return f;
}

// Parses the first n fields into `out`: "" on success, else the FieldError message.
static std::string parse(std::vector<FieldView> const& v, size_t n, GdnPluginConfig& out)
{
    try
    {
        out = GdnPluginConfig::fromFields(v.data(), static_cast<int32_t>(n));
        return "";
    }
    catch (FieldError const& e)
    {
        return e.what();
    }
}

// Head dims are bounded by the scan kernel's real shared-memory footprint (scanSharedBytes:
// 4 * (dk * dv + 2 * dk + 64) B) against sm_86/89's 101,376 B opt-in limit, not by dk * dv.
static void testSharedMemoryBound()
{
    CHECK(kMinOptinSharedBytes == 101376);
    CHECK(scanSharedBytes(GdnShape{1, 1, 128, 128}) == 66816); // the 9B's heads, gdnKernel.h's 66.8 KB
    GdnPluginConfig x;
    auto accepted = [&](int32_t dk, int32_t dv)
    {
        Fields f = makeFields(1, 1, dk, dv, TensorType::kBF16, false);
        return parse(f.v, 5, x).empty();
    };
    CHECK(accepted(128, 128));
    // dk = 32, dv = 788: exactly 101,376 B; one more column is 128 B too many.
    CHECK(scanSharedBytes(GdnShape{1, 1, 32, 788}) == kMinOptinSharedBytes);
    CHECK(accepted(32, 788));
    CHECK(!accepted(32, 789));
    // dk * dv <= 24576 (the old bound) but the footprint does not fit sm_86/89.
    CHECK(!accepted(384, 64));    // 101,632 B
    CHECK(!accepted(24576, 1));   // 295,168 B
    CHECK(!accepted(12288, 2));   // 196,864 B
    CHECK(!accepted(1024, 24));   // 106,752 B
    Fields f = makeFields(1, 1, 384, 64, TensorType::kBF16, false);
    std::string const e = parse(f.v, 5, x);
    CHECK(contains(e, "head_k_dim = 384") && contains(e, "head_v_dim = 64") && contains(e, "101632")
        && contains(e, "101376"));
}

static void testFields()
{
    // Defaults and the 9B's shapes.
    Fields f = makeFields(16, 32, 128, 128, TensorType::kBF16, false);
    GdnPluginConfig c;
    CHECK(parse(f.v, f.v.size(), c).empty());
    CHECK(c.shape.numKHeads == 16 && c.shape.numVHeads == 32 && c.shape.headKDim == 128 && c.shape.headVDim == 128);
    CHECK(c.typeId == static_cast<int32_t>(TensorType::kBF16) && c.removeInputPadding == 1 && c.gatedNorm == 1
        && c.continueContext == 0);
    CHECK(c.normEps == 1e-6f);
    CHECK(c.shape.convDim() == 2 * 16 * 128 + 32 * 128);
    CHECK(c.nbInputs() == 11 && GdnPluginConfig::nbOutputs() == 1 && c.workspaceSize() == 0);

    // All fields, then serialise and parse back: identical.
    Fields g = makeFields(2, 4, 8, 16, TensorType::kHALF, true);
    g.ints[5] = 0;
    g.ints[6] = 0;
    g.ints[7] = 1;
    g.eps = 3e-5f;
    GdnPluginConfig d;
    CHECK(parse(g.v, g.v.size(), d).empty());
    FieldSet const serSet = d.toFields();
    FieldSet const specSet = GdnPluginConfig::fieldSpecs();
    std::vector<FieldView> const& ser = serSet.views();
    std::vector<FieldView> const& specs = specSet.views();
    CHECK(ser.size() == specs.size() && ser.size() == 9);
    for (size_t i = 0; i < ser.size(); ++i)
    {
        CHECK(std::strcmp(ser[i].name, specs[i].name) == 0);
        CHECK(ser[i].type == specs[i].type);
    }
    auto checkParsedBack = [&](std::vector<FieldView> const& fields)
    {
        GdnPluginConfig e;
        CHECK(parse(fields, fields.size(), e).empty());
        CHECK(std::memcmp(&e.shape, &d.shape, sizeof e.shape) == 0);
        CHECK(e.typeId == static_cast<int32_t>(TensorType::kHALF) && e.removeInputPadding == 0 && e.gatedNorm == 0
            && e.continueContext == 1);
        CHECK(e.normEps == 3e-5f && e.nbInputs() == 9);
    };
    checkParsedBack(ser);
    // Through the binary form as well (serializeFields / deserializeFields).
    std::vector<uint8_t> const blob = serializeFields(ser);
    FieldSet const back = deserializeFields(blob.data(), blob.size());
    checkParsedBack(back.views());
    CHECK(serializeFields(back.views()) == blob);

    // Errors.
    GdnPluginConfig x;
    Fields m = makeFields(16, 32, 128, 128, TensorType::kBF16, false);
    CHECK(contains(parse(m.v, 4, x), "missing field 'type_id'"));
    Fields u = makeFields(16, 32, 128, 128, TensorType::kBF16, false);
    int32_t one = 1;
    u.v.push_back({"bogus", &one, FieldType::kINT32, 1});
    CHECK(contains(parse(u.v, u.v.size(), x), "unknown field"));
    Fields t = makeFields(16, 32, 128, 128, TensorType::kBF16, true);
    t.v[7].type = FieldType::kINT32; // norm_eps as int
    CHECK(contains(parse(t.v, t.v.size(), x), "norm_eps"));
    Fields dup = makeFields(16, 32, 128, 128, TensorType::kBF16, false);
    dup.v.push_back(dup.v[0]);
    CHECK(contains(parse(dup.v, dup.v.size(), x), "twice"));
    Fields r = makeFields(3, 4, 8, 8, TensorType::kBF16, false);
    CHECK(contains(parse(r.v, 5, x), "multiple"));
    Fields ty = makeFields(1, 1, 8, 8, TensorType::kINT32, false);
    CHECK(contains(parse(ty.v, 5, x), "type_id"));
    Fields big = makeFields(1, 1, 256, 256, TensorType::kFLOAT, false);
    CHECK(contains(parse(big.v, 5, x), "shared memory"));
    testSharedMemoryBound();
    Fields len = makeFields(1, 1, 8, 8, TensorType::kFLOAT, false);
    len.v[0].length = 2;
    CHECK(!parse(len.v, 5, x).empty());
    Fields flag = makeFields(1, 1, 8, 8, TensorType::kFLOAT, true);
    flag.ints[6] = 2; // gated_norm must be 0 or 1
    CHECK(contains(parse(flag.v, flag.v.size(), x), "gated_norm"));
}

static void testTypesAndDims()
{
    Fields f = makeFields(2, 4, 8, 16, TensorType::kBF16, false);
    GdnPluginConfig c;
    CHECK(parse(f.v, 5, c).empty());
    using T = TensorType;
    T const want[12] = {T::kBF16, T::kBF16, T::kBF16, T::kFLOAT, T::kFLOAT, T::kINT64, T::kINT32, T::kINT32, T::kINT32,
        T::kBF16, T::kFLOAT, T::kBF16};
    for (int32_t pos = 0; pos < 11; ++pos)
    {
        CHECK(c.expectedType(pos) == want[pos]);
    }
    // Position nbInputs() is the output.
    CHECK(c.expectedType(c.nbInputs()) == T::kBF16);

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

// The profile's largest batch is checked at build time against what one call takes, on each
// of the three [batch] inputs.
static void testProfileMaxDims()
{
    Fields f = makeFields(2, 4, 8, 16, TensorType::kBF16, false);
    GdnPluginConfig c;
    CHECK(parse(f.v, 5, c).empty());
    int64_t const conv = 2 * 2 * 8 + 4 * 16;
    int64_t qkv[2] = {16384, conv}, ab[2] = {16384, 4}, z[2] = {16384, 64}, hv[1] = {4}, one[1] = {1},
            fits[1] = {kMaxSeqsPerCall}, tooMany[1] = {kMaxSeqsPerCall + 1}, w[1] = {16};
    DimsView dims[11] = {{2, qkv}, {2, ab}, {2, ab}, {1, hv}, {1, hv}, {1, one}, {1, fits}, {1, fits}, {1, fits},
        {2, z}, {1, w}};
    CHECK(c.checkProfileMaxDims(dims, 11).empty());
    for (int32_t pos : {kIN_HOST_REQUEST_TYPES, kIN_LAST_TOKEN_IDS, kIN_SLOT_MAPPING})
    {
        dims[pos] = {1, tooMany};
        std::string const err = c.checkProfileMaxDims(dims, 11);
        CHECK(contains(err, "the optimization profile allows 4097 sequences")
            && contains(err, "build with max_batch_size <= 4096"));
        dims[pos] = {1, fits};
    }
    CHECK(contains(c.checkProfileMaxDims(dims, 9), "expected 11 inputs, got 9"));
}

// The enqueue path on host memory: makeParams from raw "inputs" then the CPU op must equal
// a direct call with the same data.
static void testEnqueuePath()
{
    Fields f = makeFields(1, 2, 4, 8, TensorType::kFLOAT, false);
    GdnPluginConfig c;
    CHECK(parse(f.v, 5, c).empty());
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
    // The padded layout writes batch * max_seq_len rows (zeros past each length): fewer rows
    // than that is refused, not written past.
    {
        GdnParams r = q;
        r.removePadding = 0;
        r.maxSeqLen = 4;
        r.numTokens = static_cast<int64_t>(B) * 4 - 1;
        char const* bad = validate(r);
        CHECK(bad != nullptr && contains(bad, "num_tokens >= batch * max_seq_len"));
        r.numTokens = static_cast<int64_t>(B) * 4;
        CHECK(validate(r) == nullptr);
    }
    CHECK(std::memcmp(pool1.data(), pool2.data(), pool1.size() * sizeof(float)) == 0);
    // Untouched slots (1, 3) keep their contents; context slots (0, 2) were reset, generation slot 4 carried.
    size_t const per = static_cast<size_t>(c.shape.stateFloatsPerSlot());
    CHECK(std::memcmp(pool1.data() + 1 * per, pool0.data() + 1 * per, per * sizeof(float)) == 0);
    CHECK(std::memcmp(pool1.data() + 3 * per, pool0.data() + 3 * per, per * sizeof(float)) == 0);
    for (float o : out1)
    {
        CHECK(std::isfinite(o));
    }

    // Packed rows past last_token_ids[B-1] belong to no sequence: written as zeros (as the
    // padded layout's padding), the owned rows as before.
    {
        int64_t const tail = 3;
        int64_t qdTail[2] = {T + tail, conv};
        std::vector<float> qkvTail(qkv);
        qkvTail.resize((T + tail) * conv, 1.0f);
        std::vector<float> aTail(a), bTail(b), zTail(z);
        aTail.resize((T + tail) * 2, 1.0f);
        bTail.resize((T + tail) * 2, 1.0f);
        zTail.resize((T + tail) * 16, 1.0f);
        std::vector<float> pool3 = pool0;
        int64_t ptr3 = static_cast<int64_t>(reinterpret_cast<intptr_t>(pool3.data()));
        std::vector<float> out3((T + tail) * 16, -7.0f);
        void const* in3[11] = {qkvTail.data(), aTail.data(), bTail.data(), aLog.data(), dtBias.data(), &ptr3,
            reqTypes.data(), last.data(), slotMap.data(), zTail.data(), w.data()};
        GdnParams p3;
        CHECK(c.makeParams(in3, out3.data(), DimsView{2, qdTail}, B, p3).empty());
        CHECK(p3.numTokens == T + tail);
        CHECK(forwardHost(p3, 1) == nullptr);
        CHECK(std::memcmp(out3.data(), out1.data(), out1.size() * sizeof(float)) == 0);
        for (int64_t i = T * 16; i < (T + tail) * 16; ++i)
        {
            CHECK(out3[static_cast<size_t>(i)] == 0.0f);
        }
        // No sequence at all: every row is past the last one.
        std::vector<float> out4((T + tail) * 16, -7.0f);
        CHECK(c.makeParams(in3, out4.data(), DimsView{2, qdTail}, 0, p3).empty());
        CHECK(forwardHost(p3, 1) == nullptr);
        for (float o : out4)
        {
            CHECK(o == 0.0f);
        }
    }

    // A batch (last_token_ids' int64 dim) past int32 is refused, not truncated to 3.
    CHECK(contains(c.makeParams(inputs, out1.data(), DimsView{2, qd}, (int64_t{1} << 32) + B, p), "outside [0, 4096]"));
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
    testProfileMaxDims();
    testEnqueuePath();
    return checkSummary("gdnCoreTest: all checks passed");
}
