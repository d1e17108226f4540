// Plain-C++ core of the NEG TensorRT plugin: fields, validation, I/O shape and type
// rules, workspace sizing and launch parameters.  negPlugin.cpp only forwards
// TensorRT calls here, so everything below is compiled and tested without TensorRT
// (plugins/neg/tests/negPluginCoreTest.cpp, run by tests/test_neg_compile.py).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../common/pluginFields.h"
#include "negKernel.h"

namespace trt_neg
{

constexpr char const* kNegPluginName = "NegGatedSampling";
constexpr char const* kNegPluginVersion = "1";

// Inputs: hidden [N,H], logits [N,V], W1 [d,H], b1 [d], w2 [d] or [1,d], b2 [1] or [], tau [1] or [],
// positions [N] (int32 or int64).  Outputs: guided logits [N,V] fp32, token [N] int32,
// entropy [N] fp32, fired [N] int32.
enum NegInput : int32_t
{
    kNEG_IN_HIDDEN = 0,
    kNEG_IN_LOGITS,
    kNEG_IN_W1,
    kNEG_IN_B1,
    kNEG_IN_W2,
    kNEG_IN_B2,
    kNEG_IN_TAU,
    kNEG_IN_POSITIONS,
    kNEG_NB_INPUTS
};

enum NegOutput : int32_t
{
    kNEG_OUT_GUIDED = 0,
    kNEG_OUT_TOKEN,
    kNEG_OUT_ENTROPY,
    kNEG_OUT_FIRED,
    kNEG_NB_OUTPUTS
};

struct NegPluginConfig
{
    int32_t hiddenSize{0};
    int32_t headHiddenSize{0};
    int32_t vocabSize{0};
    int32_t topK{8};
    float temperature{1.0f};
    int64_t seed{0};
    int32_t activation{kNEG_ACT_SILU_CODE};

    static constexpr int32_t kNEG_ACT_SILU_CODE = 0;

    // The fields bound to the members, in serialisation order (the three sizes required).
    std::vector<FieldBinding> fields();

    // Parses fields (unknown names are an error; missing names keep defaults except the
    // three sizes, which are required).  `activation` may be an integer code or a name.
    // Throws FieldError naming the field.
    static NegPluginConfig fromFields(FieldView const* fields, int32_t nbFields);
    void validate() const; // throws FieldError naming the field
    FieldSet toFields() const;
    static FieldSet fieldSpecs(); // names and types for the creator's getFieldNames()
    std::string toString() const;
    bool operator==(NegPluginConfig const& o) const;
};

// Activation names accepted in a kCHAR `activation` field; -1 if unknown.
int32_t negActivationFromName(std::string const& name);
char const* negActivationName(int32_t code);

// Shape rules on concrete or partial dims (-1 = unknown).  Returns "" when consistent,
// else a message naming the input.
std::string negCheckInputShapes(NegPluginConfig const& cfg, std::vector<std::vector<int64_t>> const& dims);

// Type/format support, following IPluginV3OneBuild::supportsFormatCombination: decide
// position pos from types[0..pos] only.  Types are TensorType (= nvinfer1::DataType) codes.
bool negSupportsType(int32_t pos, int32_t const* types);
void negOutputTypes(int32_t const* inputTypes, int32_t* outputTypes);

size_t negPluginWorkspaceSize(NegPluginConfig const& cfg, int64_t maxRows);

// Launch parameters from raw device pointers (inputs/outputs in the orders above).
NegStepParams negMakeParams(NegPluginConfig const& cfg, int32_t N, int32_t hiddenType, int32_t positionsType,
    void const* const* inputs, void* const* outputs);

// What enqueue does (the adapter adds TensorRT's descriptors and the error log): the launch
// over the workspace that getWorkspaceSize reserved for the profile's largest N.  Inline, so
// the core's own tests need no kernel; the CUDA simulation runs it (tests/_cuda_sim.py).
inline cudaError_t negPluginEnqueue(NegPluginConfig const& cfg, int32_t N, int32_t hiddenType, int32_t positionsType,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream)
{
    NegStepParams const p = negMakeParams(cfg, N, hiddenType, positionsType, inputs, outputs);
    return negStepLaunch(p, workspace, negPluginWorkspaceSize(cfg, N), stream);
}

} // namespace trt_neg
