// Tests of the NEG plugin's plain-C++ core (fields, validation, shape/type rules,
// serialisation round trip, workspace, launch params).  Built and run by
// tests/test_neg_compile.py with g++ only; prints "ALL OK" on success.
#include "../../common/testCheck.h"
#include "../negMath.h"
#include "../negPluginCore.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace trt_neg;

template <typename F>
static bool throwsNaming(F f, char const* needle)
{
    try
    {
        f();
    }
    catch (FieldError const& e)
    {
        bool const ok = std::string(e.what()).find(needle) != std::string::npos;
        if (!ok)
            std::printf("  message was: %s\n", e.what());
        return ok;
    }
    return false;
}

static NegPluginConfig sample()
{
    NegPluginConfig c;
    c.hiddenSize = 4096;
    c.headHiddenSize = 1024;
    c.vocabSize = 248320;
    c.topK = 8;
    c.temperature = 0.7f;
    c.seed = -1234567890123LL;
    c.activation = kNEG_ACT_GELU_TANH;
    return c;
}

static void testRoundTrip()
{
    NegPluginConfig const c = sample();
    FieldSet const f = c.toFields();
    auto const& v = f.views();
    NegPluginConfig const back = NegPluginConfig::fromFields(v.data(), static_cast<int32_t>(v.size()));
    CHECK(back == c);
    std::vector<uint8_t> const blob = serializeFields(v);
    FieldSet const g = deserializeFields(blob.data(), blob.size());
    auto const& w = g.views();
    CHECK(NegPluginConfig::fromFields(w.data(), static_cast<int32_t>(w.size())) == c);
    CHECK(serializeFields(w) == blob);
    CHECK(throwsNaming([&] { deserializeFields(blob.data(), blob.size() - 3); }, "truncated"));
    std::vector<uint8_t> badMagic = blob;
    badMagic[0] = 'X';
    CHECK(throwsNaming([&] { deserializeFields(badMagic.data(), badMagic.size()); }, "magic"));
    // The engine's metadata / timing-cache id: every field, the temperature to float precision.
    CHECK(c.toString() == "hidden_size=4096;head_hidden_size=1024;vocab_size=248320;top_k=8;temperature=0.699999988;"
                          "seed=-1234567890123;activation=gelu_tanh");
    CHECK(NegPluginConfig::fieldSpecs().size() == 7);
}

