// A small JSON reader, enough for the native engine's header (objects, arrays, strings, numbers, true/false/null).
#pragma once

#include <map>
#include <string>
#include <vector>

namespace bert
{

class JsonValue
{
public:
    enum class Type
    {
        kNull,
        kBool,
        kNumber,
        kString,
        kArray,
        kObject,
    };

    // Parses a whole document; throws std::runtime_error("<what>: invalid JSON at byte N: ...") on bad input.
    static JsonValue parse(const std::string& text, const std::string& what);

    Type type() const { return mType; }

    // Typed accessors throw std::runtime_error naming `where` when the value has another type.
    bool asBool(const std::string& where) const;
    double asNumber(const std::string& where) const;
    long long asInteger(const std::string& where) const; // a number with no fractional part
    const std::string& asString(const std::string& where) const;
    const std::vector<JsonValue>& asArray(const std::string& where) const;
    const std::map<std::string, JsonValue>& asObject(const std::string& where) const;

    // Object members: `at` throws when missing, `find` returns nullptr.
    const JsonValue& at(const std::string& key, const std::string& where) const;
    const JsonValue* find(const std::string& key) const;

private:
    friend class JsonParser;
    Type mType{Type::kNull};
    bool mBool{false};
    double mNumber{0.0};
    std::string mString;
    std::vector<JsonValue> mArray;
    std::map<std::string, JsonValue> mObject;
};

} // namespace bert
