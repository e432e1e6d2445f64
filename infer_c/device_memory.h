// Owning handle of one cudaMalloc allocation.
#pragma once

#include "common.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

namespace bert
{

class DeviceMemory
{
public:
    DeviceMemory() = default;
    explicit DeviceMemory(size_t bytes) : mBytes(bytes)
    {
        if (bytes > 0)
        {
            gpuErrChk(cudaMalloc(&mPtr, bytes));
        }
    }
    ~DeviceMemory()
    {
        if (mPtr != nullptr)
        {
            cudaFree(mPtr);
        }
    }
    DeviceMemory(const DeviceMemory&) = delete;
    DeviceMemory& operator=(const DeviceMemory&) = delete;
    DeviceMemory(DeviceMemory&& other) noexcept
        : mPtr(std::exchange(other.mPtr, nullptr))
        , mBytes(std::exchange(other.mBytes, 0))
    {
    }
    DeviceMemory& operator=(DeviceMemory&& other) noexcept
    {
        std::swap(mPtr, other.mPtr);
        std::swap(mBytes, other.mBytes);
        return *this;
    }

    template <typename T>
    T* as() const
    {
        return static_cast<T*>(mPtr);
    }
    size_t bytes() const { return mBytes; }

private:
    void* mPtr{nullptr};
    size_t mBytes{0};
};

} // namespace bert