static void testFieldParsing()
{
    int32_t const h = 64, d = 16, v = 5000, k = 4;
    int64_t const seed = 42;
    double const temp = 1.5;
    char const act[] = "relu";
    std::vector<FieldView> f = {{"hidden_size", &h, FieldType::kINT32, 1}, {"head_hidden_size", &d, FieldType::kINT32, 1},
        {"vocab_size", &v, FieldType::kINT32, 1}, {"top_k", &k, FieldType::kINT32, 1},
        {"temperature", &temp, FieldType::kFLOAT64, 1}, {"seed", &seed, FieldType::kINT64, 1},
        {"activation", act, FieldType::kCHAR, 5}};
    NegPluginConfig const c = NegPluginConfig::fromFields(f.data(), static_cast<int32_t>(f.size()));
    CHECK(c.hiddenSize == 64 && c.headHiddenSize == 16 && c.vocabSize == 5000 && c.topK == 4);
    CHECK(c.temperature == 1.5f && c.seed == 42 && c.activation == kNEG_ACT_RELU);

    auto without = [&](char const* name) {
        std::vector<FieldView> g;
        for (auto const& x : f)
            if (std::string(x.name) != name)
                g.push_back(x);
        return g;
    };
    auto parse = [](std::vector<FieldView> const& g) { NegPluginConfig::fromFields(g.data(), static_cast<int32_t>(g.size())); };
    CHECK(throwsNaming([&] { parse(without("vocab_size")); }, "vocab_size"));
    {
        auto g = without("top_k"); // default top_k = 8
        NegPluginConfig const c2 = NegPluginConfig::fromFields(g.data(), static_cast<int32_t>(g.size()));
        CHECK(c2.topK == 8);
    }
    {
        // Only the three required sizes: every optional field takes its documented default.
        std::vector<FieldView> const g(f.begin(), f.begin() + 3);
        NegPluginConfig const c3 = NegPluginConfig::fromFields(g.data(), static_cast<int32_t>(g.size()));
        CHECK(c3.topK == 8 && c3.temperature == 1.0f && c3.seed == 0 && c3.activation == kNEG_ACT_SILU);
    }
    int32_t const zero = 0, big = 2000;
    float const negT = -1.0f;
    char const badAct[] = "tanh";
    auto with = [&](FieldView nf) {
        auto g = without(nf.name);
        g.push_back(nf);
        return g;
    };
    CHECK(throwsNaming([&] { parse(with({"top_k", &zero, FieldType::kINT32, 1})); }, "top_k"));
    CHECK(throwsNaming([&] { parse(with({"top_k", &big, FieldType::kINT32, 1})); }, "top_k"));
    CHECK(throwsNaming([&] { parse(with({"temperature", &negT, FieldType::kFLOAT32, 1})); }, "temperature"));
    CHECK(throwsNaming([&] { parse(with({"activation", badAct, FieldType::kCHAR, 4})); }, "activation"));
    CHECK(throwsNaming([&] { parse(with({"activation", &big, FieldType::kINT32, 1})); }, "activation"));
    CHECK(throwsNaming([&] { parse(with({"hidden_size", &zero, FieldType::kINT32, 1})); }, "hidden_size"));
    CHECK(throwsNaming([&] { parse(with({"hidden_size", &h, FieldType::kINT32, 2})); }, "hidden_size"));
    CHECK(throwsNaming([&] { parse(with({"hidden_size", nullptr, FieldType::kINT32, 1})); },
        "plugin field 'hidden_size': has no data (a null pointer)"));
    CHECK(throwsNaming([&] { parse(with({"seed", &temp, FieldType::kFLOAT64, 1})); }, "seed"));
    CHECK(throwsNaming([&] { parse(with({"bogus", &h, FieldType::kINT32, 1})); }, "bogus"));
    int32_t const hugeV = (1 << 30) + 1; // past the kernel's strided-index limit
    CHECK(throwsNaming([&] { parse(with({"vocab_size", &hugeV, FieldType::kINT32, 1})); }, "vocab_size"));
    // top_k above 1024 is fine when it covers a small vocabulary (k = min(top_k, V)).
    int32_t const smallV = 7;
    auto g = with({"vocab_size", &smallV, FieldType::kINT32, 1});
    g = [&] {
        std::vector<FieldView> r;
        for (auto const& x : g)
            if (std::string(x.name) != "top_k")
                r.push_back(x);
        r.push_back({"top_k", &big, FieldType::kINT32, 1});
        return r;
    }();
    CHECK(NegPluginConfig::fromFields(g.data(), static_cast<int32_t>(g.size())).topK == 2000);
}

// The FieldError message of parsing `f`, or "" when it parses.
static std::string parseError(std::vector<FieldView> const& f)
{
    try
    {
        NegPluginConfig::fromFields(f.data(), static_cast<int32_t>(f.size()));
        return "";
    }
    catch (FieldError const& e)
    {
        return e.what();
    }
}

// The shared readers (pluginFields.cpp) as the NEG fields use them: int32 range, bools, strings,
// unnamed fields and the first required field.
static void testSharedFieldReaders()
{
    int64_t const i32max = INT32_MAX, i32min = INT32_MIN, above = i32max + 1, below = i32min - 1;
    auto asInt32 = [](int64_t const& v) -> int64_t {
        try
        {
            return fieldAsInt32({"x", &v, FieldType::kINT64, 1});
        }
        catch (FieldError const&)
        {
            return -1;
        }
    };
    CHECK(asInt32(i32max) == INT32_MAX && asInt32(i32min) == INT32_MIN);
    CHECK(throwsNaming([&] { fieldAsInt32({"x", &above, FieldType::kINT64, 1}); }, "plugin field 'x': value out of int32 range"));
    CHECK(throwsNaming([&] { fieldAsInt32({"x", &below, FieldType::kINT64, 1}); }, "plugin field 'x': value out of int32 range"));
    int32_t const zero = 0, one = 1;
    CHECK(!fieldAsBool({"b", &zero, FieldType::kINT32, 1}) && fieldAsBool({"b", &one, FieldType::kINT32, 1}));
    auto asString = [](char const* text, int32_t length) -> std::string {
        try
        {
            return fieldAsString({"s", text, FieldType::kCHAR, length});
        }
        catch (FieldError const& e)
        {
            return e.what();
        }
    };
    CHECK(asString("relu\0\0", 6) == "relu"); // lengths may count terminators
    CHECK(asString("\0", 1).empty() && asString("", 0).empty());

    int32_t const h = 64, d = 16, v = 5000;
    int64_t const wide = (int64_t{1} << 32) + 64; // truncated to int32 this would read as 64
    std::vector<FieldView> const sizes = {{"hidden_size", &wide, FieldType::kINT64, 1},
        {"head_hidden_size", &d, FieldType::kINT32, 1}, {"vocab_size", &v, FieldType::kINT32, 1}};
    CHECK(parseError(sizes) == "plugin field 'hidden_size': value out of int32 range");
    std::vector<FieldView> const noHidden = {sizes[1], sizes[2]};
    CHECK(parseError(noHidden) == "NegGatedSampling: missing field 'hidden_size'");
    std::vector<FieldView> const unnamed = {{nullptr, &h, FieldType::kINT32, 1}, sizes[1], sizes[2]};
    CHECK(parseError(unnamed) == "NegGatedSampling: field without a name");
    for (int32_t length : {5, -1})
    {
        std::vector<FieldView> const noText = {{"hidden_size", &h, FieldType::kINT32, 1}, sizes[1], sizes[2],
            {"activation", nullptr, FieldType::kCHAR, length}};
        CHECK(parseError(noText) == "plugin field 'activation': expected a string (kCHAR) field");
    }
}

