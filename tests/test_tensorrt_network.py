"""The TensorRT networks built by helpers/trt_builder.py, executed by the stand-in, against the reference forward pass.

The stand-in computes layers and plugins in float64 from the plugins' documented semantics; it does not round to
half precision. Variable-length plugin engines are built with --fp16 (the variable-length attention plugin has no
FP32 kernels), so their logits are compared with the reference run with the FP16 plugins' numerics (the FP16
machine epsilon in skip-LayerNorm) but computed in FP32.
"""
import math
from itertools import pairwise

import numpy as np
import pytest
from trt_support import StandinEngine, builder_args, head64_model, pack, qat_scales, sample_inputs, varseqlen_args

from helpers.errors import BertError
from helpers.reference import Numerics, forward, gelu, layer_norm
from helpers.trt_builder import build_fixed_engine, build_varseqlen_engine

TOLERANCE = 1e-4


def max_error_fixed(logits, reference, mask):
    """Largest difference over the real tokens (logits at padding positions carry no meaning)."""
    real = mask.astype(bool)
    return float(np.abs(logits[real] - reference[real]).max())


@pytest.mark.parametrize("deprecated", [True, False], ids=["v2-plugins", "v3-plugins"])
def test_fixed_fp32_matches_reference(trt, fixture_model, deprecated):
    config, weights = fixture_model
    ids, segs, mask = sample_inputs(config, lengths=[32, 21], seq_len=32)
    plan = build_fixed_engine(builder_args(batch_size=[2], sequence_length=[32], use_deprecated_plugins=deprecated),
                              config, weights)
    engine = StandinEngine(trt, plan)
    assert engine.engine.num_optimization_profiles == 1  # one -b and one -s: a static network
    logits = engine.run_fixed(ids, segs, mask)
    reference = forward(weights, config, ids, segs, mask, numerics=Numerics.demobert("fp32"))
    assert max_error_fixed(logits, reference, mask) < TOLERANCE


def test_fixed_profiles_are_selected_per_shape(trt, fixture_model):
    config, weights = fixture_model
    plan = build_fixed_engine(builder_args(batch_size=[2, 1], sequence_length=[32, 16], use_deprecated_plugins=False),
                              config, weights)
    engine = StandinEngine(trt, plan)
    # ascending batch, then ascending sequence length: (1,16) (1,32) (2,16) (2,32); min batch 1, opt = max
    assert [(p.batch, p.seq) for p in engine.info.profiles] == [
        ((1, 1, 1), (16, 16, 16)), ((1, 1, 1), (32, 32, 32)), ((1, 2, 2), (16, 16, 16)), ((1, 2, 2), (32, 32, 32))]
    for lengths, seq_len, profile in (([16], 16, 0), ([9, 16], 16, 2), ([32, 30], 32, 3)):
        ids, segs, mask = sample_inputs(config, lengths, seq_len, seed=seq_len)
        logits = engine.run_fixed(ids, segs, mask)
        assert engine.profiles_used[-1] == profile
        reference = forward(weights, config, ids, segs, mask, numerics=Numerics.demobert("fp32"))
        assert max_error_fixed(logits, reference, mask) < TOLERANCE


@pytest.mark.parametrize("deprecated", [True, False], ids=["v2-plugins", "v3-plugins"])
def test_varseqlen_matches_reference(trt, fixture_model, deprecated):
    config, weights = fixture_model
    plan = build_varseqlen_engine(varseqlen_args(fp16=True, max_batch_size=[1, 3], max_sequence_length=32,
                                                 use_deprecated_plugins=deprecated), config, weights)
    engine = StandinEngine(trt, plan)
    for lengths, profile in (([27], 0), ([32, 5, 19], 1)):
        ids, segs, mask = sample_inputs(config, lengths, seq_len=32, seed=len(lengths))
        packed_ids, packed_segs, cu = pack(ids, segs, mask)
        logits = engine.run_packed(packed_ids, packed_segs, cu)
        assert engine.profiles_used[-1] == profile  # the profile that covers the batch, in -b order
        reference = forward(weights, config, ids, segs, mask, numerics=Numerics.demobert("fp16"))
        expected = np.concatenate([reference[i, :n] for i, n in enumerate(lengths)]).T  # (2, T)
        assert float(np.abs(logits - expected).max()) < TOLERANCE


def test_plugin_builds_the_plugins_cannot_run_are_refused(trt, fixture_model):
    """Refused before any build: what TensorRT's BERT plugins have no kernels for, or would compute wrongly."""
    config, weights = fixture_model
    # variable length: no FP32 attention kernels; INT8 alone leaves the half-precision embeddings without FP16
    with pytest.raises(BertError, match="need --fp16"):
        build_varseqlen_engine(varseqlen_args(max_batch_size=[1], max_sequence_length=32), config, weights)
    with pytest.raises(BertError, match=r"need --fp16 \(with --int8 too"):
        build_varseqlen_engine(varseqlen_args(int8=True, max_batch_size=[1], max_sequence_length=32,
                                              onnx="model.onnx"), config, {**weights, **qat_scales(config)})
    # the variable-length embedding kernel leaves positions from 384 on unwritten (NaN logits)
    with pytest.raises(BertError, match="-s 512: .* positions below 384 only"):
        build_varseqlen_engine(varseqlen_args(fp16=True, max_batch_size=[1], max_sequence_length=512), config,
                               weights)
    # the interleaved INT8 kernels exist for head size 64 only
    with pytest.raises(BertError, match="-il/--interleaved needs head size 64"):
        build_varseqlen_engine(varseqlen_args(fp16=True, int8=True, interleaved=True, onnx="model.onnx",
                                              max_batch_size=[1], max_sequence_length=32),
                               config, {**weights, **qat_scales(config)})
    # fixed length: at -s 64/96/128/384 the FP16 embedding packs the mask for fused kernels of head size 64 only
    assert config.head_size == 32
    for s in (64, 128, 384):
        with pytest.raises(BertError, match=f"-s {s} with --fp16/--int8 needs head size 64"):
            build_fixed_engine(builder_args(batch_size=[1], sequence_length=[24, s], fp16=True), config, weights)
    build_fixed_engine(builder_args(batch_size=[1], sequence_length=[128]), config, weights)   # FP32: unpacked


