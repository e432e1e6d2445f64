"""What builder.py and builder_varseqlen.py share: upstream's flags, weight loading, backend choice, engine writing."""
import os
import time

from .atomic import check_writable, write_bytes_atomic
from .config import find_config_file, load_config
from .errors import BertError, StrictParser, refuse_empty_paths
from .native_builder import build_native_engine
from .reference import Numerics
from .tf_checkpoint import checkpoint_files

SOURCE_FLAGS = {"ckpt": "-m/--ckpt", "onnx": "-x/--onnx", "pytorch": "-pt/--pytorch", "pickle": "--pickle"}
DEFAULT_VOCAB = "./pre-trained_model/uncased_L-24_H-1024_A-16/vocab.txt"
MAX_WORKSPACE_MIB = 2 ** 44   # TensorRT's memory pool limit is a size_t of bytes


def make_parser(description="TensorRT BERT Sample"):
    import argparse
    return StrictParser(description=description, formatter_class=argparse.RawTextHelpFormatter)


def add_common_args(parser):
    """Flags both builders have (spec §2.1/§2.2)."""
    parser.add_argument("-m", "--ckpt", required=False,
                        help="The checkpoint file basename, e.g.:\n basename(model.ckpt-766000.data-00000-of-00001)"
                             " is model.ckpt-766000")
    parser.add_argument("-x", "--onnx", required=False, help="The ONNX model file path.")
    parser.add_argument("-pt", "--pytorch", required=False,
                        help="The PyTorch checkpoint file path; also a Hugging Face model folder or .safetensors")
    parser.add_argument("-o", "--output", required=True, help="The bert engine file, ex bert.engine")
    parser.add_argument("-c", "--config-dir", required=True,
                        help="The folder containing the bert_config.json (or a Hugging Face config.json)")
    parser.add_argument("-f", "--fp16", action="store_true", help="Indicates that inference should be run in FP16 precision")
    parser.add_argument("-i", "--int8", action="store_true", help="Indicates that inference should be run in INT8 precision")
    parser.add_argument("-w", "--workspace-size", type=int, help="Workspace size in MiB for building the BERT engine "
                        "(TensorRT only)")
    parser.add_argument("-j", "--squad-json", default="squad/dev-v1.1.json",
                        help="squad json dataset used for int8 calibration")
    parser.add_argument("-v", "--vocab-file", default=DEFAULT_VOCAB,
                        help="Path to file containing entire understandable vocab")
    parser.add_argument("-n", "--calib-num", default=100, type=int, help="calibration batch numbers")
    parser.add_argument("-p", "--calib-path", help="calibration cache path")
    parser.add_argument("-tcf", "--timing-cache-file", help="Path to tensorrt build timeing cache file, only available "
                        "for tensorrt 8.0 and later")
    parser.add_argument("-sp", "--sparse", action="store_true", help="Indicates that model is sparse (TensorRT only)")
    parser.add_argument("--verbose", action="store_true", help="Turn on verbose logger and set profiling verbosity "
                        "to DETAILED")
    plugins = parser.add_mutually_exclusive_group(required=False)
    plugins.add_argument("--use-v3-plugins", dest="use_deprecated_plugins", action="store_false",
                         help="Use plugins implementing the IPluginV3 interface (TensorRT only)")
    plugins.add_argument("--use-deprecated-plugins", dest="use_deprecated_plugins", action="store_true",
                         help="Use deprecated plugins implementing IPluginV2DynamicExt (default; TensorRT only)")
    parser.set_defaults(use_deprecated_plugins=True)
    parser.add_argument("--backend", choices=("auto", "native", "tensorrt"), default="auto",
                        help="auto: TensorRT when the tensorrt module is importable, else the native engine\n"
                             "(beyond upstream)")
    parser.add_argument("--numerics", choices=("model", "demobert"),
                        help="native engines: the model's own GELU and LayerNorm epsilons (model, the default), or\n"
                             "TensorRT demoBERT's plugins' (tanh GELU, plugin epsilons); TensorRT engines always\n"
                             "compute demoBERT's (beyond upstream)")


def tensorrt_available():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


