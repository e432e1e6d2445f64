"""Logger, Weights, ITensor and IHostMemory."""
import sys
from enum import IntEnum

import numpy as np

from ._enums import NUMPY_OF, DataType, datatype_of_numpy


class ILogger:
    class Severity(IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4


class Logger(ILogger):
    """Prints messages at or above `min_severity` to stderr, as TensorRT's default logger does."""

    def __init__(self, min_severity=ILogger.Severity.WARNING):
        self.min_severity = min_severity
        self._messages = []

    def log(self, severity, msg):
        self._messages.append((severity, msg))
        if severity <= self.min_severity:
            print(f"[TRT-standin] [{severity.name[0]}] {msg}", file=sys.stderr)


def report_error(logger, message):
    """TensorRT reports API misuse through the logger and returns None; the stand-in also raises, so that a bug in
    the project's network code fails at the call that caused it rather than at a later `None.get_output`."""
    if logger is not None:
        logger.log(ILogger.Severity.ERROR, message)
    raise TrtStandinError(message)


class TrtStandinError(RuntimeError):
    """What the stand-in raises where TensorRT would log an error and fail (not a TensorRT class)."""


class Weights:
    """An array of weights; `Weights(a)` keeps a numpy array (TensorRT holds it by reference until the build)."""

    def __init__(self, a=None):
        if a is None:
            self._array = np.zeros(0, dtype=np.float32)
        else:
            if not isinstance(a, np.ndarray):
                raise TypeError("Weights(a): a must be a numpy.ndarray")
            datatype_of_numpy(a.dtype)  # TypeError for dtypes TensorRT has no DataType for
            self._array = a

    @property
    def dtype(self):
        return datatype_of_numpy(self._array.dtype)

    @property
    def size(self):
        return int(self._array.size)

    @property
    def nbytes(self):
        return int(self._array.nbytes)

    def numpy(self):
        return self._array


class ITensor:
    """A tensor of a network definition. Shapes use -1 for dimensions known only at run time."""

    def __init__(self, name, dtype, shape):
        self._name = name
        self._dtype = DataType(dtype)
        self._shape = tuple(int(d) for d in shape)
        self._dynamic_range = None
        self._is_input = False
        self._is_output = False
        self._value = None  # the contents when known at build time (constants and shape arithmetic), else None

    @property
    def name(self):
        return self._name

    @name.setter
    def name(self, value):
        self._name = str(value)

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    @property
    def is_network_input(self):
        return self._is_input

    @property
    def is_network_output(self):
        return self._is_output

    @property
    def dynamic_range(self):
        """(min, max) set by the deprecated implicit-quantization API, or None."""
        return self._dynamic_range

    @dynamic_range.setter
    def dynamic_range(self, value):
        lo, hi = (float(v) for v in value)
        if not lo <= 0 <= hi:  # TensorRT: "The dynamic range must contain zero"
            raise ValueError(f"dynamic range of {self._name} must contain zero, got ({lo}, {hi})")
        self._dynamic_range = (lo, hi)

    def __repr__(self):
        return f"ITensor({self._name!r}, {self._dtype.name}, {self._shape})"


class _InputsOutputs:
    """Counting and indexing the tensors in `self._inputs` and `self._outputs` (layers and networks alike)."""

    @property
    def num_inputs(self):
        return len(self._inputs)

    def get_input(self, index):
        return self._inputs[index]

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_output(self, index):
        return self._outputs[index]


class IHostMemory(bytes):
    """Library-owned host memory with the buffer protocol (TensorRT's serialized plans and timing caches).

    A bytes subclass is the only way pure Python can offer the buffer protocol on Python 3.11.
    """

    @property
    def nbytes(self):
        return len(self)


def numpy_dtype(trt_type):
    return np.dtype(NUMPY_OF[DataType(trt_type)])
