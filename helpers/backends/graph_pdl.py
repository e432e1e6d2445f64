"""Programmatic dependent launch into cuBLAS's kernels, inside captured CUDA graphs.

Our Triton kernels are launched with PDL (gpu_kernels.py): each may start while its predecessor drains and waits
for it with `griddepcontrol.wait` before touching activations. cuBLAS's Hopper kernels wait the same way (every
FP16 "tn" GEMM kernel of cuBLASLt 13.0 holds that instruction near its start; PERF_NOTES session 7), but cuBLAS
launches them without the PDL attribute and its API has no switch for it. In a captured graph that attribute is
only an edge type, so `promote_edges` turns the edges into kernels known to wait into programmatic ones, which
lets such a kernel be set up while the kernel before it finishes.

Which kernels wait is not taken on trust: GpuRunner checks each product it runs (`check_waits`) by running it,
as a programmatic successor, after a kernel that lets it launch at once and only writes the product's inputs after
a pause. A kernel that does not wait reads the stale inputs, and its result is wrong.

The driver is reached through ctypes (libcuda, the CUDA 12.3+ graph edge API), as cublaslt.py reaches cuBLASLt.
"""
import ctypes

_NODE_TYPE_KERNEL = 0                  # CU_GRAPH_NODE_TYPE_KERNEL
_DEPENDENCY_TYPE_PROGRAMMATIC = 1      # CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC
_KERNEL_NODE_PORT_PROGRAMMATIC = 1     # CU_GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC


class _EdgeData(ctypes.Structure):      # CUgraphEdgeData
    _fields_ = [("from_port", ctypes.c_ubyte), ("to_port", ctypes.c_ubyte), ("type", ctypes.c_ubyte),
                ("reserved", ctypes.c_ubyte * 5)]


class _KernelNodeParams(ctypes.Structure):   # CUDA_KERNEL_NODE_PARAMS_v2
    _fields_ = [("func", ctypes.c_void_p), ("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("shared_mem_bytes", ctypes.c_uint), ("kernel_params", ctypes.c_void_p), ("extra", ctypes.c_void_p),
                ("kern", ctypes.c_void_p), ("ctx", ctypes.c_void_p)]


class GraphEdges:
    """The driver's graph-editing calls this module needs; raises OSError (library) or AttributeError (a driver
    older than CUDA 12.3) when they are missing."""

    def __init__(self):
        lib = ctypes.CDLL("libcuda.so.1")
        vp, size_p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)
        nodes_p, edges_p = ctypes.POINTER(vp), ctypes.POINTER(_EdgeData)
        signatures = {
            "cuGraphGetNodes": [vp, nodes_p, size_p],
            "cuGraphNodeGetType": [vp, ctypes.POINTER(ctypes.c_int)],
            "cuGraphKernelNodeGetParams_v2": [vp, ctypes.POINTER(_KernelNodeParams)],
            "cuGraphGetEdges_v2": [vp, nodes_p, nodes_p, edges_p, size_p],
            "cuGraphRemoveDependencies_v2": [vp, nodes_p, nodes_p, edges_p, ctypes.c_size_t],
            "cuGraphAddDependencies_v2": [vp, nodes_p, nodes_p, edges_p, ctypes.c_size_t],
        }
        for name, argtypes in signatures.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
        self.lib = lib

    def _call(self, name, *args):
        status = getattr(self.lib, name)(*args)
        if status != 0:
            raise RuntimeError(f"{name} failed (CUresult {status})")

    def kernels(self, graph):
        """{node: the kernel it runs} of a graph's kernel nodes (a kernel: its CUfunction, else its CUkernel)."""
        count = ctypes.c_size_t(0)
        self._call("cuGraphGetNodes", graph, None, ctypes.byref(count))
        nodes = (ctypes.c_void_p * count.value)()
        self._call("cuGraphGetNodes", graph, nodes, ctypes.byref(count))
        found = {}
        for node in nodes:
            kind = ctypes.c_int(-1)
            self._call("cuGraphNodeGetType", node, ctypes.byref(kind))
            if kind.value == _NODE_TYPE_KERNEL:
                params = _KernelNodeParams()
                self._call("cuGraphKernelNodeGetParams_v2", node, ctypes.byref(params))
                found[node] = params.func or params.kern
        return found

    def edges(self, graph):
        """[(from node, to node, edge data)] of a graph."""
        count = ctypes.c_size_t(0)
        self._call("cuGraphGetEdges_v2", graph, None, None, None, ctypes.byref(count))
        n = count.value
        sources, targets, data = (ctypes.c_void_p * n)(), (ctypes.c_void_p * n)(), (_EdgeData * n)()
        self._call("cuGraphGetEdges_v2", graph, sources, targets, data, ctypes.byref(count))
        return list(zip(sources, targets, data))

    def promote_edges(self, graph, waiting):
        """Make every full-completion edge from a kernel node into a node running one of the `waiting` kernels
        programmatic. Returns how many edges changed. The graph must not be instantiated yet."""
        kernels = self.kernels(graph)
        changed = 0
        for source, target, data in self.edges(graph):
            if (source in kernels and kernels.get(target) in waiting and data.type == 0 and data.from_port == 0):
                one = (ctypes.c_void_p * 1)
                self._call("cuGraphRemoveDependencies_v2", graph, one(source), one(target), ctypes.byref(data), 1)
                edge = _EdgeData(from_port=_KERNEL_NODE_PORT_PROGRAMMATIC, type=_DEPENDENCY_TYPE_PROGRAMMATIC)
                try:
                    self._call("cuGraphAddDependencies_v2", graph, one(source), one(target), ctypes.byref(edge), 1)
                except RuntimeError:   # the graph keeps every dependency it had
                    self._call("cuGraphAddDependencies_v2", graph, one(source), one(target), ctypes.byref(data), 1)
                    raise
                changed += 1
        return changed

    def programmatic_edges(self, graph):
        """How many of a graph's edges are programmatic (our PDL launches' and promoted ones)."""
        return sum(data.type == _DEPENDENCY_TYPE_PROGRAMMATIC for _, _, data in self.edges(graph))


