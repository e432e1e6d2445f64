"""The layers of a network definition: each infers its output shapes and types (-1 for run-time dimensions) and
computes its outputs with numpy (floating point in float64: the stand-in checks the graph, not rounding)."""
import numpy as np

from ._core import ITensor, Weights, _InputsOutputs, report_error
from ._enums import FLOATING, INTEGER, ActivationType, DataType, ElementWiseOperation, MatrixOperation, ReduceOperation

VALUE_LIMIT = 4096  # build-time values are tracked for small tensors (shape arithmetic), as TensorRT does


# ------------------------------------------------------------------------------------------------ shape helpers
def volume(shape):
    return int(np.prod(shape, dtype=np.int64)) if shape else 1


def known(shape):
    return all(d >= 0 for d in shape)


def broadcast_dim(a, b):
    """TensorRT's broadcast rule for one dimension; -1 is a run-time dimension. None means incompatible."""
    if a == b:
        return a
    if a == 1:
        return b
    if b == 1:
        return a
    if a == -1 or b == -1:
        return -1 if (a == -1 and b == -1) else max(a, b)
    return None


def broadcast_shapes(s1, s2):
    if len(s1) != len(s2):
        return None
    out = []
    for a, b in zip(s1, s2):
        d = broadcast_dim(a, b)
        if d is None:
            return None
        out.append(d)
    return tuple(out)


def axes_of(mask, rank):
    return tuple(i for i in range(rank) if mask >> i & 1)


def as_compute(array, dtype):
    """The stand-in's in-memory form of a tensor: float64 for floating types, the declared type otherwise."""
    if dtype in FLOATING:
        return np.asarray(array, dtype=np.float64)
    return np.asarray(array, dtype={DataType.INT32: np.int32, DataType.INT64: np.int64,
                                    DataType.BOOL: np.bool_}[dtype])


