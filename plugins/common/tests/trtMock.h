// Just enough of TensorRT's runtime to call an IPluginV3 adapter the way TensorRT does, on a
// machine with TensorRT's headers but no libnvinfer: an IExprBuilder over constants, tensor
// descriptions, a registry that records the adapters' static registration, a stub
// cudaGetErrorString(), and a capture of what the adapters log on stderr. Include it in the
// one translation unit of a test executable (it defines those functions).
#pragma once

#include <NvInferImpl.h>
#include <NvInferRuntime.h>

#include <cstdio>
#include <deque>
#include <string>
#include <unistd.h>
#include <vector>

namespace trt_mock
{
// The registry's V3 registration as TensorRT documents it (registerCreator returns false when
// a creator of the same name, version and namespace is already registered); what was
// registered is kept as "namespace::name/version". Everything else is unused by the adapters.
// The interface still declares TensorRT 8's creator methods (deprecated): overriding them
// names the deprecated type.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
class Registry : public nvinfer1::IPluginRegistry
{
public:
    std::vector<std::string> registered;

    bool registerCreator(nvinfer1::IPluginCreatorInterface& creator, nvinfer1::AsciiChar const* const ns) noexcept
        override
    {
        auto const* v3 = dynamic_cast<nvinfer1::IPluginCreatorV3One const*>(&creator);
        std::string const key = std::string(ns) + "::" + (v3 ? v3->getPluginName() : "?") + "/"
            + (v3 ? v3->getPluginVersion() : "?");
        for (auto const& r : registered)
        {
            if (r == key)
            {
                return false;
            }
        }
        registered.push_back(key);
        return true;
    }
    bool registerCreator(nvinfer1::IPluginCreator&, nvinfer1::AsciiChar const* const) noexcept override
    {
        return false;
    }
    nvinfer1::IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override
    {
        *n = 0;
        return nullptr;
    }
    nvinfer1::IPluginCreator* getPluginCreator(
        nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const) noexcept
        override
    {
        return nullptr;
    }
    void setErrorRecorder(nvinfer1::IErrorRecorder* const) noexcept override {}
    nvinfer1::IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(nvinfer1::IPluginCreator const&) noexcept override
    {
        return false;
    }
    bool isParentSearchEnabled() const override
    {
        return false;
    }
    void setParentSearchEnabled(bool const) override {}
    void* loadLibrary(nvinfer1::AsciiChar const*) noexcept override
    {
        return nullptr;
    }
    void deregisterLibrary(void*) noexcept override {}
    nvinfer1::IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override
    {
        *n = 0;
        return nullptr;
    }
    nvinfer1::IPluginCreatorInterface* getCreator(nvinfer1::AsciiChar const* const,
        nvinfer1::AsciiChar const* const, nvinfer1::AsciiChar const* const) noexcept override
    {
        return nullptr;
    }
    bool deregisterCreator(nvinfer1::IPluginCreatorInterface const&) noexcept override
    {
        return false;
    }
    nvinfer1::IPluginResource* acquirePluginResource(
        nvinfer1::AsciiChar const*, nvinfer1::IPluginResource*) noexcept override
    {
        return nullptr;
    }
    int32_t releasePluginResource(nvinfer1::AsciiChar const*) noexcept override
    {
        return -1;
    }
    nvinfer1::IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override
    {
        *n = 0;
        return nullptr;
    }
};
#pragma GCC diagnostic pop

// Function-local: the adapters register from static initialisers, before main.
inline Registry& registry()
{
    static Registry r;
    return r;
}
} // namespace trt_mock

extern "C" nvinfer1::IPluginRegistry* getPluginRegistry() noexcept
{
    return &trt_mock::registry();
}

extern "C" char const* cudaGetErrorString(cudaError_t /*error*/)
{
    return "mock CUDA error";
}

namespace trt_mock
{

// Dimension expressions that are constants (-1 stands for a build-time wildcard).
class ExprBuilder : public nvinfer1::IExprBuilder
{
public:
    ExprBuilder()
    {
        mImpl = &mBuilder;
    }
    ~ExprBuilder() noexcept override = default;

