#include "gdnPluginCore.h"

#include <cmath>
#include <cstring>

namespace trt_neg
{
namespace gdn
{
namespace
{

std::string dimsStr(DimsView const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s += (i ? ", " : "") + std::to_string(d.d[i]);
    }
    return s + "]";
}

} // namespace

std::vector<FieldBinding> GdnPluginConfig::fields()
{
    return {bindField("num_k_heads", shape.numKHeads, true), bindField("num_v_heads", shape.numVHeads, true),
        bindField("head_k_dim", shape.headKDim, true), bindField("head_v_dim", shape.headVDim, true),
        bindField("type_id", typeId, true), bindField("remove_input_padding", removeInputPadding),
        bindField("gated_norm", gatedNorm), bindField("norm_eps", normEps),
        bindField("continue_context", continueContext)};
}

GdnPluginConfig GdnPluginConfig::fromFields(FieldView const* fields, int32_t nbFields)
{
    GdnPluginConfig c;
    readFields(kPluginName, c.fields(), fields, nbFields);
    c.validate();
    return c;
}

FieldSet GdnPluginConfig::toFields() const
{
    GdnPluginConfig c = *this; // fields() binds non-const members
    return fieldValues(c.fields());
}

FieldSet GdnPluginConfig::fieldSpecs()
{
    return trt_neg::fieldSpecs(GdnPluginConfig{}.fields());
}

void GdnPluginConfig::validate() const
{
    auto fail = [](char const* what) { throw FieldError(std::string(kPluginName) + ": " + what); };
    GdnShape const& s = shape;
    if (s.numKHeads <= 0 || s.numVHeads <= 0 || s.headKDim <= 0 || s.headVDim <= 0)
        fail("num_k_heads, num_v_heads, head_k_dim, head_v_dim must be positive");
    if (s.numVHeads % s.numKHeads != 0)
        fail("num_v_heads must be a multiple of num_k_heads");
    if (s.headVDim > 1024)
        fail("head_v_dim must be <= 1024");
    // The scan-only kernel keeps the fp32 [dk, dv] state tile, q and k in shared memory
    // (scanSharedBytes, the launcher's own figure): it must fit the smallest opt-in limit of
    // the supported targets (sm_86/89: 99 KB), or the op could not launch everywhere.
    int64_t const smem = scanSharedBytes(s);
    if (smem > kMinOptinSharedBytes)
        throw FieldError(std::string(kPluginName) + ": head_k_dim = " + std::to_string(s.headKDim)
            + ", head_v_dim = " + std::to_string(s.headVDim) + " need " + std::to_string(smem)
            + " B of shared memory (4 * (head_k_dim * head_v_dim + 2 * head_k_dim + 64)), more than the "
            + std::to_string(kMinOptinSharedBytes) + " B opt-in limit per block of sm_86/sm_89");
    auto const t = static_cast<TensorType>(typeId);
    if (t != TensorType::kFLOAT && t != TensorType::kHALF && t != TensorType::kBF16)
        fail("type_id must be float32 (0), float16 (1) or bfloat16 (7)");
    if (!(normEps >= 0.0f) || !std::isfinite(normEps))
        fail("norm_eps must be finite and >= 0");
}

DType GdnPluginConfig::kernelDType() const
{
    return static_cast<DType>(typeId); // kFLOAT/kHALF/kBF16 equal DType's codes
}

TensorType GdnPluginConfig::expectedType(int32_t pos) const
{
    auto const act = static_cast<TensorType>(typeId);
    switch (pos)
    {
    case kIN_A_LOG:
    case kIN_DT_BIAS: return TensorType::kFLOAT;
    case kIN_STATE_PTR: return TensorType::kINT64;
    case kIN_HOST_REQUEST_TYPES:
    case kIN_LAST_TOKEN_IDS:
    case kIN_SLOT_MAPPING: return TensorType::kINT32;
    case kIN_NORM_WEIGHT: return gatedNorm ? TensorType::kFLOAT : act; // without norm pos 10 does not exist
    default: return act; // qkv, a, b, z, output
    }
}

int32_t GdnPluginConfig::expectedRank(int32_t pos) const
{
    int32_t const act = removeInputPadding ? 2 : 3;
    switch (pos)
    {
    case kIN_A_LOG:
    case kIN_DT_BIAS:
    case kIN_STATE_PTR:
    case kIN_HOST_REQUEST_TYPES:
    case kIN_LAST_TOKEN_IDS:
    case kIN_SLOT_MAPPING: return 1;
    case kIN_NORM_WEIGHT: return gatedNorm ? 1 : act;
    default: return act;
    }
}

char const* inputName(int32_t pos)
{
    static char const* const kNames[] = {"qkv", "a", "b", "A_log", "dt_bias", "rnn_state_ptr", "host_request_types",
        "last_token_ids", "slot_mapping", "z", "norm_weight"};
    return pos >= 0 && pos <= kIN_NORM_WEIGHT ? kNames[pos] : "?";
}

std::string inputLabel(int32_t pos)
{
    return "input " + std::to_string(pos) + " (" + inputName(pos) + ")";
}

std::string GdnPluginConfig::checkInputDims(DimsView const* in, int32_t nb) const
{
    if (nb != nbInputs())
        return "TrtNegGatedDeltaRule: expected " + std::to_string(nbInputs()) + " inputs, got " + std::to_string(nb);
    for (int32_t i = 0; i < nb; ++i)
    {
        if (in[i].nbDims != expectedRank(i))
            return "TrtNegGatedDeltaRule: " + inputLabel(i) + " must have rank "
                + std::to_string(expectedRank(i)) + ", got " + dimsStr(in[i]);
    }
    auto mismatch = [](int64_t have, int64_t want) { return have >= 0 && want >= 0 && have != want; };
    int32_t const r = removeInputPadding ? 2 : 3;
    auto checkLast = [&](int32_t pos, int64_t want) -> std::string
    {
        if (mismatch(in[pos].d[r - 1], want))
            return "TrtNegGatedDeltaRule: " + inputLabel(pos) + " " + dimsStr(in[pos]) + ": last dim must be "
                + std::to_string(want);
        for (int32_t k = 0; k < r - 1; ++k)
        {
            if (mismatch(in[pos].d[k], in[kIN_QKV].d[k]))
                return "TrtNegGatedDeltaRule: " + inputLabel(pos) + " " + dimsStr(in[pos])
                    + ": leading dims must match qkv " + dimsStr(in[kIN_QKV]);
        }
        return "";
    };
    std::string e;
    if (!(e = checkLast(kIN_QKV, shape.convDim())).empty() || !(e = checkLast(kIN_A, shape.numVHeads)).empty()
        || !(e = checkLast(kIN_B, shape.numVHeads)).empty())
        return e;
    if (gatedNorm && !(e = checkLast(kIN_Z, shape.valueDim())).empty())
        return e;
    if (mismatch(in[kIN_A_LOG].d[0], shape.numVHeads) || mismatch(in[kIN_DT_BIAS].d[0], shape.numVHeads))
        return "TrtNegGatedDeltaRule: A_log and dt_bias must be [num_v_heads]";
    if (gatedNorm && mismatch(in[kIN_NORM_WEIGHT].d[0], shape.headVDim))
        return "TrtNegGatedDeltaRule: norm_weight must be [head_v_dim]";
    if (mismatch(in[kIN_STATE_PTR].d[0], 1))
        return "TrtNegGatedDeltaRule: rnn_state_ptr must be [1] (paged state)";
    int64_t const batch = in[kIN_HOST_REQUEST_TYPES].d[0];
    if (mismatch(in[kIN_LAST_TOKEN_IDS].d[0], batch) || mismatch(in[kIN_SLOT_MAPPING].d[0], batch))
        return "TrtNegGatedDeltaRule: host_request_types, last_token_ids and slot_mapping must all be [batch]";
    if (!removeInputPadding && mismatch(in[kIN_QKV].d[0], batch))
        return "TrtNegGatedDeltaRule: padded qkv must be [batch, max_len, conv_dim]";
    if (batch > kMaxSeqsPerCall)
        return "TrtNegGatedDeltaRule: at most 4096 sequences per call";
    return "";
}

std::string GdnPluginConfig::checkProfileMaxDims(DimsView const* maxDims, int32_t nb) const
{
    if (nb != nbInputs())
        return "TrtNegGatedDeltaRule: expected " + std::to_string(nbInputs()) + " inputs, got " + std::to_string(nb);
    int32_t const positions[3] = {kIN_HOST_REQUEST_TYPES, kIN_LAST_TOKEN_IDS, kIN_SLOT_MAPPING};
    for (int32_t i = 0; i < 3; ++i)
    {
        DimsView const& d = maxDims[positions[i]];
        if (d.nbDims >= 1 && d.d[0] > kMaxSeqsPerCall)
            return "TrtNegGatedDeltaRule: the optimization profile allows " + std::to_string(d.d[0])
                + " sequences (" + inputName(positions[i]) + " " + dimsStr(d) + "), more than the "
                + std::to_string(kMaxSeqsPerCall) + " one call takes: build with max_batch_size <= "
                + std::to_string(kMaxSeqsPerCall);
    }
    return "";
}

std::vector<int64_t> GdnPluginConfig::outputDims(DimsView const& qkv) const
{
    std::vector<int64_t> d(qkv.d, qkv.d + qkv.nbDims);
    if (!d.empty())
        d.back() = shape.valueDim();
    return d;
}

std::string GdnPluginConfig::makeParams(void const* const* inputs, void* output, DimsView const& qkvDims,
    int64_t batch, GdnParams& p) const
{
    if (batch < 0 || batch > kMaxSeqsPerCall)
        return "TrtNegGatedDeltaRule: batch " + std::to_string(batch) + " outside [0, 4096]";
    p = GdnParams{};
    p.shape = shape;
    p.dtype = kernelDType();
    p.normEps = normEps;
    p.batch = static_cast<int32_t>(batch);
    p.removePadding = removeInputPadding;
    p.continueContext = continueContext;
    if (removeInputPadding)
    {
        p.numTokens = qkvDims.nbDims > 0 ? qkvDims.d[0] : 0;
    }
    else
    {
        p.maxSeqLen = qkvDims.nbDims > 1 ? static_cast<int32_t>(qkvDims.d[1]) : 0;
        p.numTokens = qkvDims.nbDims > 1 ? qkvDims.d[0] * qkvDims.d[1] : 0;
    }
    p.qkv = inputs[kIN_QKV];
    p.a = inputs[kIN_A];
    p.b = inputs[kIN_B];
    p.aLog = static_cast<float const*>(inputs[kIN_A_LOG]);
    p.dtBias = static_cast<float const*>(inputs[kIN_DT_BIAS]);
    // rnn_state_ptr: a host int64 holding the device address of this layer's state pool.
    int64_t statePtr = 0;
    std::memcpy(&statePtr, inputs[kIN_STATE_PTR], sizeof statePtr);
    p.statePool = reinterpret_cast<float*>(static_cast<intptr_t>(statePtr));
    p.lastTokenIds = static_cast<int32_t const*>(inputs[kIN_LAST_TOKEN_IDS]);
    p.slotMapping = static_cast<int32_t const*>(inputs[kIN_SLOT_MAPPING]);
    if (gatedNorm)
    {
        p.z = inputs[kIN_Z];
        p.normWeight = static_cast<float const*>(inputs[kIN_NORM_WEIGHT]);
    }
    p.out = output;
    auto const* reqTypes = static_cast<int32_t const*>(inputs[kIN_HOST_REQUEST_TYPES]);
    for (int32_t i = 0; i < batch; ++i)
    {
        if (reqTypes[i] != kCONTEXT && reqTypes[i] != kGENERATION)
            return "TrtNegGatedDeltaRule: host_request_types[" + std::to_string(i) + "] = "
                + std::to_string(reqTypes[i]) + " (expected 0 context or 1 generation)";
        setContext(p.contextMask, i, reqTypes[i] == kCONTEXT);
    }
    if (char const* err = gdn::validate(p))
        return err;
    return "";
}

} // namespace gdn
} // namespace trt_neg
