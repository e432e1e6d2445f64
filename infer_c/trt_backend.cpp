#include "trt_backend.h"

#include <stdexcept>

#ifdef BERT_WITH_TENSORRT

#include "logging.h"

#include <NvInfer.h>
#include <NvInferPlugin.h>

#include <fstream>
#include <iterator>
#include <mutex>
#include <vector>

namespace bert
{

namespace
{

nvinfer1::Dims dims(std::initializer_list<int64_t> values)
{
    nvinfer1::Dims d{};
    d.nbDims = static_cast<int32_t>(values.size());
    int i = 0;
    for (int64_t v : values)
    {
        d.d[i++] = v;
    }
    return d;
}

std::string versionText(int32_t version)
{
    // TensorRT 10 encodes MAJOR * 10000 + MINOR * 100 + PATCH.
    return std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." + std::to_string(version % 100);
}

// The fixed-length network has 3 inputs (input_ids, segment_ids, input_mask) and logits_out; the variable-length
// one has 4 (input_ids, segment_ids, cu_seqlens, max_seqlen). As upstream: variable length iff IO count != 4.
class TrtBackend : public Backend
{
public:
    TrtBackend(const std::string& path, int seqLength) : mSeq(seqLength)
    {
        static std::once_flag pluginsLoaded;
        std::call_once(pluginsLoaded, [] { initLibNvInferPlugins(&gLogger, ""); });

        std::ifstream in(path, std::ios::binary);
        if (!in)
        {
            throw std::runtime_error("engine not found or unreadable: " + path);
        }
        const std::vector<char> plan((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        mRuntime.reset(nvinfer1::createInferRuntime(gLogger));
        if (!mRuntime)
        {
            throw std::runtime_error("TensorRT could not create a runtime");
        }
        mEngine.reset(mRuntime->deserializeCudaEngine(plan.data(), plan.size()));
        if (!mEngine)
        {
            throw std::runtime_error("TensorRT could not deserialize " + path
                + " (built with another TensorRT version or for another GPU?)");
        }
        mContext.reset(mEngine->createExecutionContext());
        if (!mContext)
        {
            throw std::runtime_error("TensorRT could not create an execution context for " + path);
        }
        const int32_t count = mEngine->getNbIOTensors();
        for (int32_t i = 0; i < count; ++i)
        {
            const char* name = mEngine->getIOTensorName(i);
            (mEngine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? mInputs : mOutputs).push_back(name);
        }
        mVariableSeqlen = count != 4;
        if (mOutputs.size() != 1 || mInputs.size() != (mVariableSeqlen ? 4u : 3u))
        {
            throw std::runtime_error(path + " is not a BERT QA engine (it has " + std::to_string(mInputs.size())
                + " inputs and " + std::to_string(mOutputs.size()) + " outputs)");
        }
        if (mEngine->getTensorDataType(mOutputs[0].c_str()) != nvinfer1::DataType::kFLOAT)
        {
            throw std::runtime_error(path + ": the logits output is not float32");
        }
    }

    std::string kind() const override { return "tensorrt"; }
    bool variableSeqlen() const override { return mVariableSeqlen; }
    bool packedInputs() const override { return mVariableSeqlen; }
    int vocabSize() const override { return 0; }
    int typeVocabSize() const override { return 0; }
    void bind(const DeviceIO& io) override { mIO = io; }
    void checkInputs(const int32_t*, const int32_t*, size_t) const override {}

    std::vector<ProfileRange> profiles() const override
    {
        std::vector<ProfileRange> ranges;
        for (int32_t p = 0; p < mEngine->getNbOptimizationProfiles(); ++p)
        {
            ProfileRange range{};
            const nvinfer1::OptProfileSelector selectors[3] = {nvinfer1::OptProfileSelector::kMIN,
                nvinfer1::OptProfileSelector::kOPT, nvinfer1::OptProfileSelector::kMAX};
            for (int i = 0; i < 3; ++i)
            {
                if (mVariableSeqlen)
                {
                    // Sequences per batch come from cu_seqlens (B+1); the length from max_seqlen's shape.
                    range.batch[i] = static_cast<int>(shapeOf(mInputs[2], p, selectors[i]).d[0] - 1);
                    range.seq[i] = static_cast<int>(shapeOf(mInputs[3], p, selectors[i]).d[0]);
                }
                else
                {
                    const nvinfer1::Dims d = shapeOf(mInputs[0], p, selectors[i]);
                    range.batch[i] = static_cast<int>(d.d[0]);
                    range.seq[i] = static_cast<int>(d.d[1]);
                }
            }
            ranges.push_back(range);
        }
        return ranges;
    }

    void setBatch(int batchSize, cudaStream_t stream) override
    {
        const std::vector<ProfileRange> ranges = profiles();
        int32_t profile = -1;
        for (size_t p = 0; p < ranges.size() && profile < 0; ++p)
        {
            if (ranges[p].covers(batchSize, mSeq))
            {
                profile = static_cast<int32_t>(p);
            }
        }
        if (profile < 0)
        {
            throw std::runtime_error("None of the dynamic shape profiles meets the requirement batch = "
                + std::to_string(batchSize) + " and sequence = " + std::to_string(mSeq) + ".");
        }
        if (profile != mContext->getOptimizationProfile() && !mContext->setOptimizationProfileAsync(profile, stream))
        {
            throw std::runtime_error("TensorRT could not switch to optimization profile " + std::to_string(profile));
        }
        const int64_t b = batchSize;
        const int64_t s = mSeq;
        bool ok = true;
        if (mVariableSeqlen)
        {
            ok = mContext->setInputShape(mInputs[0].c_str(), dims({b * s}))
                && mContext->setInputShape(mInputs[1].c_str(), dims({b * s}))
                && mContext->setInputShape(mInputs[2].c_str(), dims({b + 1}))
                && mContext->setInputShape(mInputs[3].c_str(), dims({s}));
        }
        else
        {
            for (int i = 0; i < 3; ++i)
            {
                ok = ok && mContext->setInputShape(mInputs[i].c_str(), dims({b, s}));
            }
        }
        // inferShapes, not allInputDimensionsSpecified: TensorRT 10 documents the latter as not working with the
        // name-based setInputShape. 0: every input shape is set and the output shapes follow from them.
        if (!ok || mContext->inferShapes(0, nullptr) != 0)
        {
            throw std::runtime_error("TensorRT rejected the input shapes for batch " + std::to_string(batchSize)
                + " and sequence length " + std::to_string(mSeq));
        }
        // Bound on every path: upstream bound them only when a CUDA graph was captured (§13.9).
        void* inputs[4] = {mIO.ids, mIO.segs, mVariableSeqlen ? mIO.cuSeqlens : mIO.mask, mIO.maxSeqlen};
        for (size_t i = 0; i < mInputs.size(); ++i)
        {
            ok = ok && mContext->setTensorAddress(mInputs[i].c_str(), inputs[i]);
        }
        if (!ok || !mContext->setTensorAddress(mOutputs[0].c_str(), mIO.out))
        {
            throw std::runtime_error("TensorRT rejected the tensor addresses");
        }
    }

    void enqueue(cudaStream_t stream) override
    {
        if (!mContext->enqueueV3(stream))
        {
            throw std::runtime_error("TensorRT enqueueV3 failed");
        }
    }

private:
    nvinfer1::Dims shapeOf(const std::string& input, int32_t profile, nvinfer1::OptProfileSelector selector) const
    {
        const nvinfer1::Dims d = mEngine->getProfileShape(input.c_str(), profile, selector);
        // A static input has no profile shape: its one shape is every profile's.
        return d.nbDims > 0 ? d : mEngine->getTensorShape(input.c_str());
    }

    int mSeq;
    bool mVariableSeqlen{false};
    DeviceIO mIO;
    std::vector<std::string> mInputs;
    std::vector<std::string> mOutputs;
    std::unique_ptr<nvinfer1::IRuntime> mRuntime;
    std::unique_ptr<nvinfer1::ICudaEngine> mEngine;
    std::unique_ptr<nvinfer1::IExecutionContext> mContext;
};

} // namespace

bool builtWithTensorRT()
{
    return true;
}

std::string tensorRTBuildVersion()
{
    return std::to_string(NV_TENSORRT_MAJOR) + "." + std::to_string(NV_TENSORRT_MINOR) + "."
        + std::to_string(NV_TENSORRT_PATCH);
}

std::string tensorRTRuntimeVersion()
{
    return versionText(getInferLibVersion());
}

std::unique_ptr<Backend> createTrtBackend(const std::string& path, int seqLength)
{
    return std::make_unique<TrtBackend>(path, seqLength);
}

} // namespace bert

#else // no TensorRT in this build

namespace bert
{

bool builtWithTensorRT()
{
    return false;
}

std::string tensorRTBuildVersion()
{
    return "";
}

std::string tensorRTRuntimeVersion()
{
    return "";
}

std::unique_ptr<Backend> createTrtBackend(const std::string& path, int)
{
    throw std::runtime_error(path + " is a TensorRT engine: TensorRT engines need a TensorRT build of infer_c "
        "(CMake found no TensorRT here; set TRT_INC_DIR/TRT_LIB_DIR and rebuild)");
}

} // namespace bert

#endif
