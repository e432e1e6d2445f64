// `perf`: the C++ benchmark (spec §2.7, §7.2). Prints the device, then per batch size the total, average,
// 95th/99th percentile GPU time of the engine and the throughput. Any failure: one line, exit status 1.
#include "bert_infer.h"
#include "common.h"
#include "logging.h"
#include "trt_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <numeric>
#include <vector>

using namespace bert;

namespace
{

std::string versionText(int version) // CUDA's MAJOR * 1000 + MINOR * 10
{
    return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

void printDeviceInfo()
{
    int device = 0;
    gpuErrChk(cudaGetDevice(&device));
    cudaDeviceProp prop{};
    gpuErrChk(cudaGetDeviceProperties(&prop, device));
    int clockKHz = 0;
    int memoryClockKHz = 0;
    gpuErrChk(cudaDeviceGetAttribute(&clockKHz, cudaDevAttrClockRate, device));
    gpuErrChk(cudaDeviceGetAttribute(&memoryClockKHz, cudaDevAttrMemoryClockRate, device));
    gLogInfo << "=== Device Information ===";
    gLogInfo << "Selected Device: " << prop.name;
    gLogInfo << "Compute Capability: " << prop.major << "." << prop.minor;
    gLogInfo << "SMs: " << prop.multiProcessorCount;
    gLogInfo << "Compute Clock Rate: " << clockKHz / 1.0e6 << " GHz";
    gLogInfo << "Device Global Memory: " << (prop.totalGlobalMem >> 20) << " MiB";
    gLogInfo << "Shared Memory per SM: " << (prop.sharedMemPerMultiprocessor >> 10) << " KiB";
    gLogInfo << "Memory Bus Width: " << prop.memoryBusWidth << " bits (ECC " << (prop.ECCEnabled ? "enabled" : "disabled")
             << ")";
    gLogInfo << "Memory Clock Rate: " << memoryClockKHz / 1.0e6 << " GHz";

    int runtime = 0;
    int driver = 0;
    int cublasMajor = 0;
    int cublasMinor = 0;
    int cublasPatch = 0;
    gpuErrChk(cudaRuntimeGetVersion(&runtime));
    gpuErrChk(cudaDriverGetVersion(&driver));
    cublasGetProperty(MAJOR_VERSION, &cublasMajor);
    cublasGetProperty(MINOR_VERSION, &cublasMinor);
    cublasGetProperty(PATCH_LEVEL, &cublasPatch);
    gLogInfo << "=== Software Information ===";
    if (builtWithTensorRT())
    {
        gLogInfo << "Build time TensorRT version: " << tensorRTBuildVersion();
        gLogInfo << "Runtime linked TensorRT version: " << tensorRTRuntimeVersion();
    }
    else
    {
        gLogInfo << "TensorRT: not in this build (native engines only)";
    }
    gLogInfo << "CUDA runtime version: " << versionText(runtime) << ", driver supports " << versionText(driver);
    gLogInfo << "cuBLAS version: " << cublasMajor << "." << cublasMinor << "." << cublasPatch;
}

// Upstream's report lines; percentiles are sorted[int(n * q)].
void report(int batchSize, std::vector<float> times)
{
    std::sort(times.begin(), times.end());
    const size_t n = times.size();
    const double total = std::accumulate(times.begin(), times.end(), 0.0);
    const double average = total / static_cast<double>(n);
    auto percentile = [&](double q) { return times[std::min(n - 1, static_cast<size_t>(static_cast<double>(n) * q))]; };
    gLogInfo << "Running " << n << " iterations with Batch Size: " << batchSize;
    gLogInfo << "\tTotal Time: " << total << " ms ";
    gLogInfo << "\tAverage Time: " << average << " ms";
    gLogInfo << "\t95th Percentile Time: " << percentile(0.95) << " ms";
    gLogInfo << "\t99th Percentile Time: " << percentile(0.99) << " ms";
    gLogInfo << "\tThroughput: " << static_cast<long long>(batchSize * 1000.0 / average) << " sentences/s";
}

} // namespace

int main(int argc, char* argv[])
{
    try
    {
        const Args args = parseArgs(argc, argv);
        if (args.help)
        {
            printHelp();
            return EXIT_SUCCESS;
        }
        engineKindOf(args.engine); // a missing or foreign file fails before anything else is printed
        requireGpu();
        printDeviceInfo();
        const int maxBatchSize = *std::max_element(args.batchSize.begin(), args.batchSize.end());
        BertInference bert(args.engine, maxBatchSize, args.sequenceLength, args.enableGraph);
        for (int batchSize : args.batchSize) // in the order given, each with the profile that covers it
        {
            report(batchSize,
                bert.benchmark(batchSize, args.warmUpRuns, args.iterations, args.durationSeconds, args.randomSeed));
        }
        return EXIT_SUCCESS;
    }
    catch (const std::exception& error)
    {
        gLogError << error.what();
        return EXIT_FAILURE;
    }
}
