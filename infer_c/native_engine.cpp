#include "native_engine.h"

#include "json.h"

#include <array>
#include <cctype>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace bert
{

namespace
{
constexpr uint64_t kAlign = 64;
constexpr uint64_t kMaxHeaderBytes = 64ull << 20; // a header lists ~400 tensors: megabytes would be corruption

uint64_t alignUp(uint64_t value)
{
    return (value + kAlign - 1) / kAlign * kAlign;
}

// zlib's CRC-32 (reflected polynomial 0xEDB88320), as Python's zlib.crc32 computes it.
uint32_t crc32(const uint8_t* data, size_t size)
{
    static const std::array<uint32_t, 256> table = [] {
        std::array<uint32_t, 256> t{};
        for (uint32_t i = 0; i < 256; ++i)
        {
            uint32_t c = i;
            for (int k = 0; k < 8; ++k)
            {
                c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            }
            t[i] = c;
        }
        return t;
    }();
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < size; ++i)
    {
        crc = table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    }
    return crc ^ 0xFFFFFFFFu;
}

// The header text without its top-level "header_crc32" member, which is what that checksum covers: the Python
// writer (helpers/engine_format.py) takes the CRC-32 of json.dumps(header without the key, sort_keys=True) and
// writes json.dumps(header, sort_keys=True), so removing the member and one ", " separator from the text as
// written gives back the checksummed text byte for byte. Returns false when there is no such member.
bool withoutChecksumMember(const std::string& text, std::string& covered)
{
    static const std::string kKey = "\"header_crc32\": ";
    int depth = 0;
    for (size_t i = 0; i < text.size(); ++i)
    {
        const char c = text[i];
        if (c == '{' || c == '[')
        {
            ++depth;
        }
        else if (c == '}' || c == ']')
        {
            --depth;
        }
        else if (c == '"')
        {
            if (depth == 1 && text.compare(i, kKey.size(), kKey) == 0) // a key: a value is never followed by ':'
            {
                size_t end = i + kKey.size();
                while (end < text.size() && (std::isdigit(static_cast<unsigned char>(text[end])) || text[end] == '-'))
                {
                    ++end;
                }
                if (text.compare(end, 2, ", ") == 0)
                {
                    covered = text.substr(0, i) + text.substr(end + 2);
                }
                else if (i >= 2 && text.compare(i - 2, 2, ", ") == 0)
                {
                    covered = text.substr(0, i - 2) + text.substr(end);
                }
                else
                {
                    covered = text.substr(0, i) + text.substr(end);
                }
                return true;
            }
            for (++i; i < text.size() && text[i] != '"'; ++i) // skip the string, escapes included
            {
                if (text[i] == '\\')
                {
                    ++i;
                }
            }
        }
    }
    return false;
}

size_t itemSize(const std::string& dtype)
{
    if (dtype == "float32" || dtype == "int32")
        return 4;
    if (dtype == "float16")
        return 2;
    if (dtype == "int8")
        return 1;
    return 0;
}

// hidden_act -> GELU form, as helpers/config.py's GELU_KINDS.
bool tanhGeluOf(const std::string& hiddenAct, const std::string& where)
{
    if (hiddenAct == "gelu" || hiddenAct == "gelu_python")
        return false;
    if (hiddenAct == "gelu_new" || hiddenAct == "gelu_fast" || hiddenAct == "gelu_pytorch_tanh"
        || hiddenAct == "gelu_tanh")
        return true;
    throw std::runtime_error(where + ": hidden_act \"" + hiddenAct + "\" is not supported");
}

std::string shapeText(const std::vector<long long>& shape)
{
    std::string text = "[";
    for (size_t i = 0; i < shape.size(); ++i)
    {
        text += (i ? ", " : "") + std::to_string(shape[i]);
    }
    return text + "]";
}
} // namespace

std::string NativeEngineFile::corrupt(const std::string& why) const
{
    return "engine " + mPath + " is corrupt (" + why + "): rebuild it";
}

