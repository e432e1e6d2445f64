// TensorRT engines (plans written by builder.py with TensorRT): deserialize, pick the profile, set shapes,
// bind addresses, enqueueV3. Compiled in only when CMake found TensorRT (BERT_WITH_TENSORRT).
#pragma once

#include "backend.h"

#include <memory>
#include <string>

namespace bert
{

bool builtWithTensorRT();

// "10.16.0" for the headers this was built with and the library loaded at run time; empty without TensorRT.
std::string tensorRTBuildVersion();
std::string tensorRTRuntimeVersion();

// Without TensorRT in the build this throws one line saying so.
std::unique_ptr<Backend> createTrtBackend(const std::string& path, int seqLength);

} // namespace bert
