// The native engine's BERT-QA forward pass in CUDA: cuBLAS matrix products plus the kernels of kernels.cuh.
#pragma once

#include "backend.h"

#include <memory>
#include <string>

namespace bert
{

// Reads the native engine at `path` and uploads its weights once; activations are sized for
// (maxBatchSize, seqLength). Throws std::runtime_error naming the problem.
std::unique_ptr<Backend> createNativeBackend(const std::string& path, int maxBatchSize, int seqLength);

} // namespace bert