@pytest.mark.parametrize("precision, tolerance", [("fp32", TOLERANCE), ("fp16", 2e-3)])
def test_plugin_free_network_on_tensorrt_11(trt, fixture_model, monkeypatch, capsys, precision, tolerance):
    """TensorRT 11 has no BERT plugins: the builders fall back to standard layers, with a message. The FP16 network
    is strongly typed with half-precision constants, so 1/sqrt(H) and GELU's constants are rounded to half."""
    config, weights = fixture_model
    monkeypatch.setattr(trt, "__version__", "11.4.0")
    fp16 = precision == "fp16"
    reference_numerics = Numerics.demobert(precision)
    ids, segs, mask = sample_inputs(config, lengths=[24, 13], seq_len=24)

    fixed = StandinEngine(trt, build_fixed_engine(builder_args(batch_size=[1, 2], sequence_length=[24], fp16=fp16),
                                                  config, weights))
    assert "building a plugin-free network" in capsys.readouterr().out
    reference = forward(weights, config, ids, segs, mask, numerics=reference_numerics)
    assert max_error_fixed(fixed.run_fixed(ids, segs, mask), reference, mask) < tolerance

    packed = StandinEngine(trt, build_varseqlen_engine(varseqlen_args(max_batch_size=[2], max_sequence_length=24,
                                                                      fp16=fp16), config, weights))
    logits = packed.run_packed(*pack(ids, segs, mask))
    expected = np.concatenate([reference[0, :24], reference[1, :13]]).T
    assert float(np.abs(logits - expected).max()) < tolerance


def test_plugin_free_network_refuses_int8(trt, fixture_model, monkeypatch):
    config, weights = fixture_model
    monkeypatch.setattr(trt, "__version__", "11.0.0")
    with pytest.raises(BertError, match="--int8 needs TensorRT 10"):
        build_fixed_engine(builder_args(int8=True, sequence_length=[32]), config, {**weights, **qat_scales(config)})


# ------------------------------------------------------------------------------------------------ Megatron
def megatron_reference(weights, config, ids, segs, cu):
    """Megatron's residual wiring (spec §3.8) in plain numpy: the residual stream holds the raw sums, each
    LayerNorm output feeds the next sublayer. Numerics of the INT8 interleaved plugins: no epsilon in any
    LayerNorm, attention scaled by the hard-coded 1/sqrt(64)."""
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items() if not k.endswith("_amax")}
    n_heads, head = config.num_attention_heads, config.head_size

    def linear(x, name):
        return x @ w[f"{name}_kernel"].T + w[f"{name}_bias"]

    logits = []
    for lo, hi in pairwise(cu):
        n = hi - lo
        residual = (w["bert_embeddings_word_embeddings"][ids[lo:hi]] + w["bert_embeddings_token_type_embeddings"][
            segs[lo:hi]] + w["bert_embeddings_position_embeddings"][:n])
        x = layer_norm(residual, w["bert_embeddings_layernorm_gamma"], w["bert_embeddings_layernorm_beta"], 0.0)
        for layer in range(config.num_hidden_layers):
            p = f"l{layer}_"
            q, k, v = (linear(x, f"{p}attention_self_{t}").reshape(n, n_heads, head).transpose(1, 0, 2)
                       for t in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(64)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            context = (probs @ v).transpose(1, 0, 2).reshape(n, -1)
            residual = residual + linear(context, f"{p}attention_output_dense")
            a = layer_norm(residual, w[f"{p}attention_output_layernorm_gamma"],
                           w[f"{p}attention_output_layernorm_beta"], 0.0)
            residual = residual + linear(gelu(linear(a, f"{p}intermediate_dense"), "tanh"), f"{p}output_dense")
            x = layer_norm(residual, w[f"{p}output_layernorm_gamma"], w[f"{p}output_layernorm_beta"], 0.0)
        logits.append(x @ w["cls_squad_output_weights"].T + w["cls_squad_output_bias"])
    return np.concatenate(logits).T


def test_megatron_topology_from_a_megatron_pickle(trt, tmp_path):
    from helpers.weights import load_megatron_pickle, save_megatron_pickle
    config, weights = head64_model()
    path = tmp_path / "megatron.pkl"
    save_megatron_pickle({**weights, **qat_scales(config, megatron=True)}, config, path)
    megatron_weights = load_megatron_pickle(path, config)
    args = varseqlen_args(pickle=str(path), fp16=True, int8=True, interleaved=True, megatron=True,
                          max_batch_size=[2], max_sequence_length=32)
    engine = StandinEngine(trt, build_varseqlen_engine(args, config, megatron_weights))
    ids, segs, mask = sample_inputs(config, lengths=[32, 17], seq_len=32, seed=5)
    packed_ids, packed_segs, cu = pack(ids, segs, mask)
    logits = engine.run_packed(packed_ids, packed_segs, cu)
    expected = megatron_reference(megatron_weights, config, packed_ids, packed_segs, cu)
    assert float(np.abs(logits - expected).max()) < TOLERANCE
