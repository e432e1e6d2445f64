"""cuBLASLt matrix products whose algorithm (and split of K) is chosen by timing, as TensorRT chooses its tactics.

PyTorch asks cuBLAS(Lt)'s heuristic for one algorithm per shape. For the awkward shapes of BERT inference (a few
hundred rows: 24-96 output tiles on 132 SMs) the heuristic's first pick is often not the fastest of the ones it
knows; `LtProducts.candidates` lists up to 16 of them, those it picks for the same product with a simpler
epilogue, and for few rows also their neighbours (the same kernel and tile with another cluster shape or custom
option, which the heuristic never offers: up to 9% faster on an H200, PERF_NOTES session 6). The GPU runner
(gpu.py) times each, inside a CUDA graph that cycles through the model's layers as a forward does, against
PyTorch's own call, and keeps the fastest that computes the same product.

The library is reached through ctypes: PyTorch's own libcublasLt (already loaded by the process, so its version
is the one PyTorch was built with); the constants and structures below are those of cublasLt.h (CUDA 12 and 13).

Row-major products map onto cuBLAS's column-major ones as transposes: out (M, N) = a (M, K) @ w (N, K)^T is, in
column-major terms, D (N x M) = W^T (N x K) @ A (K x M), with W the (K x N, ld K) matrix w's memory holds and A the
(K x M, ld K) one a's memory holds; the bias (N) is then cuBLASLt's per-row bias of D.
"""
import ctypes
import dataclasses

import torch

from ..errors import BertError

_CUDA_R_32F, _CUDA_R_16F = 0, 2
_COMPUTE_32F = 68
_OP_N, _OP_T = 0, 1
_DESC_TRANSA, _DESC_TRANSB, _DESC_EPILOGUE, _DESC_BIAS_POINTER = 3, 4, 7, 8
_PREF_MAX_WORKSPACE_BYTES = 1
_LAYOUT_BATCH_COUNT, _LAYOUT_STRIDED_BATCH_OFFSET = 5, 6
EPILOGUES = {"none": 1, "bias": 4, "gelu_bias": 36}   # CUBLASLT_EPILOGUE_DEFAULT, _BIAS, _GELU_BIAS (tanh GELU)
EPILOGUE_ORDER = ("none", "bias", "gelu_bias")          # each does what the ones before it do, and more
MAX_CANDIDATES = 16
_CAP_CUSTOM_OPTION_MAX = 7
_CONFIG_CUSTOM_OPTION, _CONFIG_CLUSTER_SHAPE = 5, 8
# cluster shapes tried around a heuristic pick: 1x1x1, 2x1x1, 1x2x1 (cublasLtClusterShape_t)
NEIGHBOUR_CLUSTERS = (2, 3, 5)
MAX_CUSTOM_OPTIONS = 8
WORKSPACE_BYTES = 32 << 20   # NVIDIA's recommendation for Hopper


class _Algo(ctypes.Structure):
    _fields_ = [("data", ctypes.c_uint64 * 8)]


class _Heuristic(ctypes.Structure):
    _fields_ = [("algo", _Algo), ("workspace_size", ctypes.c_size_t), ("state", ctypes.c_int),
                ("waves", ctypes.c_float), ("reserved", ctypes.c_int * 4)]


_ONE, _ZERO = ctypes.c_float(1.0), ctypes.c_float(0.0)


def _loaded_library_path():
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if "/libcublasLt.so" in path:
                return path
    return None


def load_library():
    """PyTorch's libcublasLt (loaded on its first cuBLASLt call, which this makes if need be)."""
    path = _loaded_library_path()
    if path is None:
        x = torch.ones(16, 16, dtype=torch.float16, device="cuda")
        torch.nn.functional.linear(x, x, x[0])   # bias products go through cuBLASLt
        torch.cuda.synchronize()
        path = _loaded_library_path()
    if path is None:
        raise BertError("cuBLASLt: PyTorch's libcublasLt is not loaded in this process")
    lib = ctypes.CDLL(path)
    vp, u64, i64, i32 = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int
    signatures = {
        "cublasLtCreate": [ctypes.POINTER(vp)],
        "cublasLtMatmulDescCreate": [ctypes.POINTER(vp), i32, i32],
        "cublasLtMatmulDescSetAttribute": [vp, i32, vp, ctypes.c_size_t],
        "cublasLtMatrixLayoutCreate": [ctypes.POINTER(vp), i32, u64, u64, i64],
        "cublasLtMatrixLayoutSetAttribute": [vp, i32, vp, ctypes.c_size_t],
        "cublasLtMatmulPreferenceCreate": [ctypes.POINTER(vp)],
        "cublasLtMatmulPreferenceSetAttribute": [vp, i32, vp, ctypes.c_size_t],
        "cublasLtMatmulPreferenceDestroy": [vp],
        "cublasLtMatmulAlgoGetHeuristic": [vp, vp, vp, vp, vp, vp, vp, i32, ctypes.POINTER(_Heuristic),
                                           ctypes.POINTER(i32)],
        "cublasLtMatmul": [vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, vp, ctypes.POINTER(_Algo), vp,
                           ctypes.c_size_t, vp],
        "cublasLtMatmulAlgoCapGetAttribute": [ctypes.POINTER(_Algo), i32, vp, ctypes.c_size_t,
                                              ctypes.POINTER(ctypes.c_size_t)],
        "cublasLtMatmulAlgoConfigSetAttribute": [ctypes.POINTER(_Algo), i32, vp, ctypes.c_size_t],
        "cublasLtMatmulAlgoCheck": [vp, vp, vp, vp, vp, vp, ctypes.POINTER(_Algo), ctypes.POINTER(_Heuristic)],
    }
    for name, argtypes in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, i32
    return lib


