#include "negPlugin.h"

#include <cstdio>
#include <exception>

namespace trt_neg
{
namespace
{
using namespace nvinfer1;

void logError(char const* where, char const* what)
{
    std::fprintf(stderr, "[trt_neg] %s::%s: %s\n", kNegPluginName, where, what);
}

std::vector<PluginField> toPluginFields(FieldSet const& s)
{
    std::vector<PluginField> out;
    for (FieldView const& v : s.views())
    {
        out.emplace_back(v.name, v.data, static_cast<PluginFieldType>(v.type), v.length);
    }
    return out;
}

std::vector<int64_t> dimsOf(Dims const& d)
{
    return std::vector<int64_t>(d.d, d.d + d.nbDims);
}
} // namespace

NegPlugin::NegPlugin(NegPluginConfig const& cfg)
    : mCfg(cfg)
    , mDescription(cfg.toString())
{
}

IPluginCapability* NegPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* NegPlugin::clone() noexcept
{
    try
    {
        return new NegPlugin(mCfg);
    }
    catch (std::exception const& e)
    {
        logError("clone", e.what());
        return nullptr;
    }
}

char const* NegPlugin::getPluginName() const noexcept
{
    return kNegPluginName;
}

char const* NegPlugin::getPluginVersion() const noexcept
{
    return kNegPluginVersion;
}

char const* NegPlugin::getPluginNamespace() const noexcept
{
    return kNegPluginNamespace;
}

int32_t NegPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNEG_NB_INPUTS || nbOutputs != kNEG_NB_OUTPUTS)
    {
        return 1;
    }
    std::vector<std::vector<int64_t>> dims;
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims.push_back(dimsOf(in[i].desc.dims));
    }
    std::string const err = negCheckInputShapes(mCfg, dims);
    if (!err.empty())
    {
        logError("configurePlugin", err.c_str());
        return 1;
    }
    return 0;
}

int32_t NegPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNEG_NB_INPUTS || nbOutputs != kNEG_NB_OUTPUTS)
    {
        return 1;
    }
    int32_t in[kNEG_NB_INPUTS], out[kNEG_NB_OUTPUTS];
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        in[i] = static_cast<int32_t>(inputTypes[i]);
    }
    negOutputTypes(in, out);
    for (int32_t i = 0; i < nbOutputs; ++i)
    {
        outputTypes[i] = static_cast<DataType>(out[i]);
    }
    return 0;
}

int32_t NegPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t,
    DimsExprs* outputs, int32_t nbOutputs, IExprBuilder&) noexcept
{
    if (nbInputs != kNEG_NB_INPUTS || nbOutputs != kNEG_NB_OUTPUTS || inputs[kNEG_IN_LOGITS].nbDims != 2)
    {
        return 1;
    }
    // guided logits: same shape as logits; token/entropy/fired: [N].
    outputs[kNEG_OUT_GUIDED] = inputs[kNEG_IN_LOGITS];
    for (int32_t o : {static_cast<int32_t>(kNEG_OUT_TOKEN), static_cast<int32_t>(kNEG_OUT_ENTROPY),
             static_cast<int32_t>(kNEG_OUT_FIRED)})
    {
        outputs[o].nbDims = 1;
        outputs[o].d[0] = inputs[kNEG_IN_LOGITS].d[0];
    }
    return 0;
}

bool NegPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNEG_NB_INPUTS || nbOutputs != kNEG_NB_OUTPUTS || pos < 0 || pos >= nbInputs + nbOutputs)
    {
        return false;
    }
    if (inOut[pos].desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    int32_t types[kNEG_NB_INPUTS + kNEG_NB_OUTPUTS];
    for (int32_t i = 0; i <= pos; ++i)
    {
        types[i] = static_cast<int32_t>(inOut[i].desc.type);
    }
    return negSupportsType(pos, types);
}

int32_t NegPlugin::getNbOutputs() const noexcept
{
    return kNEG_NB_OUTPUTS;
}

