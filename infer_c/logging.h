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

enum class Severity : int
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
    explicit Logger(Severity level) : mLevel(level) {}

    void write(Severity severity, const std::string& message) const;
    void setLevel(Severity level) { mLevel = level; }
    bool enabled(Severity severity) const { return static_cast<int>(severity) <= static_cast<int>(mLevel); }

#ifdef BERT_WITH_TENSORRT
    void log(nvinfer1::ILogger::Severity severity, const char* msg) noexcept override;
#endif

private:
    Severity mLevel;
};

extern Logger gLogger;

// One log line: collects what is streamed into it and writes it, prefixed, when the statement ends.
class LogLine
{
public:
    explicit LogLine(Severity severity) : mSeverity(severity) {}
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
    Severity mSeverity;
    std::ostringstream mStream;
};

} // namespace bert

#define gLogFatal ::bert::LogLine(::bert::Severity::kFATAL)
#define gLogError ::bert::LogLine(::bert::Severity::kERROR)
#define gLogWarning ::bert::LogLine(::bert::Severity::kWARNING)
#define gLogInfo ::bert::LogLine(::bert::Severity::kINFO)
#define gLogVerbose ::bert::LogLine(::bert::Severity::kVERBOSE)
