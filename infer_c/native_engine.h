// Reader of the native engine file that builder.py writes without TensorRT (helpers/engine_format.py):
//   8 bytes magic "BQAENG01", u64 little-endian header length, JSON header, zero padding to 64 bytes,
//   blob of tensors (each at a 64-byte aligned offset), the blob's CRC-32 in the header.
#pragma once

#include "backend.h"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace bert
{

constexpr char kNativeMagic[] = "BQAENG01";
constexpr int kNativeFormatVersion = 1;

struct ModelConfig
{
    int layers{0};
    int hidden{0};
    int heads{0};
    int intermediate{0};
    int vocab{0};
    int maxPositions{0};
    int typeVocab{0};

    int headSize() const { return hidden / heads; }
};

// The few places where BERT implementations legitimately differ (helpers/reference.py's Numerics).
struct Numerics
{
    bool tanhGelu{false};
    float embEps{1e-12f};
    float lnEps{1e-12f};
};

struct TensorEntry
{
    std::string dtype; // "float32" or "float16" for weights
    std::vector<long long> shape;
    size_t offset{0};
    size_t nbytes{0};
};

class NativeEngineFile
{
public:
    // Reads and validates the header; with `withBlob` also the tensors, checked against the header's CRC-32.
    static NativeEngineFile read(const std::string& path, bool withBlob);

    // The named weight, checked to be float32/float16 of exactly this shape.
    const TensorEntry& weight(const std::string& name, const std::vector<long long>& shape) const;
    const void* data(const TensorEntry& entry) const { return mBlob.data() + entry.offset; }

    const std::string& path() const { return mPath; }
    const std::string& headerText() const { return mHeaderText; }
    const ModelConfig& config() const { return mConfig; }
    const std::string& precision() const { return mPrecision; }
    bool variableSeqlen() const { return mVariableSeqlen; }
    const std::vector<ProfileRange>& profiles() const { return mProfiles; }
    const Numerics& numerics() const { return mNumerics; }

private:
    void parseHeader();
    std::string corrupt(const std::string& why) const;

    std::string mPath;
    std::string mHeaderText;
    ModelConfig mConfig;
    std::string mPrecision;
    bool mVariableSeqlen{false};
    std::vector<ProfileRange> mProfiles;
    Numerics mNumerics;
    std::map<std::string, TensorEntry> mTensors;
    uint64_t mBlobBytes{0};
    uint32_t mBlobCrc{0};
    std::vector<uint8_t> mBlob;
};

} // namespace bert
