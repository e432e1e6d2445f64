#include "kernels.cuh"

#include "common.h"

#include <algorithm>
#include <cmath>

namespace bert
{
namespace kernels
{

namespace
{

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float toFloat(float v)
{
    return v;
}
__device__ __forceinline__ float toFloat(__half v)
{
    return __half2float(v);
}

template <typename T>
__device__ __forceinline__ T fromFloat(float v);
template <>
__device__ __forceinline__ float fromFloat<float>(float v)
{
    return v;
}
template <>
__device__ __forceinline__ __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}

__device__ __forceinline__ float warpSum(float v)
{
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
    {
        v += __shfl_xor_sync(kFullMask, v, offset);
    }
    return v;
}

__device__ __forceinline__ float warpMax(float v)
{
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
    {
        v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
    }
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds 32 floats of shared memory.
__device__ float blockSum(float v, float* scratch)
{
    const int lane = threadIdx.x % kWarp;
    const int warp = threadIdx.x / kWarp;
    v = warpSum(v);
    __syncthreads(); // the previous call's readers are done with scratch
    if (lane == 0)
    {
        scratch[warp] = v;
    }
    __syncthreads();
    if (warp == 0)
    {
        const int warps = (blockDim.x + kWarp - 1) / kWarp;
        v = warpSum(lane < warps ? scratch[lane] : 0.0f);
        if (lane == 0)
        {
            scratch[0] = v;
        }
    }
    __syncthreads();
    return scratch[0];
}

// Threads for one row of `hidden` values: enough warps to cover it, at most 256.
int rowThreads(int hidden)
{
    return std::min(256, (hidden + kWarp - 1) / kWarp * kWarp);
}

unsigned gridFor(size_t count, int threads)
{
    const size_t blocks = (count + threads - 1) / threads;
    return static_cast<unsigned>(std::min<size_t>(std::max<size_t>(blocks, 1), 1u << 20)); // grid-stride loops
}

void checkLaunch(const char* kernel)
{
    checkCuda(cudaGetLastError(), kernel);
}

// ---- kernels ---------------------------------------------------------------------------------------------------

template <typename Src, typename Dst>
__global__ void convertKernel(const Src* in, Dst* out, size_t count)
{
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        out[i] = fromFloat<Dst>(toFloat(in[i]));
    }
}

__global__ void sequenceLengthsKernel(const int32_t* mask, int32_t* lengths, int seqLength)
{
    const int32_t* row = mask + static_cast<size_t>(blockIdx.x) * seqLength;
    int first = seqLength;
    for (int j = threadIdx.x; j < seqLength; j += kWarp)
    {
        if (row[j] == 0)
        {
            first = j;
            break;
        }
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2)
    {
        first = min(first, __shfl_xor_sync(kFullMask, first, offset));
    }
    if (threadIdx.x == 0)
    {
        lengths[blockIdx.x] = first;
    }
}

// LayerNorm of the row the block has staged in shared memory (`sum`: this thread's part of the row's total), written
// to out[0, hidden). Each thread reads back only the row entries it staged.
template <typename T>
__device__ void layerNormRow(const float* row, float sum, float* scratch, const float* gamma, const float* beta, T* out,
    int hidden, float eps)
{
    const float mean = blockSum(sum, scratch) / hidden;
    float squares = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x)
    {
        const float d = row[i] - mean;
        squares += d * d;
    }
    const float inv = rsqrtf(blockSum(squares, scratch) / hidden + eps);
    for (int i = threadIdx.x; i < hidden; i += blockDim.x)
    {
        out[i] = fromFloat<T>((row[i] - mean) * inv * gamma[i] + beta[i]);
    }
}

template <typename T>
__global__ void embedLayerNormKernel(const int32_t* ids, const int32_t* segs, const T* word, const T* position,
    const T* tokenType, const float* gamma, const float* beta, T* out, int seqLength, int hidden, int vocab,
    int typeVocab, float eps)
{
    extern __shared__ float row[];
    __shared__ float scratch[kWarp];
    const size_t token = blockIdx.x;
    const int s = static_cast<int>(token % seqLength);
    const int id = ids[token];
    const int seg = segs[token];
    // Out-of-range ids leave the sum at 0, as upstream's kernel does (the host rejects them before a run).
    const bool valid = id >= 0 && id < vocab && seg >= 0 && seg < typeVocab;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x)
    {
        const float v = valid ? toFloat(word[static_cast<size_t>(id) * hidden + i])
                + toFloat(tokenType[static_cast<size_t>(seg) * hidden + i])
                + toFloat(position[static_cast<size_t>(s) * hidden + i])
                              : 0.0f;
        row[i] = v;
        sum += v;
    }
    layerNormRow(row, sum, scratch, gamma, beta, out + token * hidden, hidden, eps);
}

