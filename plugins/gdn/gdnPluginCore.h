// Everything the TensorRT adapter of the Gated DeltaNet op decides, in plain C++ (no
// TensorRT, no CUDA): plugin fields (parse / serialise), the input list, type and shape
// rules, workspace size, and turning enqueue's raw pointers into GdnParams. gdnPlugin.cpp
// only forwards TensorRT's calls here; tests/test_gdn_plugin_core.py drives it on the CPU.
//
// Codes below equal TensorRT 10's enums so the adapter can cast without tables:
//   data types  (nvinfer1::DataType):      kFLOAT 0, kHALF 1, kINT32 3, kBF16 7, kINT64 8
//   field types (nvinfer1::PluginFieldType): kFLOAT32 1, kINT32 5
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
constexpr char const* kPluginNamespace = "trt_neg";

// nvinfer1::DataType values.
enum TrtType : int32_t
{
    kTRT_FLOAT = 0,
    kTRT_HALF = 1,
    kTRT_INT32 = 3,
    kTRT_BF16 = 7,
    kTRT_INT64 = 8,
};

// nvinfer1::PluginFieldType values.
enum TrtFieldType : int32_t
{
    kFIELD_FLOAT32 = 1,
    kFIELD_INT32 = 5,
};

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

// A plugin field as TensorRT passes it (mirror of nvinfer1::PluginField).
struct FieldView
{
    char const* name;
    void const* data;
    int32_t type;
    int32_t length;
};

// Plain dims (mirror of nvinfer1::Dims; -1 = unknown at build time).
struct DimsView
{
    int32_t nbDims;
    int64_t const* d;
};

struct GdnPluginConfig
{
    GdnShape shape{};
    int32_t typeId{kTRT_BF16}; // activation dtype (qkv, a, b, z, y)
    int32_t removeInputPadding{1};
    int32_t gatedNorm{1};
    float normEps{1e-6f};
    int32_t continueContext{0};

    // The field names, in serialisation order (also the creator's getFieldNames()).
    static std::vector<FieldView> fieldNames();

    // Parses TensorRT's fields. Required: num_k_heads, num_v_heads, head_k_dim, head_v_dim,
    // type_id. Optional: remove_input_padding (1), gated_norm (1), norm_eps (1e-6),
    // continue_context (0). Unknown names, wrong types/lengths and invalid values fail.
    // Returns "" on success, else the message.
    static std::string fromFields(FieldView const* fields, int32_t nbFields, GdnPluginConfig& out);

    // Fields pointing into this object (valid while it lives and is unchanged).
    std::vector<FieldView> toFields() const;

    std::string validate() const;

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
    int32_t expectedType(int32_t pos) const;

    // Rank every input must have (output: same rank as qkv).
    int32_t expectedRank(int32_t pos) const;

    // Checks the inputs' (possibly partially unknown) dims against each other and the
    // fields. Returns "" when consistent.
    std::string checkInputDims(DimsView const* inputs, int32_t nbInputs) const;

    // Output dims: qkv's leading dims with the last replaced by Hv*dv.
    std::vector<int64_t> outputDims(DimsView const& qkv) const;

    size_t workspaceSize() const
    {
        return 0; // the state lives in the RNN state pool; the request mask goes by value
    }

    // Builds the kernel parameters from enqueue's arguments: `inputs` are the raw input
    // pointers (the state pointer and host_request_types are host memory, read here),
    // qkvDims the actual qkv dims, batch = dims of last_token_ids. Returns "" on success.
    std::string makeParams(void const* const* inputs, void* output, DimsView const& qkvDims, int32_t batch,
        GdnParams& p) const;
};

} // namespace gdn
} // namespace trt_neg
