// The native engine's own CUDA kernels (the matrix products go to cuBLAS). T is float or __half; every kernel
// computes in float. Activations are token-major: token t = b * S + s of a padded (B, S) batch.
// Each launcher checks the launch and throws std::runtime_error on failure.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace bert
{
namespace kernels
{

// Longest sequence the softmax kernel takes (32 lanes x 32 values in registers).
constexpr int kMaxSoftmaxLength = 1024;
// Widest hidden size the LayerNorm kernels take (a row is staged in shared memory, under the 48 KB default).
constexpr int kMaxHidden = 8192;

template <typename Src, typename Dst>
void convert(const Src* in, Dst* out, size_t count, cudaStream_t stream);

// lengths[b] = index of the first 0 in mask row b, or S: upstream's mask semantics (a real-token prefix).
void sequenceLengths(const int32_t* mask, int32_t* lengths, int batch, int seqLength, cudaStream_t stream);

// out = LayerNorm(word[id] + tokenType[seg] + position[s]) per token.
template <typename T>
void embedLayerNorm(const int32_t* ids, const int32_t* segs, const T* word, const T* position, const T* tokenType,
    const float* gamma, const float* beta, T* out, int tokens, int seqLength, int hidden, int vocab, int typeVocab,
    float eps, cudaStream_t stream);

// qkv (tokens, 3E) = [Q | K | V] without bias -> heads: Q, K, V one after another, each (B, N, S, H), bias added.
template <typename T>
void splitHeads(const T* qkv, const float* bias, T* heads, int batch, int seqLength, int numHeads, int headSize,
    cudaStream_t stream);

// probs = softmax(scores) per row of S keys; keys at or past the row's sequence length get probability 0.
template <typename T>
void maskedSoftmax(const float* scores, const int32_t* lengths, T* probs, int batch, int numHeads, int seqLength,
    cudaStream_t stream);

// (B, N, S, H) -> (tokens, E) with channel n * H + h.
template <typename T>
void mergeHeads(const T* context, T* out, int batch, int seqLength, int numHeads, int headSize, cudaStream_t stream);

// x = gelu(x + bias) over (rows, cols); erf or tanh form.
template <typename T>
void biasGelu(T* x, const float* bias, int rows, int cols, bool tanhGelu, cudaStream_t stream);

// x = LayerNorm(y + bias + x) per row of `hidden` values (the residual stream is updated in place).
template <typename T>
void biasResidualLayerNorm(const T* y, const float* bias, T* x, const float* gamma, const float* beta, int rows,
    int hidden, float eps, cudaStream_t stream);

// logits (tokens, 2) = x W^T + b, float32; 0 at padding positions (s >= length), as the CPU engine gives.
template <typename T>
void squadHead(const T* x, const float* weights, const float* bias, const int32_t* lengths, float* logits,
    int tokens, int seqLength, int hidden, cudaStream_t stream);

} // namespace kernels
} // namespace bert
