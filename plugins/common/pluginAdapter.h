// TensorRT side of the project's IPluginV3 adapters: what every adapter does the same way
// with TensorRT types (field lists <-> PluginFieldCollection, error reporting), the
// IPluginV3 boilerplate (PluginBase), and the one creator / registration they share.
// Everything a plugin decides stays in its plain-C++ core (../neg/negPluginCore.h,
// ../gdn/gdnPluginCore.h); the adapters forward to it.
//
// A plugin class P used with PluginBase / PluginCreator<P> provides:
//   class P : public PluginBase<P, Config>   // Config: fromFields(views, n) (throws FieldError),
//                                            // fieldSpecs(), toFields()
//   static constexpr char const* kName, kVersion;
//   explicit P(Config const&);
#pragma once

#include "pluginFields.h"

#include <NvInferRuntime.h>

#include <cstdio>
#include <exception>
#include <vector>

namespace trt_neg
{

// stderr: TensorRT hands a plugin library its logger only through an exported
// setLoggerFinder(), which it calls for libraries loaded with IPluginRegistry::loadLibrary;
// this library registers itself when it is loaded instead (see PluginRegistration), so it
// has no logger to find. TensorRT-LLM's own plugins also report failures on stderr.
inline void logPluginError(char const* plugin, char const* where, char const* what)
{
    std::fprintf(stderr, "[trt_neg] %s::%s: %s\n", plugin, where, what);
}

// Whether TensorRT passed the plugin's input and output counts; logs a mismatch, since
// TensorRT itself only reports the method's non-zero return code.
inline bool ioCountsMatch(char const* plugin, char const* where, int32_t nbInputs, int32_t wantInputs,
    int32_t nbOutputs, int32_t wantOutputs) noexcept
{
    if (nbInputs == wantInputs && nbOutputs == wantOutputs)
    {
        return true;
    }
    char what[128];
    std::snprintf(what, sizeof what, "expected %d inputs and %d outputs, got %d and %d", wantInputs, wantOutputs,
        nbInputs, nbOutputs);
    logPluginError(plugin, where, what);
    return false;
}

// A FieldSet exposed as a PluginFieldCollection; owns the storage it points into.
class PluginFieldList
{
public:
    PluginFieldList() = default;
    PluginFieldList(PluginFieldList const&) = delete;
    PluginFieldList& operator=(PluginFieldList const&) = delete;

    nvinfer1::PluginFieldCollection const* set(FieldSet fields)
    {
        mSet = std::move(fields);
        mFields.clear();
        for (FieldView const& v : mSet.views())
        {
            mFields.emplace_back(v.name, v.data, static_cast<nvinfer1::PluginFieldType>(v.type), v.length);
        }
        mFc.nbFields = static_cast<int32_t>(mFields.size());
        mFc.fields = mFields.data();
        return &mFc;
    }
    nvinfer1::PluginFieldCollection const* get() const
    {
        return &mFc;
    }

private:
    FieldSet mSet;
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFc{};
};

inline std::vector<FieldView> fieldViews(nvinfer1::PluginFieldCollection const* fc)
{
    std::vector<FieldView> views;
    for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
    {
        nvinfer1::PluginField const& f = fc->fields[i];
        views.push_back(FieldView{f.name, f.data, static_cast<FieldType>(f.type), f.length});
    }
    return views;
}

// Dims of a build-time or runtime tensor description.
inline nvinfer1::Dims const& descDims(nvinfer1::DynamicPluginTensorDesc const& d)
{
    return d.desc.dims;
}
inline nvinfer1::Dims const& descDims(nvinfer1::PluginTensorDesc const& d)
{
    return d.dims;
}

// The IPluginV3 boilerplate of a plugin `Derived` over its plain-C++ `ConfigT`: capability
// lookup, clone / attachToContext, name / version / namespace, getFieldsToSerialize.
// Derived implements the IPluginV3OneBuild / IPluginV3OneRuntime decisions (forwarding to
// its core) and provides kName, kVersion and a constructor from ConfigT.
template <typename Derived, typename ConfigT>
class PluginBase : public nvinfer1::IPluginV3,
                   public nvinfer1::IPluginV3OneCore,
                   public nvinfer1::IPluginV3OneBuild,
                   public nvinfer1::IPluginV3OneRuntime
{
public:
    using Config = ConfigT;

    explicit PluginBase(Config const& config)
        : mConfig(config)
    {
    }

    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    nvinfer1::IPluginV3* clone() noexcept override
    {
        try
        {
            return new Derived(mConfig);
        }
        catch (std::exception const& e)
        {
            logPluginError(Derived::kName, "clone", e.what());
        }
        return nullptr;
    }
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone();
    }
    char const* getPluginName() const noexcept override
    {
        return Derived::kName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return Derived::kVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        try
        {
            return mSerialFields.set(mConfig.toFields());
        }
        catch (std::exception const& e)
        {
            logPluginError(Derived::kName, "getFieldsToSerialize", e.what());
        }
        return nullptr;
    }

protected:
    Config const mConfig;

private:
    PluginFieldList mSerialFields;
};

// The creator of every plugin P (a PluginBase): fields -> P::Config -> P.
template <typename P>
class PluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    PluginCreator()
    {
        mFieldNames.set(P::Config::fieldSpecs());
    }

    nvinfer1::IPluginV3* createPlugin(char const* /*name*/, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase /*phase*/) noexcept override
    {
        try
        {
            std::vector<FieldView> const views = fieldViews(fc);
            return new P(P::Config::fromFields(views.data(), static_cast<int32_t>(views.size())));
        }
        catch (std::exception const& e)
        {
            logPluginError(P::kName, "createPlugin", e.what());
        }
        return nullptr;
    }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return mFieldNames.get();
    }
    char const* getPluginName() const noexcept override
    {
        return P::kName;
    }
    char const* getPluginVersion() const noexcept override
    {
        return P::kVersion;
    }
    char const* getPluginNamespace() const noexcept override
    {
        return kPluginNamespace;
    }

private:
    PluginFieldList mFieldNames;
};

// Registers PluginCreator<P> under kPluginNamespace; define one static instance per plugin so
// it runs when the library is loaded: ctypes.CDLL(path, RTLD_GLOBAL) before building or
// deserialising an engine, trtexec --staticPlugins=path, or LD_PRELOAD. The library exports
// no getCreators(), so IPluginRegistry::loadLibrary and trtexec --dynamicPlugins are not ways
// to load it: loadLibrary refuses creators that are already registered, and loading the
// library registers them.
template <typename P>
struct PluginRegistration
{
    PluginRegistration()
    {
        static PluginCreator<P> creator;
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry != nullptr && !registry->registerCreator(creator, kPluginNamespace))
        {
            // Another copy of the library (the build tree's and an engine directory's are two
            // files, so the loader keeps both) registered first, and TensorRT keeps that one:
            // an engine is then deserialised by that copy's code, whatever was loaded after.
            logPluginError(P::kName, "registerCreator",
                "TensorRT refused the creator: one of this name, version and namespace is already registered "
                "(another copy of the plugin library loaded in this process?); the first one registered is used");
        }
    }
};

} // namespace trt_neg