template <typename T>
__global__ void splitHeadsKernel(const T* qkv, const float* bias, T* heads, int seqLength, int numHeads, int headSize,
    size_t count)
{
    const int hidden = numHeads * headSize;
    const size_t perTensor = count / 3; // tokens * hidden
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        const size_t token = i / (3 * hidden);
        const int channel = static_cast<int>(i % (3 * hidden));
        const int which = channel / hidden; // 0 query, 1 key, 2 value
        const int head = (channel % hidden) / headSize;
        const int d = channel % headSize;
        const size_t b = token / seqLength;
        const size_t s = token % seqLength;
        const size_t dst = ((b * numHeads + head) * seqLength + s) * headSize + d;
        heads[which * perTensor + dst] = fromFloat<T>(toFloat(qkv[i]) + bias[channel]);
    }
}

// One warp per row of scores; each lane keeps VALUES scores in registers (VALUES * 32 >= S).
template <typename T, int VALUES>
__global__ void maskedSoftmaxKernel(
    const float* scores, const int32_t* lengths, T* probs, int rowsPerBatch, int seqLength, size_t rows)
{
    const size_t row = blockIdx.x * static_cast<size_t>(blockDim.x / kWarp) + threadIdx.x / kWarp;
    if (row >= rows)
    {
        return;
    }
    const int lane = threadIdx.x % kWarp;
    const int length = lengths[row / rowsPerBatch];
    const float* in = scores + row * seqLength;
    T* out = probs + row * seqLength;
    float v[VALUES];
    float rowMax = -INFINITY;
#pragma unroll
    for (int k = 0; k < VALUES; ++k)
    {
        const int j = lane + k * kWarp;
        v[k] = j < length ? in[j] : -INFINITY;
        rowMax = fmaxf(rowMax, v[k]);
    }
    rowMax = warpMax(rowMax);
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < VALUES; ++k)
    {
        const int j = lane + k * kWarp;
        v[k] = j < length ? expf(v[k] - rowMax) : 0.0f;
        sum += v[k];
    }
    sum = warpSum(sum);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f; // a row with no real key attends to nothing
#pragma unroll
    for (int k = 0; k < VALUES; ++k)
    {
        const int j = lane + k * kWarp;
        if (j < seqLength)
        {
            out[j] = fromFloat<T>(v[k] * inv);
        }
    }
}

template <typename T>
__global__ void mergeHeadsKernel(const T* context, T* out, int seqLength, int numHeads, int headSize, size_t count)
{
    const int hidden = numHeads * headSize;
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        const size_t token = i / hidden;
        const int channel = static_cast<int>(i % hidden);
        const size_t b = token / seqLength;
        const size_t s = token % seqLength;
        out[i] = context[((b * numHeads + channel / headSize) * seqLength + s) * headSize + channel % headSize];
    }
}

template <typename T, bool TANH>
__global__ void biasGeluKernel(T* x, const float* bias, int cols, size_t count)
{
    for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < count;
         i += static_cast<size_t>(gridDim.x) * blockDim.x)
    {
        const float v = toFloat(x[i]) + bias[i % cols];
        float g;
        if (TANH)
        {
            g = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
        }
        else
        {
            g = 0.5f * v * (1.0f + erff(v * 0.7071067811865476f));
        }
        x[i] = fromFloat<T>(g);
    }
}

template <typename T>
__global__ void biasResidualLayerNormKernel(
    const T* y, const float* bias, T* x, const float* gamma, const float* beta, int hidden, float eps)
{
    extern __shared__ float row[];
    __shared__ float scratch[kWarp];
    const size_t base = static_cast<size_t>(blockIdx.x) * hidden;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x)
    {
        const float v = toFloat(y[base + i]) + bias[i] + toFloat(x[base + i]);
        row[i] = v;
        sum += v;
    }
    layerNormRow(row, sum, scratch, gamma, beta, x + base, hidden, eps);
}

