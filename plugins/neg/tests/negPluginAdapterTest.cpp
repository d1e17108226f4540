// The TensorRT adapter of the fused NEG op (negPlugin.cpp) called the way TensorRT 10 calls
// an IPluginV3, against the mock of ../../common/tests/trtMock.h (TensorRT headers, no
// libnvinfer, no GPU: negStepLaunch is a stub that records its parameters). Built and run by
// tests/test_neg_compile.py where TensorRT headers exist; prints "all checks passed".
#include "../../common/testCheck.h"
#include "../../common/tests/trtMock.h"
#include "../negKernel.h"
#include "../negPlugin.h"

#include <string>
#include <vector>

using namespace nvinfer1;
using namespace trt_neg;
using trt_mock::capability;
using trt_mock::dynDesc;

namespace
{
NegStepParams gLaunched;
size_t gLaunchedWorkspaceBytes = 0;
int gLaunches = 0;
cudaError_t gLaunchResult = cudaSuccess;
} // namespace

cudaError_t trt_neg::negStepLaunch(NegStepParams const& p, void* /*workspace*/, size_t workspaceBytes, cudaStream_t)
{
    gLaunched = p;
    gLaunchedWorkspaceBytes = workspaceBytes;
    ++gLaunches;
    return gLaunchResult;
}

