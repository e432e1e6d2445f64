// Log lines with upstream's "[DemoBERT][F|E|W|I|V] " prefixes.
//
// Use: gLogInfo << "Running " << n << " iterations";   -- one statement is one line, emitted when it ends.
// INFO and VERBOSE go to stdout (the benchmark report), WARNING and worse to stderr.
// With TensorRT the same logger is handed to nvinfer, so its messages carry the same prefixes.
#pragma once

#include <sstream>
#include <string>

#ifdef BERT_WITH_TENSORRT
#include <NvInfer.h>
#endif

namespace bert
{

enum class LogSeverity : int
{
    kFATAL = 0,
    kERROR = 1,
    kWARNING = 2,
    kINFO = 3,
    kVERBOSE = 4,
};

#ifdef BERT_WITH_TENSORRT
class Logger : public nvinfer1::ILogger
#else
class Logger
#endif
{
public:
    explicit Logger(LogSeverity level) : mLevel(level) {}

    void write(LogSeverity severity, const std::string& message) const;
    bool enabled(LogSeverity severity) const { return static_cast<int>(severity) <= static_cast<int>(mLevel); }

#ifdef BERT_WITH_TENSORRT
    void log(nvinfer1::ILogger::Severity severity, const char* msg) noexcept override;
#endif

private:
    LogSeverity mLevel;
};

extern Logger gLogger;

// One log line: collects what is streamed into it and writes it, prefixed, when the statement ends.
class LogLine
{
public:
    explicit LogLine(LogSeverity severity) : mSeverity(severity) {}
    LogLine(const LogLine&) = delete;
    LogLine& operator=(const LogLine&) = delete;
    ~LogLine() { gLogger.write(mSeverity, mStream.str()); }

    template <typename T>
    LogLine& operator<<(const T& value)
    {
        mStream << value;
        return *this;
    }

private:
    LogSeverity mSeverity;
    std::ostringstream mStream;
};

} // namespace bert

#define gLogFatal ::bert::LogLine(::bert::LogSeverity::kFATAL)
#define gLogError ::bert::LogLine(::bert::LogSeverity::kERROR)
#define gLogWarning ::bert::LogLine(::bert::LogSeverity::kWARNING)
#define gLogInfo ::bert::LogLine(::bert::LogSeverity::kINFO)
#define gLogVerbose ::bert::LogLine(::bert::LogSeverity::kVERBOSE)
