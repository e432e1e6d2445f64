"""Build TensorRT engines as demoBERT's builder.py and builder_varseqlen.py do (spec §3.1, §3.6-§3.8).

Public entry points: `build_fixed_engine(args, config, weights)` and `build_varseqlen_engine(args, config, weights)`
return the serialized plan; `args` carries upstream's flag names (dests). On TensorRT 11, which has no BERT
plugins, a plugin-free network of standard layers is built instead (helpers/trt_network_plain.py).

Where this differs from upstream on purpose (spec §13 and below): INT8 uses the weights' quantization scales
whenever they carry any (`_amax`), whatever the source (§13.12); the PTQ calibration cache always comes from its own
FP32-plugin pass at the *largest* -s (§13.11); a static batch dimension gets profiles whose batch range is that
batch (upstream's min batch 1 cannot match a static dimension); duplicate -b/-s values make one profile, not two;
FP32 variable-length builds with plugins fail early with a message instead of inside the plugin (§13.6).
"""
import os
from dataclasses import dataclass, replace

from . import cuda_utils
from .atomic import check_writable, write_bytes_atomic
from .errors import BertError
from .trt_network import FixedNetwork, NetworkOptions, VarSeqlenNetwork
from .trt_network_plain import PlainNetwork
from .trt_plugins import bert_plugins_shipped, import_tensorrt, load_plugin_library

FIXED_INPUTS = ("input_ids", "segment_ids", "input_mask")
# The fused fixed-length attention kernels' sequence lengths (spec §3C), head size 64 only. At these the FP16/INT8
# embedding plugin packs the attention mask for them; another head size takes the unfused path, which reads the
# mask as lengths (spec §11 #10).
FUSED_SEQ_LENGTHS = (64, 96, 128, 384)
VARSEQLEN_MAX_POSITIONS = 384   # the variable-length embedding kernel's largest grid (spec §3C)


@dataclass(frozen=True)
class BuildSettings:
    """The builder-configuration flags (spec §3.6)."""
    fp16: bool
    int8: bool
    strict: bool
    sparse: bool
    verbose: bool
    workspace_mib: int            # None: no pool limit (builder_varseqlen.py without -w)
    timing_cache_file: str        # None: no timing cache
    distributive_independence: bool
    add_cublas: bool              # builder.py: cuBLAS on, cuDNN off ("the QKV plugin still uses cuBLAS")
    plain: bool                   # plugin-free, strongly typed network (TensorRT 11)


def has_quantization_scales(weights):
    return any(name.endswith("_amax") for name in weights)