# ------------------------------------------------------------------------------------------------ the base class
class ILayer(_InputsOutputs):
    _kind = "Layer"

    def __init__(self, network, inputs, num_outputs=1):
        self._network = network  # for definition-time checks only; not serialized
        self._strongly_typed = network._strongly_typed
        self._inputs = list(inputs)
        index = network.num_layers
        self._name = f"(Unnamed Layer* {index}) [{self._kind}]"
        self._outputs = [ITensor(f"{self._name}_output" + (f"_{i}" if num_outputs > 1 else ""), DataType.FLOAT, ())
                         for i in range(num_outputs)]
        self._precision = None
        self._output_types = {}

    # -- the public ILayer API
    @property
    def name(self):
        return self._name

    @name.setter
    def name(self, value):
        self._name = str(value)

    def set_input(self, index, tensor):
        if not isinstance(tensor, ITensor):
            raise TypeError("set_input: tensor must be an ITensor")
        while len(self._inputs) <= index:
            self._inputs.append(None)
        self._inputs[index] = tensor
        self._refresh()

    @property
    def precision(self):
        return self._precision if self._precision is not None else DataType.FLOAT

    @precision.setter
    def precision(self, dtype):
        self._precision = DataType(dtype)

    @property
    def precision_is_set(self):
        return self._precision is not None

    def set_output_type(self, index, dtype):
        if self._strongly_typed:
            report_error(self._network._logger, f"{self._name}: set_output_type is not allowed in a strongly "
                                                f"typed network")
        self._output_types[index] = DataType(dtype)

    def get_output_type(self, index):
        return self._output_types.get(index, self._outputs[index].dtype)

    # -- what each layer implements
    def _infer(self, shapes, dtypes, values):
        """[(shape, dtype)] of the outputs; may raise through self._fail."""
        raise NotImplementedError

    def _run(self, arrays):
        """Output arrays from input arrays (float64 for floating types)."""
        raise NotImplementedError

    # -- machinery
    def _fail(self, message):
        report_error(getattr(self._network, "_logger", None), f"{self._name}: {message}")

    def _weak(self):
        return not self._strongly_typed

    def _refresh(self):
        """Re-infer output shapes/types from the inputs (TensorRT does this lazily; eagerly is enough here)."""
        # Lists aligned with self._inputs; optional inputs that are not set are None.
        shapes = [t.shape if t is not None else None for t in self._inputs]
        dtypes = [t.dtype if t is not None else None for t in self._inputs]
        values = [t._value if t is not None else None for t in self._inputs]
        for tensor, (shape, dtype, value) in zip(self._outputs, self._evaluate(shapes, dtypes, values)):
            tensor._shape, tensor._dtype, tensor._value = shape, dtype, value

    def _evaluate(self, shapes, dtypes, values):
        """[(shape, dtype, value)] of the outputs. Values are computed when every input's value is known and small
        (shape arithmetic), so shapes that depend on them become concrete."""
        results = [(tuple(int(d) for d in shape), DataType(dtype), None)
                   for shape, dtype in self._infer(shapes, dtypes, values)]
        present = [(v, d) for v, s, d in zip(values, shapes, dtypes) if s is not None]
        if self._computes_values() and all(v is not None for v, _ in present) \
                and sum(np.size(v) for v, _ in present) <= VALUE_LIMIT:
            arrays = [as_compute(v, d) if v is not None else None for v, d in zip(values, dtypes)]
            results = [(tuple(np.shape(value)), dtype, as_compute(value, dtype))
                       for value, (_, dtype, _) in zip(self._run(arrays), results)]
        return results

    def _computes_values(self):
        return True

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_network"] = None
        return state

    def _float_type(self, dtypes):
        """Output type of a floating layer: weakly typed networks compute in FLOAT unless told otherwise."""
        return dtypes[0] if not self._weak() else DataType.FLOAT

    def _require_same_types(self, dtypes):
        if self._weak():
            kinds = {("float" if d in FLOATING else d) for d in dtypes}
            if len(kinds) > 1:
                self._fail(f"inputs have incompatible types {[d.name for d in dtypes]}")
        elif len(set(dtypes)) > 1:
            self._fail(f"strongly typed network: inputs have different types {[d.name for d in dtypes]}")