def _check(status, what):
    if status != 0:
        raise BertError(f"cuBLASLt: {what} failed (status {status})")


@dataclasses.dataclass
class LtPlan:
    """One product shape's descriptors and chosen algorithm. The bias pointer is a descriptor attribute, so each
    layer's bias gets its own descriptor (made on first use, reused by every later call and graph capture)."""
    M: int
    N: int
    K: int
    epilogue: str
    w_layout: ctypes.c_void_p
    a_layout: ctypes.c_void_p
    d_layout: ctypes.c_void_p
    heuristic: _Heuristic
    splits: int = 1
    descs: dict = dataclasses.field(default_factory=dict)


class LtProducts:
    """cuBLASLt products out (M, N) = a (M, K) @ w (N, K)^T [+ bias [, tanh GELU]] [+ c], FP16 in and out, float32
    accumulation, on the caller's current stream."""

    def __init__(self, device):
        self.lib = load_library()
        self.handle = ctypes.c_void_p()
        _check(self.lib.cublasLtCreate(ctypes.byref(self.handle)), "cublasLtCreate")
        self.workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=device)

    def _desc(self, epilogue, bias):
        desc = ctypes.c_void_p()
        _check(self.lib.cublasLtMatmulDescCreate(ctypes.byref(desc), _COMPUTE_32F, _CUDA_R_32F), "MatmulDescCreate")
        for attr, value in ((_DESC_TRANSA, ctypes.c_int32(_OP_T)), (_DESC_TRANSB, ctypes.c_int32(_OP_N)),
                            (_DESC_EPILOGUE, ctypes.c_int32(EPILOGUES[epilogue]))):
            _check(self.lib.cublasLtMatmulDescSetAttribute(desc, attr, ctypes.byref(value), ctypes.sizeof(value)),
                   "MatmulDescSetAttribute")
        if epilogue != "none":
            pointer = ctypes.c_void_p(bias.data_ptr())
            _check(self.lib.cublasLtMatmulDescSetAttribute(desc, _DESC_BIAS_POINTER, ctypes.byref(pointer),
                                                           ctypes.sizeof(pointer)), "bias pointer")
        return desc

    def _layout(self, rows, cols, ld, dtype=_CUDA_R_16F, batch=1, stride=0):
        layout = ctypes.c_void_p()
        _check(self.lib.cublasLtMatrixLayoutCreate(ctypes.byref(layout), dtype, rows, cols, ld),
               "MatrixLayoutCreate")
        if batch > 1:
            for attr, value in ((_LAYOUT_BATCH_COUNT, ctypes.c_int32(batch)),
                                (_LAYOUT_STRIDED_BATCH_OFFSET, ctypes.c_int64(stride))):
                _check(self.lib.cublasLtMatrixLayoutSetAttribute(layout, attr, ctypes.byref(value),
                                                                 ctypes.sizeof(value)), "MatrixLayoutSetAttribute")
        return layout

    def candidates(self, M, N, K, epilogue, bias, splits=1, limit=MAX_CANDIDATES, neighbours=False):
        """Plans of the algorithms cuBLASLt's heuristic offers for this product, its first pick first; then those
        it offers for the same product with a simpler epilogue, where they take this one (at 49,152 rows one of
        them ran BERT-Large's FFN-in with the GELU epilogue a quarter faster than any pick for it); then (with
        `neighbours`) every other cluster shape and custom option of each that cuBLASLt accepts.

        splits > 1: split-K as a strided batch, product s summing K-slice s of a and w into float32 partials
        out[s] (splits x M x N, no epilogue) that the consumer adds up (the LayerNorm kernel does)."""
        if splits > 1 and (epilogue != "none" or K % (8 * splits)):
            raise ValueError("split-K plans take no epilogue and 8-aligned K slices")
        Kc = K // splits
        w_layout, a_layout = self._layout(Kc, N, K, batch=splits, stride=Kc), self._layout(Kc, M, K, batch=splits,
                                                                                            stride=Kc)
        if splits > 1:
            d_layout = self._layout(N, M, N, _CUDA_R_32F, batch=splits, stride=M * N)
        else:
            d_layout = self._layout(N, M, N)
        layouts = (w_layout, a_layout, d_layout)
        desc = self._desc(epilogue, bias)
        picks = self._heuristic(desc, layouts, limit)
        seen = {bytes(r.algo.data) for r in picks}

        def add(found):
            for r in found:
                if r is not None and bytes(r.algo.data) not in seen:
                    seen.add(bytes(r.algo.data))
                    picks.append(r)

        simpler = EPILOGUE_ORDER[:EPILOGUE_ORDER.index(epilogue)]
        for other in simpler:
            add(self._checked(r.algo, desc, layouts) for r in self._heuristic(self._desc(other, bias), layouts, limit))
        if neighbours:
            for pick in list(picks):
                add(self._neighbours(pick.algo, desc, layouts))
        plans = []
        for r in picks:
            plan = LtPlan(M, N, K, epilogue, w_layout, a_layout, d_layout, r, splits)
            plan.descs[bias.data_ptr() if epilogue != "none" else None] = desc
            plans.append(plan)
        return plans

    def _heuristic(self, desc, layouts, limit):
        """cuBLASLt's heuristic's usable results for this product, best first."""
        w_layout, a_layout, d_layout = layouts
        pref = ctypes.c_void_p()
        _check(self.lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "MatmulPreferenceCreate")
        limit_bytes = ctypes.c_uint64(WORKSPACE_BYTES)
        _check(self.lib.cublasLtMatmulPreferenceSetAttribute(pref, _PREF_MAX_WORKSPACE_BYTES,
                                                             ctypes.byref(limit_bytes), 8), "workspace preference")
        results = (_Heuristic * limit)()
        count = ctypes.c_int(0)
        status = self.lib.cublasLtMatmulAlgoGetHeuristic(self.handle, desc, w_layout, a_layout, d_layout, d_layout,
                                                         pref, limit, results, ctypes.byref(count))
        self.lib.cublasLtMatmulPreferenceDestroy(pref)
        return [r for r in results[:count.value] if r.state == 0] if status == 0 else []

    def _checked(self, algo, desc, layouts):
        """A heuristic result for `algo` if cuBLASLt accepts it for this product (desc, layouts), else None."""
        w_layout, a_layout, d_layout = layouts
        r = _Heuristic()
        ctypes.memmove(ctypes.byref(r.algo), ctypes.byref(algo), ctypes.sizeof(_Algo))
        if (self.lib.cublasLtMatmulAlgoCheck(self.handle, desc, w_layout, a_layout, d_layout, d_layout,
                                             ctypes.byref(r.algo), ctypes.byref(r)) != 0
                or r.workspace_size > WORKSPACE_BYTES):
            return None
        r.state = 0
        return r

    def _neighbours(self, algo, desc, layouts):
        """Heuristic results (None where cuBLASLt refuses it) for `algo` with each cluster shape and custom
        option."""
        lib = self.lib
        custom_max, written = ctypes.c_int32(0), ctypes.c_size_t(0)
        if lib.cublasLtMatmulAlgoCapGetAttribute(ctypes.byref(algo), _CAP_CUSTOM_OPTION_MAX, ctypes.byref(custom_max),
                                                 4, ctypes.byref(written)) != 0:
            return []
        found = []
        for cluster in NEIGHBOUR_CLUSTERS:
            for custom in range(min(custom_max.value + 1, MAX_CUSTOM_OPTIONS)):
                variant = _Algo()
                ctypes.memmove(ctypes.byref(variant), ctypes.byref(algo), ctypes.sizeof(_Algo))
                c16, c32 = ctypes.c_uint16(cluster), ctypes.c_uint32(custom)
                if (lib.cublasLtMatmulAlgoConfigSetAttribute(ctypes.byref(variant), _CONFIG_CLUSTER_SHAPE,
                                                             ctypes.byref(c16), 2) == 0
                        and lib.cublasLtMatmulAlgoConfigSetAttribute(ctypes.byref(variant), _CONFIG_CUSTOM_OPTION,
                                                                     ctypes.byref(c32), 4) == 0):
                    found.append(self._checked(variant, desc, layouts))
        return found

    def run(self, plan, a, w, bias, out, accumulate=None):
        """out = a @ w^T (+ bias and the plan's epilogue) (+ accumulate, which may be out itself); for split-K
        plans out is the float32 (splits, M, N) partials."""
        key = bias.data_ptr() if plan.epilogue != "none" else None
        desc = plan.descs.get(key)
        if desc is None:
            desc = plan.descs[key] = self._desc(plan.epilogue, bias)
        c = out if accumulate is None else accumulate
        _check(self.lib.cublasLtMatmul(
            self.handle, desc, ctypes.byref(_ONE), w.data_ptr(), plan.w_layout, a.data_ptr(), plan.a_layout,
            ctypes.byref(_ZERO if accumulate is None else _ONE), c.data_ptr(), plan.d_layout, out.data_ptr(),
            plan.d_layout, ctypes.byref(plan.heuristic.algo), self.workspace.data_ptr(),
            plan.heuristic.workspace_size, torch.cuda.current_stream().cuda_stream), "cublasLtMatmul")