// The activation code `f` parses to, or -1 (the message printed) when it is refused.
static int32_t parsedActivation(std::vector<FieldView> const& f)
{
    std::string const error = parseError(f);
    if (!error.empty())
    {
        std::printf("  refused: %s\n", error.c_str());
        return -1;
    }
    return NegPluginConfig::fromFields(f.data(), static_cast<int32_t>(f.size())).activation;
}

// Every activation name a Hugging Face config may give, by name (kCHAR) or by code.
static void testActivationNames()
{
    int32_t const h = 64, d = 16, v = 5000;
    auto withActivation = [&](FieldView a) {
        return std::vector<FieldView>{{"hidden_size", &h, FieldType::kINT32, 1}, {"head_hidden_size", &d, FieldType::kINT32, 1},
            {"vocab_size", &v, FieldType::kINT32, 1}, a};
    };
    struct Named
    {
        char const* name;
        int32_t code;
    };
    for (Named const n : {Named{"silu", kNEG_ACT_SILU}, Named{"swish", kNEG_ACT_SILU}, Named{"gelu", kNEG_ACT_GELU},
             Named{"relu", kNEG_ACT_RELU}, Named{"gelu_tanh", kNEG_ACT_GELU_TANH},
             Named{"gelu_pytorch_tanh", kNEG_ACT_GELU_TANH}, Named{"gelu_new", kNEG_ACT_GELU_TANH}})
    {
        auto const f = withActivation({"activation", n.name, FieldType::kCHAR, static_cast<int32_t>(std::strlen(n.name))});
        CHECK(parsedActivation(f) == n.code);
        CHECK(parsedActivation(withActivation({"activation", &n.code, FieldType::kINT32, 1})) == n.code);
    }
    CHECK(parseError(withActivation({"activation", "tanh", FieldType::kCHAR, 4}))
        == "plugin field 'activation': unknown activation 'tanh'");
    int32_t const four = 4, minusOne = -1;
    CHECK(parseError(withActivation({"activation", &four, FieldType::kINT32, 1}))
        == "plugin field 'activation': unknown activation code 4");
    CHECK(parseError(withActivation({"activation", &minusOne, FieldType::kINT32, 1}))
        == "plugin field 'activation': unknown activation code -1");
}

