// The TensorRT adapter of the Gated DeltaNet op (gdnPlugin.cpp) called the way TensorRT 10
// calls an IPluginV3, against the mock of ../../common/tests/trtMock.h (TensorRT headers, no
// libnvinfer, no GPU: gdn::launch is a stub that records its parameters). Built and run by
// tests/test_gdn_plugin_core.py where TensorRT headers exist; prints "all checks passed".
#include "../../common/testCheck.h"
#include "../../common/tests/trtMock.h"
#include "../gdnKernel.h"
#include "../gdnPlugin.h"

#include <string>
#include <vector>

using namespace nvinfer1;
using namespace trt_neg;
using trt_mock::capability;
using trt_mock::dynDesc;

namespace
{
gdn::GdnParams gLaunched;
int gLaunches = 0;
} // namespace

cudaError_t trt_neg::gdn::launch(GdnParams const& p, cudaStream_t, ContextAlgo)
{
    gLaunched = p;
    ++gLaunches;
    return cudaSuccess;
}

namespace
{
constexpr int32_t kHk = 2, kHv = 4, kDk = 16, kDv = 16;
constexpr int64_t kConv = 2 * kHk * kDk + kHv * kDv, kValue = kHv * kDv;

bool contains(std::string const& s, char const* part)
{
    return s.find(part) != std::string::npos;
}

// A bf16 plugin with the gated norm (11 inputs), as the creator makes it in `phase`.
IPluginV3* makePlugin(GatedDeltaRulePluginCreator& creator, TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    static int32_t const ints[5] = {kHk, kHv, kDk, kDv, static_cast<int32_t>(DataType::kBF16)};
    static PluginField const fields[5] = {{"num_k_heads", &ints[0], PluginFieldType::kINT32, 1},
        {"num_v_heads", &ints[1], PluginFieldType::kINT32, 1}, {"head_k_dim", &ints[2], PluginFieldType::kINT32, 1},
        {"head_v_dim", &ints[3], PluginFieldType::kINT32, 1}, {"type_id", &ints[4], PluginFieldType::kINT32, 1}};
    PluginFieldCollection const fc{5, fields};
    return creator.createPlugin("gdn", &fc, phase);
}

// The 11 inputs as TensorRT-LLM declares them (packed tokens), with the profile's largest
// token count and batch.
std::vector<DynamicPluginTensorDesc> inputs(int64_t maxTokens, int64_t maxBatch)
{
    auto const B = DataType::kBF16, F = DataType::kFLOAT, I = DataType::kINT32;
    return {dynDesc({-1, kConv}, B, {maxTokens, kConv}), dynDesc({-1, kHv}, B, {maxTokens, kHv}),
        dynDesc({-1, kHv}, B, {maxTokens, kHv}), dynDesc({kHv}, F), dynDesc({kHv}, F), dynDesc({1}, DataType::kINT64),
        dynDesc({-1}, I, {maxBatch}), dynDesc({-1}, I, {maxBatch}), dynDesc({-1}, I, {maxBatch}),
        dynDesc({-1, kValue}, B, {maxTokens, kValue}), dynDesc({kDv}, F)};
}

// The runtime descs of `in`: what onShapeChange and enqueue see.
std::vector<PluginTensorDesc> runtimeDescs(std::vector<DynamicPluginTensorDesc> const& in)
{
    std::vector<PluginTensorDesc> descs;
    for (auto const& d : in)
    {
        descs.push_back(d.desc);
    }
    return descs;
}

// One call's runtime inputs: `tokens` packed tokens of `batch` sequences.
std::vector<PluginTensorDesc> packedCall(int64_t tokens, int64_t batch)
{
    std::vector<PluginTensorDesc> rin = runtimeDescs(inputs(64, 8));
    for (int32_t i : {0, 1, 2, 9})
    {
        rin[i].dims.d[0] = tokens;
    }
    for (int32_t i : {6, 7, 8})
    {
        rin[i].dims.d[0] = batch;
    }
    return rin;
}

void testCapabilitiesAndSerialisation()
{
    GatedDeltaRulePluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    CHECK(p != nullptr);
    CHECK(trt_mock::hasIdentity(p, "TrtNegGatedDeltaRule", "1", "trt_neg"));
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(p, PluginCapabilityType::kRUNTIME);
    CHECK(build->getNbOutputs() == 1);

    // The engine's fields re-create the plugin in the runtime phase, with the same fields.
    PluginFieldCollection const* serial = runtime->getFieldsToSerialize();
    CHECK(serial != nullptr && serial->nbFields == 9);
    IPluginV3* restored = creator.createPlugin("gdn", serial, TensorRTPhase::kRUNTIME);
    CHECK(restored != nullptr);
    PluginFieldCollection const* again
        = capability<IPluginV3OneRuntime>(restored, PluginCapabilityType::kRUNTIME)->getFieldsToSerialize();
    CHECK(again != nullptr && again->nbFields == 9 && std::string(again->fields[4].name) == "type_id"
        && *static_cast<int32_t const*>(again->fields[4].data) == static_cast<int32_t>(DataType::kBF16));

    // A clone and an attached copy outlive their source.
    IPluginV3* copy = p->clone();
    IPluginV3* attached = runtime->attachToContext(nullptr);
    delete p;
    CHECK(copy != nullptr && capability<IPluginV3OneBuild>(copy, PluginCapabilityType::kBUILD)->getNbOutputs() == 1);
    CHECK(attached != nullptr
        && std::string(capability<IPluginV3OneCore>(attached, PluginCapabilityType::kCORE)->getPluginName())
            == "TrtNegGatedDeltaRule");
    delete attached;
    delete copy;
    delete restored;
}

// Every position accepts its own type in the linear format and nothing else.
void testFormatCombinations()
{
    GatedDeltaRulePluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    std::vector<DynamicPluginTensorDesc> io = inputs(64, 8);
    io.push_back(dynDesc({-1, kValue}, DataType::kBF16));
    for (int32_t pos = 0; pos < 12; ++pos)
    {
        CHECK(build->supportsFormatCombination(pos, io.data(), 11, 1));
        DynamicPluginTensorDesc const declared = io[pos];
        io[pos].desc.type = declared.desc.type == DataType::kHALF ? DataType::kINT8 : DataType::kHALF;
        CHECK(!build->supportsFormatCombination(pos, io.data(), 11, 1));
        io[pos] = declared;
        io[pos].desc.format = TensorFormat::kCHW32;
        CHECK(!build->supportsFormatCombination(pos, io.data(), 11, 1));
        io[pos] = declared;
    }
    CHECK(!build->supportsFormatCombination(12, io.data(), 11, 1));
    delete p;
}

// getOutputDataTypes must name a type supportsFormatCombination accepts: the configured
// activation type, whatever the network declared for qkv.
void testOutputTypeIsTheConfiguredType()
{
    GatedDeltaRulePluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    std::vector<DataType> in(11, DataType::kBF16);
    in[gdn::kIN_QKV] = DataType::kFLOAT;
    DataType out[1] = {DataType::kINT8};
    CHECK(build->getOutputDataTypes(out, 1, in.data(), 11) == 0);
    CHECK(out[0] == DataType::kBF16);
    std::vector<DynamicPluginTensorDesc> io = inputs(64, 8);
    io.push_back(dynDesc({-1, kValue}, out[0]));
    CHECK(build->supportsFormatCombination(11, io.data(), 11, 1));
    delete p;
}

// An engine whose profile allows more sequences than one call takes must not build.
void testProfileMaxBatchIsChecked()
{
    GatedDeltaRulePluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    std::vector<DynamicPluginTensorDesc> out = {dynDesc({-1, kValue}, DataType::kBF16, {16384, kValue})};
    std::vector<DynamicPluginTensorDesc> fits = inputs(16384, gdn::kMaxSeqsPerCall);
    CHECK(build->configurePlugin(fits.data(), 11, out.data(), 1) == 0);
    std::vector<DynamicPluginTensorDesc> tooMany = inputs(16384, gdn::kMaxSeqsPerCall + 1);
    int32_t rc = 0;
    std::string const log = trt_mock::stderrOf([&] { rc = build->configurePlugin(tooMany.data(), 11, out.data(), 1); });
    CHECK(rc != 0);
    CHECK(contains(log, "4097") && contains(log, "4096") && contains(log, "max_batch_size"));
    delete p;
}

void testShapesAndEnqueue()
{
    GatedDeltaRulePluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(p, PluginCapabilityType::kRUNTIME);
    trt_mock::ExprBuilder eb;
    std::vector<DimsExprs> in(11);
    in[gdn::kIN_QKV] = trt_mock::exprs(eb, {7, kConv});
    DimsExprs out[1];
    CHECK(build->getOutputShapes(in.data(), 11, nullptr, 0, out, 1, eb) == 0);
    CHECK(out[0].nbDims == 2 && trt_mock::ExprBuilder::value(out[0].d[0]) == 7
        && trt_mock::ExprBuilder::value(out[0].d[1]) == kValue);

    // Runtime: 2 sequences, 7 packed tokens (a 6-token context and one generation step).
    std::vector<PluginTensorDesc> rin = packedCall(7, 2);
    PluginTensorDesc rout[1] = {dynDesc({7, kValue}, DataType::kBF16).desc};
    CHECK(runtime->onShapeChange(rin.data(), 11, rout, 1) == 0);
    float buf[64] = {};
    int64_t const pool = 0x1000;
    int32_t const requestTypes[2] = {0, 1}, lastTokens[2] = {6, 7}, slots[2] = {1, 0};
    void const* ptrs[11] = {buf, buf, buf, buf, buf, &pool, requestTypes, lastTokens, slots, buf, buf};
    float y[64] = {};
    void* outs[1] = {y};
    gLaunches = 0;
    CHECK(runtime->enqueue(rin.data(), rout, ptrs, outs, nullptr, nullptr) == 0);
    CHECK(gLaunches == 1 && gLaunched.batch == 2 && gLaunched.numTokens == 7);
    CHECK(gLaunched.statePool == reinterpret_cast<float*>(pool) && gLaunched.slotMapping == slots);
    CHECK(gLaunched.out == y && gLaunched.qkv == buf && gLaunched.lastTokenIds == lastTokens
        && gLaunched.dtype == DType::kBFLOAT16);
    delete p;
}

// A refused shape, profile or enqueue fails the call and says why on stderr, under the
// method's name.
void testRefusalsAreReported()
{
    GatedDeltaRulePluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(p, PluginCapabilityType::kRUNTIME);
    int32_t rc = 0;
    std::vector<DynamicPluginTensorDesc> in = inputs(64, 8);
    std::vector<DynamicPluginTensorDesc> out = {dynDesc({-1, kValue}, DataType::kBF16, {64, kValue})};
    in[gdn::kIN_QKV] = dynDesc({-1, kConv + 1}, DataType::kBF16, {64, kConv + 1});
    std::string log = trt_mock::stderrOf([&] { rc = build->configurePlugin(in.data(), 11, out.data(), 1); });
    CHECK(rc != 0
        && contains(log, "TrtNegGatedDeltaRule::configurePlugin: TrtNegGatedDeltaRule: input 0 (qkv) [-1, 129]: last dim must be 128"));
    std::vector<PluginTensorDesc> rin = runtimeDescs(in);
    PluginTensorDesc rout[1] = {out[0].desc};
    log = trt_mock::stderrOf([&] { rc = runtime->onShapeChange(rin.data(), 11, rout, 1); });
    CHECK(rc != 0 && contains(log, "TrtNegGatedDeltaRule::onShapeChange: TrtNegGatedDeltaRule: input 0 (qkv) [-1, 129]"));
    in = inputs(64, 8);
    out.push_back(out[0]);
    log = trt_mock::stderrOf([&] { rc = build->configurePlugin(in.data(), 11, out.data(), 2); });
    CHECK(rc != 0 && contains(log, "TrtNegGatedDeltaRule::configurePlugin: TrtNegGatedDeltaRule: expected 1 output"));
    std::vector<DynamicPluginTensorDesc> tooMany = inputs(64, gdn::kMaxSeqsPerCall + 1);
    log = trt_mock::stderrOf([&] { rc = build->configurePlugin(tooMany.data(), 11, out.data(), 1); });
    CHECK(rc != 0
        && contains(log, "TrtNegGatedDeltaRule::configurePlugin: TrtNegGatedDeltaRule: the optimization profile allows 4097"));

    trt_mock::ExprBuilder eb;
    std::vector<DimsExprs> shapes(11);
    DimsExprs outShape[1];
    log = trt_mock::stderrOf([&] { rc = build->getOutputShapes(shapes.data(), 11, nullptr, 0, outShape, 1, eb); });
    CHECK(rc != 0 && contains(log, "TrtNegGatedDeltaRule::getOutputShapes: input 0 (qkv): expected rank 2, got rank 0"));

    // enqueue: a request type that is neither context nor generation.
    rin = packedCall(7, 2);
    float buf[64] = {};
    int64_t const pool = 0x1000;
    int32_t const requestTypes[2] = {0, 2}, lastTokens[2] = {6, 7}, slots[2] = {1, 0};
    void const* ptrs[11] = {buf, buf, buf, buf, buf, &pool, requestTypes, lastTokens, slots, buf, buf};
    void* outs[1] = {buf};
    gLaunches = 0;
    log = trt_mock::stderrOf([&] { rc = runtime->enqueue(rin.data(), rout, ptrs, outs, nullptr, nullptr); });
    CHECK(rc != 0 && gLaunches == 0
        && contains(log, "TrtNegGatedDeltaRule::enqueue: TrtNegGatedDeltaRule: host_request_types[1] = 2 (expected 0 "
                         "context or 1 generation)"));
    delete p;
}

// Wrong input counts fail with a message naming them, not just TensorRT's return code.
void testWrongInputCountIsReported()
{
    GatedDeltaRulePluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    std::vector<DataType> in(9, DataType::kBF16);
    DataType out[1];
    int32_t rc = 0;
    std::string log = trt_mock::stderrOf([&] { rc = build->getOutputDataTypes(out, 1, in.data(), 9); });
    CHECK(rc != 0 && contains(log, "TrtNegGatedDeltaRule::getOutputDataTypes") && contains(log, "expected 11 inputs"));
    trt_mock::ExprBuilder eb;
    std::vector<DimsExprs> shapes(9);
    DimsExprs outShape[1];
    log = trt_mock::stderrOf([&] { rc = build->getOutputShapes(shapes.data(), 9, nullptr, 0, outShape, 1, eb); });
    CHECK(rc != 0 && contains(log, "getOutputShapes") && contains(log, "got 9"));
    delete p;
}
} // namespace

// The library's static registration reached the registry once; a second one is logged.
void testRegistration()
{
    auto const& registered = trt_mock::registry().registered;
    CHECK(registered.size() == 1 && registered[0] == "trt_neg::TrtNegGatedDeltaRule/1");
    std::string const err = trt_mock::stderrOf([] { PluginRegistration<GatedDeltaRulePlugin> again; });
    CHECK(contains(err, "TrtNegGatedDeltaRule::registerCreator: TensorRT refused the creator"));
    CHECK(registered.size() == 1);
}

int main()
{
    testRegistration();
    testCapabilitiesAndSerialisation();
    testFormatCombinations();
    testOutputTypeIsTheConfiguredType();
    testProfileMaxBatchIsChecked();
    testShapesAndEnqueue();
    testRefusalsAreReported();
    testWrongInputCountIsReported();
    return checkSummary("all checks passed");
}
