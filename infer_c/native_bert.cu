#include "native_bert.h"

#include "common.h"
#include "device_memory.h"
#include "kernels.cuh"
#include "native_engine.h"

#include <cublas_v2.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace bert
{

namespace
{

void checkCublas(cublasStatus_t status, const char* what)
{
    if (status != CUBLAS_STATUS_SUCCESS)
    {
        throw std::runtime_error(std::string("cuBLAS error in ") + what + ": " + cublasGetStatusString(status));
    }
}

template <typename T>
constexpr cudaDataType_t cudaTypeOf();
template <>
constexpr cudaDataType_t cudaTypeOf<float>()
{
    return CUDA_R_32F;
}
template <>
constexpr cudaDataType_t cudaTypeOf<__half>()
{
    return CUDA_R_16F;
}

constexpr size_t kCublasWorkspaceBytes = 32u << 20; // set explicitly so that graph capture never allocates

// One encoder layer's weights on the device. Matrices are [out, in] in the compute type; vectors stay float32.
template <typename T>
struct LayerWeights
{
    T* qkvKernel;       // [3E, E]: query, key, value rows stacked, so one GEMM projects all three
    float* qkvBias;     // [3E]
    T* attnOutKernel;   // [E, E]
    float* attnOutBias; // [E]
    float* ln1Gamma;
    float* ln1Beta;
    T* midKernel;  // [I, E]
    float* midBias; // [I]
    T* outKernel;  // [E, I]
    float* outBias; // [E]
    float* ln2Gamma;
    float* ln2Beta;
};

template <typename T>
class NativeBackend : public Backend
{
public:
    NativeBackend(const NativeEngineFile& file, int maxBatchSize, int seqLength);
    ~NativeBackend() override
    {
        if (mCublas != nullptr)
        {
            cublasDestroy(mCublas);
        }
    }

    std::string kind() const override { return "native"; }
    bool variableSeqlen() const override { return mVariableSeqlen; }
    bool packedInputs() const override { return false; }
    std::vector<ProfileRange> profiles() const override { return mProfiles; }
    int vocabSize() const override { return mConfig.vocab; }
    int typeVocabSize() const override { return mConfig.typeVocab; }
    void bind(const DeviceIO& io) override { mIO = io; }
    void setBatch(int batchSize, cudaStream_t /*stream*/) override { mBatch = batchSize; }
    void enqueue(cudaStream_t stream) override;
    void checkInputs(const int32_t* ids, const int32_t* segs, size_t count) const override;

private:
    template <typename D>
    D* upload(const NativeEngineFile& file, const std::string& name, const std::vector<long long>& shape);
    template <typename D>
    void uploadInto(D* dst, const NativeEngineFile& file, const std::string& name, const std::vector<long long>& shape);
    template <typename D>
    D* allocate(size_t count)
    {
        mMemory.emplace_back(count * sizeof(D));
        return mMemory.back().template as<D>();
    }

    // Y (tokens, out) = X (tokens, in) W^T, W [out, in]; float accumulation.
    void linear(const T* weight, const T* input, T* output, int outFeatures, int tokens, int inFeatures) const;

    ModelConfig mConfig;
    Numerics mNumerics;
    bool mVariableSeqlen;
    std::vector<ProfileRange> mProfiles;
    int mMaxBatch;
    int mSeq;
    int mBatch{0};
    DeviceIO mIO;

    std::vector<DeviceMemory> mMemory; // every device allocation this backend owns
    DeviceMemory mStaging;             // raw weight bytes on their way to conversion
    cublasHandle_t mCublas{nullptr};

    T* mWord;
    T* mPosition;
    T* mTokenType;
    float* mEmbGamma;
    float* mEmbBeta;
    std::vector<LayerWeights<T>> mLayers;
    float* mSquadWeights; // [2, E], float32: a tiny product kept exact
    float* mSquadBias;

    // Activations, sized for (max batch, S).
    T* mX;             // (tokens, E): the residual stream
    T* mWide;          // (tokens, max(3E, I)): the QKV projection, then the merged context, then the FFN middle
    T* mHeads;         // 3 x (B, N, S, H): Q, K, V by head; the context overwrites Q
    T* mTemp;          // (tokens, E): the sublayer outputs before their LayerNorm
    float* mScores;    // (B, N, S, S)
    T* mProbs;         // (B, N, S, S)
    int32_t* mLengths; // (B)
    void* mCublasWorkspace;
};

template <typename T>
NativeBackend<T>::NativeBackend(const NativeEngineFile& file, int maxBatchSize, int seqLength)
    : mConfig(file.config())
    , mNumerics(file.numerics())
    , mVariableSeqlen(file.variableSeqlen())
    , mProfiles(file.profiles())
    , mMaxBatch(maxBatchSize)
    , mSeq(seqLength)
{
    const ModelConfig& c = mConfig;
    if (seqLength > c.maxPositions)
    {
        throw std::runtime_error("sequence length " + std::to_string(seqLength) + " exceeds the model's "
            + std::to_string(c.maxPositions) + " position embeddings");
    }
    if (seqLength > kernels::kMaxSoftmaxLength)
    {
        throw std::runtime_error("sequence length " + std::to_string(seqLength) + " exceeds infer_c's limit of "
            + std::to_string(kernels::kMaxSoftmaxLength));
    }
    if (c.hidden > kernels::kMaxHidden)
    {
        throw std::runtime_error("hidden size " + std::to_string(c.hidden) + " exceeds infer_c's limit of "
            + std::to_string(kernels::kMaxHidden));
    }
    const long long E = c.hidden;
    const long long I = c.intermediate;

    mWord = upload<T>(file, "bert_embeddings_word_embeddings", {c.vocab, E});
    mPosition = upload<T>(file, "bert_embeddings_position_embeddings", {c.maxPositions, E});
    mTokenType = upload<T>(file, "bert_embeddings_token_type_embeddings", {c.typeVocab, E});
    mEmbGamma = upload<float>(file, "bert_embeddings_layernorm_gamma", {E});
    mEmbBeta = upload<float>(file, "bert_embeddings_layernorm_beta", {E});
    for (int n = 0; n < c.layers; ++n)
    {
        const std::string p = "l" + std::to_string(n) + "_";
        LayerWeights<T> w{};
        w.qkvKernel = allocate<T>(3 * E * E);
        w.qkvBias = allocate<float>(3 * E);
        const char* parts[3] = {"query", "key", "value"};
        for (int i = 0; i < 3; ++i)
        {
            uploadInto(w.qkvKernel + i * E * E, file, p + "attention_self_" + parts[i] + "_kernel", {E, E});
            uploadInto(w.qkvBias + i * E, file, p + "attention_self_" + parts[i] + "_bias", {E});
        }
        w.attnOutKernel = upload<T>(file, p + "attention_output_dense_kernel", {E, E});
        w.attnOutBias = upload<float>(file, p + "attention_output_dense_bias", {E});
        w.ln1Gamma = upload<float>(file, p + "attention_output_layernorm_gamma", {E});
        w.ln1Beta = upload<float>(file, p + "attention_output_layernorm_beta", {E});
        w.midKernel = upload<T>(file, p + "intermediate_dense_kernel", {I, E});
        w.midBias = upload<float>(file, p + "intermediate_dense_bias", {I});
        w.outKernel = upload<T>(file, p + "output_dense_kernel", {E, I});
        w.outBias = upload<float>(file, p + "output_dense_bias", {E});
        w.ln2Gamma = upload<float>(file, p + "output_layernorm_gamma", {E});
        w.ln2Beta = upload<float>(file, p + "output_layernorm_beta", {E});
        mLayers.push_back(w);
    }
    mSquadWeights = upload<float>(file, "cls_squad_output_weights", {2, E});
    mSquadBias = upload<float>(file, "cls_squad_output_bias", {2});
    gpuErrChk(cudaDeviceSynchronize()); // conversions done before the staging buffer goes
    mStaging = DeviceMemory();

    const size_t tokens = static_cast<size_t>(maxBatchSize) * seqLength;
    const size_t scores = static_cast<size_t>(maxBatchSize) * c.heads * seqLength * seqLength;
    mX = allocate<T>(tokens * E);
    mWide = allocate<T>(tokens * std::max(3 * E, I));
    mHeads = allocate<T>(3 * tokens * E);
    mTemp = allocate<T>(tokens * E);
    mScores = allocate<float>(scores);
    mProbs = allocate<T>(scores);
    mLengths = allocate<int32_t>(maxBatchSize);
    mCublasWorkspace = allocate<unsigned char>(kCublasWorkspaceBytes);

    checkCublas(cublasCreate(&mCublas), "cublasCreate");
    checkCublas(cublasSetWorkspace(mCublas, mCublasWorkspace, kCublasWorkspaceBytes), "cublasSetWorkspace");
}

template <typename T>
template <typename D>
D* NativeBackend<T>::upload(const NativeEngineFile& file, const std::string& name, const std::vector<long long>& shape)
{
    size_t count = 1;
    for (long long d : shape)
    {
        count *= static_cast<size_t>(d);
    }
    D* dst = allocate<D>(count);
    uploadInto(dst, file, name, shape);
    return dst;
}

template <typename T>
template <typename D>
void NativeBackend<T>::uploadInto(
    D* dst, const NativeEngineFile& file, const std::string& name, const std::vector<long long>& shape)
{
    const TensorEntry& entry = file.weight(name, shape);
    if (mStaging.bytes() < entry.nbytes)
    {
        mStaging = DeviceMemory(entry.nbytes); // cudaFree of the old one waits for the conversions reading it
    }
    gpuErrChk(cudaMemcpy(mStaging.as<void>(), file.data(entry), entry.nbytes, cudaMemcpyHostToDevice));
    if (entry.dtype == "float16")
    {
        kernels::convert(mStaging.as<__half>(), dst, entry.nbytes / sizeof(__half), nullptr);
    }
    else
    {
        kernels::convert(mStaging.as<float>(), dst, entry.nbytes / sizeof(float), nullptr);
    }
}

template <typename T>
void NativeBackend<T>::linear(
    const T* weight, const T* input, T* output, int outFeatures, int tokens, int inFeatures) const
{
    // Row-major Y = X W^T is column-major Y^T = W X^T: cuBLAS sees W (stored [out, in]) transposed.
    const float one = 1.0f;
    const float zero = 0.0f;
    checkCublas(cublasGemmEx(mCublas, CUBLAS_OP_T, CUBLAS_OP_N, outFeatures, tokens, inFeatures, &one, weight,
                    cudaTypeOf<T>(), inFeatures, input, cudaTypeOf<T>(), inFeatures, &zero, output, cudaTypeOf<T>(),
                    outFeatures, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmEx");
}

template <typename T>
void NativeBackend<T>::enqueue(cudaStream_t stream)
{
    const ModelConfig& c = mConfig;
    const int B = mBatch;
    const int S = mSeq;
    const int E = c.hidden;
    const int N = c.heads;
    const int H = c.headSize();
    const int tokens = B * S;
    const long long headStride = static_cast<long long>(S) * H;
    const long long scoreStride = static_cast<long long>(S) * S;
    const size_t perTensor = static_cast<size_t>(tokens) * E;
    T* q = mHeads;
    T* k = mHeads + perTensor;
    T* v = mHeads + 2 * perTensor;
    T* context = q; // Q is dead once the scores exist
    const float scale = 1.0f / std::sqrt(static_cast<float>(H));
    const float one = 1.0f;
    const float zero = 0.0f;

    checkCublas(cublasSetStream(mCublas, stream), "cublasSetStream");
    kernels::sequenceLengths(mIO.mask, mLengths, B, S, stream);
    kernels::embedLayerNorm(mIO.ids, mIO.segs, mWord, mPosition, mTokenType, mEmbGamma, mEmbBeta, mX, tokens, S, E,
        c.vocab, c.typeVocab, mNumerics.embEps, stream);
    for (const LayerWeights<T>& w : mLayers)
    {
        linear(w.qkvKernel, mX, mWide, 3 * E, tokens, E);
        kernels::splitHeads(mWide, w.qkvBias, mHeads, B, S, N, H, stream);
        // scores[b,n] (S_q x S_k, row-major) = Q K^T / sqrt(H), kept in float32 for the softmax.
        checkCublas(cublasGemmStridedBatchedEx(mCublas, CUBLAS_OP_T, CUBLAS_OP_N, S, S, H, &scale, k,
                        cudaTypeOf<T>(), H, headStride, q, cudaTypeOf<T>(), H, headStride, &zero, mScores, CUDA_R_32F,
                        S, scoreStride, B * N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmStridedBatchedEx (scores)");
        kernels::maskedSoftmax(mScores, mLengths, mProbs, B, N, S, stream);
        // context[b,n] (S x H) = P V.
        checkCublas(cublasGemmStridedBatchedEx(mCublas, CUBLAS_OP_N, CUBLAS_OP_N, H, S, S, &one, v, cudaTypeOf<T>(), H,
                        headStride, mProbs, cudaTypeOf<T>(), S, scoreStride, &zero, context, cudaTypeOf<T>(), H,
                        headStride, B * N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
            "cublasGemmStridedBatchedEx (context)");
        kernels::mergeHeads(context, mWide, B, S, N, H, stream);
        linear(w.attnOutKernel, mWide, mTemp, E, tokens, E);
        kernels::biasResidualLayerNorm(mTemp, w.attnOutBias, mX, w.ln1Gamma, w.ln1Beta, tokens, E, mNumerics.lnEps, stream);
        linear(w.midKernel, mX, mWide, c.intermediate, tokens, E);
        kernels::biasGelu(mWide, w.midBias, tokens, c.intermediate, mNumerics.tanhGelu, stream);
        linear(w.outKernel, mWide, mTemp, E, tokens, c.intermediate);
        kernels::biasResidualLayerNorm(mTemp, w.outBias, mX, w.ln2Gamma, w.ln2Beta, tokens, E, mNumerics.lnEps, stream);
    }
    kernels::squadHead(mX, mSquadWeights, mSquadBias, mLengths, mIO.out, tokens, S, E, stream);
}

template <typename T>
void NativeBackend<T>::checkInputs(const int32_t* ids, const int32_t* segs, size_t count) const
{
    for (size_t i = 0; i < count; ++i)
    {
        if (ids[i] < 0 || ids[i] >= mConfig.vocab)
        {
            throw std::runtime_error("input_ids[" + std::to_string(i) + "] = " + std::to_string(ids[i])
                + " is out of the vocabulary [0, " + std::to_string(mConfig.vocab) + ")");
        }
        if (segs[i] < 0 || segs[i] >= mConfig.typeVocab)
        {
            throw std::runtime_error("segment_ids[" + std::to_string(i) + "] = " + std::to_string(segs[i])
                + " is out of range [0, " + std::to_string(mConfig.typeVocab) + ")");
        }
    }
}

} // namespace

std::unique_ptr<Backend> createNativeBackend(const std::string& path, int maxBatchSize, int seqLength)
{
    const NativeEngineFile file = NativeEngineFile::read(path, /*withBlob=*/true);
    if (file.precision() == "fp32")
    {
        return std::make_unique<NativeBackend<float>>(file, maxBatchSize, seqLength);
    }
    if (file.precision() == "fp16")
    {
        return std::make_unique<NativeBackend<__half>>(file, maxBatchSize, seqLength);
    }
    throw std::runtime_error("engine " + path + " has precision " + file.precision()
        + ": infer_c runs fp32 and fp16 native engines (INT8 needs a TensorRT engine)");
}

} // namespace bert