// The edges of what validate() accepts, and the field each refusal names.
static void testValidationLimits()
{
    int32_t h = 1, d = 1, v = 1, k = 1;
    float t = 1.0f;
    std::vector<FieldView> const f = {{"hidden_size", &h, FieldType::kINT32, 1}, {"head_hidden_size", &d, FieldType::kINT32, 1},
        {"vocab_size", &v, FieldType::kINT32, 1}, {"top_k", &k, FieldType::kINT32, 1},
        {"temperature", &t, FieldType::kFLOAT32, 1}};
    CHECK(parseError(f).empty()); // the smallest sizes
    h = 0;
    CHECK(parseError(f) == "plugin field 'hidden_size': must be >= 1");
    h = 1;
    d = 0;
    CHECK(parseError(f) == "plugin field 'head_hidden_size': must be >= 1");
    d = 1;
    v = 0;
    CHECK(parseError(f) == "plugin field 'vocab_size': must be in [1, 2^30]");
    v = kNegMaxVocab;
    CHECK(parseError(f).empty());
    char const* const topKError = "plugin field 'top_k': must be in [1, 1024] (or >= vocab_size when vocab_size <= 1024)";
    v = 248320;
    k = kNegMaxTopK;
    CHECK(parseError(f).empty());
    k = kNegMaxTopK + 1;
    CHECK(parseError(f) == topKError);
    v = kNegMaxTopK; // k = min(top_k, V) = 1024
    CHECK(parseError(f).empty());
    v = kNegMaxTopK + 1;
    CHECK(parseError(f) == topKError);
    k = 0;
    CHECK(parseError(f) == topKError);
    k = 1;
    for (float const bad : {0.0f, -0.0f, -1.0f, INFINITY, NAN})
    {
        t = bad;
        CHECK(parseError(f) == "plugin field 'temperature': must be finite and > 0");
    }
    t = 1e-30f;
    CHECK(parseError(f).empty());
}

static void testShapes()
{
    NegPluginConfig const c = sample();
    std::vector<std::vector<int64_t>> dims = {{-1, 4096}, {-1, 248320}, {1024, 4096}, {1024}, {1, 1024}, {1}, {}, {-1}};
    CHECK(negCheckInputShapes(c, dims).empty());
    dims[4] = {1024};
    CHECK(negCheckInputShapes(c, dims).empty());
    auto expectBad = [&](int i, std::vector<int64_t> d, char const* message) {
        auto e = dims;
        e[i] = d;
        std::string const m = negCheckInputShapes(c, e);
        if (m != message)
            std::printf("  message was: %s\n", m.c_str());
        CHECK(m == message);
    };
    // Each refusal names the input and what it should be, with the config's sizes.
    expectBad(0, {8, 4095}, "input 'hidden': expected [N, hidden_size=4096]");
    expectBad(0, {8, 0}, "input 'hidden': expected [N, hidden_size=4096]"); // 0 is a size, not "unknown"
    expectBad(1, {8, 1000}, "input 'logits': expected [N, vocab_size=248320] with hidden's N");
    expectBad(2, {1024, 4095}, "input 'W1': expected [head_hidden_size, hidden_size]");
    expectBad(3, {1023}, "input 'b1': expected [head_hidden_size]");
    expectBad(4, {2, 512}, "input 'w2': expected [head_hidden_size] or [1, head_hidden_size]");
    expectBad(4, {1, 0}, "input 'w2': expected [head_hidden_size] or [1, head_hidden_size]");
    expectBad(5, {0}, "input 'b2': expected a scalar or [1]");
    expectBad(5, {2}, "input 'b2': expected a scalar or [1]");
    expectBad(6, {1, 1}, "input 'tau': expected a scalar or [1]");
    expectBad(7, {3, 1}, "input 'positions': expected [N]");
    auto e = dims;
    e[0] = {8, 4096};
    e[1] = {9, 248320};
    CHECK(negCheckInputShapes(c, e) == "input 'logits': expected [N, vocab_size=248320] with hidden's N");
    e[0] = {0, 4096}; // an empty batch is a batch of 0 rows, not an unknown one
    e[1] = {5, 248320};
    CHECK(negCheckInputShapes(c, e) == "input 'logits': expected [N, vocab_size=248320] with hidden's N");
    // Unknown (-1) dims inside w2, b2 and tau are not counted as sizes.
    e = dims;
    e[4] = {-1, -1};
    CHECK(negCheckInputShapes(c, e).empty());
    e[4] = {1, -1};
    e[5] = {-1};
    e[6] = {-1};
    CHECK(negCheckInputShapes(c, e).empty());
    e.pop_back();
    CHECK(negCheckInputShapes(c, e) == "NegGatedSampling: expected 8 inputs, got 7");
}

static void testTypes()
{
    auto const F = static_cast<int32_t>(TensorType::kFLOAT), B = static_cast<int32_t>(TensorType::kBF16),
               Hf = static_cast<int32_t>(TensorType::kHALF), I = static_cast<int32_t>(TensorType::kINT32),
               L = static_cast<int32_t>(TensorType::kINT64);
    int32_t t[12] = {B, F, B, F, F, F, F, I, F, I, F, I};
    for (int p = 0; p < 12; ++p)
        CHECK(negSupportsType(p, t));
    t[2] = F; // W1 must match hidden
    CHECK(!negSupportsType(2, t));
    t[0] = I;
    CHECK(!negSupportsType(0, t));
    t[0] = Hf;
    CHECK(negSupportsType(0, t));
    t[7] = L;
    CHECK(negSupportsType(7, t));
    t[1] = Hf; // logits must be fp32
    CHECK(!negSupportsType(1, t));
    int32_t out[4];
    negOutputTypes(t, out);
    CHECK(out[0] == F && out[1] == I && out[2] == F && out[3] == I);
}