class TrtSession:
    """The tensorrt module, a logger and (when TensorRT ships them) the BERT plugins, set up as upstream starts."""

    def __init__(self, verbose):
        self.trt = trt = import_tensorrt()
        self.logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.INFO)
        self.plain = not bert_plugins_shipped(trt)
        self.registry = None
        if self.plain:
            print(f"TensorRT {trt.__version__} has no BERT plugins (TensorRT 11 removed them): building a "
                  f"plugin-free network of standard layers instead")
        else:
            self.registry = load_plugin_library(trt, self.logger)

    # ---------------------------------------------------------------------------------------------- configuration
    def builder_config(self, builder, settings, calibrator=None):
        trt = self.trt
        config = builder.create_builder_config()
        if settings.workspace_mib is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
        config.avg_timing_iterations = 8
        if settings.add_cublas and not settings.plain:
            sources = config.get_tactic_sources() | (1 << int(trt.TacticSource.CUBLAS))
            config.set_tactic_sources(sources & ~(1 << int(trt.TacticSource.CUDNN)))
        if settings.fp16 and not settings.plain:  # a strongly typed network takes its precision from its types
            config.set_flag(trt.BuilderFlag.FP16)
        if settings.int8:
            config.set_flag(trt.BuilderFlag.INT8)
            if calibrator is not None:
                config.int8_calibrator = calibrator
                config.set_quantization_flag(trt.QuantizationFlag.CALIBRATE_BEFORE_FUSION)
        if settings.strict and settings.plain:
            print("--strict has no effect on a strongly typed network: its types are its precision constraints")
        elif settings.strict:
            for flag in (trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS, trt.BuilderFlag.DIRECT_IO,
                         trt.BuilderFlag.REJECT_EMPTY_ALGORITHMS):
                config.set_flag(flag)
        if settings.verbose:
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if settings.distributive_independence:
            flag = getattr(trt.BuilderFlag, "DISTRIBUTIVE_INDEPENDENCE", None)   # TensorRT 10.12 added it
            if flag is None:
                raise BertError(f"--distributive_independence needs TensorRT 10.12 or later (this is "
                                f"{trt.__version__})")
            config.set_flag(flag)
        if settings.sparse:
            print("Setting sparsity flag on builder_config.")
            config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
        return config

    def add_profiles(self, builder, config, profiles):
        """`profiles`: [{input name: (min, opt, max)}], added in order (profile index = position)."""
        for shapes in profiles:
            profile = builder.create_optimization_profile()
            for name, (lo, opt, hi) in shapes.items():
                profile.set_shape(name, lo, opt, hi)
            if config.add_optimization_profile(profile) < 0:
                raise BertError(f"TensorRT rejected the optimization profile {shapes}")

    def attach_timing_cache(self, config, path):
        data = b""
        if os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
        cache = config.create_timing_cache(data)
        if cache is None:
            raise BertError(f"timing cache {path} is not a timing cache of this TensorRT version: delete it to "
                            f"start a new one")
        if not config.set_timing_cache(cache, ignore_mismatch=False):   # refused, before a long build not after
            raise BertError(f"timing cache {path} was made on another GPU or driver: delete it, or pass another "
                            f"-tcf path, to start a new one")

    # ---------------------------------------------------------------------------------------------- the build
    def build(self, settings, profiles, define, calibrator=None):
        """Create builder, network and config, define the network with `define(network)`, build and serialize."""
        trt = self.trt
        builder = trt.Builder(self.logger)
        # TensorRT 10 networks are always explicit-batch (EXPLICIT_BATCH is deprecated and ignored); the
        # plugin-free network is strongly typed, the only kind TensorRT 11 has.
        flags = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if settings.plain else 0
        network = builder.create_network(flags)
        config = self.builder_config(builder, settings, calibrator)
        self.add_profiles(builder, config, profiles)
        kept_alive = define(network).kept  # TensorRT reads Weights and plugin fields by reference until the build
        if settings.timing_cache_file:
            self.attach_timing_cache(config, settings.timing_cache_file)
        serialized = builder.build_serialized_network(network, config)
        kept_alive.clear()
        if serialized is None:
            raise BertError("TensorRT could not build the engine (its error is logged above)")
        cache = config.get_timing_cache() if settings.timing_cache_file else None
        if cache is not None:
            write_bytes_atomic(settings.timing_cache_file, bytes(cache.serialize()))
        return bytes(serialized)


# ================================================================================================ builder.py
def fixed_dims(batch_sizes, seq_lengths, distributive_independence):
    """(batch dim, seq dim) of the inputs: -1 where profiles must cover several values."""
    batch = -1 if (len(set(batch_sizes)) > 1 or distributive_independence) else batch_sizes[0]
    seq = -1 if len(set(seq_lengths)) > 1 else seq_lengths[0]
    return batch, seq


def fixed_profiles(batch_sizes, seq_lengths, distributive_independence):
    """Spec §3.5: one profile per (b, s) in ascending order with min (1, s), opt = max = (b, s); a single profile
    (1, maxS)..(maxB, maxS) with --distributive_independence; none for a fully static network."""
    batch_dim, seq_dim = fixed_dims(batch_sizes, seq_lengths, distributive_independence)
    if batch_dim != -1 and seq_dim != -1:
        return []
    if distributive_independence:
        b, s = max(batch_sizes), max(seq_lengths)
        return [{name: ((1, s), (b, s), (b, s)) for name in FIXED_INPUTS}]
    profiles = []
    for b in sorted(set(batch_sizes)):
        for s in sorted(set(seq_lengths)):
            lo = (1 if batch_dim == -1 else b, s)
            profiles.append({name: (lo, (b, s), (b, s)) for name in FIXED_INPUTS})
    return profiles


def default_calibration_cache(config, seq_lengths):
    return (f"BertSquadL{config.num_hidden_layers}H{config.head_size}A{config.num_attention_heads}"
            f"S{'-'.join(str(s) for s in seq_lengths)}CalibCache")


