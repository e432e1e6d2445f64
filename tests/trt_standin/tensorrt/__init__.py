"""A stand-in for TensorRT's Python module, for tests only (tests put its parent folder on sys.path).

It offers exactly the subset of the TensorRT 10.16 Python API this project calls, with TensorRT's class, method,
argument and enum names (tests/test_tensorrt_bindings.py checks each against the strings of the real bindings'
compiled module). Networks are checked as TensorRT checks them and executed with numpy; demoBERT's BERT plugins
are computed from their documented semantics (docs/TENSORRT.md says where the stand-in differs from TensorRT).
"""
from ._builder import Builder, IBuilderConfig, IInt8LegacyCalibrator, IOptimizationProfile, ITimingCache
from ._core import IHostMemory, ILogger, ITensor, Logger, Weights
from ._enums import (ActivationType, BuilderFlag, DataType, ElementWiseOperation, MatrixOperation, MemoryPoolType,
                     NetworkDefinitionCreationFlag, PluginFieldType, ProfilingVerbosity, QuantizationFlag,
                     ReduceOperation, TacticSource, TensorIOMode, TensorRTPhase)
from ._layers import (IActivationLayer, ICastLayer, IConcatenationLayer, IConstantLayer, IConvolutionLayer,
                      IElementWiseLayer, IGatherLayer, ILayer, IMatrixMultiplyLayer, INormalizationLayer, IReduceLayer,
                      IShapeLayer, IShuffleLayer, ISliceLayer, ISoftMaxLayer)
from ._network import INetworkDefinition
from ._plugins import (IPluginCreator, IPluginCreatorV3One, IPluginRegistry, IPluginV2, IPluginV2Layer, IPluginV3,
                       IPluginV3Layer, PluginField, PluginFieldCollection, get_plugin_registry, init_libnvinfer_plugins)
from ._runtime import ICudaEngine, IExecutionContext, Runtime

__version__ = "10.16.1.11"
__all__ = ["ActivationType", "Builder", "BuilderFlag", "DataType", "ElementWiseOperation", "IActivationLayer",
           "IBuilderConfig", "ICastLayer", "IConcatenationLayer", "IConstantLayer", "IConvolutionLayer", "ICudaEngine",
           "IElementWiseLayer", "IExecutionContext", "IGatherLayer", "IHostMemory", "IInt8LegacyCalibrator",
           "ILayer", "ILogger", "IMatrixMultiplyLayer", "INetworkDefinition", "INormalizationLayer",
           "IOptimizationProfile", "IPluginCreator", "IPluginCreatorV3One", "IPluginRegistry", "IPluginV2",
           "IPluginV2Layer", "IPluginV3", "IPluginV3Layer", "IReduceLayer", "IShapeLayer", "IShuffleLayer",
           "ISliceLayer", "ISoftMaxLayer", "ITensor", "ITimingCache", "Logger", "MatrixOperation", "MemoryPoolType",
           "NetworkDefinitionCreationFlag", "PluginField", "PluginFieldCollection", "PluginFieldType",
           "ProfilingVerbosity", "QuantizationFlag", "ReduceOperation", "Runtime", "TacticSource", "TensorIOMode",
           "TensorRTPhase", "Weights", "get_plugin_registry", "init_libnvinfer_plugins"]

# As in TensorRT's own __init__.py: the severities are also attributes of Logger.
for _severity in ILogger.Severity:
    setattr(Logger, _severity.name, _severity)
Logger.Severity = ILogger.Severity
del _severity
