#include "logging.h"

#include <iostream>
#include <mutex>

namespace bert
{

Logger gLogger(LogSeverity::kINFO);

namespace
{
const char* prefix(LogSeverity severity)
{
    switch (severity)
    {
    case LogSeverity::kFATAL: return "[DemoBERT][F] ";
    case LogSeverity::kERROR: return "[DemoBERT][E] ";
    case LogSeverity::kWARNING: return "[DemoBERT][W] ";
    case LogSeverity::kINFO: return "[DemoBERT][I] ";
    case LogSeverity::kVERBOSE: return "[DemoBERT][V] ";
    }
    return "[DemoBERT][?] ";
}
} // namespace

void Logger::write(LogSeverity severity, const std::string& message) const
{
    if (!enabled(severity))
    {
        return;
    }
    static std::mutex lock; // lines from TensorRT's threads must not interleave with ours
    std::lock_guard<std::mutex> guard(lock);
    std::ostream& out = severity >= LogSeverity::kINFO ? std::cout : std::cerr;
    out << prefix(severity) << message << std::endl;
}

#ifdef BERT_WITH_TENSORRT
void Logger::log(nvinfer1::ILogger::Severity severity, const char* msg) noexcept
{
    // TensorRT's INTERNAL_ERROR..VERBOSE are 0..4, the same order as ours.
    write(static_cast<LogSeverity>(static_cast<int>(severity)), msg);
}
#endif

} // namespace bert
