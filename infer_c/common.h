// Shared by the module and `perf`: error checks for CUDA calls, and perf's command-line parser.
#pragma once

#include <cuda_runtime_api.h>
#include <getopt.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace bert
{

// Every failure becomes one std::runtime_error line (a Python RuntimeError in the module, one log line in perf).
inline void checkCuda(cudaError_t status, const char* what)
{
    if (status != cudaSuccess)
    {
        throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status));
    }
}

// Fails in one line when no GPU can be used, instead of an obscure error from the first allocation.
inline void requireGpu()
{
    int count = 0;
    const cudaError_t status = cudaGetDeviceCount(&count);
    if (status != cudaSuccess || count == 0)
    {
        throw std::runtime_error(std::string("no CUDA GPU is usable here (")
            + (status != cudaSuccess ? cudaGetErrorString(status) : "no device found") + ")");
    }
}

} // namespace bert

#define gpuErrChk(call) ::bert::checkCuda((call), #call)

namespace bert
{

struct Args
{
    std::string engine;
    std::vector<int> batchSize;
    int sequenceLength{128};
    int iterations{200};
    int warmUpRuns{10};
    double durationSeconds{0.0};
    unsigned int randomSeed{12345};
    bool enableGraph{false};
    bool help{false};
};

inline void printHelp()
{
    static const char* usage =
        "Usage: perf [options]\n"
        "BERT inference benchmark: latency and throughput of an engine on random full-length sequences.\n"
        "Options:\n"
        "  -h, --help                 print this help and exit\n"
        "  -e, --engine PATH          engine file: a native engine (builder.py) or a TensorRT plan (required)\n"
        "  -b, --batch_size N         batch size to benchmark; repeat for several (default: 1)\n"
        "  -s, --sequence_length N    sequence length (default: 128)\n"
        "  -i, --iterations N         timed iterations per batch size (default: 200)\n"
        "  -w, --warm_up_runs N       untimed runs before timing (default: 10)\n"
        "  -d, --duration SECONDS     also keep timing until this many seconds have passed (default: 0)\n"
        "  -r, --random_seed N        seed of the random inputs (default: 12345; --ramdon_seed is accepted too)\n"
        "  -g, --enable_graph         launch the engine through a CUDA graph\n";
    std::fputs(usage, stdout);
}

// A whole-string integer in [minimum, maximum]; anything else names the option in one line.
inline long parseInteger(const char* text, const char* option, long minimum, long maximum)
{
    errno = 0;
    char* end = nullptr;
    const long value = std::strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < minimum || value > maximum)
    {
        throw std::invalid_argument(std::string("Invalid arguments: ") + option + " needs an integer in ["
            + std::to_string(minimum) + ", " + std::to_string(maximum) + "], got '" + text + "'");
    }
    return value;
}

inline double parseSeconds(const char* text, const char* option)
{
    errno = 0;
    char* end = nullptr;
    const double value = std::strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(value >= 0.0) || value > 1e6)
    {
        throw std::invalid_argument(std::string("Invalid arguments: ") + option
            + " needs a number of seconds >= 0, got '" + text + "'");
    }
    return value;
}

// getopt_long over upstream's options, with its bugs fixed: --sequence_length takes its value, --random_seed is
// spelled right (the misspelt --ramdon_seed still works), and -d/--duration exists as in perf.py.
// Throws std::invalid_argument with a one-line message on anything it does not understand.
inline Args parseArgs(int argc, char* argv[])
{
    static const option longOptions[] = {
        {"help", no_argument, nullptr, 'h'},
        {"engine", required_argument, nullptr, 'e'},
        {"batch_size", required_argument, nullptr, 'b'},
        {"sequence_length", required_argument, nullptr, 's'},
        {"iterations", required_argument, nullptr, 'i'},
        {"warm_up_runs", required_argument, nullptr, 'w'},
        {"duration", required_argument, nullptr, 'd'},
        {"random_seed", required_argument, nullptr, 'r'},
        {"ramdon_seed", required_argument, nullptr, 'r'},
        {"enable_graph", no_argument, nullptr, 'g'},
        {nullptr, 0, nullptr, 0},
    };
    Args args;
    opterr = 0; // we report problems ourselves, in one line
    optind = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, ":he:b:s:i:w:d:r:g", longOptions, nullptr)) != -1)
    {
        switch (opt)
        {
        case 'h': args.help = true; break;
        case 'e': args.engine = optarg; break;
        case 'b': args.batchSize.push_back(static_cast<int>(parseInteger(optarg, "--batch_size", 1, 1 << 16))); break;
        case 's': args.sequenceLength = static_cast<int>(parseInteger(optarg, "--sequence_length", 1, 1 << 16)); break;
        case 'i': args.iterations = static_cast<int>(parseInteger(optarg, "--iterations", 1, 100000000)); break;
        case 'w': args.warmUpRuns = static_cast<int>(parseInteger(optarg, "--warm_up_runs", 0, 100000000)); break;
        case 'd': args.durationSeconds = parseSeconds(optarg, "--duration"); break;
        case 'r': args.randomSeed = static_cast<unsigned int>(parseInteger(optarg, "--random_seed", 0, 4294967295L)); break;
        case 'g': args.enableGraph = true; break;
        case ':':
            throw std::invalid_argument(std::string("Invalid arguments: option ") + argv[optind - 1] + " needs a value");
        default:
            throw std::invalid_argument(std::string("Invalid arguments: unrecognized option ") + argv[optind - 1]
                + " (see --help)");
        }
    }
    if (optind < argc)
    {
        throw std::invalid_argument(std::string("Invalid arguments: unexpected argument '") + argv[optind] + "'");
    }
    if (args.help)
    {
        return args;
    }
    if (args.engine.empty())
    {
        throw std::invalid_argument("Invalid arguments: an engine is required (-e/--engine PATH)");
    }
    if (args.batchSize.empty())
    {
        args.batchSize.push_back(1);
    }
    return args;
}

} // namespace bert