# ------------------------------------------------------------------------------------------------ layers
class IShuffleLayer(ILayer):
    _kind = "Shuffle"

    def __init__(self, network, input):
        super().__init__(network, [input])
        rank = len(input.shape)
        self._first = tuple(range(rank))
        self._reshape = None
        self._second = None
        self._zero_is_placeholder = True
        self._refresh()

    @property
    def first_transpose(self):
        return self._first

    @first_transpose.setter
    def first_transpose(self, perm):
        self._first = tuple(int(p) for p in perm)
        self._refresh()

    @property
    def reshape_dims(self):
        return self._reshape

    @reshape_dims.setter
    def reshape_dims(self, dims):
        self._reshape = tuple(int(d) for d in dims)
        self._refresh()

    @property
    def second_transpose(self):
        return self._second

    @second_transpose.setter
    def second_transpose(self, perm):
        self._second = tuple(int(p) for p in perm)
        self._refresh()

    @property
    def zero_is_placeholder(self):
        return self._zero_is_placeholder

    @zero_is_placeholder.setter
    def zero_is_placeholder(self, value):
        self._zero_is_placeholder = bool(value)
        self._refresh()

    def _target_dims(self, values):
        if len(self._inputs) > 1 and self._inputs[1] is not None:
            value = values[1]
            return tuple(int(v) for v in value) if value is not None else (-2,) * self._inputs[1].shape[0]
        return self._reshape

    def _infer(self, shapes, dtypes, values):
        shape = shapes[0]
        if sorted(self._first) != list(range(len(shape))):
            self._fail(f"first_transpose {self._first} is not a permutation of {len(shape)} axes")
        shape = tuple(shape[p] for p in self._first)
        dims = self._target_dims(values)
        if dims is not None:
            shape = self._reshaped(shape, dims)
        second = self._second if self._second is not None else tuple(range(len(shape)))
        if sorted(second) != list(range(len(shape))):
            self._fail(f"second_transpose {second} is not a permutation of {len(shape)} axes")
        return [(tuple(shape[p] for p in second), dtypes[0])]

    def _reshaped(self, shape, dims):
        if any(d == -2 for d in dims):  # dims from a run-time shape tensor
            return (-1,) * len(dims)
        out = []
        for i, d in enumerate(dims):
            if d == 0 and self._zero_is_placeholder:
                if i >= len(shape):
                    self._fail(f"reshape dimension {i} is 0 but the input has only {len(shape)} dimensions")
                out.append(shape[i])
            else:
                out.append(d)
        inferred = [i for i, d in enumerate(dims) if d == -1]
        if len(inferred) > 1:
            self._fail(f"reshape_dims {dims} has more than one -1")
        if inferred:
            rest = [d for i, d in enumerate(out) if i != inferred[0]]
            if known(shape) and known(rest):
                total, part = volume(shape), volume(rest)
                if part == 0 or total % part:
                    self._fail(f"cannot reshape {shape} to {dims}")
                out[inferred[0]] = total // part
            # else: stays -1 until run time
        elif known(shape) and known(out) and volume(shape) != volume(out):
            self._fail(f"reshape of {shape} to {tuple(out)} changes the volume")
        return tuple(out)

    def _run(self, arrays):
        x = np.transpose(arrays[0], self._first)
        dims = self._reshape
        if len(arrays) > 1 and arrays[1] is not None:
            dims = tuple(int(v) for v in arrays[1])
        if dims is not None:
            target = [x.shape[i] if (d == 0 and self._zero_is_placeholder) else d for i, d in enumerate(dims)]
            x = x.reshape(target)
        if self._second is not None:
            x = np.transpose(x, self._second)
        return [x]


class IConvolutionLayer(ILayer):
    """Only what demoBERT uses: a 1x1 kernel, stride 1, no padding, one group (a fully connected layer over the
    channel axis, which is the third from last)."""
    _kind = "Convolution"

    def __init__(self, network, input, num_output_maps, kernel_shape, kernel, bias):
        super().__init__(network, [input])
        if not isinstance(kernel, Weights) or (bias is not None and not isinstance(bias, Weights)):
            raise TypeError("add_convolution_nd: kernel and bias must be tensorrt.Weights")
        self._maps = int(num_output_maps)
        self._kernel_shape = tuple(int(k) for k in kernel_shape)
        self._kernel = kernel
        self._bias = bias if bias is not None and bias.size else None
        if self._kernel_shape != (1, 1):
            raise NotImplementedError("the stand-in implements 1x1 convolutions only")
        self._refresh()

    @property
    def num_output_maps(self):
        return self._maps

    @property
    def kernel_size_nd(self):
        return self._kernel_shape

    @property
    def kernel(self):
        return self._kernel

    @property
    def bias(self):
        return self._bias if self._bias is not None else Weights()

    def _infer(self, shapes, dtypes, values):
        shape = shapes[0]
        if len(shape) < 4:
            self._fail(f"convolution input must have at least 4 dimensions, got {shape}")
        channels = shape[-3]
        if channels < 0:
            self._fail("the channel dimension of a convolution input must be known at build time")
        if self._kernel.size != self._maps * channels:
            self._fail(f"kernel weights has count {self._kernel.size} but {self._maps * channels} was expected")
        if self._bias is not None and self._bias.size != self._maps:
            self._fail(f"bias weights has count {self._bias.size} but {self._maps} was expected")
        if dtypes[0] not in FLOATING:
            self._fail(f"convolution input must be floating point, got {dtypes[0].name}")
        return [(shape[:-3] + (self._maps,) + shape[-2:], self._float_type(dtypes))]

    def _run(self, arrays):
        x = arrays[0]
        w = self._kernel.numpy().astype(np.float64).reshape(self._maps, x.shape[-3])
        y = np.einsum("...chw,kc->...khw", x, w)
        if self._bias is not None:
            y += self._bias.numpy().astype(np.float64).reshape(self._maps, 1, 1)
        return [y]


