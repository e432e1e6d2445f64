#include "bert_infer.h"

#include "common.h"
#include "logging.h"
#include "native_bert.h"
#include "native_engine.h"
#include "trt_backend.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>

namespace bert
{

namespace
{
constexpr int kUpstreamVocab = 30522; // perf's random ids are taken modulo this, as upstream does

std::string profilesText(const std::vector<ProfileRange>& profiles)
{
    std::string text;
    for (const ProfileRange& p : profiles)
    {
        text += (text.empty() ? "" : ", ") + std::string("batch ") + std::to_string(p.batch[0]) + ".."
            + std::to_string(p.batch[2]) + " x seq " + std::to_string(p.seq[0]) + ".." + std::to_string(p.seq[2]);
    }
    return text;
}

// Index of the first 0 in a mask row, or its length: upstream's mask semantics.
int realLength(const int32_t* maskRow, int seqLength)
{
    int length = 0;
    while (length < seqLength && maskRow[length] != 0)
    {
        ++length;
    }
    return length;
}
} // namespace

std::string engineKindOf(const std::string& path)
{
    struct stat info{};
    if (stat(path.c_str(), &info) != 0)
    {
        throw std::runtime_error("engine not found: " + path);
    }
    if (S_ISDIR(info.st_mode))
    {
        throw std::runtime_error("engine path is a directory: " + path);
    }
    std::ifstream in(path, std::ios::binary);
    char head[8] = {};
    in.read(head, sizeof(head));
    const std::streamsize got = in.gcount();
    if (got == 0)
    {
        throw std::runtime_error("engine " + path + " is empty or unreadable");
    }
    if (got == 8 && std::memcmp(head, kNativeMagic, 8) == 0)
    {
        return "native";
    }
    // TensorRT's serialized-plan tag, as helpers/engine_format.py recognises it.
    if ((got >= 4 && std::memcmp(head, "ftrt", 4) == 0) || (got == 8 && std::memcmp(head + 4, "ftrt", 4) == 0))
    {
        return "tensorrt";
    }
    throw std::runtime_error(path + " is not an engine file (neither a native engine nor a TensorRT plan)");
}

EngineSummary describeEngine(const std::string& path)
{
    EngineSummary summary;
    summary.kind = engineKindOf(path);
    if (summary.kind == "native")
    {
        const NativeEngineFile file = NativeEngineFile::read(path, /*withBlob=*/false);
        summary.variableSeqlen = file.variableSeqlen();
        summary.precision = file.precision();
        summary.profiles = file.profiles();
        summary.header = file.headerText();
    }
    else
    {
        const std::unique_ptr<Backend> backend = createTrtBackend(path, 1);
        summary.variableSeqlen = backend->variableSeqlen();
        summary.profiles = backend->profiles();
    }
    return summary;
}

BertInference::BertInference(const std::string& enginePath, int maxBatchSize, int seqLength, bool enableGraph)
    : mMaxBatch(maxBatchSize)
    , mSeq(seqLength)
    , mGraphEnabled(enableGraph)
{
    gLogInfo << "Using BERT inference C++";
    gLogInfo << (enableGraph ? "CUDA Graph is enabled" : "CUDA Graph is disabled");
    if (maxBatchSize < 1 || seqLength < 1)
    {
        throw std::runtime_error("max_batch_size and max_seq_length must be at least 1, got "
            + std::to_string(maxBatchSize) + " and " + std::to_string(seqLength));
    }
    const std::string kind = engineKindOf(enginePath);
    requireGpu();
    mBackend = kind == "native" ? createNativeBackend(enginePath, maxBatchSize, seqLength)
                                : createTrtBackend(enginePath, seqLength);
    const std::vector<ProfileRange> profiles = mBackend->profiles();
    if (std::none_of(profiles.begin(), profiles.end(),
            [&](const ProfileRange& p) { return p.seq[0] <= seqLength && seqLength <= p.seq[2]; }))
    {
        throw std::runtime_error("engine " + enginePath + " has no optimization profile for sequence length "
            + std::to_string(seqLength) + " (its profiles: " + profilesText(profiles) + ")");
    }

    // Zero-filled as upstream allocates them; the packed layout only for TensorRT variable-length engines.
    const size_t slots = static_cast<size_t>(maxBatchSize) * seqLength;
    auto zeroed = [](size_t bytes) {
        DeviceMemory memory(bytes);
        gpuErrChk(cudaMemset(memory.as<void>(), 0, bytes));
        return memory;
    };
    mIds = zeroed(slots * sizeof(int32_t));
    mSegs = zeroed(slots * sizeof(int32_t));
    if (mBackend->packedInputs())
    {
        mCuSeqlens = zeroed((maxBatchSize + 1) * sizeof(int32_t));
        mMaxSeqlen = zeroed(seqLength * sizeof(int32_t));
    }
    else
    {
        mMask = zeroed(slots * sizeof(int32_t));
    }
    mOut = zeroed(2 * slots * sizeof(float));
    mIO = DeviceIO{mIds.as<int32_t>(), mSegs.as<int32_t>(), mMask.as<int32_t>(), mCuSeqlens.as<int32_t>(),
        mMaxSeqlen.as<int32_t>(), mOut.as<float>()};
    mBackend->bind(mIO);
    gpuErrChk(cudaDeviceSynchronize()); // the memsets ran on the legacy stream, which ours does not wait for

    gpuErrChk(cudaStreamCreateWithFlags(&mStream, cudaStreamNonBlocking));
    gpuErrChk(cudaEventCreate(&mStart));
    gpuErrChk(cudaEventCreate(&mStop));
}

BertInference::~BertInference()
{
    if (mStream != nullptr)
    {
        cudaStreamSynchronize(mStream);
    }
    releaseGraph();
    if (mStart != nullptr)
        cudaEventDestroy(mStart);
    if (mStop != nullptr)
        cudaEventDestroy(mStop);
    if (mStream != nullptr)
        cudaStreamDestroy(mStream);
}

void BertInference::releaseGraph()
{
    if (mGraph != nullptr)
    {
        cudaGraphExecDestroy(mGraph);
        mGraph = nullptr;
    }
}

void BertInference::checkBatch(int batchSize) const
{
    if (batchSize < 1 || batchSize > mMaxBatch)
    {
        throw std::runtime_error("batch size " + std::to_string(batchSize) + " is outside [1, "
            + std::to_string(mMaxBatch) + "], the max_batch_size this bert_inf was made with");
    }
    const std::vector<ProfileRange> profiles = mBackend->profiles();
    if (std::none_of(profiles.begin(), profiles.end(),
            [&](const ProfileRange& p) { return p.covers(batchSize, mSeq); }))
    {
        throw std::runtime_error("None of the dynamic shape profiles meets the requirement batch = "
            + std::to_string(batchSize) + " and sequence = " + std::to_string(mSeq) + ".");
    }
}

void BertInference::prepare(int batchSize)
{
    checkBatch(batchSize);
    releaseGraph();
    mBatch = 0;
    mBackend->setBatch(batchSize, mStream);
    if (mBackend->packedInputs())
    {
        // Upstream's default: every sequence full length (run()/runPacked() overwrite it).
        std::vector<int32_t> cu(batchSize + 1);
        for (int i = 0; i <= batchSize; ++i)
        {
            cu[i] = i * mSeq;
        }
        gpuErrChk(cudaMemcpyAsync(
            mIO.cuSeqlens, cu.data(), cu.size() * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
        gpuErrChk(cudaStreamSynchronize(mStream));
    }
    if (mGraphEnabled)
    {
        mBackend->enqueue(mStream); // outside the capture: lazy initialisation of cuBLAS / TensorRT
        gpuErrChk(cudaStreamSynchronize(mStream));
        cudaGraph_t graph = nullptr;
        gpuErrChk(cudaStreamBeginCapture(mStream, cudaStreamCaptureModeRelaxed));
        try
        {
            mBackend->enqueue(mStream);
        }
        catch (...)
        {
            if (cudaStreamEndCapture(mStream, &graph) == cudaSuccess && graph != nullptr)
            {
                cudaGraphDestroy(graph);
            }
            throw;
        }
        gpuErrChk(cudaStreamEndCapture(mStream, &graph));
        const cudaError_t status = cudaGraphInstantiate(&mGraph, graph, 0);
        cudaGraphDestroy(graph);
        gpuErrChk(status);
    }
    mBatch = batchSize;
}

void BertInference::launch()
{
    if (mGraph != nullptr)
    {
        gpuErrChk(cudaGraphLaunch(mGraph, mStream));
    }
    else
    {
        mBackend->enqueue(mStream);
    }
}

void BertInference::launchTimed()
{
    gpuErrChk(cudaEventRecord(mStart, mStream));
    launch();
    gpuErrChk(cudaEventRecord(mStop, mStream));
}

float BertInference::elapsedMs() const
{
    float ms = 0.0f;
    gpuErrChk(cudaEventElapsedTime(&ms, mStart, mStop));
    return ms;
}

std::vector<float> BertInference::runPadded(const int32_t* ids, const int32_t* segs, const int32_t* mask, int batchSize)
{
    if (batchSize != mBatch)
    {
        prepare(batchSize);
    }
    const size_t count = static_cast<size_t>(batchSize) * mSeq;
    mBackend->checkInputs(ids, segs, count);
    gpuErrChk(cudaMemcpyAsync(mIO.ids, ids, count * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
    gpuErrChk(cudaMemcpyAsync(mIO.segs, segs, count * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
    gpuErrChk(cudaMemcpyAsync(mIO.mask, mask, count * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
    launchTimed();
    std::vector<float> logits(2 * count);
    gpuErrChk(cudaMemcpyAsync(logits.data(), mIO.out, logits.size() * sizeof(float), cudaMemcpyDeviceToHost, mStream));
    gpuErrChk(cudaStreamSynchronize(mStream));
    mTimes.push_back(elapsedMs());
    return logits;
}

std::vector<float> BertInference::run(const int32_t* ids, const int32_t* segs, const int32_t* mask, int batchSize)
{
    checkBatch(batchSize);
    const size_t count = static_cast<size_t>(batchSize) * mSeq;
    if (mBackend->packedInputs())
    {
        // TensorRT variable-length engine: pack each row's real tokens, run, and lay the logits out padded.
        std::vector<int32_t> cu(batchSize + 1, 0);
        std::vector<int32_t> packedIds;
        std::vector<int32_t> packedSegs;
        for (int r = 0; r < batchSize; ++r)
        {
            const size_t row = static_cast<size_t>(r) * mSeq;
            const int length = realLength(mask + row, mSeq);
            if (length == 0)
            {
                throw std::runtime_error("input_mask row " + std::to_string(r) + " has no real token");
            }
            packedIds.insert(packedIds.end(), ids + row, ids + row + length);
            packedSegs.insert(packedSegs.end(), segs + row, segs + row + length);
            cu[r + 1] = cu[r] + length;
        }
        const std::vector<float> packed
            = runPacked(packedIds.data(), packedSegs.data(), packedIds.size(), cu.data(), batchSize);
        const size_t tokens = packedIds.size();
        std::vector<float> out(2 * count, 0.0f);
        for (int r = 0; r < batchSize; ++r)
        {
            for (int j = 0; j < cu[r + 1] - cu[r]; ++j)
            {
                out[static_cast<size_t>(r) * mSeq + j] = packed[cu[r] + j];
                out[count + static_cast<size_t>(r) * mSeq + j] = packed[tokens + cu[r] + j];
            }
        }
        return out;
    }
    std::vector<float> logits = runPadded(ids, segs, mask, batchSize);
    if (!mBackend->variableSeqlen())
    {
        return logits;
    }
    std::vector<float> out(2 * count); // upstream's varlen layout: (2, B*S)
    for (size_t t = 0; t < count; ++t)
    {
        out[t] = logits[2 * t];
        out[count + t] = logits[2 * t + 1];
    }
    return out;
}

std::vector<float> BertInference::runPacked(
    const int32_t* ids, const int32_t* segs, size_t tokens, const int32_t* cuSeqlens, int numSequences)
{
    checkBatch(numSequences);
    if (cuSeqlens[0] != 0 || static_cast<size_t>(cuSeqlens[numSequences]) != tokens)
    {
        throw std::runtime_error("cu_seqlens must start at 0, rise strictly and end at the token count");
    }
    for (int r = 0; r < numSequences; ++r)
    {
        const int length = cuSeqlens[r + 1] - cuSeqlens[r];
        if (length < 1)
        {
            throw std::runtime_error("cu_seqlens must start at 0, rise strictly and end at the token count");
        }
        if (length > mSeq)
        {
            throw std::runtime_error("a sequence of " + std::to_string(length) + " tokens exceeds the sequence length "
                + std::to_string(mSeq) + " of this bert_inf");
        }
    }
    mBackend->checkInputs(ids, segs, tokens);
    const size_t slots = static_cast<size_t>(numSequences) * mSeq;
    std::vector<float> out(2 * tokens);
    if (!mBackend->packedInputs())
    {
        // Fixed-layout backend: pad each sequence to S on the host and keep its real positions' logits.
        std::vector<int32_t> paddedIds(slots, 0);
        std::vector<int32_t> paddedSegs(slots, 0);
        std::vector<int32_t> mask(slots, 0);
        for (int r = 0; r < numSequences; ++r)
        {
            const size_t row = static_cast<size_t>(r) * mSeq;
            const int length = cuSeqlens[r + 1] - cuSeqlens[r];
            std::copy(ids + cuSeqlens[r], ids + cuSeqlens[r + 1], paddedIds.begin() + row);
            std::copy(segs + cuSeqlens[r], segs + cuSeqlens[r + 1], paddedSegs.begin() + row);
            std::fill(mask.begin() + row, mask.begin() + row + length, 1);
        }
        const std::vector<float> logits = runPadded(paddedIds.data(), paddedSegs.data(), mask.data(), numSequences);
        for (int r = 0; r < numSequences; ++r)
        {
            for (int j = 0; j < cuSeqlens[r + 1] - cuSeqlens[r]; ++j)
            {
                const size_t slot = static_cast<size_t>(r) * mSeq + j;
                out[cuSeqlens[r] + j] = logits[2 * slot];
                out[tokens + cuSeqlens[r] + j] = logits[2 * slot + 1];
            }
        }
        return out;
    }
    if (numSequences != mBatch)
    {
        prepare(numSequences);
    }
    // The engine's token shape is B*S (fixed per prepared batch, so a graph can replay it); the slots past the
    // real tokens belong to no sequence and are zeroed. cu_seqlens: exactly B+1 entries (upstream over-read it).
    std::vector<int32_t> slotIds(slots, 0);
    std::vector<int32_t> slotSegs(slots, 0);
    std::copy(ids, ids + tokens, slotIds.begin());
    std::copy(segs, segs + tokens, slotSegs.begin());
    gpuErrChk(cudaMemcpyAsync(mIO.ids, slotIds.data(), slots * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
    gpuErrChk(cudaMemcpyAsync(mIO.segs, slotSegs.data(), slots * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
    gpuErrChk(cudaMemcpyAsync(
        mIO.cuSeqlens, cuSeqlens, (numSequences + 1) * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
    launchTimed();
    gpuErrChk(cudaMemcpyAsync(out.data(), mIO.out, tokens * sizeof(float), cudaMemcpyDeviceToHost, mStream));
    gpuErrChk(cudaMemcpyAsync(
        out.data() + tokens, mIO.out + slots, tokens * sizeof(float), cudaMemcpyDeviceToHost, mStream));
    gpuErrChk(cudaStreamSynchronize(mStream));
    mTimes.push_back(elapsedMs());
    return out;
}

std::vector<float> BertInference::benchmark(
    int batchSize, int warmUps, int iterations, double durationSeconds, unsigned seed)
{
    if (warmUps < 0 || iterations < 0 || !(durationSeconds >= 0.0) || (iterations == 0 && durationSeconds == 0.0))
    {
        throw std::runtime_error("benchmark needs warm-up runs >= 0 and some iterations or a duration");
    }
    prepare(batchSize);

    // Upstream's inputs: uniform ints in [0, INT_MAX] modulo the vocabulary and modulo 2, all tokens real,
    // drawn for the largest batch so that every batch size sees the same leading rows.
    const size_t slots = static_cast<size_t>(mMaxBatch) * mSeq;
    const size_t count = static_cast<size_t>(batchSize) * mSeq;
    const int idModulus = mBackend->vocabSize() > 0 ? std::min(kUpstreamVocab, mBackend->vocabSize()) : kUpstreamVocab;
    const int segModulus = mBackend->typeVocabSize() > 0 ? std::min(2, mBackend->typeVocabSize()) : 2;
    std::default_random_engine generator(seed);
    std::uniform_int_distribution<int> distribution(0, INT_MAX);
    std::vector<int32_t> ids(slots);
    std::vector<int32_t> segs(slots);
    std::generate(ids.begin(), ids.end(), [&] { return distribution(generator) % idModulus; });
    std::generate(segs.begin(), segs.end(), [&] { return distribution(generator) % segModulus; });
    // Full-length sequences: the mask is all ones, cu_seqlens [0, S, 2S, ...] (prepare() wrote it).
    const std::vector<int32_t> mask(count, 1);
    gpuErrChk(cudaMemcpyAsync(mIO.ids, ids.data(), count * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
    gpuErrChk(cudaMemcpyAsync(mIO.segs, segs.data(), count * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
    if (!mBackend->packedInputs())
    {
        gpuErrChk(cudaMemcpyAsync(mIO.mask, mask.data(), count * sizeof(int32_t), cudaMemcpyHostToDevice, mStream));
    }
    gpuErrChk(cudaStreamSynchronize(mStream));

    for (int i = 0; i < warmUps; ++i)
    {
        launch();
    }
    gpuErrChk(cudaStreamSynchronize(mStream));

    std::vector<float> times;
    const auto begin = std::chrono::steady_clock::now();
    auto seconds = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count(); };
    while (static_cast<int>(times.size()) < iterations || seconds() < durationSeconds)
    {
        launchTimed();
        gpuErrChk(cudaEventSynchronize(mStop));
        times.push_back(elapsedMs());
    }
    return times;
}

} // namespace bert