    static int64_t value(nvinfer1::IDimensionExpr const* e)
    {
        return e->getConstantValue();
    }

private:
    struct Constant : nvinfer1::IDimensionExpr
    {
        struct Impl : nvinfer1::apiv::VDimensionExpr
        {
            int64_t v{0};
            bool isConstant() const override
            {
                return true;
            }
            int64_t getConstantValue() const override
            {
                return v;
            }
            bool isSizeTensor() const override
            {
                return false;
            }
        } impl;
        explicit Constant(int64_t v)
        {
            impl.v = v;
            mImpl = &impl;
        }
    };
    struct Builder : nvinfer1::apiv::VExprBuilder
    {
        std::deque<Constant> pool;
        nvinfer1::IDimensionExpr const* constant(int64_t v) override
        {
            pool.emplace_back(v);
            return &pool.back();
        }
        nvinfer1::IDimensionExpr const* operation(
            nvinfer1::DimensionOperation, nvinfer1::IDimensionExpr const&, nvinfer1::IDimensionExpr const&) override
        {
            return nullptr;
        }
        nvinfer1::IDimensionExpr const* declareSizeTensor(
            int32_t, nvinfer1::IDimensionExpr const&, nvinfer1::IDimensionExpr const&) override
        {
            return nullptr;
        }
    } mBuilder;
};

inline nvinfer1::Dims dims(std::vector<int64_t> const& d)
{
    nvinfer1::Dims x{};
    x.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i)
    {
        x.d[i] = d[i];
    }
    return x;
}

// configurePlugin's view of a tensor: `d` as declared (-1 wildcards), `max` the profile's
// largest shape (min = opt = max; `d` itself when not given).
inline nvinfer1::DynamicPluginTensorDesc dynDesc(
    std::vector<int64_t> const& d, nvinfer1::DataType type, std::vector<int64_t> const& max = {})
{
    nvinfer1::DynamicPluginTensorDesc x{};
    x.desc.dims = dims(d);
    x.desc.type = type;
    x.desc.format = nvinfer1::TensorFormat::kLINEAR;
    x.max = dims(max.empty() ? d : max);
    x.min = x.max;
    x.opt = x.max;
    return x;
}

inline nvinfer1::DimsExprs exprs(ExprBuilder& b, std::vector<int64_t> const& d)
{
    nvinfer1::DimsExprs x{};
    x.nbDims = static_cast<int32_t>(d.size());
    for (size_t i = 0; i < d.size(); ++i)
    {
        x.d[i] = b.constant(d[i]);
    }
    return x;
}

// What a call wrote to stderr (the adapters' error log).
template <typename F>
std::string stderrOf(F f)
{
    std::fflush(stderr);
    std::FILE* tmp = std::tmpfile();
    int const saved = dup(2);
    dup2(fileno(tmp), 2);
    f();
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    std::rewind(tmp);
    std::string out;
    char buf[512];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, tmp)) > 0;)
    {
        out.append(buf, n);
    }
    std::fclose(tmp);
    return out;
}

template <typename Interface>
Interface* capability(nvinfer1::IPluginV3* p, nvinfer1::PluginCapabilityType type)
{
    return static_cast<Interface*>(p->getCapabilityInterface(type));
}

// Whether the plugin hands out the three interfaces TensorRT asks an IPluginV3 for (the kinds
// their getInterfaceInfo names), and its core carries this name, version and namespace.
inline bool hasIdentity(nvinfer1::IPluginV3* p, char const* name, char const* version, char const* pluginNamespace)
{
    using nvinfer1::PluginCapabilityType;
    auto* core = capability<nvinfer1::IPluginV3OneCore>(p, PluginCapabilityType::kCORE);
    auto* build = capability<nvinfer1::IPluginV3OneBuild>(p, PluginCapabilityType::kBUILD);
    auto* runtime = capability<nvinfer1::IPluginV3OneRuntime>(p, PluginCapabilityType::kRUNTIME);
    return std::string(core->getInterfaceInfo().kind) == "PLUGIN_V3ONE_CORE"
        && std::string(build->getInterfaceInfo().kind) == "PLUGIN_V3ONE_BUILD"
        && std::string(runtime->getInterfaceInfo().kind) == "PLUGIN_V3ONE_RUNTIME"
        && std::string(core->getPluginName()) == name && std::string(core->getPluginVersion()) == version
        && std::string(core->getPluginNamespace()) == pluginNamespace;
}

} // namespace trt_mock