class IConstantLayer(ILayer):
    _kind = "Constant"

    def __init__(self, network, shape, weights):
        super().__init__(network, [])
        if not isinstance(weights, Weights):
            raise TypeError("add_constant: weights must be tensorrt.Weights")
        self._shape = tuple(int(d) for d in shape)
        self._weights = weights
        if weights.size != volume(self._shape):
            self._fail(f"constant of shape {self._shape} needs {volume(self._shape)} weights, got {weights.size}")
        self._refresh()

    @property
    def shape(self):
        return self._shape

    @property
    def weights(self):
        return self._weights

    def _evaluate(self, shapes, dtypes, values):
        small = self._weights.size <= VALUE_LIMIT  # large weights are not build-time values
        return [(self._shape, self._weights.dtype, self._run([])[0] if small else None)]

    def _run(self, arrays):
        return [as_compute(self._weights.numpy().reshape(self._shape), self._weights.dtype)]


_COMPARISONS = (ElementWiseOperation.EQUAL, ElementWiseOperation.GREATER, ElementWiseOperation.LESS)


class IElementWiseLayer(ILayer):
    _kind = "ElementWise"

    def __init__(self, network, input1, input2, op):
        super().__init__(network, [input1, input2])
        self._op = ElementWiseOperation(op)
        self._refresh()

    @property
    def op(self):
        return self._op

    def _infer(self, shapes, dtypes, values):
        if len(shapes[0]) != len(shapes[1]):
            self._fail(f"elementwise inputs must have the same number of dimensions: {shapes[0]} and {shapes[1]}")
        shape = broadcast_shapes(shapes[0], shapes[1])
        if shape is None:
            self._fail(f"elementwise inputs {shapes[0]} and {shapes[1]} do not broadcast")
        self._require_same_types(dtypes)
        if self._op in _COMPARISONS:
            return [(shape, DataType.BOOL)]
        if dtypes[0] == DataType.BOOL:
            self._fail(f"{self._op.name} is not defined on BOOL")
        return [(shape, self._float_type(dtypes) if dtypes[0] in FLOATING else dtypes[0])]

    def _run(self, arrays):
        a, b = arrays
        op = self._op
        if op == ElementWiseOperation.DIV and a.dtype.kind in "iu":
            return [np.floor_divide(a, b)]  # TensorRT integer division
        fn = {ElementWiseOperation.SUM: np.add, ElementWiseOperation.PROD: np.multiply,
              ElementWiseOperation.MAX: np.maximum, ElementWiseOperation.MIN: np.minimum,
              ElementWiseOperation.SUB: np.subtract, ElementWiseOperation.DIV: np.divide,
              ElementWiseOperation.POW: np.power, ElementWiseOperation.EQUAL: np.equal,
              ElementWiseOperation.GREATER: np.greater, ElementWiseOperation.LESS: np.less}[op]
        return [fn(a, b)]


class IActivationLayer(ILayer):
    _kind = "Activation"

    def __init__(self, network, input, type):
        super().__init__(network, [input])
        self._type = ActivationType(type)
        self._refresh()

    @property
    def type(self):
        return self._type

    def _infer(self, shapes, dtypes, values):
        if dtypes[0] not in FLOATING:
            self._fail(f"activation input must be floating point, got {dtypes[0].name}")
        return [(shapes[0], self._float_type(dtypes))]

    def _run(self, arrays):
        x = arrays[0]
        if self._type == ActivationType.TANH:
            return [np.tanh(x)]
        if self._type == ActivationType.RELU:
            return [np.maximum(x, 0.0)]
        return [1.0 / (1.0 + np.exp(-x))]


