"""Programmatic edges into cuBLAS's kernels, inside captured CUDA graphs.

cuBLAS's nvjet kernels (CUDA 13) do not wait for their predecessor (`griddepcontrol.wait`; PERF_NOTES session 7),
so they can never be launched while it still runs. But a predecessor of ours can hold its launch signal
(`griddepcontrol.launch_dependents`) until each of its programs has stored its results and fenced them at GPU
scope (gpu_kernels._pdl_exit, pdl="late"). The product then launches as soon as the last program has done so,
without waiting for the grid's completion and flush. In a captured graph the PDL launch attribute is only an edge
type, so `promote_edges` turns the edges out of such kernels into programmatic ones.

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
            "cuFuncGetName": [ctypes.POINTER(ctypes.c_char_p), vp],
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

    def kernel_names(self, graph):
        """{node: its kernel's name} of a graph's kernel nodes ('' where the node runs a library kernel handle)."""
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
                name = ctypes.c_char_p()
                if params.func:
                    self._call("cuFuncGetName", ctypes.byref(name), params.func)
                found[node] = (name.value or b"").decode()
        return found

    def edges(self, graph):
        """[(from node, to node, edge data)] of a graph."""
        count = ctypes.c_size_t(0)
        self._call("cuGraphGetEdges_v2", graph, None, None, None, ctypes.byref(count))
        n = count.value
        sources, targets, data = (ctypes.c_void_p * n)(), (ctypes.c_void_p * n)(), (_EdgeData * n)()
        self._call("cuGraphGetEdges_v2", graph, sources, targets, data, ctypes.byref(count))
        return list(zip(sources, targets, data))

    def promote_edges(self, graph, source_names):
        """Make every full-completion edge from a kernel node running one of `source_names` into another kernel
        node programmatic. Returns how many edges changed. The graph must not be instantiated yet."""
        names = self.kernel_names(graph)
        changed = 0
        one = ctypes.c_void_p * 1
        for source, target, data in self.edges(graph):
            if names.get(source) in source_names and target in names and data.type == 0 and data.from_port == 0:
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
