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

// Scalar readers: accept any integer (resp. float) width, length 1; errors name the field.
int64_t fieldAsInt64(FieldView const& f);
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

// Versioned binary form of a field list: "TNF1", count, then per field
// (name length, name, type, length, byte count, bytes), little-endian host order.
std::vector<uint8_t> serializeFields(std::vector<FieldView> const& fields);
FieldSet deserializeFields(void const* data, size_t size);

int32_t fieldTypeSize(FieldType t);

} // namespace trt_neg