class IGatherLayer(ILayer):
    _kind = "Gather"

    def __init__(self, network, input, indices, axis):
        super().__init__(network, [input, indices])
        self._axis = int(axis)
        self._refresh()

    @property
    def axis(self):
        return self._axis

    def _infer(self, shapes, dtypes, values):
        data, indices = shapes
        if not 0 <= self._axis < len(data):
            self._fail(f"gather axis {self._axis} is out of range for {len(data)} dimensions")
        if dtypes[1] not in INTEGER:
            self._fail(f"gather indices must be INT32 or INT64, got {dtypes[1].name}")
        return [(data[:self._axis] + indices + data[self._axis + 1:], dtypes[0])]

    def _run(self, arrays):
        data, indices = arrays
        size = data.shape[self._axis]
        if indices.size and (indices.min() < -size or indices.max() >= size):
            self._fail(f"gather index out of range [{-size}, {size})")
        return [np.take(data, indices, axis=self._axis)]


class IMatrixMultiplyLayer(ILayer):
    _kind = "MatrixMultiply"

    def __init__(self, network, input0, op0, input1, op1):
        super().__init__(network, [input0, input1])
        self._ops = (MatrixOperation(op0), MatrixOperation(op1))
        self._refresh()

    @property
    def op0(self):
        return self._ops[0]

    @property
    def op1(self):
        return self._ops[1]

    def _infer(self, shapes, dtypes, values):
        a, b = shapes
        if len(a) != len(b) or len(a) < 2:
            self._fail(f"matrix multiply inputs must have the same rank >= 2, got {a} and {b}")
        self._require_same_types(dtypes)
        if dtypes[0] not in FLOATING:
            self._fail("matrix multiply needs floating point inputs")
        if self._ops[0] == MatrixOperation.TRANSPOSE:
            a = a[:-2] + (a[-1], a[-2])
        if self._ops[1] == MatrixOperation.TRANSPOSE:
            b = b[:-2] + (b[-1], b[-2])
        if a[-1] >= 0 and b[-2] >= 0 and a[-1] != b[-2]:
            self._fail(f"matrix multiply: inner dimensions differ ({a[-1]} vs {b[-2]})")
        batch = broadcast_shapes(a[:-2], b[:-2])
        if batch is None:
            self._fail(f"matrix multiply batch dimensions {a[:-2]} and {b[:-2]} do not broadcast")
        return [(batch + (a[-2], b[-1]), self._float_type(dtypes))]

    def _run(self, arrays):
        a, b = arrays
        if self._ops[0] == MatrixOperation.TRANSPOSE:
            a = np.swapaxes(a, -1, -2)
        if self._ops[1] == MatrixOperation.TRANSPOSE:
            b = np.swapaxes(b, -1, -2)
        if all(d == 1 for d in b.shape[:-2]):  # one matrix (a weight): 2-D, BLAS takes the transposed view
            return [np.matmul(a, b.reshape(b.shape[-2:])).reshape(a.shape[:-2] + (a.shape[-2], b.shape[-1]))]
        # contiguous stacks keep numpy on its BLAS path (strided ones take a slow generic loop)
        return [np.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b))]


class ISoftMaxLayer(ILayer):
    _kind = "SoftMax"

    def __init__(self, network, input):
        super().__init__(network, [input])
        self._axes = 1 << max(0, len(input.shape) - 3)  # TensorRT's default axis
        self._refresh()

    @property
    def axes(self):
        return self._axes

    @axes.setter
    def axes(self, mask):
        self._axes = int(mask)
        self._refresh()

    def _infer(self, shapes, dtypes, values):
        chosen = axes_of(self._axes, len(shapes[0]))
        if len(chosen) != 1 or self._axes >> len(shapes[0]):
            self._fail(f"softmax axes mask {self._axes:b} must select exactly one of {len(shapes[0])} axes")
        return [(shapes[0], self._float_type(dtypes))]

    def _run(self, arrays):
        axis = axes_of(self._axes, arrays[0].ndim)[0]
        x = arrays[0] - arrays[0].max(axis=axis, keepdims=True)
        e = np.exp(x)
        return [e / e.sum(axis=axis, keepdims=True)]


