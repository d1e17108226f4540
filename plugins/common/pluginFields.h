// Plain-C++ plugin field handling shared by the project's TensorRT plugins.
//
// TensorRT passes plugin attributes as (name, data, type, length) records
// (nvinfer1::PluginField) both when a network is built and when an engine is
// deserialised (IPluginV3 serialises through getFieldsToSerialize()).  This header
// mirrors that record without TensorRT so field parsing, validation and the
// serialisation round trip compile and are tested on machines without TensorRT.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace trt_neg
{

// Registry namespace of every trt_neg plugin (trt_neg/trtllm/plugins.py PLUGIN_NAMESPACE).
constexpr char const* kPluginNamespace = "trt_neg";

// Same numeric values as nvinfer1::PluginFieldType.
enum class FieldType : int32_t
{
    kFLOAT16 = 0,
    kFLOAT32 = 1,
    kFLOAT64 = 2,
    kINT8 = 3,
    kINT16 = 4,
    kINT32 = 5,
    kCHAR = 6,
    kDIMS = 7,
    kUNKNOWN = 8,
    kBF16 = 9,
    kINT64 = 10,
};

// Same numeric values as nvinfer1::DataType.
enum class TensorType : int32_t
{
    kFLOAT = 0,
    kHALF = 1,
    kINT8 = 2,
    kINT32 = 3,
    kBOOL = 4,
    kUINT8 = 5,
    kFP8 = 6,
    kBF16 = 7,
    kINT64 = 8,
};

struct FieldView
{
    char const* name;
    void const* data;
    FieldType type;
    int32_t length;
};

class FieldError : public std::invalid_argument
{
public:
    using std::invalid_argument::invalid_argument;
};

// Scalar readers, length 1; errors name the field.  Integers: any integer width (int32:
// range-checked; bool: 0 or 1).  Floats: kFLOAT32 or kFLOAT64 only (an integer field is
// an error, not a reinterpretation).
int64_t fieldAsInt64(FieldView const& f);
int32_t fieldAsInt32(FieldView const& f);
bool fieldAsBool(FieldView const& f);
double fieldAsDouble(FieldView const& f);
std::string fieldAsString(FieldView const& f);

// Owns the storage of a list of fields (for getFieldsToSerialize / getFieldNames).
class FieldSet
{
public:
    void addInt32(std::string const& name, int32_t v);
    void addInt64(std::string const& name, int64_t v);
    void addFloat32(std::string const& name, float v);
    void addString(std::string const& name, std::string const& v);
    // A field with no data (for a creator's getFieldNames()).
    void addSpec(std::string const& name, FieldType type);

    // Views stay valid until the set is modified or destroyed.
    std::vector<FieldView> const& views() const;
    size_t size() const
    {
        return mEntries.size();
    }

private:
    struct Entry
    {
        std::string name;
        FieldType type;
        int32_t length;
        std::vector<uint8_t> bytes;
    };
    std::vector<Entry> mEntries;
    mutable std::vector<FieldView> mViews;
};

// A plugin field bound to the config member that holds it: what a plugin's fromFields(),
// toFields() and creator's getFieldNames() all derive from (one table per plugin).
// int32 / int64 / float members travel as kINT32 / kINT64 / kFLOAT32, bools as kINT32 0/1.
struct FieldBinding
{
    enum class Kind : int32_t
    {
        kInt32,
        kInt64,
        kFloat32,
        kBool,
    };
    char const* name;
    Kind kind;
    void* value; // int32_t*, int64_t*, float* or bool*, as `kind` says
    bool required;

    FieldType type() const;
};

inline FieldBinding bindField(char const* name, int32_t& v, bool required = false)
{
    return FieldBinding{name, FieldBinding::Kind::kInt32, &v, required};
}
inline FieldBinding bindField(char const* name, int64_t& v, bool required = false)
{
    return FieldBinding{name, FieldBinding::Kind::kInt64, &v, required};
}
inline FieldBinding bindField(char const* name, float& v, bool required = false)
{
    return FieldBinding{name, FieldBinding::Kind::kFloat32, &v, required};
}
inline FieldBinding bindField(char const* name, bool& v, bool required = false)
{
    return FieldBinding{name, FieldBinding::Kind::kBool, &v, required};
}

// Stores `fields` into the bound members (absent optional fields keep their values).
// Throws FieldError, prefixed with `plugin`, for an unnamed or unknown field, a field given
// twice, a missing required field, or a value of the wrong kind, length or range.
void readFields(char const* plugin, std::vector<FieldBinding> const& bindings, FieldView const* fields, int32_t nbFields);
// The bound members' values, in binding order (getFieldsToSerialize()).
FieldSet fieldValues(std::vector<FieldBinding> const& bindings);
// The bound names and types without data (a creator's getFieldNames()).
FieldSet fieldSpecs(std::vector<FieldBinding> const& bindings);

// Versioned binary form of a field list: "TNF1", count, then per field
// (name length, name, type, length, byte count, bytes), little-endian host order.
std::vector<uint8_t> serializeFields(std::vector<FieldView> const& fields);
FieldSet deserializeFields(void const* data, size_t size);

int32_t fieldTypeSize(FieldType t);

} // namespace trt_neg
