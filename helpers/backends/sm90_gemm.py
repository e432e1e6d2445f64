"""Our own Hopper matrix product (sm90_gemm.cu) for the few-token PDL chain: compiled at run time by NVRTC, launched
through the CUDA driver with programmatic dependent launch.

Why: a forward of a few hundred tokens is a chain of short kernels, 2-3 us of each being launch and ramp-up. PDL
lets each kernel start while its predecessor finishes, but only kernels that wait for their predecessor themselves
may be launched so: cuBLAS's kernels do not, and Triton's products are 40-60% slower than cuBLAS at these sizes
(PERF_NOTES.md, run 5). This kernel (TMA loads, wgmma, a producer warpgroup and two consumer warpgroups) is within
10-20% of cuBLAS alone and requests its weights before waiting for its predecessor.

Everything goes through ctypes, as cublaslt.py does: NVRTC from the nvidia-cuda-nvrtc wheel PyTorch depends on (or
the CUDA toolkit's), libcuda for the module, the TMA descriptors (cuTensorMapEncodeTiled) and cuLaunchKernelEx.
Launches go to PyTorch's current stream, so CUDA graphs capture them like any other kernel.
"""
import ctypes
import dataclasses
import functools
import glob
import os
import sys

import torch

from ..errors import BertError

BLOCK_M, BLOCK_K = 128, 64
THREADS = 384
SHARED_MEMORY_LIMIT = 227 * 1024
EPILOGUES = {"bias": 0, "gelu_erf": 1, "gelu_tanh": 2, "partials": 3}
MAX_SPLITS = 8
_SOURCE = os.path.join(os.path.dirname(__file__), "sm90_gemm.cu")

# CUDA driver enums (cuda.h)
_TMA_FLOAT16, _TMA_INTERLEAVE_NONE, _TMA_SWIZZLE_128B, _TMA_L2_256B, _TMA_OOB_ZERO = 6, 0, 3, 3, 0
_FUNC_MAX_DYNAMIC_SHARED = 8
_LAUNCH_PROGRAMMATIC_STREAM_SERIALIZATION = 6


class _TensorMap(ctypes.Structure):
    _fields_ = [("raw", ctypes.c_uint64 * 16)]


class _LaunchAttribute(ctypes.Structure):
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_char * 64)]


class _LaunchConfig(ctypes.Structure):
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.POINTER(_LaunchAttribute)), ("num_attrs", ctypes.c_uint)]


def _nvrtc_candidates():
    for root in sys.path:
        for pattern in (("nvidia", "cu*", "lib"), ("nvidia", "cuda_nvrtc", "lib")):
            yield from sorted(glob.glob(os.path.join(root, *pattern, "libnvrtc.so*")), reverse=True)
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if home:
            yield from sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")), reverse=True)


@functools.lru_cache(maxsize=None)
def load_nvrtc():
    for path in _nvrtc_candidates():
        if "builtins" in path or ".alt." in path:
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        lib.nvrtcCreateProgram.argtypes = [ctypes.POINTER(vp), cp, cp, ctypes.c_int, vp, vp]
        lib.nvrtcCompileProgram.argtypes = [vp, ctypes.c_int, ctypes.POINTER(cp)]
        lib.nvrtcGetProgramLogSize.argtypes = [vp, ctypes.POINTER(ctypes.c_size_t)]
        lib.nvrtcGetProgramLog.argtypes = [vp, cp]
        lib.nvrtcGetCUBINSize.argtypes = [vp, ctypes.POINTER(ctypes.c_size_t)]
        lib.nvrtcGetCUBIN.argtypes = [vp, cp]
        lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(vp)]
        return lib
    raise BertError("NVRTC (libnvrtc) not found: install the nvidia-cuda-nvrtc wheel or a CUDA toolkit")


def _wgmma_function(block_n):
    """The wgmma call of one k16 step: m64 x block_n x k16, FP16 in, float32 accumulators in registers."""
    regs = block_n // 2
    names = ", ".join(f"%{i}" for i in range(regs))
    outputs = ", ".join(f'"+f"(acc[{i}])' for i in range(regs))
    return (
        "__device__ __forceinline__ void wgmma_m64k16(float* acc, u64 a_desc, u64 w_desc, int accumulate) {\n"
        '    asm volatile("{\\n.reg .pred p;\\n'
        f'setp.ne.b32 p, %{regs + 2}, 0;\\n'
        f'wgmma.mma_async.sync.aligned.m64n{block_n}k16.f32.f16.f16 {{{names}}}, %{regs}, %{regs + 1}, p, 1, 1, 0, 0;'
        '\\n}\\n"\n'
        f'        : {outputs}\n'
        '        : "l"(a_desc), "l"(w_desc), "r"(accumulate));\n'
        "}\n")


