#include "pluginFields.h"

namespace trt_neg
{

int32_t fieldTypeSize(FieldType t)
{
    switch (t)
    {
    case FieldType::kFLOAT16:
    case FieldType::kBF16:
    case FieldType::kINT16: return 2;
    case FieldType::kFLOAT32:
    case FieldType::kINT32: return 4;
    case FieldType::kFLOAT64:
    case FieldType::kINT64: return 8;
    case FieldType::kINT8:
    case FieldType::kCHAR:
    case FieldType::kUNKNOWN: return 1;
    default: return 0;
    }
}

namespace
{
std::string fname(FieldView const& f)
{
    return std::string("plugin field '") + (f.name ? f.name : "?") + "'";
}

void needScalar(FieldView const& f)
{
    if (f.data == nullptr)
    {
        throw FieldError(fname(f) + ": has no data (a null pointer)");
    }
    if (f.length != 1)
    {
        throw FieldError(fname(f) + ": expected one value, got length " + std::to_string(f.length));
    }
}

template <typename T>
T load(void const* p)
{
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
} // namespace

int64_t fieldAsInt64(FieldView const& f)
{
    needScalar(f);
    switch (f.type)
    {
    case FieldType::kINT8: return load<int8_t>(f.data);
    case FieldType::kINT16: return load<int16_t>(f.data);
    case FieldType::kINT32: return load<int32_t>(f.data);
    case FieldType::kINT64: return load<int64_t>(f.data);
    default: throw FieldError(fname(f) + ": expected an integer field");
    }
}

double fieldAsDouble(FieldView const& f)
{
    needScalar(f);
    switch (f.type)
    {
    case FieldType::kFLOAT32: return load<float>(f.data);
    case FieldType::kFLOAT64: return load<double>(f.data);
    default: throw FieldError(fname(f) + ": expected a float field");
    }
}

int32_t fieldAsInt32(FieldView const& f)
{
    int64_t const v = fieldAsInt64(f);
    if (v < INT32_MIN || v > INT32_MAX)
    {
        throw FieldError(fname(f) + ": value out of int32 range");
    }
    return static_cast<int32_t>(v);
}

bool fieldAsBool(FieldView const& f)
{
    int64_t const v = fieldAsInt64(f);
    if (v != 0 && v != 1)
    {
        throw FieldError(fname(f) + ": must be 0 or 1");
    }
    return v == 1;
}

std::string fieldAsString(FieldView const& f)
{
    if (f.type != FieldType::kCHAR || f.data == nullptr || f.length < 0)
    {
        throw FieldError(fname(f) + ": expected a string (kCHAR) field");
    }
    char const* s = static_cast<char const*>(f.data);
    size_t n = static_cast<size_t>(f.length);
    while (n > 0 && s[n - 1] == '\0')
    {
        --n; // lengths may or may not count the terminator
    }
    return std::string(s, n);
}

void FieldSet::addInt32(std::string const& name, int32_t v)
{
    Entry e{name, FieldType::kINT32, 1, std::vector<uint8_t>(sizeof v)};
    std::memcpy(e.bytes.data(), &v, sizeof v);
    mEntries.push_back(std::move(e));
}

void FieldSet::addInt64(std::string const& name, int64_t v)
{
    Entry e{name, FieldType::kINT64, 1, std::vector<uint8_t>(sizeof v)};
    std::memcpy(e.bytes.data(), &v, sizeof v);
    mEntries.push_back(std::move(e));
}

void FieldSet::addFloat32(std::string const& name, float v)
{
    Entry e{name, FieldType::kFLOAT32, 1, std::vector<uint8_t>(sizeof v)};
    std::memcpy(e.bytes.data(), &v, sizeof v);
    mEntries.push_back(std::move(e));
}

void FieldSet::addString(std::string const& name, std::string const& v)
{
    Entry e{name, FieldType::kCHAR, static_cast<int32_t>(v.size() + 1), std::vector<uint8_t>(v.begin(), v.end())};
    e.bytes.push_back(0);
    mEntries.push_back(std::move(e));
}

void FieldSet::addSpec(std::string const& name, FieldType type)
{
    mEntries.push_back(Entry{name, type, 1, {}});
}

std::vector<FieldView> const& FieldSet::views() const
{
    mViews.clear();
    for (auto const& e : mEntries)
    {
        mViews.push_back(FieldView{e.name.c_str(), e.bytes.empty() ? nullptr : e.bytes.data(), e.type, e.length});
    }
    return mViews;
}

FieldType FieldBinding::type() const
{
    switch (kind)
    {
    case Kind::kInt64: return FieldType::kINT64;
    case Kind::kFloat32: return FieldType::kFLOAT32;
    default: return FieldType::kINT32;
    }
}

void readFields(char const* plugin, std::vector<FieldBinding> const& bindings, FieldView const* fields, int32_t nbFields)
{
    std::string const who = plugin;
    std::vector<bool> seen(bindings.size(), false);
    for (int32_t i = 0; i < nbFields; ++i)
    {
        FieldView const& f = fields[i];
        if (f.name == nullptr)
        {
            throw FieldError(who + ": field without a name");
        }
        size_t b = 0;
        while (b < bindings.size() && std::strcmp(f.name, bindings[b].name) != 0)
        {
            ++b;
        }
        if (b == bindings.size())
        {
            throw FieldError(who + ": unknown field '" + f.name + "'");
        }
        if (seen[b])
        {
            throw FieldError(who + ": field '" + f.name + "' given twice");
        }
        seen[b] = true;
        FieldBinding const& d = bindings[b];
        switch (d.kind)
        {
        case FieldBinding::Kind::kInt32: *static_cast<int32_t*>(d.value) = fieldAsInt32(f); break;
        case FieldBinding::Kind::kInt64: *static_cast<int64_t*>(d.value) = fieldAsInt64(f); break;
        case FieldBinding::Kind::kFloat32: *static_cast<float*>(d.value) = static_cast<float>(fieldAsDouble(f)); break;
        case FieldBinding::Kind::kBool: *static_cast<bool*>(d.value) = fieldAsBool(f); break;
        }
    }
    for (size_t b = 0; b < bindings.size(); ++b)
    {
        if (bindings[b].required && !seen[b])
        {
            throw FieldError(who + ": missing field '" + bindings[b].name + "'");
        }
    }
}

FieldSet fieldValues(std::vector<FieldBinding> const& bindings)
{
    FieldSet s;
    for (FieldBinding const& d : bindings)
    {
        switch (d.kind)
        {
        case FieldBinding::Kind::kInt32: s.addInt32(d.name, *static_cast<int32_t const*>(d.value)); break;
        case FieldBinding::Kind::kInt64: s.addInt64(d.name, *static_cast<int64_t const*>(d.value)); break;
        case FieldBinding::Kind::kFloat32: s.addFloat32(d.name, *static_cast<float const*>(d.value)); break;
        case FieldBinding::Kind::kBool: s.addInt32(d.name, *static_cast<bool const*>(d.value) ? 1 : 0); break;
        }
    }
    return s;
}

FieldSet fieldSpecs(std::vector<FieldBinding> const& bindings)
{
    FieldSet s;
    for (FieldBinding const& d : bindings)
    {
        s.addSpec(d.name, d.type());
    }
    return s;
}

namespace
{
template <typename T>
void put(std::vector<uint8_t>& out, T v)
{
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof v);
    out.insert(out.end(), b, b + sizeof v);
}

struct Reader
{
    uint8_t const* p;
    size_t n;
    size_t pos{0};
    template <typename T>
    T get()
    {
        if (pos + sizeof(T) > n)
        {
            throw FieldError("serialized plugin fields: truncated data");
        }
        T v;
        std::memcpy(&v, p + pos, sizeof v);
        pos += sizeof v;
        return v;
    }
    void bytes(void* dst, size_t k)
    {
        if (pos + k > n)
        {
            throw FieldError("serialized plugin fields: truncated data");
        }
        std::memcpy(dst, p + pos, k);
        pos += k;
    }
};
} // namespace

std::vector<uint8_t> serializeFields(std::vector<FieldView> const& fields)
{
    std::vector<uint8_t> out{'T', 'N', 'F', '1'};
    put<uint32_t>(out, static_cast<uint32_t>(fields.size()));
    for (auto const& f : fields)
    {
        std::string const name = f.name ? f.name : "";
        put<uint32_t>(out, static_cast<uint32_t>(name.size()));
        out.insert(out.end(), name.begin(), name.end());
        put<int32_t>(out, static_cast<int32_t>(f.type));
        put<int32_t>(out, f.length);
        size_t const nb = f.data ? static_cast<size_t>(f.length) * static_cast<size_t>(fieldTypeSize(f.type)) : 0;
        put<uint64_t>(out, nb);
        if (nb)
        {
            auto const* b = static_cast<uint8_t const*>(f.data);
            out.insert(out.end(), b, b + nb);
        }
    }
    return out;
}

FieldSet deserializeFields(void const* data, size_t size)
{
    Reader r{static_cast<uint8_t const*>(data), size};
    char magic[4];
    r.bytes(magic, 4);
    if (std::memcmp(magic, "TNF1", 4) != 0)
    {
        throw FieldError("serialized plugin fields: bad magic/version");
    }
    uint32_t const count = r.get<uint32_t>();
    FieldSet set;
    for (uint32_t i = 0; i < count; ++i)
    {
        uint32_t const nl = r.get<uint32_t>();
        if (nl > 4096)
        {
            throw FieldError("serialized plugin fields: name too long");
        }
        std::string name(nl, '\0');
        r.bytes(&name[0], nl);
        auto const type = static_cast<FieldType>(r.get<int32_t>());
        int32_t const length = r.get<int32_t>();
        uint64_t const nb = r.get<uint64_t>();
        if (nb > size)
        {
            throw FieldError("serialized plugin fields: truncated data");
        }
        std::vector<uint8_t> bytes(static_cast<size_t>(nb));
        if (nb)
        {
            r.bytes(bytes.data(), static_cast<size_t>(nb));
        }
        auto scalar = [&](auto v)
        {
            if (nb != sizeof v)
                throw FieldError("serialized plugin field '" + name + "': bad size");
            std::memcpy(&v, bytes.data(), sizeof v);
            return v;
        };
        switch (type)
        {
        case FieldType::kINT32: set.addInt32(name, scalar(int32_t{})); break;
        case FieldType::kINT64: set.addInt64(name, scalar(int64_t{})); break;
        case FieldType::kFLOAT32: set.addFloat32(name, scalar(float{})); break;
        case FieldType::kCHAR:
        {
            std::string s(bytes.begin(), bytes.end());
            while (!s.empty() && s.back() == '\0') s.pop_back();
            set.addString(name, s);
            break;
        }
        default:
            if (nb == 0)
            {
                set.addSpec(name, type);
                break;
            }
            (void) length;
            throw FieldError("serialized plugin field '" + name + "': unsupported type");
        }
    }
    return set;
}

} // namespace trt_neg
