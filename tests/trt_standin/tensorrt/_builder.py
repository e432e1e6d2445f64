"""Builder, IBuilderConfig, IOptimizationProfile, ITimingCache and the INT8 calibrator base class.

`build_serialized_network` checks what TensorRT checks before it picks kernels (outputs exist, dynamic inputs have
complete optimization profiles, every layer accepts the shapes at each profile's min and max, plugins can get the
precision they ask for), logs an error and returns None when something is wrong, as TensorRT does, and otherwise
serializes the network itself: the stand-in's Runtime executes that with numpy.
"""
import json
import pickle

from ._core import IHostMemory, ILogger, TrtStandinError
from ._enums import BuilderFlag, DataType, MemoryPoolType, ProfilingVerbosity, QuantizationFlag, TacticSource
from ._network import INetworkDefinition
from ._plugins import _PluginLayer
from ._runtime import PLAN_MAGIC, Graph, concrete_shapes

TIMING_CACHE_MAGIC = b"TRT-STANDIN-TIMING-CACHE\n"
DEVICE = "stand-in GPU"   # what a timing cache records it was measured on (tests may change it)


class IOptimizationProfile:
    def __init__(self):
        self._shapes = {}

    def set_shape(self, input, min, opt, max):
        dims = [tuple(int(d) for d in x) for x in (min, opt, max)]
        if len({len(d) for d in dims}) != 1:
            raise ValueError(f"set_shape({input}): min, opt and max must have the same rank")
        if not all(0 <= a <= b <= c for a, b, c in zip(*dims)):
            raise ValueError(f"set_shape({input}): need 0 <= min <= opt <= max in every dimension, got {dims}")
        self._shapes[str(input)] = dims

    def get_shape(self, input):
        return [tuple(d) for d in self._shapes.get(str(input), [])]


class ITimingCache:
    def __init__(self, entries=(), device=None):
        self._entries = set(entries)
        self._device = device   # None: new, no timings yet

    def serialize(self):
        record = {"device": self._device or DEVICE, "entries": sorted(self._entries)}
        return IHostMemory(TIMING_CACHE_MAGIC + json.dumps(record).encode())


class IInt8LegacyCalibrator:
    """Base class of user calibrators; TensorRT calls get_batch_size, get_batch, read/write_calibration_cache,
    get_quantile, get_regression_cutoff and read/write_histogram_cache on it."""

    def __init__(self):
        pass


class IBuilderConfig:
    def __init__(self):
        self._flags = set()
        self._pool_limits = {}
        self._profiles = []
        # TensorRT 10's default tactic sources: neither cuBLAS nor cuDNN
        self._tactic_sources = ((1 << int(TacticSource.EDGE_MASK_CONVOLUTIONS))
                                | (1 << int(TacticSource.JIT_CONVOLUTIONS)))
        self._quantization_flags = set()
        self._timing_cache = None
        self.avg_timing_iterations = 1
        self.profiling_verbosity = ProfilingVerbosity.LAYER_NAMES_ONLY
        self.int8_calibrator = None

    def set_flag(self, flag):
        self._flags.add(BuilderFlag(flag))

    def get_flag(self, flag):
        return BuilderFlag(flag) in self._flags

    def clear_flag(self, flag):
        self._flags.discard(BuilderFlag(flag))

    def set_memory_pool_limit(self, pool, pool_size):
        if int(pool_size) < 0:
            raise ValueError("pool_size must be >= 0")
        self._pool_limits[MemoryPoolType(pool)] = int(pool_size)

    def get_memory_pool_limit(self, pool):
        return self._pool_limits.get(MemoryPoolType(pool), 1 << 40)  # default: the device's memory

    def get_tactic_sources(self):
        return self._tactic_sources

    def set_tactic_sources(self, tactic_sources):
        self._tactic_sources = int(tactic_sources)
        return True

    def set_quantization_flag(self, flag):
        self._quantization_flags.add(QuantizationFlag(flag))

    def get_quantization_flag(self, flag):
        return QuantizationFlag(flag) in self._quantization_flags

    def add_optimization_profile(self, profile):
        if not isinstance(profile, IOptimizationProfile):
            raise TypeError("add_optimization_profile takes an IOptimizationProfile")
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self):
        return len(self._profiles)

    def create_timing_cache(self, serialized_timing_cache):
        blob = bytes(serialized_timing_cache)
        if not blob:
            return ITimingCache()
        if not blob.startswith(TIMING_CACHE_MAGIC):
            return None  # TensorRT logs "Failed to deserialize the timing cache" and returns None
        record = json.loads(blob[len(TIMING_CACHE_MAGIC):])
        return ITimingCache(record["entries"], record["device"])

    def set_timing_cache(self, cache, ignore_mismatch):
        """As TensorRT: False, and no cache set, for one measured on another device unless ignore_mismatch."""
        if not isinstance(cache, ITimingCache):
            raise TypeError("set_timing_cache takes an ITimingCache")
        if cache._device not in (None, DEVICE) and not ignore_mismatch:
            return False
        self._timing_cache = cache
        return True

    def get_timing_cache(self):
        return self._timing_cache


class Builder:
    def __init__(self, logger):
        self._logger = logger

    def create_network(self, flags=0):
        return INetworkDefinition(flags, self._logger)

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network, config):
        try:
            plan = _BuildCheck(self._logger, network, config).plan()
        except TrtStandinError:
            return None
        return IHostMemory(PLAN_MAGIC + pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL))