static void testWorkspaceAndParams()
{
    NegPluginConfig const c = sample();
    CHECK(negPluginWorkspaceSize(c, 0) == 0);
    // Enough for every row count up to the maximum with the plan the launcher picks, split-V
    // rows included (the 64 slices of N=1 keep 8 candidate keys each, and so on).
    for (int64_t maxN : {1, 2, 3, 8, 63, 255, 256, 1024})
    {
        size_t const ws = negPluginWorkspaceSize(c, maxN);
        CHECK(ws % 256 == 0 && ws >= static_cast<size_t>(maxN) * 1024u * 4u);
        for (int64_t n = 1; n <= maxN; ++n)
            CHECK(negStepWorkspaceSize(n, c.headHiddenSize, c.vocabSize, c.topK, 0) <= ws);
    }
    NegSplitPlan const one = negSplitPlan(1, c.vocabSize, c.topK, 0);
    CHECK(one.splits == 64 && one.perSlice == 8);
    NegSplitLayout const l = negSplitLayout(1, one);
    CHECK(l.best >= sizeof(float) && l.flags >= l.best + 64 * 8 && l.cand >= l.flags + 64 * 4
        && l.bytes >= l.cand + 64 * 8 * 8 && l.bytes % 256 == 0);
    CHECK(negSplitLayout(300, negSplitPlan(300, c.vocabSize, c.topK, 0)).bytes == 0); // one block per row
    // A top_k of 1024 keeps up to 1024 keys per slice: the bound grows with it.
    NegPluginConfig big = c;
    big.topK = 1024;
    CHECK(negPluginWorkspaceSize(big, 8) > negPluginWorkspaceSize(c, 8));
    for (int64_t n = 1; n <= 8; ++n)
        CHECK(negStepWorkspaceSize(n, big.headHiddenSize, big.vocabSize, big.topK, 0) <= negPluginWorkspaceSize(big, 8));
    float dummy[8];
    void const* in[8];
    void* out[4];
    for (int i = 0; i < 8; ++i)
        in[i] = dummy + i;
    for (int i = 0; i < 4; ++i)
        out[i] = dummy + i;
    NegStepParams const p = negMakeParams(c, 5, static_cast<int32_t>(TensorType::kBF16),
        static_cast<int32_t>(TensorType::kINT32), in, out);
    CHECK(p.N == 5 && p.H == 4096 && p.d == 1024 && p.V == 248320 && p.topK == 8);
    CHECK(p.hiddenType == DType::kBFLOAT16 && p.offsets32 == in[7] && p.offsets64 == nullptr);
    CHECK(p.seed == static_cast<uint64_t>(c.seed) && p.tau == in[6] && p.guided == out[0] && p.fired == out[3]);
    // Every field of the config and every tensor reaches the launch, each in its place.
    CHECK(p.activation == kNEG_ACT_GELU_TANH && p.temperature == 0.7f);
    CHECK(p.hidden == in[0] && p.logits == in[1] && p.w1 == in[2] && p.b1 == in[3] && p.w2 == in[4] && p.b2 == in[5]);
    CHECK(p.token == out[1] && p.entropy == out[2]);
    NegStepParams const q = negMakeParams(c, 5, static_cast<int32_t>(TensorType::kHALF),
        static_cast<int32_t>(TensorType::kINT64), in, out);
    CHECK(q.hiddenType == DType::kFLOAT16 && q.offsets64 == in[7] && q.offsets32 == nullptr);
    CHECK(negMakeParams(c, 5, static_cast<int32_t>(TensorType::kFLOAT), static_cast<int32_t>(TensorType::kINT32), in, out)
              .hiddenType
        == DType::kFLOAT32);
}

int main()
{
    testRoundTrip();
    testFieldParsing();
    testSharedFieldReaders();
    testActivationNames();
    testValidationLimits();
    testShapes();
    testTypes();
    testWorkspaceAndParams();
    return checkSummary("ALL OK");
}
