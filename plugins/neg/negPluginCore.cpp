#include "negPluginCore.h"
#include "negMath.h"

#include <cmath>
#include <sstream>

namespace trt_neg
{

int32_t negActivationFromName(std::string const& name)
{
    if (name == "silu" || name == "swish")
        return kNEG_ACT_SILU;
    if (name == "gelu")
        return kNEG_ACT_GELU;
    if (name == "relu")
        return kNEG_ACT_RELU;
    if (name == "gelu_tanh" || name == "gelu_pytorch_tanh" || name == "gelu_new")
        return kNEG_ACT_GELU_TANH;
    return -1;
}

char const* negActivationName(int32_t code)
{
    switch (code)
    {
    case kNEG_ACT_SILU: return "silu";
    case kNEG_ACT_GELU: return "gelu";
    case kNEG_ACT_RELU: return "relu";
    case kNEG_ACT_GELU_TANH: return "gelu_tanh";
    default: return "?";
    }
}

std::vector<FieldBinding> NegPluginConfig::fields()
{
    return {bindField("hidden_size", hiddenSize, true), bindField("head_hidden_size", headHiddenSize, true),
        bindField("vocab_size", vocabSize, true), bindField("top_k", topK), bindField("temperature", temperature),
        bindField("seed", seed), bindField("activation", activation)};
}

NegPluginConfig NegPluginConfig::fromFields(FieldView const* fields, int32_t nbFields)
{
    // `activation` may also be a name (kCHAR): read it as its code.
    std::vector<FieldView> views(fields, fields + nbFields);
    int32_t code = 0;
    for (FieldView& f : views)
    {
        if (f.name != nullptr && std::string(f.name) == "activation" && f.type == FieldType::kCHAR)
        {
            std::string const s = fieldAsString(f);
            code = negActivationFromName(s);
            if (code < 0)
                throw FieldError("plugin field 'activation': unknown activation '" + s + "'");
            f = FieldView{f.name, &code, FieldType::kINT32, 1};
        }
    }
    NegPluginConfig c;
    readFields(kNegPluginName, c.fields(), views.data(), nbFields);
    c.validate();
    return c;
}

void NegPluginConfig::validate() const
{
    if (hiddenSize < 1)
        throw FieldError("plugin field 'hidden_size': must be >= 1");
    if (headHiddenSize < 1)
        throw FieldError("plugin field 'head_hidden_size': must be >= 1");
    if (vocabSize < 1 || vocabSize > kNegMaxVocab)
        throw FieldError("plugin field 'vocab_size': must be in [1, 2^30]");
    if (topK < 1 || (topK > kNegMaxTopK && vocabSize > kNegMaxTopK))
        throw FieldError("plugin field 'top_k': must be in [1, 1024] (or >= vocab_size when vocab_size <= 1024)");
    if (!(temperature > 0.0f) || std::isinf(temperature))
        throw FieldError("plugin field 'temperature': must be finite and > 0");
    if (!negActivationValid(activation))
        throw FieldError("plugin field 'activation': unknown activation code " + std::to_string(activation));
}

FieldSet NegPluginConfig::toFields() const
{
    NegPluginConfig c = *this; // fields() binds non-const members
    return fieldValues(c.fields());
}

FieldSet NegPluginConfig::fieldSpecs()
{
    return trt_neg::fieldSpecs(NegPluginConfig{}.fields());
}

std::string NegPluginConfig::toString() const
{
    std::ostringstream o;
    o.precision(9);
    o << "hidden_size=" << hiddenSize << ";head_hidden_size=" << headHiddenSize << ";vocab_size=" << vocabSize
      << ";top_k=" << topK << ";temperature=" << temperature << ";seed=" << seed
      << ";activation=" << negActivationName(activation);
    return o.str();
}

bool NegPluginConfig::operator==(NegPluginConfig const& o) const
{
    return hiddenSize == o.hiddenSize && headHiddenSize == o.headHiddenSize && vocabSize == o.vocabSize
        && topK == o.topK && temperature == o.temperature && seed == o.seed && activation == o.activation;
}

namespace
{
char const* const kInputNames[kNEG_NB_INPUTS] = {"hidden", "logits", "W1", "b1", "w2", "b2", "tau", "positions"};

bool dimIs(int64_t got, int64_t want)
{
    return got < 0 || want < 0 || got == want;
}

int64_t numelOrUnknown(std::vector<int64_t> const& d)
{
    int64_t n = 1;
    for (int64_t x : d)
    {
        if (x < 0)
            return -1;
        n *= x;
    }
    return n;
}
} // namespace

std::string negCheckInputShapes(NegPluginConfig const& cfg, std::vector<std::vector<int64_t>> const& dims)
{
    if (dims.size() != kNEG_NB_INPUTS)
        return "NegGatedSampling: expected 8 inputs, got " + std::to_string(dims.size());
    auto bad = [&](int i, std::string const& what) { return std::string("input '") + kInputNames[i] + "': " + what; };
    auto const& h = dims[kNEG_IN_HIDDEN];
    auto const& z = dims[kNEG_IN_LOGITS];
    if (h.size() != 2 || !dimIs(h[1], cfg.hiddenSize))
        return bad(kNEG_IN_HIDDEN, "expected [N, hidden_size=" + std::to_string(cfg.hiddenSize) + "]");
    if (z.size() != 2 || !dimIs(z[1], cfg.vocabSize) || !dimIs(z[0], h[0]))
        return bad(kNEG_IN_LOGITS, "expected [N, vocab_size=" + std::to_string(cfg.vocabSize) + "] with hidden's N");
    auto const& w1 = dims[kNEG_IN_W1];
    if (w1.size() != 2 || !dimIs(w1[0], cfg.headHiddenSize) || !dimIs(w1[1], cfg.hiddenSize))
        return bad(kNEG_IN_W1, "expected [head_hidden_size, hidden_size]");
    auto const& b1 = dims[kNEG_IN_B1];
    if (b1.size() != 1 || !dimIs(b1[0], cfg.headHiddenSize))
        return bad(kNEG_IN_B1, "expected [head_hidden_size]");
    auto const& w2 = dims[kNEG_IN_W2];
    if (!(w2.size() == 1 || (w2.size() == 2 && dimIs(w2[0], 1))) || !dimIs(numelOrUnknown(w2), cfg.headHiddenSize))
        return bad(kNEG_IN_W2, "expected [head_hidden_size] or [1, head_hidden_size]");
    for (int i : {static_cast<int>(kNEG_IN_B2), static_cast<int>(kNEG_IN_TAU)})
    {
        if (dims[i].size() > 1 || !dimIs(numelOrUnknown(dims[i]), 1))
            return bad(i, "expected a scalar or [1]");
    }
    auto const& pos = dims[kNEG_IN_POSITIONS];
    if (pos.size() != 1 || !dimIs(pos[0], h[0]))
        return bad(kNEG_IN_POSITIONS, "expected [N]");
    return "";
}

bool negSupportsType(int32_t pos, int32_t const* types)
{
    auto const t = static_cast<TensorType>(types[pos]);
    switch (pos)
    {
    case kNEG_IN_HIDDEN: return t == TensorType::kFLOAT || t == TensorType::kHALF || t == TensorType::kBF16;
    case kNEG_IN_W1: return types[pos] == types[kNEG_IN_HIDDEN]; // W1 shares hidden's dtype
    case kNEG_IN_POSITIONS: return t == TensorType::kINT32 || t == TensorType::kINT64;
    case kNEG_NB_INPUTS + kNEG_OUT_TOKEN:
    case kNEG_NB_INPUTS + kNEG_OUT_FIRED: return t == TensorType::kINT32;
    default: return t == TensorType::kFLOAT; // logits, b1, w2, b2, tau, guided, entropy
    }
}

void negOutputTypes(int32_t const* /*inputTypes*/, int32_t* outputTypes)
{
    outputTypes[kNEG_OUT_GUIDED] = static_cast<int32_t>(TensorType::kFLOAT);
    outputTypes[kNEG_OUT_TOKEN] = static_cast<int32_t>(TensorType::kINT32);
    outputTypes[kNEG_OUT_ENTROPY] = static_cast<int32_t>(TensorType::kFLOAT);
    outputTypes[kNEG_OUT_FIRED] = static_cast<int32_t>(TensorType::kINT32);
}

size_t negPluginWorkspaceSize(NegPluginConfig const& cfg, int64_t maxRows)
{
    int32_t const k = cfg.topK < cfg.vocabSize ? cfg.topK : cfg.vocabSize;
    return negWorkspaceSize(maxRows, cfg.headHiddenSize, cfg.vocabSize, k);
}

NegStepParams negMakeParams(NegPluginConfig const& cfg, int32_t N, int32_t hiddenType, int32_t positionsType,
    void const* const* inputs, void* const* outputs)
{
    NegStepParams p;
    p.N = N;
    p.H = cfg.hiddenSize;
    p.d = cfg.headHiddenSize;
    p.V = cfg.vocabSize;
    p.hiddenType = hiddenType == static_cast<int32_t>(TensorType::kHALF)
        ? DType::kFLOAT16
        : (hiddenType == static_cast<int32_t>(TensorType::kBF16) ? DType::kBFLOAT16 : DType::kFLOAT32);
    p.activation = cfg.activation;
    p.topK = cfg.topK < cfg.vocabSize ? cfg.topK : cfg.vocabSize;
    p.temperature = cfg.temperature;
    p.hidden = inputs[kNEG_IN_HIDDEN];
    p.logits = static_cast<float const*>(inputs[kNEG_IN_LOGITS]);
    p.w1 = inputs[kNEG_IN_W1];
    p.b1 = static_cast<float const*>(inputs[kNEG_IN_B1]);
    p.w2 = static_cast<float const*>(inputs[kNEG_IN_W2]);
    p.b2 = static_cast<float const*>(inputs[kNEG_IN_B2]);
    p.tau = static_cast<float const*>(inputs[kNEG_IN_TAU]);
    p.seed = static_cast<uint64_t>(cfg.seed);
    if (positionsType == static_cast<int32_t>(TensorType::kINT64))
        p.offsets64 = static_cast<int64_t const*>(inputs[kNEG_IN_POSITIONS]);
    else
        p.offsets32 = static_cast<int32_t const*>(inputs[kNEG_IN_POSITIONS]);
    p.guided = static_cast<float*>(outputs[kNEG_OUT_GUIDED]);
    p.token = static_cast<int32_t*>(outputs[kNEG_OUT_TOKEN]);
    p.entropy = static_cast<float*>(outputs[kNEG_OUT_ENTROPY]);
    p.fired = static_cast<int32_t*>(outputs[kNEG_OUT_FIRED]);
    return p;
}

} // namespace trt_neg
