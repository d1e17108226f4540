#include "negPlugin.h"

#include <cstdio>
#include <exception>
#include <vector>

namespace trt_neg
{
namespace
{
using namespace nvinfer1;

// configurePlugin / onShapeChange: the inputs' dims against the config.
template <typename Desc>
int32_t checkShapes(NegPluginConfig const& cfg, char const* where, Desc const* in, int32_t nbInputs,
    int32_t nbOutputs) noexcept
{
    if (!ioCountsMatch(kNegPluginName, where, nbInputs, kNEG_NB_INPUTS, nbOutputs, kNEG_NB_OUTPUTS))
    {
        return 1;
    }
    try
    {
        std::vector<std::vector<int64_t>> dims;
        for (int32_t i = 0; i < nbInputs; ++i)
        {
            Dims const& d = descDims(in[i]);
            dims.emplace_back(d.d, d.d + d.nbDims);
        }
        std::string const err = negCheckInputShapes(cfg, dims);
        if (err.empty())
        {
            return 0;
        }
        logPluginError(kNegPluginName, where, err.c_str());
    }
    catch (std::exception const& e)
    {
        logPluginError(kNegPluginName, where, e.what());
    }
    return 1;
}
} // namespace

NegPlugin::NegPlugin(NegPluginConfig const& cfg)
    : PluginBase(cfg)
    , mDescription(cfg.toString())
{
}

int32_t NegPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept
{
    return checkShapes(mConfig, "configurePlugin", in, nbInputs, nbOutputs);
}

int32_t NegPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (!ioCountsMatch(kNegPluginName, "getOutputDataTypes", nbInputs, kNEG_NB_INPUTS, nbOutputs, kNEG_NB_OUTPUTS))
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
    if (!ioCountsMatch(kNegPluginName, "getOutputShapes", nbInputs, kNEG_NB_INPUTS, nbOutputs, kNEG_NB_OUTPUTS))
    {
        return 1;
    }
    if (inputs[kNEG_IN_LOGITS].nbDims != 2)
    {
        char what[96];
        std::snprintf(what, sizeof what, "input 'logits': expected [N, vocab_size], got rank %d",
            inputs[kNEG_IN_LOGITS].nbDims);
        logPluginError(kNegPluginName, "getOutputShapes", what);
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
    return negPluginWorkspaceSize(mConfig, inputs[kNEG_IN_HIDDEN].max.d[0]);
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
    return checkShapes(mConfig, "onShapeChange", in, nbInputs, nbOutputs);
}

int32_t NegPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*, void const* const* inputs,
    void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    cudaError_t const e = negPluginEnqueue(mConfig, static_cast<int32_t>(inputDesc[kNEG_IN_HIDDEN].dims.d[0]),
        static_cast<int32_t>(inputDesc[kNEG_IN_HIDDEN].type), static_cast<int32_t>(inputDesc[kNEG_IN_POSITIONS].type),
        inputs, outputs, workspace, stream);
    if (e != cudaSuccess)
    {
        logPluginError(kNegPluginName, "enqueue", cudaGetErrorString(e));
        return 1;
    }
    return 0;
}

namespace
{
PluginRegistration<NegPlugin> const gRegistration;
} // namespace

} // namespace trt_neg
