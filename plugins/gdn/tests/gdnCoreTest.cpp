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
    CHECK(e == "TrtNegGatedDeltaRule: head_k_dim = 384, head_v_dim = 64 need 101632 B of shared memory "
               "(4 * (head_k_dim * head_v_dim + 2 * head_k_dim + 64)), more than the 101376 B opt-in limit per "
               "block of sm_86/sm_89");
}

// The edges of what validate() accepts, the message of each refusal, and the optional flags
// as given (not their defaults).
static void testFieldLimits()
{
    GdnPluginConfig x;
    auto error = [&](int32_t hk, int32_t hv, int32_t dk, int32_t dv) {
        Fields f = makeFields(hk, hv, dk, dv, TensorType::kBF16, false);
        return parse(f.v, 5, x);
    };
    CHECK(error(1, 1, 1, 1).empty());
    char const* const positive = "TrtNegGatedDeltaRule: num_k_heads, num_v_heads, head_k_dim, head_v_dim must be positive";
    CHECK(error(0, 1, 1, 1) == positive && error(1, 0, 1, 1) == positive && error(1, 1, 0, 1) == positive
        && error(1, 1, 1, 0) == positive && error(1, 1, -1, 1) == positive);
    CHECK(error(2, 3, 1, 1) == "TrtNegGatedDeltaRule: num_v_heads must be a multiple of num_k_heads");
    // One CUDA thread per state column: 1024 at most, even where the shared memory would fit.
    CHECK(error(1, 1, 1, 1024).empty());
    CHECK(error(1, 1, 1, 1025) == "TrtNegGatedDeltaRule: head_v_dim must be <= 1024");

    Fields f = makeFields(1, 1, 8, 8, TensorType::kFLOAT, true);
    for (float const eps : {0.0f, 1e-3f})
    {
        f.eps = eps;
        CHECK(parse(f.v, f.v.size(), x).empty() && x.normEps == eps);
    }
    for (float const eps : {-1e-6f, INFINITY, NAN})
    {
        f.eps = eps;
        CHECK(parse(f.v, f.v.size(), x) == "TrtNegGatedDeltaRule: norm_eps must be finite and >= 0");
    }
    f.eps = 1e-5f;
    // Flags as given: 0 / 1 read as false / true, each the opposite of its default.
    f.ints[5] = 0; // remove_input_padding
    f.ints[6] = 0; // gated_norm
    f.ints[7] = 1; // continue_context
    CHECK(parse(f.v, f.v.size(), x).empty());
    CHECK(!x.removeInputPadding && !x.gatedNorm && x.continueContext && x.nbInputs() == 9);
    f.ints[5] = f.ints[6] = 1;
    f.ints[7] = 0;
    CHECK(parse(f.v, f.v.size(), x).empty());
    CHECK(x.removeInputPadding && x.gatedNorm && !x.continueContext && x.nbInputs() == 11);
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
    // Errors name each input as gdnPluginCore.h lists it (and TensorRT-LLM's network passes it).
    char const* const names[11] = {"qkv", "a", "b", "A_log", "dt_bias", "rnn_state_ptr", "host_request_types",
        "last_token_ids", "slot_mapping", "z", "norm_weight"};
    for (int32_t pos = 0; pos < 11; ++pos)
    {
        CHECK(inputLabel(pos) == "input " + std::to_string(pos) + " (" + names[pos] + ")");
    }
    CHECK(std::string(inputName(11)) == "?" && std::string(inputName(-1)) == "?");
    // Position nbInputs() is the output.
    CHECK(c.expectedType(c.nbInputs()) == T::kBF16);

    int64_t const conv = 2 * 2 * 8 + 4 * 16; // 96
    int64_t qkv[2] = {-1, conv}, ab[2] = {-1, 4}, z[2] = {-1, 64}, hv[1] = {4}, one[1] = {1}, batch[1] = {-1},
            w[1] = {16};
    DimsView dims[11] = {{2, qkv}, {2, ab}, {2, ab}, {1, hv}, {1, hv}, {1, one}, {1, batch}, {1, batch}, {1, batch},
        {2, z}, {1, w}};
    CHECK(c.checkInputDims(dims, 11).empty());
    CHECK(c.checkInputDims(dims, 10) == "TrtNegGatedDeltaRule: expected 11 inputs, got 10");
    // Each refusal names the input (by position) and its dims; dims of 0 are sizes, not unknown.
    auto refusal = [&](int32_t pos, DimsView bad) {
        DimsView const good = dims[pos];
        dims[pos] = bad;
        std::string const e = c.checkInputDims(dims, 11);
        dims[pos] = good;
        return e;
    };
    int64_t badQkv[2] = {-1, conv + 1}, emptyQkv[2] = {-1, 0};
    CHECK(refusal(0, {2, badQkv}) == "TrtNegGatedDeltaRule: input 0 (qkv) [-1, 97]: last dim must be 96");
    CHECK(refusal(0, {2, emptyQkv}) == "TrtNegGatedDeltaRule: input 0 (qkv) [-1, 0]: last dim must be 96");
    int64_t badZ[2] = {-1, 63};
    CHECK(refusal(9, {2, badZ}) == "TrtNegGatedDeltaRule: input 9 (z) [-1, 63]: last dim must be 64");
    int64_t badW[1] = {8};
    CHECK(refusal(10, {1, badW}) == "TrtNegGatedDeltaRule: norm_weight must be [head_v_dim]");
    int64_t three[1] = {3};
    CHECK(refusal(3, {1, three}) == "TrtNegGatedDeltaRule: A_log and dt_bias must be [num_v_heads]");
    CHECK(refusal(4, {1, three}) == "TrtNegGatedDeltaRule: A_log and dt_bias must be [num_v_heads]");
    int64_t two[1] = {2};
    CHECK(refusal(5, {1, two}) == "TrtNegGatedDeltaRule: rnn_state_ptr must be [1] (paged state)");
    int64_t rank3[3] = {2, 5, conv};
    CHECK(refusal(0, {3, rank3}) == "TrtNegGatedDeltaRule: input 0 (qkv) must have rank 2, got [2, 5, 96]");
    int64_t tokensA[2] = {7, 4}, tokensQ[2] = {8, conv}, noTokensQ[2] = {0, conv};
    dims[1] = {2, tokensA};
    CHECK(refusal(0, {2, tokensQ}) == "TrtNegGatedDeltaRule: input 1 (a) [7, 4]: leading dims must match qkv [8, 96]");
    CHECK(refusal(0, {2, noTokensQ}) == "TrtNegGatedDeltaRule: input 1 (a) [7, 4]: leading dims must match qkv [0, 96]");
    dims[1] = {2, ab};
    // host_request_types, last_token_ids and slot_mapping: one batch, at most kMaxSeqsPerCall.
    int64_t b2[1] = {2}, b3[1] = {3}, most[1] = {kMaxSeqsPerCall}, tooMany[1] = {kMaxSeqsPerCall + 1};
    dims[6] = {1, b2};
    char const* const oneBatch
        = "TrtNegGatedDeltaRule: host_request_types, last_token_ids and slot_mapping must all be [batch]";
    CHECK(refusal(7, {1, b3}) == oneBatch && refusal(8, {1, b3}) == oneBatch);
    for (int32_t pos : {6, 7, 8})
        dims[pos] = {1, most};
    CHECK(c.checkInputDims(dims, 11).empty());
    for (int32_t pos : {6, 7, 8})
        dims[pos] = {1, tooMany};
    CHECK(c.checkInputDims(dims, 11) == "TrtNegGatedDeltaRule: at most 4096 sequences per call");
    for (int32_t pos : {6, 7, 8})
        dims[pos] = {1, batch};

    // The padded layout (remove_input_padding = 0): [batch, max_len, *] activations.
    Fields padded = makeFields(2, 4, 8, 16, TensorType::kBF16, true);
    padded.ints[5] = 0;
    GdnPluginConfig pc;
    CHECK(parse(padded.v, padded.v.size(), pc).empty());
    int64_t pq[3] = {2, 5, conv}, pab[3] = {2, 5, 4}, pz[3] = {2, 5, 64}, longerA[3] = {2, 6, 4};
    DimsView pdims[11] = {{3, pq}, {3, pab}, {3, pab}, {1, hv}, {1, hv}, {1, one}, {1, b2}, {1, b2}, {1, b2},
        {3, pz}, {1, w}};
    CHECK(pc.checkInputDims(pdims, 11).empty());
    CHECK(c.checkInputDims(pdims, 11) == "TrtNegGatedDeltaRule: input 0 (qkv) must have rank 2, got [2, 5, 96]");
    pdims[1] = {3, longerA};
    CHECK(pc.checkInputDims(pdims, 11) == "TrtNegGatedDeltaRule: input 1 (a) [2, 6, 4]: leading dims must match qkv [2, 5, 96]");
    // Three padded sequences where the [batch] inputs say two.
    int64_t q3[3] = {3, 5, conv}, ab3[3] = {3, 5, 4}, z3[3] = {3, 5, 64};
    pdims[0] = {3, q3};
    pdims[1] = pdims[2] = {3, ab3};
    pdims[9] = {3, z3};
    CHECK(pc.checkInputDims(pdims, 11) == "TrtNegGatedDeltaRule: padded qkv must be [batch, max_len, conv_dim]");

    int64_t q310[3] = {3, 10, conv};
    std::vector<int64_t> od = c.outputDims(DimsView{3, q310});
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
        std::string const name = pos == kIN_HOST_REQUEST_TYPES ? "host_request_types"
            : pos == kIN_LAST_TOKEN_IDS                       ? "last_token_ids"
                                                              : "slot_mapping";
        CHECK(err == "TrtNegGatedDeltaRule: the optimization profile allows 4097 sequences (" + name
                + " [4097]), more than the 4096 one call takes: build with max_batch_size <= 4096");
        dims[pos] = {1, fits};
    }
    CHECK(contains(c.checkProfileMaxDims(dims, 9), "expected 11 inputs, got 9"));
}

