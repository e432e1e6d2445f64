#include "json.h"

#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace bert
{

class JsonParser
{
public:
    JsonParser(const std::string& text, const std::string& what) : mText(text), mWhat(what) {}

    JsonValue document()
    {
        JsonValue value = parseValue(0);
        skipSpace();
        if (mPos != mText.size())
        {
            fail("unexpected text after the document");
        }
        return value;
    }

private:
    static constexpr int kMaxDepth = 64; // the engine header nests 4 deep; this only stops runaway recursion

    [[noreturn]] void fail(const std::string& why) const
    {
        throw std::runtime_error(mWhat + ": invalid JSON at byte " + std::to_string(mPos) + ": " + why);
    }

    void skipSpace()
    {
        while (mPos < mText.size()
            && (mText[mPos] == ' ' || mText[mPos] == '\n' || mText[mPos] == '\r' || mText[mPos] == '\t'))
        {
            ++mPos;
        }
    }

    bool consumeWord(const char* word)
    {
        const std::string w(word);
        if (mText.compare(mPos, w.size(), w) == 0)
        {
            mPos += w.size();
            return true;
        }
        return false;
    }

    JsonValue parseValue(int depth)
    {
        if (depth > kMaxDepth)
        {
            fail("nested too deeply");
        }
        skipSpace();
        if (mPos >= mText.size())
        {
            fail("unexpected end");
        }
        JsonValue value;
        const char c = mText[mPos];
        if (c == '{')
        {
            value.mType = JsonValue::Type::kObject;
            ++mPos;
            skipSpace();
            if (mPos < mText.size() && mText[mPos] == '}')
            {
                ++mPos;
                return value;
            }
            while (true)
            {
                skipSpace();
                if (mPos >= mText.size() || mText[mPos] != '"')
                {
                    fail("expected a string key");
                }
                std::string key = parseString();
                skipSpace();
                if (mPos >= mText.size() || mText[mPos] != ':')
                {
                    fail("expected ':'");
                }
                ++mPos;
                value.mObject[key] = parseValue(depth + 1);
                skipSpace();
                if (mPos < mText.size() && mText[mPos] == ',')
                {
                    ++mPos;
                    continue;
                }
                if (mPos < mText.size() && mText[mPos] == '}')
                {
                    ++mPos;
                    return value;
                }
                fail("expected ',' or '}'");
            }
        }
        if (c == '[')
        {
            value.mType = JsonValue::Type::kArray;
            ++mPos;
            skipSpace();
            if (mPos < mText.size() && mText[mPos] == ']')
            {
                ++mPos;
                return value;
            }
            while (true)
            {
                value.mArray.push_back(parseValue(depth + 1));
                skipSpace();
                if (mPos < mText.size() && mText[mPos] == ',')
                {
                    ++mPos;
                    continue;
                }
                if (mPos < mText.size() && mText[mPos] == ']')
                {
                    ++mPos;
                    return value;
                }
                fail("expected ',' or ']'");
            }
        }
        if (c == '"')
        {
            value.mType = JsonValue::Type::kString;
            value.mString = parseString();
            return value;
        }
        if (consumeWord("true"))
        {
            value.mType = JsonValue::Type::kBool;
            value.mBool = true;
            return value;
        }
        if (consumeWord("false"))
        {
            value.mType = JsonValue::Type::kBool;
            return value;
        }
        if (consumeWord("null"))
        {
            return value;
        }
        if (c == '-' || (c >= '0' && c <= '9'))
        {
            value.mType = JsonValue::Type::kNumber;
            value.mNumber = parseNumber();
            return value;
        }
        fail(std::string("unexpected character '") + c + "'");
    }

    double parseNumber()
    {
        // Python's json module writes Infinity/NaN only for non-finite floats, which a valid header never holds.
        const char* begin = mText.c_str() + mPos;
        char* end = nullptr;
        const double number = std::strtod(begin, &end);
        if (end == begin || !std::isfinite(number))
        {
            fail("bad number");
        }
        mPos += static_cast<size_t>(end - begin);
        return number;
    }

    unsigned hex4()
    {
        if (mPos + 4 > mText.size())
        {
            fail("short \\u escape");
        }
        unsigned code = 0;
        for (int i = 0; i < 4; ++i)
        {
            const char h = mText[mPos++];
            code <<= 4;
            if (h >= '0' && h <= '9')
                code |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f')
                code |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
                code |= static_cast<unsigned>(h - 'A' + 10);
            else
                fail("bad \\u escape");
        }
        return code;
    }

    static void appendUtf8(std::string& out, unsigned code)
    {
        if (code < 0x80)
        {
            out += static_cast<char>(code);
        }
        else if (code < 0x800)
        {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
        else if (code < 0x10000)
        {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
        else
        {
            out += static_cast<char>(0xF0 | (code >> 18));
            out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
        }
    }

    std::string parseString()
    {
        ++mPos; // opening quote
        std::string out;
        while (true)
        {
            if (mPos >= mText.size())
            {
                fail("unterminated string");
            }
            const char c = mText[mPos++];
            if (c == '"')
            {
                return out;
            }
            if (static_cast<unsigned char>(c) < 0x20)
            {
                fail("control character in string");
            }
            if (c != '\\')
            {
                out += c;
                continue;
            }
            if (mPos >= mText.size())
            {
                fail("unterminated escape");
            }
            const char e = mText[mPos++];
            switch (e)
            {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u':
            {
                unsigned code = hex4();
                if (code >= 0xD800 && code < 0xDC00 && mText.compare(mPos, 2, "\\u") == 0)
                {
                    mPos += 2;
                    const unsigned low = hex4();
                    if (low < 0xDC00 || low > 0xDFFF)
                    {
                        fail("bad surrogate pair");
                    }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                }
                appendUtf8(out, code);
                break;
            }
            default: fail("bad escape");
            }
        }
    }

    const std::string& mText;
    const std::string& mWhat;
    size_t mPos{0};
};

JsonValue JsonValue::parse(const std::string& text, const std::string& what)
{
    return JsonParser(text, what).document();
}

namespace
{
[[noreturn]] void wrongType(const std::string& where, const char* expected)
{
    throw std::runtime_error(where + " must be " + expected);
}
} // namespace

bool JsonValue::asBool(const std::string& where) const
{
    if (mType != Type::kBool)
        wrongType(where, "true or false");
    return mBool;
}

double JsonValue::asNumber(const std::string& where) const
{
    if (mType != Type::kNumber)
        wrongType(where, "a number");
    return mNumber;
}

long long JsonValue::asInteger(const std::string& where) const
{
    if (mType != Type::kNumber || std::floor(mNumber) != mNumber || std::fabs(mNumber) > 9.0e15)
        wrongType(where, "an integer");
    return static_cast<long long>(mNumber);
}

const std::string& JsonValue::asString(const std::string& where) const
{
    if (mType != Type::kString)
        wrongType(where, "a string");
    return mString;
}

const std::vector<JsonValue>& JsonValue::asArray(const std::string& where) const
{
    if (mType != Type::kArray)
        wrongType(where, "an array");
    return mArray;
}

const std::map<std::string, JsonValue>& JsonValue::asObject(const std::string& where) const
{
    if (mType != Type::kObject)
        wrongType(where, "an object");
    return mObject;
}

const JsonValue& JsonValue::at(const std::string& key, const std::string& where) const
{
    const JsonValue* value = asObject(where).count(key) ? &mObject.at(key) : nullptr;
    if (value == nullptr)
    {
        throw std::runtime_error(where + " lacks \"" + key + "\"");
    }
    return *value;
}

const JsonValue* JsonValue::find(const std::string& key) const
{
    if (mType != Type::kObject)
        return nullptr;
    const auto it = mObject.find(key);
    return it == mObject.end() ? nullptr : &it->second;
}

} // namespace bert