NativeEngineFile NativeEngineFile::read(const std::string& path, bool withBlob)
{
    NativeEngineFile file;
    file.mPath = path;
    std::ifstream in(path, std::ios::binary);
    if (!in)
    {
        throw std::runtime_error("engine not found or unreadable: " + path);
    }
    in.seekg(0, std::ios::end);
    const uint64_t fileSize = static_cast<uint64_t>(in.tellg());
    in.seekg(0, std::ios::beg);

    unsigned char prefix[16] = {};
    in.read(reinterpret_cast<char*>(prefix), sizeof(prefix));
    if (!in || std::memcmp(prefix, kNativeMagic, 8) != 0)
    {
        throw std::runtime_error(path + " is not a native engine file (unrecognised content)");
    }
    uint64_t headerBytes = 0;
    for (int i = 7; i >= 0; --i)
    {
        headerBytes = (headerBytes << 8) | prefix[8 + i];
    }
    if (headerBytes == 0 || headerBytes > kMaxHeaderBytes || 16 + headerBytes > fileSize)
    {
        throw std::runtime_error(file.corrupt("unreadable header"));
    }
    file.mHeaderText.resize(headerBytes);
    in.read(&file.mHeaderText[0], static_cast<std::streamsize>(headerBytes));
    if (!in)
    {
        throw std::runtime_error(file.corrupt("unreadable header"));
    }
    file.parseHeader();

    const uint64_t blobStart = alignUp(16 + headerBytes);
    if (fileSize != blobStart + file.mBlobBytes)
    {
        throw std::runtime_error("engine " + path + " is corrupt or truncated (size mismatch): rebuild it");
    }
    if (withBlob)
    {
        file.mBlob.resize(file.mBlobBytes);
        in.seekg(static_cast<std::streamoff>(blobStart), std::ios::beg);
        in.read(reinterpret_cast<char*>(file.mBlob.data()), static_cast<std::streamsize>(file.mBlobBytes));
        if (!in || crc32(file.mBlob.data(), file.mBlob.size()) != file.mBlobCrc)
        {
            throw std::runtime_error("engine " + path + " is corrupt or truncated (checksum mismatch): rebuild it");
        }
    }
    return file;
}