class INormalizationLayer(ILayer):
    _kind = "Normalization"

    def __init__(self, network, input, scale, bias, axesMask):
        super().__init__(network, [input, scale, bias])
        self._axes = int(axesMask)
        self._epsilon = 1e-5
        self._refresh()

    @property
    def axes(self):
        return self._axes

    @property
    def epsilon(self):
        return self._epsilon

    @epsilon.setter
    def epsilon(self, value):
        self._epsilon = float(value)

    def _infer(self, shapes, dtypes, values):
        x, scale, bias = shapes
        if not axes_of(self._axes, len(x)) or self._axes >> len(x):
            self._fail(f"normalization axes mask {self._axes:b} does not fit {len(x)} dimensions")
        for what, s in (("scale", scale), ("bias", bias)):
            if broadcast_shapes(x, s) is None or any(d not in (1, x[i]) for i, d in enumerate(s) if x[i] >= 0):
                self._fail(f"normalization {what} {s} does not broadcast to the input {x}")
        self._require_same_types(dtypes)
        return [(x, self._float_type(dtypes))]

    def _run(self, arrays):
        x, scale, bias = arrays
        axes = axes_of(self._axes, x.ndim)
        mean = x.mean(axis=axes, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
        return [(x - mean) / np.sqrt(var + self._epsilon) * scale + bias]


class IReduceLayer(ILayer):
    _kind = "Reduce"

    def __init__(self, network, input, op, axes, keep_dims):
        super().__init__(network, [input])
        self._op = ReduceOperation(op)
        self._axes = int(axes)
        self._keep_dims = bool(keep_dims)
        self._refresh()

    @property
    def op(self):
        return self._op

    @property
    def axes(self):
        return self._axes

    @property
    def keep_dims(self):
        return self._keep_dims

    def _infer(self, shapes, dtypes, values):
        shape = shapes[0]
        chosen = axes_of(self._axes, len(shape))
        if not chosen or self._axes >> len(shape):
            self._fail(f"reduce axes mask {self._axes:b} does not fit {len(shape)} dimensions")
        if dtypes[0] == DataType.BOOL:
            self._fail("reduce is not defined on BOOL")
        out = tuple(1 if i in chosen else d for i, d in enumerate(shape)) if self._keep_dims else \
            tuple(d for i, d in enumerate(shape) if i not in chosen)
        return [(out, self._float_type(dtypes) if dtypes[0] in FLOATING else dtypes[0])]

    def _run(self, arrays):
        axes = axes_of(self._axes, arrays[0].ndim)
        fn = {ReduceOperation.SUM: np.sum, ReduceOperation.PROD: np.prod, ReduceOperation.MAX: np.max,
              ReduceOperation.MIN: np.min, ReduceOperation.AVG: np.mean}[self._op]
        return [fn(arrays[0], axis=axes, keepdims=self._keep_dims)]


class ICastLayer(ILayer):
    _kind = "Cast"

    def __init__(self, network, input, to_type):
        super().__init__(network, [input])
        self._to_type = DataType(to_type)
        self._refresh()

    @property
    def to_type(self):
        return self._to_type

    def _infer(self, shapes, dtypes, values):
        return [(shapes[0], self._to_type)]

    def _run(self, arrays):
        x = arrays[0]
        if self._to_type in INTEGER and x.dtype.kind == "f":
            x = np.trunc(x)  # TensorRT casts float to int by truncation
        return [x]


class IShapeLayer(ILayer):
    _kind = "Shape"

    def __init__(self, network, input):
        super().__init__(network, [input])
        self._refresh()

    def _evaluate(self, shapes, dtypes, values):
        shape = shapes[0]
        return [((len(shape),), DataType.INT64, np.array(shape, dtype=np.int64) if known(shape) else None)]

    def _run(self, arrays):
        return [np.array(arrays[0].shape, dtype=np.int64)]


class ISliceLayer(ILayer):
    """Static start/shape/stride, each replaceable by a 1-D shape tensor through set_input(1/2/3)."""
    _kind = "Slice"

    def __init__(self, network, input, start, shape, stride):
        super().__init__(network, [input])
        self._start, self._size, self._stride = (tuple(int(v) for v in d) for d in (start, shape, stride))
        self._refresh()

    @property
    def start(self):
        return self._start

    @property
    def shape(self):
        return self._size

    @property
    def stride(self):
        return self._stride

    def _params(self, values):
        params = [self._start, self._size, self._stride]
        for i in (1, 2, 3):
            if len(self._inputs) > i and self._inputs[i] is not None:
                value = values[i]
                params[i - 1] = tuple(int(v) for v in value) if value is not None else None
        return params

    def _infer(self, shapes, dtypes, values):
        rank = len(shapes[0])
        start, size, stride = self._params(values)
        for what, p, i in (("start", start, 1), ("shape", size, 2), ("stride", stride, 3)):
            if p is not None and len(p) != rank:
                self._fail(f"slice {what} has {len(p)} values for a {rank}-dimensional input")
            if p is None and self._inputs[i].shape != (rank,):
                self._fail(f"slice {what} tensor must have shape ({rank},), got {self._inputs[i].shape}")
        if size is None:
            return [((-1,) * rank, dtypes[0])]
        if start is not None and stride is not None and known(shapes[0]):
            self._check_bounds(shapes[0], start, size, stride)
        return [(size, dtypes[0])]

    def _check_bounds(self, shape, start, size, stride):
        for d, b, n, s in zip(shape, start, size, stride):
            if n > 0 and not (0 <= b < d and 0 <= b + (n - 1) * s < d):
                self._fail(f"slice start {start} size {size} stride {stride} is out of bounds of {shape}")

    def _run(self, arrays):
        start, size, stride = self._params(arrays)
        data = arrays[0]
        self._check_bounds(data.shape, start, size, stride)
        index = tuple(slice(b, b + n * s, s) if n else slice(0, 0) for b, n, s in zip(start, size, stride))
        return [data[index]]


class IConcatenationLayer(ILayer):
    _kind = "Concatenation"

    def __init__(self, network, inputs):
        super().__init__(network, inputs)
        # TensorRT's default: the number of dimensions minus three, or 0 for fewer than three
        self._axis = max(len(inputs[0].shape) - 3, 0) if inputs else 0
        self._refresh()

    @property
    def axis(self):
        return self._axis

    @axis.setter
    def axis(self, value):
        self._axis = int(value)
        self._refresh()

    def _infer(self, shapes, dtypes, values):
        rank = len(shapes[0])
        if any(len(s) != rank for s in shapes) or not 0 <= self._axis < rank:
            self._fail(f"concatenation inputs {shapes} do not fit axis {self._axis}")
        for i in range(rank):
            if i != self._axis and len({s[i] for s in shapes if s[i] >= 0}) > 1:
                self._fail(f"concatenation inputs {shapes} differ outside axis {self._axis}")
        self._require_same_types(dtypes)
        total = sum(s[self._axis] for s in shapes) if all(s[self._axis] >= 0 for s in shapes) else -1
        out = list(shapes[0])
        out[self._axis] = total
        return [(tuple(out), dtypes[0])]

    def _run(self, arrays):
        return [np.concatenate(arrays, axis=self._axis)]


def check_tensor(network, tensor, what):
    if not isinstance(tensor, ITensor):
        raise TypeError(f"{what} must be an ITensor, got {type(tensor).__name__}")
    if tensor not in network._all_tensors:
        report_error(network._logger, f"{what} {tensor.name} does not belong to this network")
