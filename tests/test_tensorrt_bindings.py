"""Ties the stand-in and the project's TensorRT calls to the real TensorRT Python bindings.

The PyPI wheel `tensorrt-cu12-bindings` cannot be imported without TensorRT's libraries, but its compiled module
holds the API's class, method, argument and enum names and its docstrings as C strings. The wheel of the targeted
version is downloaded once into .cache/ (gitignored). A name "exists" when it is one of those strings or the tail of
one (the linker stores `set_dynamic_range` inside `reset_dynamic_range`). Signatures are matched against the
docstrings' `:arg name:` lists. The plugin-free network, which is what TensorRT 11 builds, is also checked against
the 11.x bindings.
"""
import ast
import inspect
import re
import subprocess
import sys
import types
import zipfile
from enum import EnumMeta

import pytest
from conftest import ROOT, load_fixture_model
from trt_support import builder_args, head64_model, qat_scales, varseqlen_args

TARGET_VERSION = "10.16.1.11"      # the last TensorRT with demoBERT (spec §0)
TENSORRT_11_VERSION = "11.4.0.106"
CACHE = ROOT / ".cache" / "tensorrt-bindings"
PROJECT_FILES = ["helpers/trt_plugins.py", "helpers/trt_network.py", "helpers/trt_network_plain.py",
                 "helpers/trt_builder.py", "helpers/trt_runtime.py", "helpers/calibrator.py"]

# Stand-in methods whose bindings docstrings carry no ":arg" list; their argument names are still checked as names.
NO_ARG_DOCSTRING = {
    "Builder.__init__", "Runtime.__init__", "Weights.__init__", "PluginField.__init__",
    "IPluginCreatorV3One.create_plugin",
}
# The classes TensorRT lets Python construct; the stand-in's other constructors are its own internals (TensorRT makes
# those objects through factory methods: create_network, deserialize_cuda_engine, add_*...).
CONSTRUCTIBLE = {"Builder", "Runtime", "Logger", "Weights", "PluginField", "PluginFieldCollection",
                 "IInt8LegacyCalibrator"}
# Attribute names in the project's TensorRT files that belong to Python, numpy or the project itself.
NOT_TENSORRT = {
    "append", "astype", "clear", "copy", "ctypes", "data", "decode", "dtype", "flags", "fspath", "get", "isfile",
    "items", "join", "max", "min", "ndim", "path", "platform", "prod", "ptr", "read", "reshape", "shape", "size",
    "split", "startswith", "sum", "T", "tolist", "update", "values", "write", "RTLD_GLOBAL", "CDLL", "float16",
    "float32", "float64", "int32", "int64", "finfo", "eps", "ascontiguousarray", "asarray", "array", "arange",
    "concatenate", "cumsum", "diff", "empty", "zeros", "ones", "abs", "all", "any", "argmin", "where", "nbytes",
    "itemsize", "RandomState", "randint", "perf_counter", "time", "rstrip", "endswith", "exists", "fromkeys",
    "random", "sqrt", "doc_tokens", "question_text",
} | set(vars(builder_args())) | set(vars(varseqlen_args()))  # argparse dests


# ------------------------------------------------------------------------------------------------ the bindings

class Bindings:
    """The printable C strings of one bindings wheel's compiled module."""

    def __init__(self, strings):
        self.strings = strings
        self.whole = set(strings)
        self.docstring_args = [re.findall(r":arg (\w+):", s) for s in strings if ":arg " in s]
        self.documented_attributes = {name for s in strings for name in re.findall(r":ivar (\w+):", s)}

    def has(self, name):
        return name in self.whole or any(s.endswith(name) for s in self.strings)

    def has_signature(self, params):
        return list(params) in self.docstring_args


