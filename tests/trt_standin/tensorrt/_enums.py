"""TensorRT's enums, with the member names (and, where code relies on them, the values) of TensorRT 10.16.

Only the members this project uses exist. `DataType` values are TensorRT's own, because demoBERT passes
`int(DataType)` into plugin fields (`type_id`, `mha_type_id`).
"""
from enum import IntEnum

import numpy as np


class DataType(IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    INT64 = 8


NUMPY_OF = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
            DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.INT64: np.int64}
FLOATING = (DataType.FLOAT, DataType.HALF, DataType.INT8)  # INT8 activations are quantized floats
INTEGER = (DataType.INT32, DataType.INT64)


def datatype_of_numpy(dtype):
    for trt_type, np_type in NUMPY_OF.items():
        if np.dtype(np_type) == np.dtype(dtype):
            return trt_type
    raise TypeError(f"no TensorRT DataType for numpy dtype {np.dtype(dtype)}")


class PluginFieldType(IntEnum):
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    CHAR = 6
    DIMS = 7
    UNKNOWN = 8


NUMPY_OF_FIELD = {PluginFieldType.FLOAT16: np.float16, PluginFieldType.FLOAT32: np.float32,
                  PluginFieldType.FLOAT64: np.float64, PluginFieldType.INT8: np.int8,
                  PluginFieldType.INT16: np.int16, PluginFieldType.INT32: np.int32, PluginFieldType.CHAR: np.int8}


class TensorRTPhase(IntEnum):
    BUILD = 0
    RUNTIME = 1


class NetworkDefinitionCreationFlag(IntEnum):
    EXPLICIT_BATCH = 0  # deprecated and ignored in TensorRT 10 (networks are always explicit-batch)
    STRONGLY_TYPED = 1


class BuilderFlag(IntEnum):
    """Names as TensorRT's; the values are not (the project passes flags by name only)."""
    FP16 = 0
    INT8 = 2
    SPARSE_WEIGHTS = 9
    PREFER_PRECISION_CONSTRAINTS = 12
    DIRECT_IO = 13
    REJECT_EMPTY_ALGORITHMS = 14
    DISTRIBUTIVE_INDEPENDENCE = 30


class MemoryPoolType(IntEnum):
    WORKSPACE = 0


class ProfilingVerbosity(IntEnum):
    LAYER_NAMES_ONLY = 0
    NONE = 1
    DETAILED = 2


class TacticSource(IntEnum):
    CUBLAS = 0
    CUBLAS_LT = 1
    CUDNN = 2
    EDGE_MASK_CONVOLUTIONS = 3
    JIT_CONVOLUTIONS = 4


class QuantizationFlag(IntEnum):
    CALIBRATE_BEFORE_FUSION = 0


class TensorIOMode(IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class ElementWiseOperation(IntEnum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    SUB = 4
    DIV = 5
    POW = 6
    EQUAL = 11
    GREATER = 12
    LESS = 13


class ActivationType(IntEnum):
    RELU = 0
    SIGMOID = 1
    TANH = 2


class ReduceOperation(IntEnum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    AVG = 4


class MatrixOperation(IntEnum):
    NONE = 0
    TRANSPOSE = 1
