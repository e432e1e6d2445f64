// BertInference: upstream's C++ runner (infer_c/bert_infer.h), for native engines and TensorRT plans alike.
//
//   BertInference bert(enginePath, maxBatchSize, seqLength, enableGraph);
//   bert.prepare(batch);                       // profile, shapes, addresses; captures a CUDA graph if enabled
//   bert.run(ids, segs, mask, batch);          // padded (batch, S) int32 inputs -> logits
//   bert.runPacked(ids, segs, T, cu, B);       // packed tokens + cu_seqlens -> (2, T) logits
//   bert.benchmark(batch, warmUps, iterations, seconds, seed);   // perf's timing loop
//
// Differences from upstream, all bug fixes (spec §7, §13): tensor addresses are bound with and without a graph;
// cu_seqlens copies exactly B+1 entries; the profile is the first one that covers (batch, S), not the position of
// the batch size on the command line; a variable-length engine's run() honours input_mask (upstream fed the
// padding as real tokens), giving 0 at padding positions.
#pragma once

#include "backend.h"
#include "device_memory.h"

#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <vector>

namespace bert
{

// What an engine file is, read without loading its weights (native) or by deserializing it (TensorRT).
struct EngineSummary
{
    std::string kind;      // "native" or "tensorrt"
    bool variableSeqlen{false};
    std::string precision; // native: "fp32"/"fp16"; TensorRT: "" (a plan does not say)
    std::vector<ProfileRange> profiles;
    std::string header;    // native: the JSON header; TensorRT: ""
};

// "native", "tensorrt", or a one-line std::runtime_error (missing, a directory, empty, unrecognised content).
std::string engineKindOf(const std::string& path);
EngineSummary describeEngine(const std::string& path);

class BertInference
{
public:
    BertInference(const std::string& enginePath, int maxBatchSize, int seqLength, bool enableGraph);
    ~BertInference();
    BertInference(const BertInference&) = delete;
    BertInference& operator=(const BertInference&) = delete;

    void prepare(int batchSize);

    // Padded inputs of `batchSize` rows of S values. Returns (B, S, 2) logits, or for a variable-length engine
    // (2, B*S) as upstream's varlen output (row 0 start logits, row 1 end logits).
    std::vector<float> run(const int32_t* ids, const int32_t* segs, const int32_t* mask, int batchSize);

    // Packed inputs: `tokens` ids and segment ids, cuSeqlens of numSequences + 1 prefix sums. Returns (2, tokens).
    std::vector<float> runPacked(
        const int32_t* ids, const int32_t* segs, size_t tokens, const int32_t* cuSeqlens, int numSequences);

    // perf's loop on random full-length inputs: per-iteration GPU times (ms) of the engine alone.
    std::vector<float> benchmark(int batchSize, int warmUps, int iterations, double durationSeconds, unsigned seed);

    const std::vector<float>& times() const { return mTimes; } // one entry (ms) per run()/runPacked()
    void clearTimes() { mTimes.clear(); }

    std::string kind() const { return mBackend->kind(); }
    bool variableSeqlen() const { return mBackend->variableSeqlen(); }
    int maxBatchSize() const { return mMaxBatch; }
    int seqLength() const { return mSeq; }
    bool graphEnabled() const { return mGraphEnabled; }
    int batchSize() const { return mBatch; }

private:
    void checkBatch(int batchSize) const;
    void releaseGraph();
    void launch();       // the captured graph, or the backend's enqueue without one
    void launchTimed();  // launch() between the start and stop events
    float elapsedMs() const;
    // Padded (B, S) inputs on a padded-layout backend -> (B, S, 2) logits; records one time.
    std::vector<float> runPadded(const int32_t* ids, const int32_t* segs, const int32_t* mask, int batchSize);

    int mMaxBatch;
    int mSeq;
    bool mGraphEnabled;
    int mBatch{0};
    std::vector<float> mTimes;

    cudaStream_t mStream{nullptr};
    cudaEvent_t mStart{nullptr};
    cudaEvent_t mStop{nullptr};
    cudaGraphExec_t mGraph{nullptr};

    // Declared before the backend so that they outlive it: a TensorRT context keeps their addresses.
    DeviceMemory mIds;
    DeviceMemory mSegs;
    DeviceMemory mMask;
    DeviceMemory mCuSeqlens;
    DeviceMemory mMaxSeqlen;
    DeviceMemory mOut;
    DeviceIO mIO;
    std::unique_ptr<Backend> mBackend;
};

} // namespace bert
