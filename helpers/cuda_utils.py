"""cuda-python helpers for the TensorRT runtime and the INT8 calibrator (spec §5.4).

Every cuda-python runtime call returns `(error, *results)`; `cuda_call` unwraps it and turns an error into a
one-line BertError. Nothing here runs at import: CUDA is initialized by the first call that needs it.
"""
import ctypes

import numpy as np

from .errors import BertError


def import_cudart():
    """cuda-python's runtime module (`cuda.bindings.runtime` since cuda-python 12.6, `cuda.cudart` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise BertError("cuda-python is not installed (pip install cuda-python): the TensorRT runtime needs "
                            "it") from None
    return cudart


def cuda_call(result):
    cudart = import_cudart()
    error, values = result[0], result[1:]
    if error != cudart.cudaError_t.cudaSuccess:
        _, name = cudart.cudaGetErrorName(error)
        raise BertError(f"CUDA error code={int(error)}({name.decode() if isinstance(name, bytes) else name})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def compute_capability(device=0):
    """(major, minor) of a CUDA device, or None where cuda-python or a GPU is missing."""
    try:
        cudart = import_cudart()
        attr = cudart.cudaDeviceAttr
        major = cuda_call(cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device))
        minor = cuda_call(cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device))
    except BertError:
        return None
    return int(major), int(minor)


def require_cuda(what):
    if compute_capability() is None:
        raise BertError(f"{what} needs a CUDA GPU and cuda-python")


class DeviceBuffer:
    """`nbytes` of device memory (cudaMalloc)."""

    def __init__(self, nbytes):
        self.nbytes = max(int(nbytes), 1)
        self.ptr = int(cuda_call(import_cudart().cudaMalloc(self.nbytes)))

    def free(self):
        if self.ptr:
            cuda_call(import_cudart().cudaFree(self.ptr))
            self.ptr = 0


class PinnedArray:
    """A numpy array in page-locked host memory (cudaMallocHost), so copies can be asynchronous."""

    def __init__(self, shape, dtype):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        self._ptr = int(cuda_call(import_cudart().cudaMallocHost(max(count * dtype.itemsize, 1))))
        pointer = ctypes.cast(self._ptr, ctypes.POINTER(np.ctypeslib.as_ctypes_type(dtype)))
        self.array = np.ctypeslib.as_array(pointer, (max(count, 1),))[:count].reshape(shape)

    def free(self):
        if self._ptr:
            cuda_call(import_cudart().cudaFreeHost(self._ptr))
            self._ptr = 0


class CudaStream:
    def __init__(self):
        self.stream = cuda_call(import_cudart().cudaStreamCreate())

    @property
    def handle(self):
        """The integer handle TensorRT's Python API takes (execute_async_v3, set_optimization_profile_async)."""
        return int(self.stream)

    def synchronize(self):
        cuda_call(import_cudart().cudaStreamSynchronize(self.stream))

    def destroy(self):
        if self.stream is not None:
            cuda_call(import_cudart().cudaStreamDestroy(self.stream))
            self.stream = None


def memcpy_htod_async(device_ptr, host_array, stream):
    cudart = import_cudart()
    cuda_call(cudart.cudaMemcpyAsync(device_ptr, host_array.ctypes.data, host_array.nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream.stream))


def memcpy_dtoh_async(host_array, device_ptr, stream):
    cudart = import_cudart()
    cuda_call(cudart.cudaMemcpyAsync(host_array.ctypes.data, device_ptr, host_array.nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream.stream))


def memcpy_htod(device_ptr, host_array):
    cudart = import_cudart()
    cuda_call(cudart.cudaMemcpy(device_ptr, host_array.ctypes.data, host_array.nbytes,
                                cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))


class CudaEvent:
    def __init__(self):
        self.event = cuda_call(import_cudart().cudaEventCreate())

    def record(self, stream):
        cuda_call(import_cudart().cudaEventRecord(self.event, stream.stream))

    def elapsed_ms_since(self, start):
        """Milliseconds between `start` and this event (both recorded; waits for this one)."""
        cudart = import_cudart()
        cuda_call(cudart.cudaEventSynchronize(self.event))
        return float(cuda_call(cudart.cudaEventElapsedTime(start.event, self.event)))

    def destroy(self):
        if self.event is not None:
            cuda_call(import_cudart().cudaEventDestroy(self.event))
            self.event = None