size_t NegPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const*, int32_t) const noexcept
{
    if (nbInputs != kNEG_NB_INPUTS)
    {
        return 0;
    }
    return negPluginWorkspaceSize(mCfg, inputs[kNEG_IN_HIDDEN].max.d[0]);
}

char const* NegPlugin::getTimingCacheID() noexcept
{
    return mDescription.c_str();
}

char const* NegPlugin::getMetadataString() noexcept
{
    return mDescription.c_str();
}

int32_t NegPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNEG_NB_INPUTS || nbOutputs != kNEG_NB_OUTPUTS)
    {
        return 1;
    }
    std::vector<std::vector<int64_t>> dims;
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        dims.push_back(dimsOf(in[i].dims));
    }
    std::string const err = negCheckInputShapes(mCfg, dims);
    if (!err.empty())
    {
        logError("onShapeChange", err.c_str());
        return 1;
    }
    return 0;
}

int32_t NegPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
    void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    int32_t const N = static_cast<int32_t>(inputDesc[kNEG_IN_HIDDEN].dims.d[0]);
    NegStepParams const p = negMakeParams(mCfg, N, static_cast<int32_t>(inputDesc[kNEG_IN_HIDDEN].type),
        static_cast<int32_t>(inputDesc[kNEG_IN_POSITIONS].type), inputs, outputs);
    cudaError_t const e = negStepLaunch(p, workspace, negPluginWorkspaceSize(mCfg, N), stream);
    if (e != cudaSuccess)
    {
        logError("enqueue", cudaGetErrorString(e));
        return 1;
    }
    return 0;
}

IPluginV3* NegPlugin::attachToContext(IPluginResourceContext*) noexcept
{
    return clone();
}

PluginFieldCollection const* NegPlugin::getFieldsToSerialize() noexcept
{
    mSerialFields = mCfg.toFields();
    mSerialPF = toPluginFields(mSerialFields);
    mSerialFC.nbFields = static_cast<int32_t>(mSerialPF.size());
    mSerialFC.fields = mSerialPF.data();
    return &mSerialFC;
}

NegPluginCreator::NegPluginCreator()
    : mSpecs(NegPluginConfig::fieldSpecs())
    , mPF(toPluginFields(mSpecs))
{
    mFC.nbFields = static_cast<int32_t>(mPF.size());
    mFC.fields = mPF.data();
}

IPluginV3* NegPluginCreator::createPlugin(char const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept
{
    try
    {
        std::vector<FieldView> views;
        for (int32_t i = 0; fc && i < fc->nbFields; ++i)
        {
            PluginField const& f = fc->fields[i];
            views.push_back(FieldView{f.name, f.data, static_cast<FieldType>(f.type), f.length});
        }
        return new NegPlugin(NegPluginConfig::fromFields(views.data(), static_cast<int32_t>(views.size())));
    }
    catch (std::exception const& e)
    {
        logError("createPlugin", e.what());
        return nullptr;
    }
}

PluginFieldCollection const* NegPluginCreator::getFieldNames() noexcept
{
    return &mFC;
}

char const* NegPluginCreator::getPluginName() const noexcept
{
    return kNegPluginName;
}

char const* NegPluginCreator::getPluginVersion() const noexcept
{
    return kNegPluginVersion;
}

char const* NegPluginCreator::getPluginNamespace() const noexcept
{
    return kNegPluginNamespace;
}

} // namespace trt_neg

// Registered when the library is loaded (ctypes.CDLL(path, RTLD_GLOBAL) before building
// or deserialising an engine), under namespace "trt_neg".
namespace
{
struct NegPluginRegistration
{
    NegPluginRegistration()
    {
        static trt_neg::NegPluginCreator creator;
        getPluginRegistry()->registerCreator(creator, trt_neg::kNegPluginNamespace);
    }
} const gNegPluginRegistration;
} // namespace