LATE_WRITE_DELAY_NS = 50_000   # a product that does not wait reads its inputs well within this (they take 3-15 us)


def waiting_kernel(edges, call, reads, out, late_copy, tolerance):
    """The kernel `call()` runs if it waits for its predecessor, else None.

    call: one product exactly as the forward issues it, which must be one kernel; reads: the tensors it reads that
    the kernel before it in the forward writes (its input rows, and the residual it accumulates into); out: the
    tensor it writes (it may be one of `reads`). The product runs as the programmatic successor of late copies
    that put `reads` back only after LATE_WRITE_DELAY_NS, the tensors being zeroed before: its result matches
    the plain call's only if it waited. Leaves `reads` as they were (`out` is to be written by the caller)."""
    import torch
    saved = [t.clone() for t in reads]
    late_copy(saved[0], reads[0], 0)   # compiled outside the capture (a copy of what it holds)
    call()
    expected = out.to(torch.float32, copy=True)
    kernel = None
    try:
        for t in reads:
            t.zero_()
        graph = torch.cuda.CUDAGraph(keep_graph=True)
        graph.capture_begin()
        try:
            for source, target in zip(saved, reads):
                late_copy(source, target, LATE_WRITE_DELAY_NS)
            call()
        finally:
            graph.capture_end()
        raw = graph.raw_cuda_graph()
        kernels = edges.kernels(raw)
        sinks = set(kernels) - {source for source, _, _ in edges.edges(raw)}
        if len(kernels) == len(reads) + 1 and len(sinks) == 1:
            candidate = kernels[sinks.pop()]
            if edges.promote_edges(raw, {candidate}) == 1:
                graph.instantiate()
                graph.replay()
                torch.cuda.current_stream().synchronize()
                error = torch.linalg.vector_norm(out.float() - expected) / torch.linalg.vector_norm(expected)
                kernel = candidate if float(error) < tolerance else None
    finally:
        for source, target in zip(saved, reads):
            target.copy_(source)
    return kernel