def check_fixed(args, config, session):
    if session.plain and args.int8:
        raise BertError("--int8 needs TensorRT 10's BERT plugins; TensorRT 11's plugin-free network builds FP32 "
                        "or FP16")
    packed = sorted(set(args.sequence_length) & set(FUSED_SEQ_LENGTHS))
    if not session.plain and (args.fp16 or args.int8) and config.head_size != 64 and packed:
        raise BertError(f"-s {packed[0]} with --fp16/--int8 needs head size 64 on TensorRT's plugins (their "
                        f"embedding packs the mask for fused attention kernels that exist for 64 only; this model's "
                        f"{config.head_size} would read it wrongly): use another -s, FP32, builder_varseqlen.py "
                        f"or the native backend")
    fused_int8_shapes = (len(set(args.sequence_length)) == 1 and args.sequence_length[0] in FUSED_SEQ_LENGTHS
                         and config.head_size == 64)
    if args.force_int8_multihead and args.int8 and not fused_int8_shapes:
        raise BertError("-imh/--force-int8-multihead needs one sequence length of 64, 96, 128 or 384 and head "
                        "size 64 (TensorRT's fused INT8 attention kernels): drop -imh or use builder_varseqlen.py")
    capability = cuda_utils.compute_capability()
    if capability is not None:
        if args.force_int8_skipln and capability < (7, 2):
            raise BertError("-iln/--force-int8-skipln needs compute capability 7.2 or higher")
        if args.force_int8_multihead and capability < (7, 5):
            raise BertError("-imh/--force-int8-multihead needs compute capability 7.5 or higher")


def build_fixed_engine(args, config, weights):
    """builder.py: the serialized TensorRT plan (bytes)."""
    session = TrtSession(args.verbose)
    check_fixed(args, config, session)
    qat = args.int8 and has_quantization_scales(weights)
    settings = BuildSettings(fp16=args.fp16, int8=args.int8, strict=args.strict, sparse=args.sparse,
                             verbose=args.verbose, workspace_mib=args.workspace_size,
                             timing_cache_file=args.timing_cache_file,
                             distributive_independence=args.distributive_independence, add_cublas=True,
                             plain=session.plain)
    opts = NetworkOptions(fp16=args.fp16, int8=args.int8, qat=qat, int8_skipln=args.force_int8_skipln,
                          int8_multihead=args.force_int8_multihead,
                          use_deprecated_plugins=args.use_deprecated_plugins)
    calibrator = None
    if args.int8 and not qat:
        calibrator = ptq_calibrator(args, config, weights, session, settings, opts)
    return build_fixed(session, settings, opts, config, weights, args.batch_size, args.sequence_length,
                       args.distributive_independence, calibrator)


def build_fixed(session, settings, opts, config, weights, batch_sizes, seq_lengths, distributive_independence,
                calibrator=None):
    batch_dim, seq_dim = fixed_dims(batch_sizes, seq_lengths, distributive_independence)
    profiles = fixed_profiles(batch_sizes, seq_lengths, distributive_independence)

    def define(network):
        if session.plain:
            writer = PlainNetwork(session.trt, network, weights, config, opts)
            writer.define_fixed(batch_dim, seq_dim)
        else:
            writer = FixedNetwork(session.trt, network, session.registry, weights, config, opts)
            writer.define(batch_dim, seq_dim)
        return writer

    return session.build(settings, profiles, define, calibrator)


def ptq_calibrator(args, config, weights, session, settings, opts):
    """INT8 post-training quantization (spec §3.7): make the calibration cache if it does not exist, with a
    throw-away build whose plugins run in FP32 (calibration mode), batch 1 and the largest -s; then return a fresh
    calibrator that reads that cache for the real build."""
    from .calibrator import make_calibrator
    cache_file = args.calib_path or default_calibration_cache(config, args.sequence_length)
    seq_length = max(args.sequence_length)

    def calibrator():
        return make_calibrator(session.trt, squad_json=args.squad_json, vocab_file=args.vocab_file,
                               cache_file=cache_file, batch_size=1, max_seq_length=seq_length,
                               num_inputs=args.calib_num, do_lower_case=config.do_lower_case)

    if not os.path.exists(cache_file):
        # written by the calibration build (an existing one is only read): fail before that build
        check_writable(cache_file, what="calibration cache" + (" (-p)" if args.calib_path else ""))
        cuda_utils.require_cuda("INT8 calibration")
        calib_settings = replace(settings, fp16=False, timing_cache_file=None)
        calib_opts = replace(opts, fp16=False, calib_mode=True)
        calibrating = calibrator()
        try:
            build_fixed(session, calib_settings, calib_opts, config, weights, [1], [seq_length], False, calibrating)
        finally:
            calibrating.free()
        if not os.path.exists(cache_file):
            raise BertError(f"INT8 calibration wrote no calibration cache ({cache_file})")
    return calibrator()


