#include "logging.h"

#include <iostream>
#include <mutex>

namespace bert
{

Logger gLogger(Severity::kINFO);

namespace
{
const char* prefix(Severity severity)
{
    switch (severity)
    {
    case Severity::kFATAL: return "[DemoBERT][F] ";
    case Severity::kERROR: return "[DemoBERT][E] ";
    case Severity::kWARNING: return "[DemoBERT][W] ";
    case Severity::kINFO: return "[DemoBERT][I] ";
    case Severity::kVERBOSE: return "[DemoBERT][V] ";
    }
    return "[DemoBERT][?] ";
}
} // namespace

void Logger::write(Severity severity, const std::string& message) const
{
    if (!enabled(severity))
    {
        return;
    }
    static std::mutex lock; // lines from TensorRT's threads must not interleave with ours
    std::lock_guard<std::mutex> guard(lock);
    std::ostream& out = severity >= Severity::kINFO ? std::cout : std::cerr;
    out << prefix(severity) << message << std::endl;
}

#ifdef BERT_WITH_TENSORRT
void Logger::log(nvinfer1::ILogger::Severity severity, const char* msg) noexcept
{
    // TensorRT's INTERNAL_ERROR..VERBOSE are 0..4, the same order as ours.
    write(static_cast<Severity>(static_cast<int>(severity)), msg);
}
#endif

} // namespace bert