def download(version):
    wheel_dir = CACHE / version
    wheels = list(wheel_dir.glob("tensorrt_cu12_bindings-*.whl")) if wheel_dir.is_dir() else []
    if not wheels:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                   "3.11", "--platform", "manylinux_2_28_x86_64", f"tensorrt-cu12-bindings=={version}", "-d",
                   str(wheel_dir)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        wheels = list(wheel_dir.glob("tensorrt_cu12_bindings-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"cannot download tensorrt-cu12-bindings=={version} from PyPI: "
                        f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
    return wheels[0]


def load_bindings(version):
    with zipfile.ZipFile(download(version)) as wheel:
        name = next(n for n in wheel.namelist() if re.fullmatch(r"tensorrt_bindings/tensorrt[^/]*\.so", n))
        data = wheel.read(name)
    strings = [chunk.decode() for chunk in data.split(b"\0")
               if len(chunk) >= 2 and re.fullmatch(rb"[\t\n\r\x20-\x7e]+", chunk)]
    assert len(strings) > 10000, "the bindings module holds fewer strings than expected"
    return Bindings(strings)


@pytest.fixture(scope="module")
def bindings():
    return load_bindings(TARGET_VERSION)


@pytest.fixture(scope="module")
def bindings_11():
    return load_bindings(TENSORRT_11_VERSION)


def test_the_check_can_fail(bindings):
    assert bindings.has("add_convolution_nd") and bindings.has("set_dynamic_range")
    assert not bindings.has("add_convolution_2d_v7") and not bindings.has("execute_async_v4")
    assert bindings.has_signature(["input", "num_output_maps", "kernel_shape", "kernel", "bias"])
    assert not bindings.has_signature(["input", "num_outputs", "kernel_shape", "kernel", "bias"])


# ------------------------------------------------------------------------------------------------ the stand-in
def named_parameters(function):
    """Parameters callers may name (pybind11 arguments without a name are positional-only)."""
    return [name for name, p in inspect.signature(function).parameters.items()
            if name != "self" and p.kind is not inspect.Parameter.POSITIONAL_ONLY]


def standin_surface(trt):
    """{qualified name: [names to check]} and {qualified method name: parameter names} of the stand-in's API."""
    names, signatures = {}, {}
    for public in (n for n in dir(trt) if not n.startswith("_") or n == "__version__"):
        value = getattr(trt, public)
        names[public] = [public]
        if isinstance(value, EnumMeta):
            names[public] += list(value.__members__)
        elif isinstance(value, type):
            for klass in value.__mro__:
                if klass.__module__.startswith("tensorrt"):
                    for attr, member in vars(klass).items():
                        if attr.startswith("_") and attr != "__init__":
                            continue
                        if isinstance(member, EnumMeta):
                            names[f"{public}.{attr}"] = [attr] + list(member.__members__)
                        elif callable(member):
                            if attr == "__init__" and public not in CONSTRUCTIBLE:
                                continue
                            params = named_parameters(member)
                            if attr != "__init__":
                                names[f"{public}.{attr}"] = [attr]
                            if params:
                                signatures[f"{klass.__name__}.{attr}"] = params
                                names[f"{public}.{attr}()"] = params
                        else:
                            names[f"{public}.{attr}"] = [attr]
        elif callable(value):
            params = named_parameters(value)
            if params:
                signatures[public] = params
                names[f"{public}()"] = params
    return names, signatures


def test_every_standin_name_exists_in_the_bindings(trt, bindings):
    names, _ = standin_surface(trt)
    missing = sorted(f"{where}: {name}" for where, group in names.items() for name in group
                     if not bindings.has(name))
    assert not missing, f"not in tensorrt-cu12-bindings {TARGET_VERSION}: {missing}"


def test_standin_attributes_are_documented_attributes(trt, bindings):
    """Every property of the stand-in is an attribute (`:ivar name:`) of some class in the bindings' docstrings."""
    properties = {f"{klass.__name__}.{name}" for klass in vars(trt).values() if isinstance(klass, type)
                  for base in klass.__mro__ if base.__module__.startswith("tensorrt")
                  for name, member in vars(base).items() if isinstance(member, property) and not name.startswith("_")}
    assert len(properties) > 40
    undocumented = sorted(p for p in properties if p.split(".")[1] not in bindings.documented_attributes)
    assert not undocumented, undocumented


def test_standin_signatures_match_the_bindings_docstrings(trt, bindings):
    _, signatures = standin_surface(trt)
    mismatched = sorted(f"{name}({', '.join(params)})" for name, params in signatures.items()
                        if name not in NO_ARG_DOCSTRING and not bindings.has_signature(params))
    assert not mismatched, f"no bindings docstring documents these argument lists: {mismatched}"
    stale = sorted(n for n in NO_ARG_DOCSTRING if n in signatures and bindings.has_signature(signatures[n]))
    assert not stale, f"documented after all (remove from NO_ARG_DOCSTRING): {stale}"
    assert NO_ARG_DOCSTRING <= set(signatures), sorted(NO_ARG_DOCSTRING - set(signatures))


# ------------------------------------------------------------------------------------------------ the project's calls
def project_attributes(paths):
    """Every attribute name the given project files read, call or assign (from their syntax trees)."""
    found = set()
    for path in paths:
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        found |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    return found


def project_definitions():
    """Names the project defines itself (functions, classes, attributes it assigns on self)."""
    defined = set()
    for path in (ROOT / "helpers").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                defined.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and \
                    isinstance(node.value, ast.Name) and node.value.id == "self":
                defined.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                defined.add(node.target.id)
    return defined


def test_every_attribute_the_project_uses_is_tensorrt_or_its_own(bindings):
    """A static scan of every code path (including the CUDA-only ones the other tests cannot run)."""
    unknown = sorted(name for name in project_attributes(PROJECT_FILES) - project_definitions() - NOT_TENSORRT
                     if not bindings.has(name))
    assert not unknown, f"neither TensorRT {TARGET_VERSION} nor the project's own: {unknown}"


class Tracer:
    """Records every attribute the project's code (modules under helpers/) reads on the stand-in: on the module,
    on its classes and enums, and on the objects they create."""

    def __init__(self, trt, monkeypatch):
        self.trt, self.names = trt, set()
        self.classes = [v for v in vars(trt).values() if isinstance(v, type) and not isinstance(v, EnumMeta)
                        and v.__module__.startswith("tensorrt")]
        for klass in self.classes:
            monkeypatch.setattr(klass, "__getattribute__", self._read_hook(klass), raising=False)
            monkeypatch.setattr(klass, "__setattr__", self._write_hook(klass), raising=False)
        monkeypatch.setitem(sys.modules, "tensorrt", self._module_proxy())

    @staticmethod
    def _traced(obj, name):
        """A public name of a stand-in object (not of a project subclass) used by code under helpers/."""
        if name.startswith("_") or not type(obj).__module__.startswith("tensorrt"):
            return False
        return sys._getframe(2).f_globals.get("__name__", "").startswith("helpers.")

    def _read_hook(self, klass):
        parent = klass.__mro__[1].__getattribute__
        tracer = self

        def hook(obj, name):
            if tracer._traced(obj, name):
                tracer.names.add(name)
            return parent(obj, name)
        return hook

    def _write_hook(self, klass):
        parent = klass.__mro__[1].__setattr__
        tracer = self

        def hook(obj, name, value):
            if tracer._traced(obj, name):
                tracer.names.add(name)
            parent(obj, name, value)
        return hook

    def _module_proxy(self):
        tracer, real = self, self.trt

        class Namespace:
            """Stands for an enum or class on the module: records member reads, forwards calls."""

            def __init__(self, target):
                self._target = target

            def __getattr__(self, name):
                tracer.names.add(name)
                return getattr(self._target, name)

            def __call__(self, *args, **kwargs):
                return self._target(*args, **kwargs)

        class Module(types.ModuleType):
            def __getattr__(self, name):
                if not name.startswith("__") or name == "__version__":
                    tracer.names.add(name)
                value = getattr(real, name)
                subclassed = name == "IInt8LegacyCalibrator"  # the project subclasses it: must stay a class
                return Namespace(value) if isinstance(value, type) and not subclassed else value

        return Module("tensorrt")


def exercise_plugin_builds(config, weights, tmp_path):
    from helpers.trt_builder import build_fixed_engine, build_varseqlen_engine
    from helpers.trt_runtime import TrtRunner, bind_addresses, engine_info, run_bound, set_shapes
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"cache")
    scales = qat_scales(config)
    plans = [build_fixed_engine(builder_args(batch_size=[1, 2], sequence_length=[16], fp16=True, strict=True,
                                             sparse=True, verbose=True, timing_cache_file=str(tmp_path / "t.tcf"),
                                             use_deprecated_plugins=deprecated), config, weights)
             for deprecated in (True, False)]
    build_fixed_engine(builder_args(sequence_length=[16], int8=True, fp16=True, force_int8_skipln=True),
                       config, {**weights, **scales})
    build_fixed_engine(builder_args(sequence_length=[16], int8=True, calib_path=str(cache)), config, weights)
    plans.append(build_varseqlen_engine(varseqlen_args(fp16=True, max_batch_size=[2], max_sequence_length=16),
                                        config, weights))
    head64, head64_weights = head64_model()   # the interleaved INT8 kernels' head size
    build_varseqlen_engine(varseqlen_args(fp16=True, int8=True, interleaved=True, megatron=True, pickle="x",
                                          max_batch_size=[1], max_sequence_length=16, use_deprecated_plugins=False),
                           head64, {**head64_weights, **qat_scales(head64, megatron=True)})
    return plans, (TrtRunner, bind_addresses, engine_info, run_bound, set_shapes)


def test_every_name_the_project_reads_on_tensorrt_exists(trt, bindings, bindings_11, monkeypatch, tmp_path):
    """Dynamic: the names actually read while building every kind of engine (plugin networks checked against 10.x,
    the plugin-free network against 11.x) and while binding and running them."""
    import numpy as np

    from helpers.trt_runtime import packed_shapes, select_packed_profile
    config, weights = load_fixture_model()
    tracer = Tracer(trt, monkeypatch)
    plans, (TrtRunner, bind_addresses, engine_info, run_bound, set_shapes) = exercise_plugin_builds(
        config, weights, tmp_path)
    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(plans[-1])
    info, context = engine_info(engine), engine.create_execution_context()
    shapes = packed_shapes(5, 1, 5)
    context.set_optimization_profile_async(select_packed_profile(engine, shapes), 0)
    set_shapes(context, shapes)
    arrays = {"input_ids": np.ones(5, np.int32), "segment_ids": np.zeros(5, np.int32),
              "cu_seqlens": np.array([0, 5], np.int32), "max_seqlen": np.zeros(5, np.int32),
              "logits_out": np.zeros(10, np.float32)}
    bind_addresses(context, engine, {n: a.ctypes.data for n, a in arrays.items()})
    run_bound(context, 0)
    assert np.isfinite(arrays["logits_out"]).all() and info.variable_seqlen
    corrupt = tmp_path / "corrupt.plan"
    corrupt.write_bytes(b"ftrt" + bytes(60))
    with pytest.raises(Exception, match="could not deserialize"):
        TrtRunner(str(corrupt))
    plugin_names = set(tracer.names)
    assert {"add_plugin_v2", "add_plugin_v3", "set_tensor_address", "execute_async_v3", "dynamic_range",
            "BUILD", "create_timing_cache"} <= plugin_names  # the trace saw the calls
    missing = sorted(n for n in plugin_names if not bindings.has(n))
    assert not missing, f"read by the project, absent from TensorRT {TARGET_VERSION}: {missing}"

    tracer.names.clear()
    from helpers.trt_builder import build_fixed_engine, build_varseqlen_engine
    monkeypatch.setattr(trt, "__version__", "11.4.0")
    build_fixed_engine(builder_args(batch_size=[1, 2], sequence_length=[16], fp16=True, sparse=True, verbose=True,
                                    timing_cache_file=str(tmp_path / "t11.tcf")), config, weights)
    build_varseqlen_engine(varseqlen_args(max_batch_size=[2], max_sequence_length=16), config, weights)
    assert {"add_matrix_multiply", "add_normalization", "STRONGLY_TYPED"} <= tracer.names
    missing = sorted(n for n in tracer.names if not bindings_11.has(n))
    assert not missing, f"the plugin-free path reads names TensorRT {TENSORRT_11_VERSION} lacks: {missing}"
