"""Session 7 probe (PERF_NOTES call 2), for the tree of commit 62b4a9a (helpers/backends/graph_pdl.py): captures
cuBLAS products behind a late-writing kernel, prints each graph's kernels (by name) and edges, promotes the edge into
the product and prints its relative error (large: the kernel did not wait). Run from the repository root."""
import ctypes
import sys

import torch

sys.path.insert(0, ".")
from helpers.backends import gpu_kernels as K  # noqa: E402
from helpers.backends import graph_pdl  # noqa: E402
from helpers.backends.cublaslt import LtProducts  # noqa: E402

edges = graph_pdl.GraphEdges()
lib = edges.lib
lib.cuFuncGetName.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p]


def name(handle):
    text = ctypes.c_char_p()
    return text.value.decode()[:90] if lib.cuFuncGetName(ctypes.byref(text), handle) == 0 else "<unnamed>"


def check(label, call, reads, out):
    saved = [t.clone() for t in reads]
    K.late_copy(saved[0], reads[0], 0)
    call()
    torch.cuda.synchronize()
    expected = out.to(torch.float32, copy=True)
    for t in reads:
        t.zero_()
    graph = torch.cuda.CUDAGraph(keep_graph=True)
    graph.capture_begin()
    for source, target in zip(saved, reads):
        K.late_copy(source, target, 50000)
    call()
    graph.capture_end()
    raw = graph.raw_cuda_graph()
    kernels = edges.kernels(raw)
    print(label)
    for node, kernel in kernels.items():
        print("   kernel", name(kernel))
    for source, target, data in edges.edges(raw):
        print(f"   edge {source:#x} -> {target:#x} type {data.type} port {data.from_port}")
    sinks = set(kernels) - {source for source, _, _ in edges.edges(raw)}
    print("   promoted", edges.promote_edges(raw, {kernels[node] for node in sinks}))
    graph.instantiate()
    graph.replay()
    torch.cuda.synchronize()
    error = torch.linalg.vector_norm(out.float() - expected) / torch.linalg.vector_norm(expected)
    print("   relative error after the promoted replay", float(error))
    for source, target in zip(saved, reads):
        target.copy_(source)


with torch.cuda.stream(torch.cuda.Stream()):
    gen = torch.Generator().manual_seed(1)
    for M, N, Kd in ((384, 3072, 1024), (320, 768, 256), (384, 1024, 4096)):
        a = torch.randn(M, Kd, generator=gen).cuda().half()
        w = (torch.randn(N, Kd, generator=gen) / 32).cuda().half()
        b = torch.randn(N, generator=gen).cuda().half()
        out = torch.empty(M, N, device="cuda", dtype=torch.half)
        res = torch.randn(M, N, generator=gen).cuda().half()
        check(f"addmm bias {M}x{N}x{Kd}", lambda: torch.addmm(b, a, w.t(), out=out), (a,), out)
        check(f"addmm_ accumulate {M}x{N}x{Kd}", lambda: res.addmm_(a, w.t()), (a, res), res)
        lt = LtProducts(a.device)
        for i, plan in enumerate(lt.candidates(M, N, Kd, "bias", b)[:3]):
            check(f"cuBLASLt bias plan {i} {M}x{N}x{Kd}", lambda plan=plan: lt.run(plan, a, w, b, out), (a,), out)
