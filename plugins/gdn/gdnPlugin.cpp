#include "gdnPlugin.h"

#include "gdnKernel.h"

#include <cstdio>
#include <exception>

namespace trt_neg
{
namespace
{

void report(std::string const& msg)
{
    // TensorRT gives V3 plugins no logger; stderr is what TensorRT-LLM's own plugins use
    // on the failure path as well.
    std::fprintf(stderr, "[trt_neg] %s\n", msg.c_str());
}

gdn::DimsView view(nvinfer1::Dims const& d)
{
    return gdn::DimsView{d.nbDims, d.d};
}

std::vector<nvinfer1::PluginField> toTrt(std::vector<gdn::FieldView> const& fields)
{
    std::vector<nvinfer1::PluginField> out;
    out.reserve(fields.size());
    for (auto const& f : fields)
    {
        out.emplace_back(f.name, f.data, static_cast<nvinfer1::PluginFieldType>(f.type), f.length);
    }
    return out;
}

} // namespace

GatedDeltaRulePlugin::GatedDeltaRulePlugin(gdn::GdnPluginConfig const& config)
    : mConfig(config)
{
}

nvinfer1::IPluginCapability* GatedDeltaRulePlugin::getCapabilityInterface(
    nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* GatedDeltaRulePlugin::clone() noexcept
{
    try
    {
        return new GatedDeltaRulePlugin(mConfig);
    }
    catch (std::exception const& e)
    {
        report(e.what());
    }
    return nullptr;
}

char const* GatedDeltaRulePlugin::getPluginName() const noexcept
{
    return gdn::kPluginName;
}

char const* GatedDeltaRulePlugin::getPluginVersion() const noexcept
{
    return gdn::kPluginVersion;
}

char const* GatedDeltaRulePlugin::getPluginNamespace() const noexcept
{
    return gdn::kPluginNamespace;
}

int32_t GatedDeltaRulePlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        std::vector<gdn::DimsView> dims;
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims.push_back(view(in[i].desc.dims));
        }
        std::string err = nbOutputs == 1 ? mConfig.checkInputDims(dims.data(), nbInputs)
                                         : std::string("TrtNegGatedDeltaRule: expected 1 output");
        if (!err.empty())
        {
            report(err);
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        report(e.what());
    }
    return -1;
}

int32_t GatedDeltaRulePlugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
    nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbOutputs != 1 || nbInputs != mConfig.nbInputs())
    {
        return -1;
    }
    outputTypes[0] = inputTypes[gdn::kIN_QKV];
    return 0;
}

int32_t GatedDeltaRulePlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbOutputs != 1 || nbInputs != mConfig.nbInputs())
    {
        return -1;
    }
    // y: qkv's leading dims, last dim Hv*dv (GdnPluginConfig::outputDims).
    nvinfer1::DimsExprs const& qkv = inputs[gdn::kIN_QKV];
    outputs[0] = qkv;
    if (qkv.nbDims < 1)
    {
        return -1;
    }
    outputs[0].d[qkv.nbDims - 1] = exprBuilder.constant(mConfig.shape.valueDim());
    return 0;
}

bool GatedDeltaRulePlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != mConfig.nbInputs() || nbOutputs != 1 || pos < 0 || pos > nbInputs)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& d = inOut[pos].desc;
    return d.format == nvinfer1::TensorFormat::kLINEAR
        && static_cast<int32_t>(d.type) == mConfig.expectedType(pos);
}

int32_t GatedDeltaRulePlugin::getNbOutputs() const noexcept
{
    return gdn::GdnPluginConfig::nbOutputs();
}

size_t GatedDeltaRulePlugin::getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* /*inputs*/,
    int32_t /*nbInputs*/, nvinfer1::DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return mConfig.workspaceSize();
}

int32_t GatedDeltaRulePlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    try
    {
        std::vector<gdn::DimsView> dims;
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims.push_back(view(in[i].dims));
        }
        std::string err = nbOutputs == 1 ? mConfig.checkInputDims(dims.data(), nbInputs)
                                         : std::string("TrtNegGatedDeltaRule: expected 1 output");
        if (!err.empty())
        {
            report(err);
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        report(e.what());
    }
    return -1;
}

int32_t GatedDeltaRulePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        auto const batch = static_cast<int32_t>(inputDesc[gdn::kIN_LAST_TOKEN_IDS].dims.d[0]);
        gdn::GdnParams params;
        std::string err = mConfig.makeParams(inputs, outputs[0], view(inputDesc[gdn::kIN_QKV].dims), batch, params);
        if (!err.empty())
        {
            report(err);
            return -1;
        }
        cudaError_t const rc = gdn::launch(params, stream);
        if (rc != cudaSuccess)
        {
            report(std::string("TrtNegGatedDeltaRule: launch failed: ") + cudaGetErrorString(rc));
            return -1;
        }
        return 0;
    }
    catch (std::exception const& e)
    {
        report(e.what());
    }
    return -1;
}

nvinfer1::IPluginV3* GatedDeltaRulePlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* GatedDeltaRulePlugin::getFieldsToSerialize() noexcept
{
    try
    {
        mSerialFields = toTrt(mConfig.toFields());
        mSerialFc.nbFields = static_cast<int32_t>(mSerialFields.size());
        mSerialFc.fields = mSerialFields.data();
        return &mSerialFc;
    }
    catch (std::exception const& e)
    {
        report(e.what());
    }
    return nullptr;
}

// ---------------------------------------------------------------------------------------

GatedDeltaRulePluginCreator::GatedDeltaRulePluginCreator()
{
    mFields = toTrt(gdn::GdnPluginConfig::fieldNames());
    mFc.nbFields = static_cast<int32_t>(mFields.size());
    mFc.fields = mFields.data();
}

nvinfer1::IPluginV3* GatedDeltaRulePluginCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        std::vector<gdn::FieldView> fields;
        for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
        {
            nvinfer1::PluginField const& f = fc->fields[i];
            fields.push_back(gdn::FieldView{f.name, f.data, static_cast<int32_t>(f.type), f.length});
        }
        gdn::GdnPluginConfig config;
        std::string err
            = gdn::GdnPluginConfig::fromFields(fields.data(), static_cast<int32_t>(fields.size()), config);
        if (!err.empty())
        {
            report(err);
            return nullptr;
        }
        return new GatedDeltaRulePlugin(config);
    }
    catch (std::exception const& e)
    {
        report(e.what());
    }
    return nullptr;
}

nvinfer1::PluginFieldCollection const* GatedDeltaRulePluginCreator::getFieldNames() noexcept
{
    return &mFc;
}

char const* GatedDeltaRulePluginCreator::getPluginName() const noexcept
{
    return gdn::kPluginName;
}

char const* GatedDeltaRulePluginCreator::getPluginVersion() const noexcept
{
    return gdn::kPluginVersion;
}

char const* GatedDeltaRulePluginCreator::getPluginNamespace() const noexcept
{
    return gdn::kPluginNamespace;
}

namespace
{

// Registers the creator under namespace "trt_neg" when the library is loaded.
struct GdnPluginRegistrar
{
    GatedDeltaRulePluginCreator creator;
    GdnPluginRegistrar()
    {
        if (nvinfer1::IPluginRegistry* registry = getPluginRegistry())
        {
            registry->registerCreator(creator, gdn::kPluginNamespace);
        }
    }
};

GdnPluginRegistrar gRegistrar{};

} // namespace

} // namespace trt_neg
