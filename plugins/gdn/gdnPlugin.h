// TensorRT 10 IPluginV3 adapter of the Gated DeltaNet op ("TrtNegGatedDeltaRule", version
// "1", namespace "trt_neg"). Thin: every decision (fields, inputs, types, shapes,
// workspace, kernel parameters) is made by GdnPluginConfig (gdnPluginCore.h), which is
// plain C++ tested on machines without TensorRT; the CUDA work is gdn::launch().
//
// The creator (PluginCreator<GatedDeltaRulePlugin>, ../common/pluginAdapter.h) registers
// itself with TensorRT's global plugin registry under namespace "trt_neg" when the library
// is loaded (ctypes.CDLL(path, RTLD_GLOBAL) before building and before any executor
// deserialises an engine).
#pragma once

#include "../common/pluginAdapter.h"
#include "gdnPluginCore.h"

#include <NvInferRuntime.h>

namespace trt_neg
{

class GatedDeltaRulePlugin : public PluginBase<GatedDeltaRulePlugin, gdn::GdnPluginConfig>
{
public:
    static constexpr char const* kName = gdn::kPluginName;
    static constexpr char const* kVersion = gdn::kPluginVersion;

    using PluginBase::PluginBase;

    // IPluginV3OneBuild
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
};

using GatedDeltaRulePluginCreator = PluginCreator<GatedDeltaRulePlugin>;

} // namespace trt_neg