// One warp per token: two dot products of length E.
template <typename T>
__global__ void squadHeadKernel(const T* x, const float* weights, const float* bias, const int32_t* lengths,
    float* logits, int tokens, int seqLength, int hidden)
{
    const int token = blockIdx.x * (blockDim.x / kWarp) + threadIdx.x / kWarp;
    if (token >= tokens)
    {
        return;
    }
    const int lane = threadIdx.x % kWarp;
    const T* row = x + static_cast<size_t>(token) * hidden;
    float start = 0.0f;
    float end = 0.0f;
    for (int i = lane; i < hidden; i += kWarp)
    {
        const float v = toFloat(row[i]);
        start += v * weights[i];
        end += v * weights[hidden + i];
    }
    start = warpSum(start);
    end = warpSum(end);
    if (lane == 0)
    {
        const bool real = token % seqLength < lengths[token / seqLength];
        logits[2 * token] = real ? start + bias[0] : 0.0f;
        logits[2 * token + 1] = real ? end + bias[1] : 0.0f;
    }
}

template <typename T, int VALUES>
void launchSoftmax(const float* scores, const int32_t* lengths, T* probs, int rowsPerBatch, int seqLength,
    size_t rows, cudaStream_t stream)
{
    constexpr int warpsPerBlock = 4;
    const unsigned blocks = static_cast<unsigned>((rows + warpsPerBlock - 1) / warpsPerBlock);
    maskedSoftmaxKernel<T, VALUES>
        <<<blocks, warpsPerBlock * kWarp, 0, stream>>>(scores, lengths, probs, rowsPerBatch, seqLength, rows);
}

} // namespace

// ---- launchers -------------------------------------------------------------------------------------------------

template <typename Src, typename Dst>
void convert(const Src* in, Dst* out, size_t count, cudaStream_t stream)
{
    convertKernel<Src, Dst><<<gridFor(count, 256), 256, 0, stream>>>(in, out, count);
    checkLaunch("convert kernel");
}

void sequenceLengths(const int32_t* mask, int32_t* lengths, int batch, int seqLength, cudaStream_t stream)
{
    sequenceLengthsKernel<<<batch, kWarp, 0, stream>>>(mask, lengths, seqLength);
    checkLaunch("sequence-length kernel");
}

template <typename T>
void embedLayerNorm(const int32_t* ids, const int32_t* segs, const T* word, const T* position, const T* tokenType,
    const float* gamma, const float* beta, T* out, int tokens, int seqLength, int hidden, int vocab, int typeVocab,
    float eps, cudaStream_t stream)
{
    embedLayerNormKernel<T><<<tokens, rowThreads(hidden), hidden * sizeof(float), stream>>>(
        ids, segs, word, position, tokenType, gamma, beta, out, seqLength, hidden, vocab, typeVocab, eps);
    checkLaunch("embedding LayerNorm kernel");
}

template <typename T>
void splitHeads(const T* qkv, const float* bias, T* heads, int batch, int seqLength, int numHeads, int headSize,
    cudaStream_t stream)
{
    const size_t count = static_cast<size_t>(batch) * seqLength * 3 * numHeads * headSize;
    splitHeadsKernel<T><<<gridFor(count, 256), 256, 0, stream>>>(qkv, bias, heads, seqLength, numHeads, headSize, count);
    checkLaunch("split-heads kernel");
}