namespace
{
constexpr int32_t kH = 64, kD = 16, kV = 1000, kTopK = 4;

bool contains(std::string const& s, char const* part)
{
    return s.find(part) != std::string::npos;
}

IPluginV3* makePlugin(NegPluginCreator& creator, TensorRTPhase phase = TensorRTPhase::kBUILD)
{
    static int32_t const ints[5] = {kH, kD, kV, kTopK, 0};
    static float const temperature = 0.5f;
    static int64_t const seed = 7;
    static PluginField const fields[7] = {{"hidden_size", &ints[0], PluginFieldType::kINT32, 1},
        {"head_hidden_size", &ints[1], PluginFieldType::kINT32, 1}, {"vocab_size", &ints[2], PluginFieldType::kINT32, 1},
        {"top_k", &ints[3], PluginFieldType::kINT32, 1}, {"temperature", &temperature, PluginFieldType::kFLOAT32, 1},
        {"seed", &seed, PluginFieldType::kINT64, 1}, {"activation", &ints[4], PluginFieldType::kINT32, 1}};
    PluginFieldCollection const fc{7, fields};
    return creator.createPlugin("neg", &fc, phase);
}

// The 8 inputs (bf16 hidden, int32 positions) with the profile's largest row count.
std::vector<DynamicPluginTensorDesc> inputs(int64_t maxRows)
{
    auto const B = DataType::kBF16, F = DataType::kFLOAT;
    return {dynDesc({-1, kH}, B, {maxRows, kH}), dynDesc({-1, kV}, F, {maxRows, kV}), dynDesc({kD, kH}, B),
        dynDesc({kD}, F), dynDesc({kD}, F), dynDesc({1}, F), dynDesc({1}, F),
        dynDesc({-1}, DataType::kINT32, {maxRows})};
}

std::vector<DynamicPluginTensorDesc> outputs(int64_t maxRows)
{
    auto const F = DataType::kFLOAT, I = DataType::kINT32;
    return {dynDesc({-1, kV}, F, {maxRows, kV}), dynDesc({-1}, I, {maxRows}), dynDesc({-1}, F, {maxRows}),
        dynDesc({-1}, I, {maxRows})};
}

// Runtime descriptions of `descs` with N rows.
std::vector<PluginTensorDesc> withRows(std::vector<DynamicPluginTensorDesc> const& descs, int64_t N)
{
    std::vector<PluginTensorDesc> out;
    for (auto const& d : descs)
    {
        out.push_back(d.desc);
        if (out.back().dims.d[0] == -1)
        {
            out.back().dims.d[0] = N;
        }
    }
    return out;
}

void testCapabilitiesAndSerialisation()
{
    NegPluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    CHECK(p != nullptr);
    CHECK(trt_mock::hasIdentity(p, "NegGatedSampling", "1", "trt_neg"));
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(p, PluginCapabilityType::kRUNTIME);
    CHECK(build->getNbOutputs() == 4);
    std::string const description = build->getMetadataString();
    CHECK(description == "hidden_size=64;head_hidden_size=16;vocab_size=1000;top_k=4;temperature=0.5;seed=7;activation=silu");

    // The engine's fields re-create the same plugin in the runtime phase.
    IPluginV3* restored = creator.createPlugin("neg", runtime->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
    CHECK(restored != nullptr
        && capability<IPluginV3OneBuild>(restored, PluginCapabilityType::kBUILD)->getMetadataString() == description);

    // A clone and an attached copy outlive their source.
    IPluginV3* copy = p->clone();
    IPluginV3* attached = runtime->attachToContext(nullptr);
    delete p;
    CHECK(copy != nullptr
        && capability<IPluginV3OneBuild>(copy, PluginCapabilityType::kBUILD)->getMetadataString() == description);
    CHECK(attached != nullptr
        && capability<IPluginV3OneBuild>(attached, PluginCapabilityType::kBUILD)->getMetadataString() == description);
    delete attached;
    delete copy;
    delete restored;
}

void testTypesShapesAndFormats()
{
    NegPluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    std::vector<DataType> in(8, DataType::kFLOAT);
    in[kNEG_IN_HIDDEN] = in[kNEG_IN_W1] = DataType::kBF16;
    in[kNEG_IN_POSITIONS] = DataType::kINT32;
    DataType out[4] = {DataType::kINT8, DataType::kINT8, DataType::kINT8, DataType::kINT8}; // each one written
    CHECK(build->getOutputDataTypes(out, 4, in.data(), 8) == 0);
    CHECK(out[0] == DataType::kFLOAT && out[1] == DataType::kINT32 && out[2] == DataType::kFLOAT
        && out[3] == DataType::kINT32);

    trt_mock::ExprBuilder eb;
    std::vector<DimsExprs> shapes(8);
    shapes[kNEG_IN_HIDDEN] = trt_mock::exprs(eb, {5, kH});
    shapes[kNEG_IN_LOGITS] = trt_mock::exprs(eb, {5, kV});
    DimsExprs outShapes[4];
    CHECK(build->getOutputShapes(shapes.data(), 8, nullptr, 0, outShapes, 4, eb) == 0);
    CHECK(outShapes[0].nbDims == 2 && trt_mock::ExprBuilder::value(outShapes[0].d[0]) == 5
        && trt_mock::ExprBuilder::value(outShapes[0].d[1]) == kV);
    for (int32_t o = 1; o < 4; ++o)
    {
        CHECK(outShapes[o].nbDims == 1 && trt_mock::ExprBuilder::value(outShapes[o].d[0]) == 5);
    }

    // Every position accepts its declared type in the linear format, not another type or format.
    std::vector<DynamicPluginTensorDesc> io = inputs(64);
    for (auto const& d : outputs(64))
    {
        io.push_back(d);
    }
    for (int32_t pos = 0; pos < 12; ++pos)
    {
        CHECK(build->supportsFormatCombination(pos, io.data(), 8, 4));
        DynamicPluginTensorDesc const declared = io[pos];
        io[pos].desc.type = DataType::kINT8;
        CHECK(!build->supportsFormatCombination(pos, io.data(), 8, 4));
        io[pos] = declared;
        io[pos].desc.format = TensorFormat::kCHW32;
        CHECK(!build->supportsFormatCombination(pos, io.data(), 8, 4));
        io[pos] = declared;
    }
    io[kNEG_IN_POSITIONS].desc.type = DataType::kINT64;
    CHECK(build->supportsFormatCombination(kNEG_IN_POSITIONS, io.data(), 8, 4));
    io[kNEG_IN_W1].desc.type = DataType::kHALF; // W1 must share hidden's type
    CHECK(!build->supportsFormatCombination(kNEG_IN_W1, io.data(), 8, 4));
    CHECK(!build->supportsFormatCombination(12, io.data(), 8, 4));
    delete p;
}

// For every row count up to the profile's maximum, enqueue hands the launcher no more
// workspace than getWorkspaceSize reserved, and at least what the launcher's plan needs.
void testWorkspaceAndEnqueue()
{
    NegPluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(p, PluginCapabilityType::kRUNTIME);
    int64_t const maxRows = 256;
    std::vector<DynamicPluginTensorDesc> in = inputs(maxRows), out = outputs(maxRows);
    CHECK(build->configurePlugin(in.data(), 8, out.data(), 4) == 0);
    size_t const reserved = build->getWorkspaceSize(in.data(), 8, out.data(), 4);
    float buf[16] = {};
    void const* ptrs[8] = {buf, buf + 1, buf + 2, buf + 3, buf + 4, buf + 5, buf + 6, buf + 7};
    void* outPtrs[4] = {buf + 8, buf + 9, buf + 10, buf + 11};
    for (int64_t n = 1; n <= maxRows; ++n)
    {
        std::vector<PluginTensorDesc> rin = withRows(in, n), rout = withRows(out, n);
        CHECK(runtime->onShapeChange(rin.data(), 8, rout.data(), 4) == 0);
        gLaunches = 0;
        CHECK(runtime->enqueue(rin.data(), rout.data(), ptrs, outPtrs, buf, nullptr) == 0);
        size_t const needed = negStepWorkspaceSize(n, kD, kV, gLaunched.topK, gLaunched.splits);
        if (gLaunches != 1 || gLaunched.N != n || gLaunchedWorkspaceBytes > reserved
            || gLaunchedWorkspaceBytes < needed)
        {
            std::printf("N = %lld: claimed %zu B, reserved %zu B, needed %zu B\n", static_cast<long long>(n),
                gLaunchedWorkspaceBytes, reserved, needed);
            CHECK(false);
        }
    }
    CHECK(gLaunched.hidden == buf && gLaunched.offsets32 == reinterpret_cast<int32_t const*>(buf + 7)
        && gLaunched.guided == buf + 8 && gLaunched.fired == reinterpret_cast<int32_t*>(buf + 11));
    CHECK(gLaunched.topK == kTopK && gLaunched.seed == 7 && gLaunched.hiddenType == DType::kBFLOAT16);
    delete p;
}

// pluginFields.h's FieldType and TensorType are TensorRT's PluginFieldType and DataType codes:
// the adapters cast between them.
void testMirroredCodesAreTensorRTs()
{
    auto same = [](auto ours, auto theirs) { return static_cast<int32_t>(ours) == static_cast<int32_t>(theirs); };
    CHECK(same(FieldType::kFLOAT16, PluginFieldType::kFLOAT16) && same(FieldType::kFLOAT32, PluginFieldType::kFLOAT32)
        && same(FieldType::kFLOAT64, PluginFieldType::kFLOAT64) && same(FieldType::kINT8, PluginFieldType::kINT8)
        && same(FieldType::kINT16, PluginFieldType::kINT16) && same(FieldType::kINT32, PluginFieldType::kINT32)
        && same(FieldType::kCHAR, PluginFieldType::kCHAR) && same(FieldType::kDIMS, PluginFieldType::kDIMS)
        && same(FieldType::kUNKNOWN, PluginFieldType::kUNKNOWN) && same(FieldType::kBF16, PluginFieldType::kBF16)
        && same(FieldType::kINT64, PluginFieldType::kINT64));
    CHECK(same(TensorType::kFLOAT, DataType::kFLOAT) && same(TensorType::kHALF, DataType::kHALF)
        && same(TensorType::kINT8, DataType::kINT8) && same(TensorType::kINT32, DataType::kINT32)
        && same(TensorType::kBOOL, DataType::kBOOL) && same(TensorType::kUINT8, DataType::kUINT8)
        && same(TensorType::kFP8, DataType::kFP8) && same(TensorType::kBF16, DataType::kBF16)
        && same(TensorType::kINT64, DataType::kINT64));

    // The activation by name, as a kCHAR PluginField.
    NegPluginCreator creator;
    static int32_t const ints[3] = {kH, kD, kV};
    static char const activation[] = "gelu_pytorch_tanh";
    PluginField const fields[4] = {{"hidden_size", &ints[0], PluginFieldType::kINT32, 1},
        {"head_hidden_size", &ints[1], PluginFieldType::kINT32, 1}, {"vocab_size", &ints[2], PluginFieldType::kINT32, 1},
        {"activation", activation, PluginFieldType::kCHAR, static_cast<int32_t>(sizeof activation)}};
    PluginFieldCollection const fc{4, fields};
    IPluginV3* p = creator.createPlugin("neg", &fc, TensorRTPhase::kBUILD);
    CHECK(p != nullptr
        && contains(capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD)->getMetadataString(),
            ";activation=gelu_tanh"));
    delete p;
}

// Every refusal names the method and the reason on stderr, not just TensorRT's return code.
void testErrorsAreReported()
{
    NegPluginCreator creator;
    IPluginV3* p = makePlugin(creator);
    auto* build = capability<IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    auto* runtime = capability<IPluginV3OneRuntime>(p, PluginCapabilityType::kRUNTIME);
    int32_t rc = 0;

    std::vector<DataType> types(8, DataType::kFLOAT);
    DataType outTypes[4];
    std::string log = trt_mock::stderrOf([&] { rc = build->getOutputDataTypes(outTypes, 4, types.data(), 7); });
    CHECK(rc != 0
        && contains(log, "NegGatedSampling::getOutputDataTypes: expected 8 inputs and 4 outputs, got 7 and 4"));
    log = trt_mock::stderrOf([&] { rc = build->getOutputDataTypes(outTypes, 3, types.data(), 8); });
    CHECK(rc != 0
        && contains(log, "NegGatedSampling::getOutputDataTypes: expected 8 inputs and 4 outputs, got 8 and 3"));

    trt_mock::ExprBuilder eb;
    std::vector<DimsExprs> shapes(8);
    shapes[kNEG_IN_LOGITS] = trt_mock::exprs(eb, {5, kV});
    DimsExprs outShapes[4];
    log = trt_mock::stderrOf([&] { rc = build->getOutputShapes(shapes.data(), 8, nullptr, 0, outShapes, 3, eb); });
    CHECK(rc != 0 && contains(log, "NegGatedSampling::getOutputShapes: expected 8 inputs and 4 outputs, got 8 and 3"));
    log = trt_mock::stderrOf([&] { rc = build->getOutputShapes(shapes.data(), 7, nullptr, 0, outShapes, 4, eb); });
    CHECK(rc != 0 && contains(log, "NegGatedSampling::getOutputShapes: expected 8 inputs and 4 outputs, got 7 and 4"));
    shapes[kNEG_IN_LOGITS] = trt_mock::exprs(eb, {1, 5, kV});
    log = trt_mock::stderrOf([&] { rc = build->getOutputShapes(shapes.data(), 8, nullptr, 0, outShapes, 4, eb); });
    CHECK(rc != 0 && contains(log, "NegGatedSampling::getOutputShapes") && contains(log, "'logits'")
        && contains(log, "rank 3"));

    std::vector<DynamicPluginTensorDesc> in = inputs(64), out = outputs(64);
    log = trt_mock::stderrOf([&] { rc = build->configurePlugin(in.data(), 7, out.data(), 4); });
    CHECK(rc != 0 && contains(log, "NegGatedSampling::configurePlugin: expected 8 inputs and 4 outputs, got 7 and 4"));
    in[kNEG_IN_HIDDEN] = dynDesc({-1, kH + 1}, DataType::kBF16, {64, kH + 1});
    log = trt_mock::stderrOf([&] { rc = build->configurePlugin(in.data(), 8, out.data(), 4); });
    CHECK(rc != 0 && contains(log, "NegGatedSampling::configurePlugin: input 'hidden'"));

    std::vector<PluginTensorDesc> rin = withRows(inputs(64), 3), rout = withRows(outputs(64), 3);
    log = trt_mock::stderrOf([&] { rc = runtime->onShapeChange(rin.data(), 8, rout.data(), 5); });
    CHECK(rc != 0 && contains(log, "NegGatedSampling::onShapeChange: expected 8 inputs and 4 outputs, got 8 and 5"));

    float buf[16] = {};
    void const* ptrs[8] = {buf, buf, buf, buf, buf, buf, buf, buf};
    void* outPtrs[4] = {buf, buf, buf, buf};
    gLaunchResult = cudaErrorInvalidValue;
    log = trt_mock::stderrOf([&] { rc = runtime->enqueue(rin.data(), rout.data(), ptrs, outPtrs, buf, nullptr); });
    gLaunchResult = cudaSuccess;
    CHECK(rc != 0 && contains(log, "NegGatedSampling::enqueue: mock CUDA error"));
    delete p;
}
} // namespace

// The library's static registration reached the registry once, under the plugin's name,
// version and namespace; a second registration (another copy of the library) is refused by
// TensorRT and logged, not ignored.
void testRegistration()
{
    auto const& registered = trt_mock::registry().registered;
    CHECK(registered.size() == 1 && registered[0] == "trt_neg::NegGatedSampling/1");
    std::string const err = trt_mock::stderrOf([] { PluginRegistration<NegPlugin> again; });
    CHECK(contains(err, "NegGatedSampling::registerCreator: TensorRT refused the creator"));
    CHECK(contains(err, "another copy of the plugin library"));
    CHECK(registered.size() == 1);
}

int main()
{
    testRegistration();
    testMirroredCodesAreTensorRTs();
    testCapabilitiesAndSerialisation();
    testTypesShapesAndFormats();
    testWorkspaceAndEnqueue();
    testErrorsAreReported();
    return checkSummary("all checks passed");
}