void NativeEngineFile::parseHeader()
{
    const std::string where = "header";
    JsonValue header;
    try
    {
        header = JsonValue::parse(mHeaderText, where);
    }
    catch (const std::runtime_error& error)
    {
        throw std::runtime_error(corrupt(error.what()));
    }
    const JsonValue* version = header.find("format_version");
    if (version == nullptr || version->type() != JsonValue::Type::kNumber
        || version->asNumber(where) != kNativeFormatVersion)
    {
        throw std::runtime_error("engine " + mPath + " has another format version than "
            + std::to_string(kNativeFormatVersion) + ", the one this runtime reads: rebuild the engine");
    }
    // every engine of this format version has the checksum: a header without one is damaged, not old
    {
        const JsonValue* stored = header.find("header_crc32");
        std::string covered;
        const bool matches = stored != nullptr && stored->type() == JsonValue::Type::kNumber
            && withoutChecksumMember(mHeaderText, covered)
            && static_cast<double>(crc32(reinterpret_cast<const uint8_t*>(covered.data()), covered.size()))
                == stored->asNumber(where);
        if (!matches)
        {
            throw std::runtime_error(corrupt("its header does not match its checksum"));
        }
    }
    try
    {
        mPrecision = header.at("precision", where).asString(where + " precision");
        mVariableSeqlen = header.at("variable_seqlen", where).asBool(where + " variable_seqlen");

        const JsonValue& config = header.at("config", where);
        const std::string cw = where + " config";
        auto positive = [&](const char* key) {
            const long long v = config.at(key, cw).asInteger(cw + " " + key);
            if (v <= 0 || v > (1ll << 30))
            {
                throw std::runtime_error(cw + " " + key + " must be a positive integer");
            }
            return static_cast<int>(v);
        };
        mConfig.layers = positive("num_hidden_layers");
        mConfig.hidden = positive("hidden_size");
        mConfig.heads = positive("num_attention_heads");
        mConfig.intermediate = positive("intermediate_size");
        mConfig.vocab = positive("vocab_size");
        mConfig.maxPositions = positive("max_position_embeddings");
        mConfig.typeVocab = positive("type_vocab_size");
        if (mConfig.hidden % mConfig.heads != 0)
        {
            throw std::runtime_error(cw + ": hidden_size is not a multiple of num_attention_heads");
        }
        const std::string hiddenAct = config.find("hidden_act") ? config.at("hidden_act", cw).asString(cw) : "gelu";
        const double configEps
            = config.find("layer_norm_eps") ? config.at("layer_norm_eps", cw).asNumber(cw + " layer_norm_eps") : 1e-12;

        // Numerics written by helpers/native_builder.py; absent keys mean the model's own.
        mNumerics.tanhGelu = tanhGeluOf(hiddenAct, cw);
        mNumerics.embEps = static_cast<float>(configEps);
        mNumerics.lnEps = static_cast<float>(configEps);
        if (const JsonValue* numerics = header.find("numerics"))
        {
            const std::string nw = where + " numerics";
            if (const JsonValue* gelu = numerics->find("gelu"))
            {
                const std::string& kind = gelu->asString(nw + " gelu");
                if (kind != "erf" && kind != "tanh")
                {
                    throw std::runtime_error(nw + " gelu must be \"erf\" or \"tanh\"");
                }
                mNumerics.tanhGelu = kind == "tanh";
            }
            if (const JsonValue* eps = numerics->find("emb_eps"))
            {
                mNumerics.embEps = static_cast<float>(eps->asNumber(nw + " emb_eps"));
            }
            if (const JsonValue* eps = numerics->find("layer_norm_eps"))
            {
                mNumerics.lnEps = static_cast<float>(eps->asNumber(nw + " layer_norm_eps"));
            }
            if (mNumerics.embEps < 0.0f || mNumerics.lnEps < 0.0f)
            {
                throw std::runtime_error(nw + ": LayerNorm epsilons must be >= 0");
            }
        }

        for (const JsonValue& p : header.at("profiles", where).asArray(where + " profiles"))
        {
            const std::string pw = where + " profile";
            ProfileRange range{};
            const std::vector<JsonValue>& batch = p.at("batch", pw).asArray(pw + " batch");
            const std::vector<JsonValue>& seq = p.at("seq", pw).asArray(pw + " seq");
            if (batch.size() != 3 || seq.size() != 3)
            {
                throw std::runtime_error(pw + " must give (min, opt, max) of batch and seq");
            }
            for (int i = 0; i < 3; ++i)
            {
                range.batch[i] = static_cast<int>(batch[i].asInteger(pw + " batch"));
                range.seq[i] = static_cast<int>(seq[i].asInteger(pw + " seq"));
            }
            if (range.batch[0] < 1 || range.batch[0] > range.batch[2] || range.seq[0] < 1 || range.seq[0] > range.seq[2])
            {
                throw std::runtime_error(pw + " has an empty range");
            }
            mProfiles.push_back(range);
        }
        if (mProfiles.empty())
        {
            throw std::runtime_error(where + " lists no optimization profile");
        }

        mBlobBytes = static_cast<uint64_t>(header.at("blob_bytes", where).asInteger(where + " blob_bytes"));
        mBlobCrc = static_cast<uint32_t>(header.at("blob_crc32", where).asInteger(where + " blob_crc32"));
        for (const auto& item : header.at("tensors", where).asObject(where + " tensors"))
        {
            const std::string tw = where + " tensor " + item.first;
            TensorEntry entry;
            entry.dtype = item.second.at("dtype", tw).asString(tw + " dtype");
            for (const JsonValue& d : item.second.at("shape", tw).asArray(tw + " shape"))
            {
                entry.shape.push_back(d.asInteger(tw + " shape"));
            }
            entry.offset = static_cast<size_t>(item.second.at("offset", tw).asInteger(tw + " offset"));
            entry.nbytes = static_cast<size_t>(item.second.at("nbytes", tw).asInteger(tw + " nbytes"));
            mTensors[item.first] = entry;
        }
    }
    catch (const std::runtime_error& error)
    {
        throw std::runtime_error(corrupt(error.what()));
    }
}

const TensorEntry& NativeEngineFile::weight(const std::string& name, const std::vector<long long>& shape) const
{
    const auto it = mTensors.find(name);
    if (it == mTensors.end())
    {
        throw std::runtime_error(corrupt("it lacks weight " + name));
    }
    const TensorEntry& entry = it->second;
    if (entry.dtype != "float32" && entry.dtype != "float16")
    {
        throw std::runtime_error(corrupt("weight " + name + " has dtype " + entry.dtype + ", not float32/float16"));
    }
    if (entry.shape != shape)
    {
        throw std::runtime_error(corrupt("weight " + name + " has shape " + shapeText(entry.shape)
            + ", the config needs " + shapeText(shape)));
    }
    size_t count = 1;
    for (long long d : shape)
    {
        count *= static_cast<size_t>(d);
    }
    const size_t size = itemSize(entry.dtype);
    if (entry.nbytes != count * size || entry.offset % size != 0 || entry.offset > mBlobBytes
        || entry.nbytes > mBlobBytes - entry.offset)
    {
        throw std::runtime_error(corrupt("weight " + name + " lies outside the blob"));
    }
    return entry;
}

} // namespace bert
