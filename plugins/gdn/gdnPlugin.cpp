#include "gdnPlugin.h"

#include "gdnKernel.h"
#include "gdnPluginEnqueue.h"

#include <exception>
#include <string>
#include <vector>

namespace trt_neg
{
namespace
{

void report(char const* where, std::string const& msg)
{
    logPluginError(gdn::kPluginName, where, msg.c_str());
}

gdn::DimsView view(nvinfer1::Dims const& d)
{
    return gdn::DimsView{d.nbDims, d.d};
}

// configurePlugin / onShapeChange: the inputs' dims against the config.
template <typename Desc>
int32_t checkShapes(gdn::GdnPluginConfig const& config, char const* where, Desc const* in, int32_t nbInputs,
    int32_t nbOutputs) noexcept
{
    try
    {
        std::vector<gdn::DimsView> dims;
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            dims.push_back(view(descDims(in[i])));
        }
        std::string err = nbOutputs == 1 ? config.checkInputDims(dims.data(), nbInputs)
                                         : std::string("TrtNegGatedDeltaRule: expected 1 output");
        if (err.empty())
        {
            return 0;
        }
        report(where, err);
    }
    catch (std::exception const& e)
    {
        report(where, e.what());
    }
    return -1;
}

// configurePlugin: the profile's largest batch against what one enqueue takes, so that an
// engine that could be fed too many sequences fails to build, not at its first large batch.
int32_t checkProfileMax(gdn::GdnPluginConfig const& config, nvinfer1::DynamicPluginTensorDesc const* in,
    int32_t nbInputs) noexcept
{
    try
    {
        std::vector<gdn::DimsView> maxDims;
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            maxDims.push_back(view(in[i].max));
        }
        std::string const err = config.checkProfileMaxDims(maxDims.data(), nbInputs);
        if (err.empty())
        {
            return 0;
        }
        report("configurePlugin", err);
    }
    catch (std::exception const& e)
    {
        report("configurePlugin", e.what());
    }
    return -1;
}

} // namespace

int32_t GatedDeltaRulePlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (checkShapes(mConfig, "configurePlugin", in, nbInputs, nbOutputs) != 0)
    {
        return -1;
    }
    return checkProfileMax(mConfig, in, nbInputs);
}

int32_t GatedDeltaRulePlugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
    nvinfer1::DataType const* /*inputTypes*/, int32_t nbInputs) const noexcept
{
    if (!ioCountsMatch(gdn::kPluginName, "getOutputDataTypes", nbInputs, mConfig.nbInputs(), nbOutputs, 1))
    {
        return -1;
    }
    // The configured type, the only one supportsFormatCombination accepts for the output.
    outputTypes[0] = static_cast<nvinfer1::DataType>(mConfig.expectedType(nbInputs));
    return 0;
}

int32_t GatedDeltaRulePlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (!ioCountsMatch(gdn::kPluginName, "getOutputShapes", nbInputs, mConfig.nbInputs(), nbOutputs, 1))
    {
        return -1;
    }
    // y: qkv's leading dims, last dim Hv*dv (GdnPluginConfig::outputDims).
    nvinfer1::DimsExprs const& qkv = inputs[gdn::kIN_QKV];
    outputs[0] = qkv;
    if (qkv.nbDims < 1)
    {
        // Said here: TensorRT itself reports only the failed call.
        report("getOutputShapes", gdn::inputLabel(gdn::kIN_QKV) + ": expected rank "
                + std::to_string(mConfig.expectedRank(gdn::kIN_QKV)) + ", got rank " + std::to_string(qkv.nbDims));
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
    return d.format == nvinfer1::TensorFormat::kLINEAR && static_cast<TensorType>(d.type) == mConfig.expectedType(pos);
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
    return checkShapes(mConfig, "onShapeChange", in, nbInputs, nbOutputs);
}

int32_t GatedDeltaRulePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* /*outputDesc*/, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        std::string const err = gdn::pluginEnqueue(mConfig, view(inputDesc[gdn::kIN_QKV].dims),
            view(inputDesc[gdn::kIN_LAST_TOKEN_IDS].dims), inputs, outputs[0], stream);
        if (err.empty())
        {
            return 0;
        }
        report("enqueue", err);
    }
    catch (std::exception const& e)
    {
        report("enqueue", e.what());
    }
    return -1;
}

namespace
{
PluginRegistration<GatedDeltaRulePlugin> const gRegistration;
} // namespace

} // namespace trt_neg