class _BuildCheck:
    def __init__(self, logger, network, config):
        self.logger, self.network, self.config = logger, network, config

    def fail(self, message):
        self.logger.log(ILogger.Severity.ERROR, message)
        raise TrtStandinError(message)

    def plan(self):
        net, config = self.network, self.config
        if net.num_outputs == 0:
            self.fail("Network must have at least one output")
        names = [t.name for t in net._inputs + net._outputs]
        if len(set(names)) != len(names):
            self.fail(f"network input and output names must be unique: {names}")
        layers = self.topological_order()
        for layer in layers:  # properties may have changed after downstream layers were added
            layer._refresh()
        profiles = self.profiles()
        for index, profile in enumerate(profiles):
            for which in (0, 2):
                try:
                    concrete_shapes(layers, {name: shapes[which] for name, shapes in profile.items()},
                                    net._inputs)
                except TrtStandinError as exc:
                    self.fail(f"optimization profile {index} ({'min' if which == 0 else 'max'} shapes): {exc}")
        self.check_precisions()
        calibration_cache = self.calibrate()
        if config._timing_cache is not None:
            config._timing_cache._entries.update(f"{type(layer).__name__}:{layer.get_output(0).shape}"
                                                 for layer in layers)
        graph = Graph(list(net._inputs), list(net._outputs), layers)
        return {"graph": graph, "profiles": profiles, "strongly_typed": net._strongly_typed,
                "builder_config": {
                    "flags": sorted(f.name for f in config._flags),
                    "memory_pool_limits": {p.name: v for p, v in config._pool_limits.items()},
                    "tactic_sources": config._tactic_sources,
                    "quantization_flags": sorted(f.name for f in config._quantization_flags),
                    "avg_timing_iterations": config.avg_timing_iterations,
                    "profiling_verbosity": ProfilingVerbosity(config.profiling_verbosity).name,
                    "calibration_cache": calibration_cache}}

    def topological_order(self):
        """Layers ordered so each runs after its inputs' producers (set_input may wire in a later layer)."""
        net = self.network
        producer = {t: layer for layer in net._layers for t in layer._outputs}
        ordered, state = [], {}

        def visit(layer):
            if state.get(layer) == "done":
                return
            if state.get(layer) == "visiting":
                self.fail(f"the network has a cycle through {layer.name}")
            state[layer] = "visiting"
            for tensor in layer._inputs:
                if tensor is not None and tensor in producer:
                    visit(producer[tensor])
            state[layer] = "done"
            ordered.append(layer)

        for layer in net._layers:
            visit(layer)
        return ordered

    def profiles(self):
        """[{input name: [min, opt, max]}]; a network without dynamic inputs has one implicit profile."""
        net, config = self.network, self.config
        dynamic = [t for t in net._inputs if -1 in t.shape]
        if not config._profiles:
            if dynamic:
                self.fail("Network has dynamic or shape inputs, but no optimization profile has been defined.")
            return [{t.name: [t.shape] * 3 for t in net._inputs}]
        inputs = {t.name: t for t in net._inputs}
        result = []
        for index, profile in enumerate(config._profiles):
            unknown = set(profile._shapes) - set(inputs)
            if unknown:
                self.fail(f"optimization profile {index} sets shapes of {sorted(unknown)}, which are not inputs")
            shapes = {}
            for name, tensor in inputs.items():
                dims = profile._shapes.get(name)
                if dims is None:
                    if -1 in tensor.shape:
                        self.fail(f"optimization profile {index} is missing values for dynamic input {name}")
                    dims = [tensor.shape] * 3
                for d in dims:
                    if len(d) != len(tensor.shape) or any(s != -1 and s != v for s, v in zip(tensor.shape, d)):
                        self.fail(f"optimization profile {index}: {name} {d} does not fit the input's shape "
                                  f"{tensor.shape}")
                shapes[name] = dims
            result.append(shapes)
        return result

    def check_precisions(self):
        net, config = self.network, self.config
        if net._strongly_typed:
            for flag in (BuilderFlag.FP16, BuilderFlag.INT8):
                if flag in config._flags:
                    self.fail(f"BuilderFlag.{flag.name} is not allowed for a strongly typed network")
        for layer in net._layers:
            if not isinstance(layer, _PluginLayer):
                continue
            precision = layer._io_precision()
            if precision == DataType.HALF and BuilderFlag.FP16 not in config._flags:
                self.fail(f"{layer.name}: could not find any supported formats consistent with input/output data "
                          f"types (the plugin runs in HALF but BuilderFlag.FP16 is not set)")
            if precision == DataType.INT8:
                if BuilderFlag.INT8 not in config._flags:
                    self.fail(f"{layer.name}: the plugin runs in INT8 but BuilderFlag.INT8 is not set")
                if config.int8_calibrator is None:
                    missing = [t.name for t in layer._float_tensors() if t.dynamic_range is None]
                    if missing:
                        self.fail(f"{layer.name}: INT8 I/O needs dynamic ranges; missing for {missing}")

    def calibrate(self):
        """INT8 without explicit ranges: TensorRT asks the calibrator for its cache, else calibrates by running the
        network on its batches. The stand-in cannot read the device buffers get_batch returns, so it only accepts
        calibration from a cache."""
        config = self.config
        calibrator = config.int8_calibrator
        if BuilderFlag.INT8 not in config._flags or calibrator is None:
            return None
        calibrator.get_batch_size()
        cache = calibrator.read_calibration_cache()
        if cache:
            return len(bytes(cache))
        self.fail("the stand-in cannot calibrate (it cannot read the device memory get_batch returns); "
                  "give the calibrator a calibration cache")
