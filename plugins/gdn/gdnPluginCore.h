// Everything the TensorRT adapter of the Gated DeltaNet op decides, in plain C++ (no
// TensorRT, no CUDA): plugin fields (parse / serialise), the input list, type and shape
// rules, workspace size, and turning enqueue's raw pointers into GdnParams. gdnPlugin.cpp
// only forwards TensorRT's calls here; tests/test_gdn_plugin_core.py drives it on the CPU.
//
// Fields, field types and data types are the shared plain-C++ mirrors of TensorRT's
// (../common/pluginFields.h: FieldView, FieldBinding, FieldType, TensorType).
//
// Plugin "TrtNegGatedDeltaRule", version "1", namespace "trt_neg". Inputs (paged state,
// as TensorRT-LLM's RNN state manager feeds it; L = tokens, packed [L, *] when
// remove_input_padding = 1, else [B, Lmax, *]):
//   0 qkv                 [.., 2*Hk*dk + Hv*dv]  type_id   post mamba_conv1d (conv + SiLU)
//   1 a                   [.., Hv]               type_id
//   2 b                   [.., Hv]               type_id
//   3 A_log               [Hv]                   fp32
//   4 dt_bias             [Hv]                   fp32
//   5 rnn_state_ptr       [1]                    int64, host: device address of the layer's
//                                                state pool [slots, Hv, dk, dv] fp32
//   6 host_request_types  [B]                    int32, host (0 context, 1 generation)
//   7 last_token_ids      [B]                    int32, device
//   8 slot_mapping        [B]                    int32, device
//   9 z                   [.., Hv*dv]            type_id   (gated_norm = 1 only)
//  10 norm_weight         [dv]                   fp32      (gated_norm = 1 only)
// Output 0: y [.., Hv*dv] type_id (w * rmsnorm(o) * silu(z) per head, or raw o).
#pragma once

#include "../common/pluginFields.h"
#include "gdnParams.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace trt_neg
{
namespace gdn
{

constexpr char const* kPluginName = "TrtNegGatedDeltaRule";
constexpr char const* kPluginVersion = "1";

enum InputIndex : int32_t
{
    kIN_QKV = 0,
    kIN_A = 1,
    kIN_B = 2,
    kIN_A_LOG = 3,
    kIN_DT_BIAS = 4,
    kIN_STATE_PTR = 5,
    kIN_HOST_REQUEST_TYPES = 6,
    kIN_LAST_TOKEN_IDS = 7,
    kIN_SLOT_MAPPING = 8,
    kIN_Z = 9,
    kIN_NORM_WEIGHT = 10,
};

// The input's name at position `pos` (as listed above), and "input 9 (z)": errors name the
// tensor, and the position TensorRT-LLM's network passes it at.
char const* inputName(int32_t pos);
std::string inputLabel(int32_t pos);

// Plain dims (mirror of nvinfer1::Dims; -1 = unknown at build time).
struct DimsView
{
    int32_t nbDims;
    int64_t const* d;
};

struct GdnPluginConfig
{
    GdnShape shape{};
    int32_t typeId{static_cast<int32_t>(TensorType::kBF16)}; // activation dtype (qkv, a, b, z, y)
    bool removeInputPadding{true};
    bool gatedNorm{true};
    float normEps{1e-6f};
    bool continueContext{false};

    // The fields bound to the members, in serialisation order. Required: num_k_heads,
    // num_v_heads, head_k_dim, head_v_dim, type_id. Optional: remove_input_padding (1),
    // gated_norm (1), norm_eps (1e-6), continue_context (0).
    std::vector<FieldBinding> fields();

    // Parses TensorRT's fields: unknown names, wrong types/lengths and invalid values throw
    // FieldError with the message.
    static GdnPluginConfig fromFields(FieldView const* fields, int32_t nbFields);
    FieldSet toFields() const;
    static FieldSet fieldSpecs(); // names and types for the creator's getFieldNames()

    void validate() const; // throws FieldError

    int32_t nbInputs() const
    {
        return gatedNorm ? 11 : 9;
    }
    static int32_t nbOutputs()
    {
        return 1;
    }
    DType kernelDType() const;

    // Required data type of input `pos` (pos == nbInputs(): the output).
    TensorType expectedType(int32_t pos) const;

    // Rank every input must have (output: same rank as qkv).
    int32_t expectedRank(int32_t pos) const;

    // Checks the inputs' (possibly partially unknown) dims against each other and the
    // fields. Returns "" when consistent.
    std::string checkInputDims(DimsView const* inputs, int32_t nbInputs) const;

    // Checks the optimization profile's largest input dims (configurePlugin's max) against
    // what one call takes: at most kMaxSeqsPerCall sequences. Returns "" when they fit.
    std::string checkProfileMaxDims(DimsView const* maxDims, int32_t nbInputs) const;

    // Output dims: qkv's leading dims with the last replaced by Hv*dv.
    std::vector<int64_t> outputDims(DimsView const& qkv) const;

    size_t workspaceSize() const
    {
        return 0; // the state lives in the RNN state pool; the request mask goes by value
    }

    // Builds the kernel parameters from enqueue's arguments: `inputs` are the raw input
    // pointers (the state pointer and host_request_types are host memory, read here),
    // qkvDims the actual qkv dims, batch = dims of last_token_ids. Returns "" on success.
    std::string makeParams(void const* const* inputs, void* output, DimsView const& qkvDims, int64_t batch,
        GdnParams& p) const;
};

} // namespace gdn
} // namespace trt_neg