def stages_for(block_n):
    return min(6, (SHARED_MEMORY_LIMIT - 2048) // ((BLOCK_M + block_n) * BLOCK_K * 2))


def shared_bytes(block_n):
    stages = stages_for(block_n)
    return stages * (BLOCK_M + block_n) * BLOCK_K * 2 + 16 * stages + 1024   # stages, barriers, alignment slack


def kernel_source(block_n, epilogue):
    """The CUDA source of one kernel variant (what NVRTC compiles)."""
    with open(_SOURCE) as f:
        body = f.read()
    defines = (f"#define BLOCK_N {block_n}\n#define STAGES {stages_for(block_n)}\n"
               f"#define EPILOGUE {EPILOGUES[epilogue]}\n")
    typedefs, rest = body.split("#define BLOCK_M", 1)
    return defines + typedefs + _wgmma_function(block_n) + "#define BLOCK_M" + rest


def compile_cubin(block_n, epilogue, arch="sm_90a", log_to=None):
    """NVRTC -> cubin bytes (no GPU needed: CI compiles every variant so); log_to: a list that gets the
    compiler's log with ptxas's register and spill report."""
    nvrtc = load_nvrtc()
    program = ctypes.c_void_p()
    if nvrtc.nvrtcCreateProgram(ctypes.byref(program), kernel_source(block_n, epilogue).encode(), b"sm90_gemm.cu",
                                0, None, None):
        raise BertError("NVRTC: could not create the program")
    try:
        options = [f"--gpu-architecture={arch}".encode(), b"-std=c++17"]
        if log_to is not None:
            options.append(b"--ptxas-options=-v")
        status = nvrtc.nvrtcCompileProgram(program, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        if log_to is not None:
            log_to.append(log.value.decode(errors="replace"))
        if status:
            raise BertError(f"NVRTC could not compile sm90_gemm.cu (block_n {block_n}, {epilogue}): "
                            + log.value.decode(errors="replace").strip())
        nvrtc.nvrtcGetCUBINSize(program, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetCUBIN(program, cubin)
        return cubin.raw
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


@functools.lru_cache(maxsize=None)
def _driver():
    lib = ctypes.CDLL("libcuda.so.1")
    vp, u32 = ctypes.c_void_p, ctypes.c_uint
    lib.cuModuleLoadData.argtypes = [ctypes.POINTER(vp), ctypes.c_char_p]
    lib.cuModuleGetFunction.argtypes = [ctypes.POINTER(vp), vp, ctypes.c_char_p]
    lib.cuFuncSetAttribute.argtypes = [vp, ctypes.c_int, ctypes.c_int]
    lib.cuTensorMapEncodeTiled.argtypes = [ctypes.POINTER(_TensorMap), ctypes.c_int, u32, vp,
                                           ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64),
                                           ctypes.POINTER(u32), ctypes.POINTER(u32), ctypes.c_int, ctypes.c_int,
                                           ctypes.c_int, ctypes.c_int]
    lib.cuLaunchKernelEx.argtypes = [ctypes.POINTER(_LaunchConfig), vp, ctypes.POINTER(vp), ctypes.POINTER(vp)]
    lib.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    return lib


def _check(status, what):
    if status:
        message = ctypes.c_char_p()
        _driver().cuGetErrorString(status, ctypes.byref(message))
        raise BertError(f"CUDA driver: {what} failed: {(message.value or b'error %d' % status).decode()}")


def supported(device):
    """Compute capability 9.0 exactly (wgmma is sm_90a: later architectures do not run it) and NVRTC present;
    BERT_GPU_SM90=0 turns the kernel off."""
    if os.environ.get("BERT_GPU_SM90", "1") == "0" or torch.cuda.get_device_capability(device) != (9, 0):
        return False
    try:
        load_nvrtc()
        _driver()
    except (BertError, OSError):
        return False
    return True


@dataclasses.dataclass(frozen=True)
class Sm90Plan:
    """Output tiles of 128 x block_n; K split over `splits` CTAs per tile (partials epilogue only)."""
    block_n: int = 128
    splits: int = 1


def chain_plan(M, N, K, partials, sms):
    """The plan of the PDL chain: 128 x 128 tiles; a product whose LayerNorm sums float32 partials splits K until
    about one wave of CTAs runs (at least two 64-wide blocks of K per slice)."""
    tiles = -(-M // BLOCK_M) * (N // 128)
    splits = 1
    if partials:
        while splits < MAX_SPLITS and tiles * (splits + 1) <= sms and K // BLOCK_K >= 2 * (splits + 1):
            splits += 1
    return Sm90Plan(128, splits)


class Sm90Products:
    """out (M, N) = epilogue(a (M, K) @ w (N, K)^T), FP16 operands, on the caller's current stream."""

    def __init__(self, device):
        if not supported(device):
            raise BertError("the sm90 product needs an sm_90 GPU and NVRTC")
        torch.zeros(1, device=device)   # PyTorch's primary context, current on this thread, for the driver calls
        self.device = device
        self.sms = torch.cuda.get_device_properties(device).multi_processor_count
        self._functions = {}
        self._maps = {}

    def _function(self, block_n, epilogue):
        key = (block_n, epilogue)
        if key not in self._functions:
            cubin = compile_cubin(block_n, epilogue)
            module, function = ctypes.c_void_p(), ctypes.c_void_p()
            _check(_driver().cuModuleLoadData(ctypes.byref(module), cubin), "cuModuleLoadData")
            _check(_driver().cuModuleGetFunction(ctypes.byref(function), module, b"sm90_gemm"), "cuModuleGetFunction")
            _check(_driver().cuFuncSetAttribute(function, _FUNC_MAX_DYNAMIC_SHARED, shared_bytes(block_n)),
                   "cuFuncSetAttribute")
            self._functions[key] = (module, function)   # the module stays loaded while its function is in use
        return self._functions[key][1]

    def _tensor_map(self, t, box_rows):
        """TMA descriptor of a row-major FP16 (rows, K) matrix read in boxes of box_rows x 64 (cached per view:
        graphs replay the same buffers)."""
        key = (t.data_ptr(), t.shape[0], t.shape[1], t.stride(0), box_rows)
        found = self._maps.get(key)
        if found is None:
            found = _TensorMap()
            dims = (ctypes.c_uint64 * 2)(t.shape[1], t.shape[0])
            strides = (ctypes.c_uint64 * 1)(t.stride(0) * 2)
            box = (ctypes.c_uint * 2)(BLOCK_K, box_rows)
            unit = (ctypes.c_uint * 2)(1, 1)
            _check(_driver().cuTensorMapEncodeTiled(ctypes.byref(found), _TMA_FLOAT16, 2, t.data_ptr(), dims, strides,
                                                    box, unit, _TMA_INTERLEAVE_NONE, _TMA_SWIZZLE_128B, _TMA_L2_256B,
                                                    _TMA_OOB_ZERO), "cuTensorMapEncodeTiled")
            self._maps[key] = found
        return found

    def run(self, plan, a, w, bias, out, epilogue, pdl=False):
        """out = epilogue(a @ w^T): "bias", "gelu_tanh", "gelu_erf" (+ bias, FP16 out), or "partials": out is
        float32 (splits, M, N) and gets the K slices' products. pdl: launch with programmatic dependent launch."""
        M, K = a.shape
        N = w.shape[0]
        if a.dtype != torch.float16 or w.dtype != torch.float16 or a.stride(1) != 1 or w.stride(1) != 1:
            raise BertError("the sm90 product takes FP16 row-major operands")
        if N % plan.block_n or K % BLOCK_K or not 1 <= plan.splits <= K // BLOCK_K or (
                plan.splits > 1 and epilogue != "partials"):
            raise BertError(f"the sm90 product cannot run {M} x {N} x {K} {epilogue} as {plan}")
        args = [self._tensor_map(a, BLOCK_M), self._tensor_map(w, plan.block_n), ctypes.c_void_p(bias.data_ptr()),
                ctypes.c_void_p(out.data_ptr()), *(ctypes.c_int(v) for v in (M, N, K // BLOCK_K, plan.splits))]
        pointers = (ctypes.c_void_p * len(args))(*[ctypes.addressof(x) for x in args])
        config = _LaunchConfig()
        config.grid[:] = (N // plan.block_n, -(-M // BLOCK_M), plan.splits)
        config.block[:] = (THREADS, 1, 1)
        config.shared = shared_bytes(plan.block_n)
        config.stream = torch.cuda.current_stream(self.device).cuda_stream
        attribute = _LaunchAttribute(_LAUNCH_PROGRAMMATIC_STREAM_SERIALIZATION, b"", (1).to_bytes(4, "little"))
        if pdl:
            config.attrs, config.num_attrs = ctypes.pointer(attribute), 1
        _check(_driver().cuLaunchKernelEx(ctypes.byref(config), self._function(plan.block_n, epilogue), pointers,
                                          None), "cuLaunchKernelEx")