# ================================================================================================ builder_varseqlen.py
def varseqlen_profiles(max_batch_sizes, max_seq_length):
    """Spec §3.8: one profile per -b in the order given."""
    s = max_seq_length
    return [{"input_ids": ((1,), (s * b,), (s * b,)), "segment_ids": ((1,), (s * b,), (s * b,)),
             "cu_seqlens": ((1,), (b + 1,), (b + 1,)), "max_seqlen": ((1,), (s,), (s,))}
            for b in dict.fromkeys(max_batch_sizes)]


def check_varseqlen(args, config, session, qat):
    if args.megatron and not (args.int8 and args.interleaved):
        raise BertError("--megatron needs --int8 and -il/--interleaved")
    if args.int8 and not qat:
        raise BertError("Post training calibration is not supported in variable-length BERT: --int8 needs weights "
                        "with quantization scales (_amax), from --onnx, --pytorch or --pickle")
    if session.plain:
        if args.int8:
            raise BertError("--int8 needs TensorRT 10's BERT plugins; TensorRT 11's plugin-free network builds FP32 "
                            "or FP16")
        return
    if not args.fp16:
        raise BertError("variable-length engines need --fp16 (with --int8 too: the embedding plugin then outputs "
                        "half precision): TensorRT's variable-length attention plugin has no FP32 kernels")
    if args.max_sequence_length > VARSEQLEN_MAX_POSITIONS:
        raise BertError(f"-s {args.max_sequence_length}: TensorRT's variable-length embedding plugin writes positions "
                        f"below {VARSEQLEN_MAX_POSITIONS} only (TensorRT issue 2948), so longer sequences would give "
                        f"NaN: use -s {VARSEQLEN_MAX_POSITIONS} or less, or the native backend")
    if config.head_size > 64:
        raise BertError(f"the variable-length attention plugin supports head sizes up to 64, not {config.head_size}")
    if args.interleaved and config.head_size != 64:   # its kernels, and their hard-coded 1/sqrt(64) scale
        raise BertError(f"-il/--interleaved needs head size 64 (TensorRT's interleaved INT8 attention kernels exist "
                        f"for it only), not {config.head_size}")
    capability = cuda_utils.compute_capability()
    if capability is not None and capability < (7, 2):
        raise BertError("This variable-length BERT demo only support Xavier+ GPU (compute capability 7.2 or higher).")


def build_varseqlen_engine(args, config, weights):
    """builder_varseqlen.py: the serialized TensorRT plan (bytes)."""
    session = TrtSession(args.verbose)
    qat = args.int8 and has_quantization_scales(weights)
    check_varseqlen(args, config, session, qat)
    settings = BuildSettings(fp16=args.fp16, int8=args.int8, strict=False, sparse=args.sparse,
                             verbose=args.verbose, workspace_mib=args.workspace_size,
                             timing_cache_file=args.timing_cache_file, distributive_independence=False,
                             add_cublas=False, plain=session.plain)
    opts = NetworkOptions(fp16=args.fp16, int8=args.int8, qat=qat,
                          use_deprecated_plugins=args.use_deprecated_plugins, interleaved=args.interleaved,
                          megatron=args.megatron)
    profiles = varseqlen_profiles(args.max_batch_size, args.max_sequence_length)
    max_tokens = args.max_sequence_length * max(args.max_batch_size)

    def define(network):
        if session.plain:
            writer = PlainNetwork(session.trt, network, weights, config, opts)
            writer.define_varseqlen(max_tokens)
        else:
            writer = VarSeqlenNetwork(session.trt, network, session.registry, weights, config, opts)
            writer.define()
        return writer

    return session.build(settings, profiles, define)
