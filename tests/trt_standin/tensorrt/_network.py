"""INetworkDefinition: the `add_*` methods the project calls, with TensorRT's argument names."""
from ._core import ITensor, _InputsOutputs, report_error
from ._enums import DataType, ElementWiseOperation, NetworkDefinitionCreationFlag
from ._layers import (IActivationLayer, ICastLayer, IConcatenationLayer, IConstantLayer, IConvolutionLayer,
                      IElementWiseLayer, IGatherLayer, IMatrixMultiplyLayer, INormalizationLayer, IReduceLayer,
                      IShapeLayer, IShuffleLayer, ISliceLayer, ISoftMaxLayer, check_tensor)
from ._plugins import add_plugin_layer


class INetworkDefinition(_InputsOutputs):
    def __init__(self, flags, logger):
        self._flags = int(flags)
        self._strongly_typed = bool(self._flags >> int(NetworkDefinitionCreationFlag.STRONGLY_TYPED) & 1)
        self._logger = logger
        self._layers = []
        self._inputs = []
        self._outputs = []
        self._all_tensors = set()

    # -- inspection
    @property
    def num_layers(self):
        return len(self._layers)

    def get_layer(self, index):
        return self._layers[index]

    def get_flag(self, flag):
        return bool(self._flags >> int(flag) & 1)

    # -- inputs and outputs
    def add_input(self, name, dtype, shape):
        if any(t.name == name for t in self._inputs):
            report_error(self._logger, f"an input named {name} already exists")
        shape = tuple(int(d) for d in shape)
        if any(d < -1 for d in shape):
            report_error(self._logger, f"input {name}: invalid shape {shape}")
        tensor = ITensor(name, DataType(dtype), shape)
        tensor._is_input = True
        self._inputs.append(tensor)
        self._all_tensors.add(tensor)
        return tensor

    def mark_output(self, tensor):
        check_tensor(self, tensor, "mark_output: tensor")
        if tensor._is_input:
            report_error(self._logger, f"{tensor.name} is a network input and cannot be an output")
        tensor._is_output = True
        if tensor not in self._outputs:
            self._outputs.append(tensor)

    # -- layers
    def _add(self, layer):
        self._layers.append(layer)
        self._all_tensors.update(layer._outputs)
        return layer

    def _check(self, *tensors):
        for tensor in tensors:
            check_tensor(self, tensor, "input")

    def add_shuffle(self, input):
        self._check(input)
        return self._add(IShuffleLayer(self, input))

    def add_convolution_nd(self, input, num_output_maps, kernel_shape, kernel, bias=None):
        self._check(input)
        return self._add(IConvolutionLayer(self, input, num_output_maps, kernel_shape, kernel, bias))

    def add_constant(self, shape, weights):
        return self._add(IConstantLayer(self, shape, weights))

    def add_elementwise(self, input1, input2, op):
        self._check(input1, input2)
        return self._add(IElementWiseLayer(self, input1, input2, ElementWiseOperation(op)))

    def add_activation(self, input, type):
        self._check(input)
        return self._add(IActivationLayer(self, input, type))

    def add_gather(self, input, indices, axis):
        self._check(input, indices)
        return self._add(IGatherLayer(self, input, indices, axis))

    def add_matrix_multiply(self, input0, op0, input1, op1):
        self._check(input0, input1)
        return self._add(IMatrixMultiplyLayer(self, input0, op0, input1, op1))

    def add_softmax(self, input):
        self._check(input)
        return self._add(ISoftMaxLayer(self, input))

    def add_normalization(self, input, scale, bias, axesMask):
        self._check(input, scale, bias)
        return self._add(INormalizationLayer(self, input, scale, bias, axesMask))

    def add_reduce(self, input, op, axes, keep_dims):
        self._check(input)
        return self._add(IReduceLayer(self, input, op, axes, keep_dims))

    def add_cast(self, input, to_type):
        self._check(input)
        return self._add(ICastLayer(self, input, to_type))

    def add_shape(self, input):
        self._check(input)
        return self._add(IShapeLayer(self, input))

    def add_slice(self, input, start, shape, stride):
        self._check(input)
        return self._add(ISliceLayer(self, input, start, shape, stride))

    def add_concatenation(self, inputs):
        self._check(*inputs)
        return self._add(IConcatenationLayer(self, list(inputs)))

    def add_plugin_v2(self, inputs, plugin):
        return self._add(add_plugin_layer(self, inputs, None, plugin))

    def add_plugin_v3(self, inputs, shape_inputs, plugin):
        return self._add(add_plugin_layer(self, inputs, list(shape_inputs), plugin))