template <typename T>
void maskedSoftmax(const float* scores, const int32_t* lengths, T* probs, int batch, int numHeads, int seqLength,
    cudaStream_t stream)
{
    const int rowsPerBatch = numHeads * seqLength;
    const size_t rows = static_cast<size_t>(batch) * rowsPerBatch;
    const int values = (seqLength + kWarp - 1) / kWarp;
    if (values <= 1)
        launchSoftmax<T, 1>(scores, lengths, probs, rowsPerBatch, seqLength, rows, stream);
    else if (values <= 2)
        launchSoftmax<T, 2>(scores, lengths, probs, rowsPerBatch, seqLength, rows, stream);
    else if (values <= 4)
        launchSoftmax<T, 4>(scores, lengths, probs, rowsPerBatch, seqLength, rows, stream);
    else if (values <= 8)
        launchSoftmax<T, 8>(scores, lengths, probs, rowsPerBatch, seqLength, rows, stream);
    else if (values <= 16)
        launchSoftmax<T, 16>(scores, lengths, probs, rowsPerBatch, seqLength, rows, stream);
    else if (values <= 32)
        launchSoftmax<T, 32>(scores, lengths, probs, rowsPerBatch, seqLength, rows, stream);
    else
        throw std::runtime_error("sequence length " + std::to_string(seqLength) + " exceeds the attention kernel's "
            + std::to_string(kMaxSoftmaxLength));
    checkLaunch("masked softmax kernel");
}

template <typename T>
void mergeHeads(const T* context, T* out, int batch, int seqLength, int numHeads, int headSize, cudaStream_t stream)
{
    const size_t count = static_cast<size_t>(batch) * seqLength * numHeads * headSize;
    mergeHeadsKernel<T><<<gridFor(count, 256), 256, 0, stream>>>(context, out, seqLength, numHeads, headSize, count);
    checkLaunch("merge-heads kernel");
}

template <typename T>
void biasGelu(T* x, const float* bias, int rows, int cols, bool tanhGelu, cudaStream_t stream)
{
    const size_t count = static_cast<size_t>(rows) * cols;
    if (tanhGelu)
        biasGeluKernel<T, true><<<gridFor(count, 256), 256, 0, stream>>>(x, bias, cols, count);
    else
        biasGeluKernel<T, false><<<gridFor(count, 256), 256, 0, stream>>>(x, bias, cols, count);
    checkLaunch("bias GELU kernel");
}

template <typename T>
void biasResidualLayerNorm(const T* y, const float* bias, T* x, const float* gamma, const float* beta, int rows,
    int hidden, float eps, cudaStream_t stream)
{
    biasResidualLayerNormKernel<T>
        <<<rows, rowThreads(hidden), hidden * sizeof(float), stream>>>(y, bias, x, gamma, beta, hidden, eps);
    checkLaunch("residual LayerNorm kernel");
}

template <typename T>
void squadHead(const T* x, const float* weights, const float* bias, const int32_t* lengths, float* logits,
    int tokens, int seqLength, int hidden, cudaStream_t stream)
{
    constexpr int warpsPerBlock = 4;
    squadHeadKernel<T><<<(tokens + warpsPerBlock - 1) / warpsPerBlock, warpsPerBlock * kWarp, 0, stream>>>(
        x, weights, bias, lengths, logits, tokens, seqLength, hidden);
    checkLaunch("SQuAD head kernel");
}

// ---- instantiations --------------------------------------------------------------------------------------------

template void convert<float, float>(const float*, float*, size_t, cudaStream_t);
template void convert<float, __half>(const float*, __half*, size_t, cudaStream_t);
template void convert<__half, float>(const __half*, float*, size_t, cudaStream_t);
template void convert<__half, __half>(const __half*, __half*, size_t, cudaStream_t);

#define BERT_INSTANTIATE(T)                                                                                            \
    template void embedLayerNorm<T>(const int32_t*, const int32_t*, const T*, const T*, const T*, const float*,        \
        const float*, T*, int, int, int, int, int, float, cudaStream_t);                                               \
    template void splitHeads<T>(const T*, const float*, T*, int, int, int, int, cudaStream_t);                         \
    template void maskedSoftmax<T>(const float*, const int32_t*, T*, int, int, int, cudaStream_t);                     \
    template void mergeHeads<T>(const T*, T*, int, int, int, int, cudaStream_t);                                       \
    template void biasGelu<T>(T*, const float*, int, int, bool, cudaStream_t);                                         \
    template void biasResidualLayerNorm<T>(                                                                            \
        const T*, const float*, T*, const float*, const float*, int, int, float, cudaStream_t);                        \
    template void squadHead<T>(const T*, const float*, const float*, const int32_t*, float*, int, int, int, cudaStream_t);

BERT_INSTANTIATE(float)
BERT_INSTANTIATE(__half)
#undef BERT_INSTANTIATE

} // namespace kernels
} // namespace bert