// makeParams carries every field of the config into the kernel parameters, reads the padded
// layout's max_len and rows from qkv's dims, and reads every request type (the first included).
static void testMakeParamsFromFields()
{
    Fields f = makeFields(2, 4, 8, 16, TensorType::kHALF, true);
    f.ints[5] = 0; // remove_input_padding: padded [batch, max_len, conv]
    f.ints[6] = 0; // gated_norm: 9 inputs, no z / norm_weight
    f.ints[7] = 1; // continue_context
    f.eps = 3e-5f;
    GdnPluginConfig c;
    CHECK(parse(f.v, f.v.size(), c).empty());
    float buf[8] = {};
    int64_t const pool = static_cast<int64_t>(reinterpret_cast<intptr_t>(buf));
    std::vector<int32_t> reqTypes = {kCONTEXT, kGENERATION, kCONTEXT}, last = {3, 4, 11}, slots = {0, 1, 2};
    void const* inputs[9] = {buf, buf + 1, buf + 2, buf + 3, buf + 4, &pool, reqTypes.data(), last.data(), slots.data()};
    int64_t qd[3] = {3, 4, c.shape.convDim()};
    GdnParams p;
    CHECK(c.makeParams(inputs, buf + 5, DimsView{3, qd}, 3, p).empty());
    CHECK(p.dtype == trt_neg::DType::kFLOAT16 && p.normEps == 3e-5f && p.removePadding == 0 && p.continueContext == 1);
    CHECK(p.batch == 3 && p.maxSeqLen == 4 && p.numTokens == 12);
    CHECK(p.z == nullptr && p.normWeight == nullptr && p.out == buf + 5 && p.qkv == buf && p.a == buf + 1
        && p.b == buf + 2 && p.aLog == buf + 3 && p.dtBias == buf + 4 && p.statePool == buf);
    CHECK(isContext(p.contextMask, 0) && !isContext(p.contextMask, 1) && isContext(p.contextMask, 2));
    reqTypes[0] = 2;
    CHECK(c.makeParams(inputs, buf + 5, DimsView{3, qd}, 3, p)
        == "TrtNegGatedDeltaRule: host_request_types[0] = 2 (expected 0 context or 1 generation)");
    // kMaxSeqsPerCall sequences is the limit, not past it.
    std::vector<int32_t> many(kMaxSeqsPerCall + 1, kGENERATION);
    inputs[kIN_HOST_REQUEST_TYPES] = many.data();
    inputs[kIN_LAST_TOKEN_IDS] = many.data();
    inputs[kIN_SLOT_MAPPING] = many.data();
    int64_t qm[3] = {kMaxSeqsPerCall, 1, c.shape.convDim()};
    CHECK(c.makeParams(inputs, buf + 5, DimsView{3, qm}, kMaxSeqsPerCall, p).empty() && p.batch == kMaxSeqsPerCall);
    CHECK(c.makeParams(inputs, buf + 5, DimsView{3, qm}, kMaxSeqsPerCall + 1, p)
        == "TrtNegGatedDeltaRule: batch 4097 outside [0, 4096]");
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
    testFieldLimits();
    testTypesAndDims();
    testProfileMaxDims();
    testMakeParamsFromFields();
    testEnqueuePath();
    return checkSummary("gdnCoreTest: all checks passed");
}