def choose_backend(args):
    """'tensorrt' or 'native'; checks what can be checked before loading weights (output path, native precision)."""
    if args.backend == "tensorrt" and not tensorrt_available():
        raise BertError("--backend tensorrt: the tensorrt module is not installed (pip install 'tensorrt>=10,<11'"
                        " on a machine with an NVIDIA GPU), or use --backend native")
    backend = args.backend
    if backend == "auto":
        backend = "tensorrt" if tensorrt_available() else "native"
    refuse_empty_paths((("-m/--ckpt", args.ckpt), ("-x/--onnx", args.onnx), ("-pt/--pytorch", args.pytorch),
                        ("--pickle", getattr(args, "pickle", None)), ("-c/--config-dir", args.config_dir),
                        ("-v/--vocab-file", args.vocab_file), ("-j/--squad-json", args.squad_json),
                        ("-tcf/--timing-cache-file", args.timing_cache_file),
                        ("-p/--calib-path", getattr(args, "calib_path", None))))
    checkpoint = [("TensorFlow checkpoint", f) for f in checkpoint_files(args.ckpt)] if args.ckpt else []
    # the caches are read when they exist and written after a TensorRT build: never the engine's own path
    caches = [("timing cache (-tcf)", args.timing_cache_file),
              ("calibration cache (-p)", getattr(args, "calib_path", None))]
    # -c may name the config file itself; the run also reads the tokenizer_config.json beside it
    config = ([("config folder", args.config_dir)] if os.path.isdir(args.config_dir) else
              [("config", args.config_dir), ("tokenizer config", os.path.join(os.path.dirname(args.config_dir),
                                                                               "tokenizer_config.json"))])
    check_writable(args.output, inputs=checkpoint + caches + [
        ("ONNX model", args.onnx), ("PyTorch weights", args.pytorch),
        ("Megatron pickle", getattr(args, "pickle", None))] + config + [
        ("vocabulary", args.vocab_file), ("SQuAD json", args.squad_json)])
    if args.workspace_size is not None and not 0 <= args.workspace_size < MAX_WORKSPACE_MIB:
        raise BertError(f"-w/--workspace-size must be >= 0 MiB and below {MAX_WORKSPACE_MIB} MiB (2^64 bytes), got "
                        f"{args.workspace_size}")
    if backend == "tensorrt" and args.timing_cache_file:   # written after the build: fail now, not then
        check_writable(args.timing_cache_file, what="timing cache (-tcf)")   # (a calibration cache: trt_builder)
    if backend == "native":
        native_precision(args)
    elif args.numerics == "model":
        raise BertError("--numerics model: TensorRT engines compute demoBERT's numerics (its plugins' tanh GELU and "
                        "epsilons); build with --backend native for the model's own")
    return backend


def load_model(args, priority):
    """Config and canonical weight map from whichever weight source the flags name, in upstream's priority."""
    from .weights import load_weights
    config_file = find_config_file(args.config_dir)
    config = load_config(config_file)
    print(f"Using configuration file: {config_file}")   # the file, as upstream names it
    sources = {name: getattr(args, name, None) for name in priority}
    if not any(sources.values()):
        raise BertError("You need either specify TF checkpoint using option --ckpt, ONNX using option --onnx, "
                        "or PyTorch using option --pytorch" + (", or a Megatron pickle using option --pickle"
                                                              if "pickle" in priority else ""))
    for name, path in sources.items():   # a named source that is not there is a mistake, even if another is used
        needed = checkpoint_files(path)[0] if name == "ckpt" and path else path
        if path and not os.path.exists(needed):
            # a folder whose `checkpoint` file names a prefix that is not there: name the missing file
            missing = f" (its checkpoint index {needed} is missing)" if os.path.exists(path) else ""
            raise BertError(f"{SOURCE_FLAGS[name]} {path}: not found{missing}")
    weights = load_weights(config=config, priority=priority, **sources)
    print(f"Found {len(weights)} entries in weight map")   # upstream's line (its TF loader's)
    return config, weights


def native_precision(args):
    if args.int8:
        raise BertError("--int8 needs the TensorRT backend: the native engine is built in fp32 or fp16 "
                        "(drop --int8, or build on a machine with TensorRT)")
    return "fp16" if args.fp16 else "fp32"


def recorded_flags(args):
    """The flags a native engine records in its header, for the record (TensorRT-only ones included)."""
    return {k: v for k, v in sorted(vars(args).items()) if isinstance(v, (bool, int, float, str, list, type(None)))}


def save_native_engine(args, config, weights, profiles, variable_seqlen, script):
    """Build and write the native engine (fp32 or fp16, as the flags ask); `script` is recorded as its builder."""
    precision = native_precision(args)
    numerics = Numerics.demobert(precision) if args.numerics == "demobert" else None
    save_engine(args, lambda: build_native_engine(
        config, weights, precision=precision, profiles=profiles, variable_seqlen=variable_seqlen,
        numerics=numerics, build_info={"builder": script, "flags": recorded_flags(args)}))


def save_engine(args, build):
    """Run `build()` (native: an EngineFile; TensorRT: serialized bytes), time it, and write it atomically."""
    started = time.time()
    engine = build()
    print(f"build engine in {time.time() - started:.3f} Sec")
    print(f"Saving Engine to {args.output}")
    if isinstance(engine, (bytes, bytearray, memoryview)):
        write_bytes_atomic(args.output, engine)
    else:
        engine.save(args.output)
    print("Done.")
