// What BertInference needs from an engine, whichever kind it is (native or TensorRT).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bert
{

// One optimization profile: (min, opt, max) of the batch size and of the sequence length.
struct ProfileRange
{
    int batch[3];
    int seq[3];

    bool covers(int batchSize, int seqLength) const
    {
        return batch[0] <= batchSize && batchSize <= batch[2] && seq[0] <= seqLength && seqLength <= seq[2];
    }
};

// Device buffers owned by BertInference, sized for (max batch, sequence length) and bound to the backend once.
// Padded layout: ids/segs/mask are (B, S) int32 and out is (B, S, 2) float32.
// Packed layout (TensorRT variable-length engines): ids/segs are (B*S) token slots, cuSeqlens (B+1),
// maxSeqlen (S) is a shape-only input, and out is (2, B*S).
struct DeviceIO
{
    int32_t* ids{nullptr};
    int32_t* segs{nullptr};
    int32_t* mask{nullptr};
    int32_t* cuSeqlens{nullptr};
    int32_t* maxSeqlen{nullptr};
    float* out{nullptr};
};

class Backend
{
public:
    virtual ~Backend() = default;

    virtual std::string kind() const = 0;          // "native" or "tensorrt"
    virtual bool variableSeqlen() const = 0;       // built for packed input (builder_varseqlen.py)
    virtual bool packedInputs() const = 0;         // the device inputs use the packed layout
    virtual std::vector<ProfileRange> profiles() const = 0;
    virtual int vocabSize() const = 0;             // for perf's random ids; 0 when the engine does not say
    virtual int typeVocabSize() const = 0;         // likewise for segment ids

    // Hands over the device buffers (laid out as packedInputs() says), once, before the first setBatch.
    virtual void bind(const DeviceIO& io) = 0;

    // Selects the profile for this batch size, sets shapes and binds the buffers; BertInference has already
    // checked that a profile covers (batchSize, S). Must not be called during stream capture.
    virtual void setBatch(int batchSize, cudaStream_t stream) = 0;

    // Enqueues one forward pass over the bound buffers; safe to capture into a CUDA graph.
    virtual void enqueue(cudaStream_t stream) = 0;

    // Rejects inputs the engine cannot run (ids out of the vocabulary...), in one line; padded (count) values.
    virtual void checkInputs(const int32_t* ids, const int32_t* segs, size_t count) const = 0;
};

} // namespace bert
