"""Runtime, ICudaEngine and IExecutionContext: deserialize a stand-in plan and execute it with numpy.

Tensor addresses are read and written as host memory (ctypes): tests bind numpy arrays' `.ctypes.data`. The
stand-in never runs with CUDA device pointers.
"""
import ctypes
import pickle
from dataclasses import dataclass

import numpy as np

from ._core import ILogger, TrtStandinError, numpy_dtype
from ._enums import TensorIOMode
from ._layers import IConstantLayer, as_compute

PLAN_MAGIC = b"TRT-STANDIN-PLAN\n"  # deliberately not TensorRT's "ftrt": a stand-in plan is no TensorRT plan


@dataclass
class Graph:
    inputs: list
    outputs: list
    layers: list


def concrete_shapes(layers, input_shapes, inputs):
    """{tensor: (shape, value)} for given input shapes, running each layer's shape inference (and the small
    shape-arithmetic values); raises TrtStandinError where a layer rejects the shapes."""
    env = {}
    for tensor in inputs:
        if tensor.name not in input_shapes:
            raise TrtStandinError(f"the shape of input {tensor.name} is not set")
        env[tensor] = (tuple(int(d) for d in input_shapes[tensor.name]), None)
    for layer in layers:
        args = [env[t] if t is not None else (None, None) for t in layer._inputs]
        dtypes = [t.dtype if t is not None else None for t in layer._inputs]
        results = layer._evaluate([a[0] for a in args], dtypes, [a[1] for a in args])
        for tensor, (shape, _, value) in zip(layer._outputs, results):
            env[tensor] = (shape, value)
    return env


def execute(graph, arrays, constants):
    """Output arrays {name: array} for input arrays {name: array}."""
    env = {t: as_compute(arrays[t.name], t.dtype) for t in graph.inputs}
    for layer in graph.layers:
        if layer in constants:
            outputs = constants[layer]
        else:
            outputs = layer._run([env[t] if t is not None else None for t in layer._inputs])
        for tensor, value in zip(layer._outputs, outputs):
            env[tensor] = as_compute(value, tensor.dtype)
    return {t.name: env[t] for t in graph.outputs}


class Runtime:
    def __init__(self, logger):
        self._logger = logger

    def deserialize_cuda_engine(self, serialized_engine):
        blob = bytes(serialized_engine)
        if not blob.startswith(PLAN_MAGIC):
            self._logger.log(ILogger.Severity.ERROR, "Serialization assertion magicTagRead == kMAGIC_TAG failed."
                                                     "Magic tag does not match")
            return None
        return ICudaEngine(pickle.loads(blob[len(PLAN_MAGIC):]), self._logger)


class ICudaEngine:
    def __init__(self, plan, logger):
        self._plan = plan
        self._logger = logger
        graph = plan["graph"]
        self._graph = graph
        self._io = [(t, TensorIOMode.INPUT) for t in graph.inputs] + [(t, TensorIOMode.OUTPUT) for t in graph.outputs]
        self._by_name = {t.name: (t, mode) for t, mode in self._io}
        self._constants = {layer: layer._run([]) for layer in graph.layers if isinstance(layer, IConstantLayer)}

    @property
    def num_io_tensors(self):
        return len(self._io)

    def get_tensor_name(self, index):
        return self._io[index][0].name

    def _tensor(self, name):
        if name not in self._by_name:
            raise TrtStandinError(f"{name} is not an input or output tensor of this engine")
        return self._by_name[name]

    def get_tensor_mode(self, name):
        return self._tensor(name)[1] if name in self._by_name else TensorIOMode.NONE

    def get_tensor_dtype(self, name):
        return self._tensor(name)[0].dtype

    def get_tensor_shape(self, name):
        return self._tensor(name)[0].shape

    @property
    def num_optimization_profiles(self):
        return len(self._plan["profiles"])

    def get_tensor_profile_shape(self, name, profile_index):
        _, mode = self._tensor(name)
        if mode != TensorIOMode.INPUT:
            raise TrtStandinError(f"{name} is not an input: it has no profile shapes")
        if not 0 <= profile_index < self.num_optimization_profiles:
            raise TrtStandinError(f"profile index {profile_index} out of range")
        return [tuple(d) for d in self._plan["profiles"][profile_index][name]]

    def create_execution_context(self):
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine):
        self._engine = engine
        self._profile = 0
        self._shapes = {}
        self._addresses = {}
        self._reset_shapes()

    def _reset_shapes(self):
        self._shapes = {t.name: t.shape for t in self._engine._graph.inputs if -1 not in t.shape}

    def _error(self, message):
        self._engine._logger.log(ILogger.Severity.ERROR, message)

    @property
    def engine(self):
        return self._engine

    @property
    def active_optimization_profile(self):
        return self._profile

    def set_optimization_profile_async(self, profile_index, stream_handle):
        if not 0 <= profile_index < self._engine.num_optimization_profiles:
            self._error(f"profile index {profile_index} is out of range")
            return False
        self._profile = profile_index
        self._reset_shapes()
        return True

    def set_input_shape(self, name, shape):
        tensor, mode = self._engine._tensor(name)
        shape = tuple(int(d) for d in shape)
        if mode != TensorIOMode.INPUT:
            self._error(f"{name} is not an input tensor")
            return False
        lo, _, hi = self._engine.get_tensor_profile_shape(name, self._profile)
        if len(shape) != len(tensor.shape) or not all(a <= d <= b for a, d, b in zip(lo, shape, hi)):
            self._error(f"set_input_shape: {name} {shape} is outside optimization profile {self._profile} "
                        f"(min {lo}, max {hi})")
            return False
        self._shapes[name] = shape
        return True

    def get_tensor_shape(self, name):
        tensor, mode = self._engine._tensor(name)
        if mode == TensorIOMode.INPUT:
            return self._shapes.get(name, tensor.shape)
        if self.infer_shapes():
            return tensor.shape
        graph = self._engine._graph
        return concrete_shapes(graph.layers, self._shapes, graph.inputs)[tensor][0]

    def infer_shapes(self):
        """Names of the inputs whose shapes are not yet specified (an empty list when all are)."""
        return [t.name for t in self._engine._graph.inputs if t.name not in self._shapes]

    def set_tensor_address(self, name, memory):
        self._engine._tensor(name)
        self._addresses[name] = int(memory)
        return True

    def get_tensor_address(self, name):
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle):
        graph = self._engine._graph
        missing = self.infer_shapes()
        if missing:
            self._error(f"execute_async_v3: the shapes of {missing} are not set")
            return False
        unbound = [t.name for t, _ in self._engine._io if not self._addresses.get(t.name)]
        if unbound:
            self._error(f"execute_async_v3: no address set for {unbound}")
            return False
        arrays = {t.name: _read(self._addresses[t.name], self._shapes[t.name], t.dtype) for t in graph.inputs}
        try:
            outputs = execute(graph, arrays, self._engine._constants)
        except TrtStandinError as exc:
            self._error(f"execute_async_v3: {exc}")
            return False
        for tensor in graph.outputs:
            _write(self._addresses[tensor.name], outputs[tensor.name], tensor.dtype)
        return True


def _read(address, shape, dtype):
    np_dtype = numpy_dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    buffer = (ctypes.c_char * (count * np_dtype.itemsize)).from_address(address)
    return np.frombuffer(buffer, dtype=np_dtype, count=count).reshape(shape).copy()


def _write(address, array, dtype):
    data = np.ascontiguousarray(array, dtype=numpy_dtype(dtype))
    ctypes.memmove(address, data.ctypes.data, data.nbytes)
