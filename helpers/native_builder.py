"""Build a native engine (helpers/engine_format.py) from a canonical weight map: the no-TensorRT `builder.py`.

Optimization profiles follow upstream's rules (spec §3.5 / §3.8) so that the scripts choose profiles exactly as they
would with a TensorRT engine; the native runtimes can run any shape a profile covers.
"""
import numpy as np

from .config import BertConfig
from .engine_format import EngineFile, Profile
from .errors import BertError
from .reference import Numerics

# Vectors stay float32 in FP16 engines (as TensorRT's plugins keep LayerNorm parameters): they are tiny.
_KEEP_FP32_SUFFIXES = ("_bias", "_gamma", "_beta")


def fixed_profiles(batch_sizes, seq_lengths, distributive_independence=False):
    """builder.py's profiles over input shape (B, S), as the TensorRT network's (trt_builder.fixed_profiles): with
    one -b the batch dimension is static (upstream's network), so every profile holds that batch size only."""
    batch_sizes, seq_lengths = sorted(batch_sizes), sorted(seq_lengths)
    if distributive_independence:
        return [Profile((1, batch_sizes[-1], batch_sizes[-1]), (seq_lengths[-1],) * 3)]
    static_batch = len(batch_sizes) == 1
    return [Profile((b if static_batch else 1, b, b), (s, s, s)) for b in batch_sizes for s in seq_lengths]


def varseqlen_profiles(max_batch_sizes, max_seq_length):
    """builder_varseqlen.py's profiles, one per -b in the order given; sequences of any length up to -s."""
    return [Profile((1, b, b), (1, max_seq_length, max_seq_length)) for b in max_batch_sizes]


MAX_BATCH = 65536   # TensorRT's dimensions are int32, and batch x sequence x hidden activations must fit memory


def check_shapes(config: BertConfig, batch_sizes, seq_lengths):
    for b in batch_sizes:
        if not 1 <= b <= MAX_BATCH:
            raise BertError(f"batch size must be between 1 and {MAX_BATCH}, got {b}")
    for s in seq_lengths:
        if s < 1:
            raise BertError(f"sequence length must be at least 1, got {s}")
        if s > config.max_position_embeddings:
            raise BertError(f"sequence length {s} exceeds the model's {config.max_position_embeddings} "
                            f"position embeddings")


def build_native_engine(config: BertConfig, weights, *, precision, profiles, variable_seqlen, numerics=None,
                        build_info=None):
    """Cast the weight map to the engine's storage precision and wrap it with its profiles and numerics (a
    reference.Numerics; default: the model's own)."""
    if precision not in ("fp32", "fp16"):
        raise BertError(f"the native backend builds fp32 and fp16 engines, not {precision} "
                        f"(INT8 needs the TensorRT backend)")
    stored = {}
    for name, array in weights.items():
        if name.endswith("_amax"):
            continue  # quantization scales mean nothing to a float engine
        array = np.asarray(array, dtype=np.float32)
        if precision == "fp16" and not name.endswith(_KEEP_FP32_SUFFIXES):
            with np.errstate(over="ignore"):   # overflow is reported below, in one line
                array = array.astype(np.float16)
            if not np.isfinite(array).all():
                raise BertError(f"{name} holds values beyond float16's range (65504): build this model in fp32")
        stored[name] = array
    chosen = numerics or Numerics.of_model(config)
    numerics = {"gelu": chosen.gelu, "emb_eps": chosen.emb_eps, "layer_norm_eps": chosen.ln_eps}
    return EngineFile(config=config, precision=precision, variable_seqlen=variable_seqlen, profiles=profiles,
                      weights=stored, numerics=numerics, build_info=build_info or {})
