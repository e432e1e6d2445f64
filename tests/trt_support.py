"""Shared by the TensorRT tests: the stand-in `tensorrt` module, the fixture model, builder arguments, QAT scales and
running a plan on the stand-in through helpers/trt_runtime.py's engine logic (host arrays as tensor addresses)."""
import sys
from pathlib import Path

import numpy as np
import pytest

STANDIN = Path(__file__).resolve().parent / "trt_standin"


def standin_module():
    """Generator for a module-scoped `trt` fixture: the stand-in tensorrt module, removed again afterwards so that no
    other test (several ask whether TensorRT is importable) ever sees it."""
    if "tensorrt" in sys.modules:
        pytest.skip("a tensorrt module is already imported; these tests run the stand-in")
    sys.path.insert(0, str(STANDIN))
    try:
        import tensorrt
        yield tensorrt
    finally:
        sys.path.remove(str(STANDIN))
        for name in [n for n in sys.modules if n == "tensorrt" or n.startswith("tensorrt.")]:
            del sys.modules[name]


def _parsed(script, argv, overrides):
    """The script's own argparse namespace (its real defaults), with attributes the test sets."""
    args = script.parse_args(argv)
    unknown = set(overrides) - set(vars(args))
    assert not unknown, f"not a {script.__name__}.py argument: {unknown}"
    vars(args).update(overrides)
    return args


def builder_args(**overrides):
    import builder
    return _parsed(builder, ["-o", "engine.plan", "-c", "."], overrides)


def varseqlen_args(**overrides):
    import builder_varseqlen
    return _parsed(builder_varseqlen, ["-o", "engine.plan", "-c", "."], overrides)


LAYER_SCALES = ("attention_self_qv_a_input_quantizer_amax", "attention_self_qv_b_input_quantizer_amax",
                "attention_self_av_b_input_quantizer_amax", "attention_self_av_a_input_quantizer_amax",
                "attention_output_dense_input_amax", "attention_output_add_local_input_quantizer_amax",
                "intermediate_dense_input_amax", "output_dense_input_amax", "output_add_local_input_quantizer_amax")
MEGATRON_SCALES = ("attention_output_add_residual_input_quantizer_amax", "output_add_residual_input_quantizer_amax")


def head64_model(seed=7):
    """A small random model with 64-wide heads, as TensorRT's interleaved INT8 kernels need (the fixture's are 32),
    and the fixture's six layers: (config, weights)."""
    from conftest import random_weights
    from helpers.config import BertConfig
    config = BertConfig(num_hidden_layers=6, hidden_size=128, num_attention_heads=2, intermediate_size=256,
                        vocab_size=2000, max_position_embeddings=64)
    return config, random_weights(config, seed)


def qat_scales(config, megatron=False):
    """Distinct made-up `_amax` scales under upstream's names (spec §3.3/§3.4), one shared by Q, K and V."""
    scales, value = {}, 1.0
    for n in range(config.num_hidden_layers):
        value += 0.25
        for qkv in ("query", "key", "value"):
            scales[f"l{n}_attention_self_{qkv}_input_amax"] = np.float32(value)
        for suffix in LAYER_SCALES + (MEGATRON_SCALES if megatron else ()):
            value += 0.25
            scales[f"l{n}_{suffix}"] = np.float32(value)
    scales["bert_encoder_final_input_quantizer_amax"] = np.float32(value + 0.25)
    return scales


def sample_inputs(config, lengths, seq_len, seed=0):
    """Padded int32 (B, S) ids, segments (question then passage) and masks with the given real lengths."""
    rng = np.random.RandomState(seed)
    b = len(lengths)
    ids = np.zeros((b, seq_len), dtype=np.int32)
    segs = np.zeros((b, seq_len), dtype=np.int32)
    mask = np.zeros((b, seq_len), dtype=np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.randint(1000, config.vocab_size, size=n)
        segs[i, n // 3:n] = 1
        mask[i, :n] = 1
    return ids, segs, mask


def pack(ids, segs, mask):
    """Packed ids, segments and cu_seqlens of padded rows (helpers/trt_runtime.py's packing)."""
    from helpers.trt_runtime import pack_padded
    packed_ids, packed_segs, cu, _ = pack_padded(ids, segs, mask)
    return packed_ids, packed_segs, cu


class StandinEngine:
    """A stand-in plan run the way helpers/trt_runtime.py's TrtRunner runs a real one, with host arrays bound as
    tensor addresses instead of device buffers."""

    def __init__(self, trt, plan):
        from helpers.trt_runtime import engine_info
        self.engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(plan)
        assert self.engine is not None
        self.info = engine_info(self.engine)
        self.context = self.engine.create_execution_context()
        self.profiles_used = []

    def _run(self, index, shapes, arrays, out_shape):
        from helpers.trt_runtime import bind_addresses, run_bound, set_shapes
        assert index is not None, f"no profile covers {shapes}"
        assert self.context.set_optimization_profile_async(index, 0)
        self.profiles_used.append(index)
        set_shapes(self.context, shapes)
        out = np.full(out_shape, np.nan, dtype=np.float32)
        arrays = {name: np.ascontiguousarray(a, dtype=np.int32) for name, a in arrays.items()}
        bind_addresses(self.context, self.engine, {**{n: a.ctypes.data for n, a in arrays.items()},
                                                   "logits_out": out.ctypes.data})
        run_bound(self.context, 0)
        return out

    def run_fixed(self, ids, segs, mask):
        b, s = ids.shape
        index = self.info.select_profile(b, s)
        names = ("input_ids", "segment_ids", "input_mask")
        out = self._run(index, {n: (b, s) for n in names}, dict(zip(names, (ids, segs, mask))), (b, s, 2, 1, 1))
        return out.reshape(b, s, 2)

    def run_packed(self, ids, segs, cu):
        from helpers.trt_runtime import packed_shapes, select_packed_profile
        longest = int(np.diff(cu).max())
        shapes = packed_shapes(len(ids), len(cu) - 1, longest)
        arrays = {"input_ids": ids, "segment_ids": segs, "cu_seqlens": cu,
                  "max_seqlen": np.zeros(longest, dtype=np.int32)}  # shape only: contents never read
        out = self._run(select_packed_profile(self.engine, shapes), shapes, arrays, (2, len(ids), 1, 1))
        return out.reshape(2, len(ids))
