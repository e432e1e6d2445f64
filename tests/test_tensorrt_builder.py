"""What helpers/trt_builder.py asks TensorRT for (spec §3.5-§3.9): builder flags, profiles, the network's layers,
names, plugin versions and fields, weight layouts and INT8 dynamic ranges. The network and builder config are
captured at `build_serialized_network` and inspected with TensorRT's own API names."""
import sys

import numpy as np
import pytest
from trt_support import builder_args, head64_model, qat_scales, varseqlen_args

from helpers import trt_plugins
from helpers.errors import BertError
from helpers.trt_builder import build_fixed_engine, build_varseqlen_engine, fixed_profiles, varseqlen_profiles

E, HEADS, HEAD, LAYERS = 384, 12, 32, 6


class Capture:
    """Records the network and config given to build_serialized_network and every plugin created."""

    def __init__(self, trt, monkeypatch):
        self.builds, self.plugins = [], []
        original_build = trt.Builder.build_serialized_network
        original_create = trt_plugins.create_plugin

        def build(builder, network, config):
            self.builds.append((network, config))
            return original_build(builder, network, config)

        def create(trt_module, registry, key, fields, use_deprecated):
            plugin = original_create(trt_module, registry, key, fields, use_deprecated)
            self.plugins.append((key, plugin.plugin_version, {f.name: (f.type, f.data) for f in fields}))
            return plugin

        monkeypatch.setattr(trt.Builder, "build_serialized_network", build)
        monkeypatch.setattr(trt_plugins, "create_plugin", create)

    @property
    def network(self):
        return self.builds[-1][0]

    @property
    def config(self):
        return self.builds[-1][1]

    def tensors(self):
        net = self.network
        found = {net.get_input(i).name: net.get_input(i) for i in range(net.num_inputs)}
        for i in range(net.num_layers):
            layer = net.get_layer(i)
            for j in range(layer.num_outputs):
                found[layer.get_output(j).name] = layer.get_output(j)
        return found

    def layer(self, name):
        net = self.network
        matches = [net.get_layer(i) for i in range(net.num_layers) if net.get_layer(i).name == name]
        assert len(matches) == 1, name
        return matches[0]

    def consumer(self, tensor):
        """The single layer that takes `tensor` as its first input."""
        net = self.network
        layers = [net.get_layer(i) for i in range(net.num_layers)]
        matches = [layer for layer in layers if layer.num_inputs and layer.get_input(0) is tensor]
        assert len(matches) == 1
        return matches[0]


@pytest.fixture
def capture(trt, monkeypatch):
    return Capture(trt, monkeypatch)


# ------------------------------------------------------------------------------------------------ builder config
def test_fixed_builder_flags(trt, fixture_model, capture, tmp_path, capsys):
    config, weights = fixture_model
    cache = tmp_path / "build.tcf"
    build_fixed_engine(builder_args(batch_size=[1, 2], sequence_length=[16, 32], fp16=True, strict=True, sparse=True,
                                    verbose=True, workspace_size=300, timing_cache_file=str(cache),
                                    distributive_independence=True), config, weights)
    c, flag = capture.config, trt.BuilderFlag
    for name in ("FP16", "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO", "REJECT_EMPTY_ALGORITHMS", "SPARSE_WEIGHTS",
                 "DISTRIBUTIVE_INDEPENDENCE"):
        assert c.get_flag(getattr(flag, name)), name
    assert not c.get_flag(flag.INT8)
    assert c.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 300 << 20
    assert c.avg_timing_iterations == 8
    assert c.profiling_verbosity == trt.ProfilingVerbosity.DETAILED
    sources = c.get_tactic_sources()
    assert sources >> int(trt.TacticSource.CUBLAS) & 1 and not sources >> int(trt.TacticSource.CUDNN) & 1
    # --distributive_independence: one profile, min (1, maxS), opt = max = (maxB, maxS)
    assert c.num_optimization_profiles == 1
    assert "Setting sparsity flag on builder_config." in capsys.readouterr().out
    assert cache.is_file() and cache.stat().st_size > 0


def test_distributive_independence_before_tensorrt_10_12_is_one_line(trt, fixture_model, monkeypatch):
    """TensorRT 10.12 added BuilderFlag.DISTRIBUTIVE_INDEPENDENCE; an older 10.x has no such member."""
    import enum
    config, weights = fixture_model
    older = enum.IntEnum("BuilderFlag", {m.name: m.value for m in trt.BuilderFlag
                                         if m.name != "DISTRIBUTIVE_INDEPENDENCE"})
    monkeypatch.setattr(trt, "BuilderFlag", older)
    monkeypatch.setattr(trt, "__version__", "10.8.0.43")
    with pytest.raises(BertError, match=r"needs TensorRT 10.12 or later \(this is 10.8.0.43\)"):
        build_fixed_engine(builder_args(batch_size=[1], sequence_length=[16], distributive_independence=True),
                           config, weights)


def test_plugin_library_of_the_running_tensorrt_only(trt, monkeypatch):
    """The versioned plugin library is this TensorRT's: TensorRT 11 must not pull in 10's libnvinfer."""
    import ctypes
    tried = []
    monkeypatch.setattr(ctypes, "CDLL", lambda name, mode=0: tried.append(name) or (_ for _ in ()).throw(OSError()))
    for version, expected in (("10.16.1.11", "libnvinfer_plugin.so.10"), ("11.4.0.106", "libnvinfer_plugin.so.11")):
        monkeypatch.setattr(trt, "__version__", version)
        tried.clear()
        trt_plugins.load_plugin_library(trt, trt.Logger(trt.Logger.ERROR))
        assert tried == [expected, "libnvinfer_plugin.so"]


def test_varseqlen_builder_flags(trt, fixture_model, capture):
    config, weights = fixture_model
    build_varseqlen_engine(varseqlen_args(fp16=True, max_batch_size=[4, 1], max_sequence_length=32), config, weights)
    c, flag = capture.config, trt.BuilderFlag
    assert c.get_flag(flag.FP16) and not c.get_flag(flag.INT8) and not c.get_flag(flag.DIRECT_IO)
    assert c.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == trt.IBuilderConfig().get_memory_pool_limit(
        trt.MemoryPoolType.WORKSPACE)  # no -w: no limit set
    assert c.get_tactic_sources() == trt.IBuilderConfig().get_tactic_sources()  # untouched
    assert c.num_optimization_profiles == 2
    inputs = [capture.network.get_input(i) for i in range(capture.network.num_inputs)]
    assert [(t.name, t.dtype, t.shape) for t in inputs] == [
        (name, trt.DataType.INT32, (-1,)) for name in ("input_ids", "segment_ids", "cu_seqlens", "max_seqlen")]


def test_timing_cache_is_reused_and_checked(trt, fixture_model, tmp_path, monkeypatch):
    config, weights = fixture_model
    cache = tmp_path / "build.tcf"
    args = builder_args(batch_size=[1], sequence_length=[16], timing_cache_file=str(cache))
    build_fixed_engine(args, config, weights)
    first = cache.read_bytes()
    build_fixed_engine(args, config, weights)  # loads it, then writes it back
    assert cache.read_bytes() == first
    cache.write_bytes(b"not a timing cache")
    with pytest.raises(BertError, match="not a timing cache"):
        build_fixed_engine(args, config, weights)
    # measured on another GPU: TensorRT's set_timing_cache refuses it (and get_timing_cache would then be None)
    cache.write_bytes(first)
    monkeypatch.setattr(sys.modules["tensorrt._builder"], "DEVICE", "another GPU")
    with pytest.raises(BertError, match="made on another GPU or driver"):
        build_fixed_engine(args, config, weights)
    assert cache.read_bytes() == first


def test_profiles():
    names = ("input_ids", "segment_ids", "input_mask")
    assert fixed_profiles([1], [128], False) == []  # fully static: no profile
    assert fixed_profiles([8, 1, 8], [384], False) == [  # ascending, duplicates once; static seq
        {n: ((1, 384), (1, 384), (1, 384)) for n in names}, {n: ((1, 384), (8, 384), (8, 384)) for n in names}]
    # a static batch dimension (one -b) cannot have min batch 1
    assert fixed_profiles([4], [64, 32], False) == [
        {n: ((4, 32), (4, 32), (4, 32)) for n in names}, {n: ((4, 64), (4, 64), (4, 64)) for n in names}]
    assert fixed_profiles([2, 4], [64, 128], True) == [{n: ((1, 128), (4, 128), (4, 128)) for n in names}]
    assert varseqlen_profiles([4, 1], 128) == [  # in the order given
        {"input_ids": ((1,), (512,), (512,)), "segment_ids": ((1,), (512,), (512,)),
         "cu_seqlens": ((1,), (5,), (5,)), "max_seqlen": ((1,), (128,), (128,))},
        {"input_ids": ((1,), (128,), (128,)), "segment_ids": ((1,), (128,), (128,)),
         "cu_seqlens": ((1,), (2,), (2,)), "max_seqlen": ((1,), (128,), (128,))}]


def test_int8_multihead_needs_fused_kernel_shapes(trt, fixture_model):
    config, weights = fixture_model
    with pytest.raises(BertError, match="-imh"):
        build_fixed_engine(builder_args(int8=True, force_int8_multihead=True, sequence_length=[48]), config,
                           {**weights, **qat_scales(config)})


# ------------------------------------------------------------------------------------------------ network structure
@pytest.mark.parametrize("deprecated, versions", [(True, ("1", "1", "1")), (False, ("6", "4", "5"))],
                         ids=["v2-plugins", "v3-plugins"])
def test_fixed_network_structure(trt, fixture_model, capture, deprecated, versions):
    config, weights = fixture_model
    build_fixed_engine(builder_args(batch_size=[2], sequence_length=[16], fp16=True,
                                    use_deprecated_plugins=deprecated), config, weights)
    keys = [key for key, _, _ in capture.plugins]
    assert keys == ["emb_layer_norm"] + ["qkv_to_context", "skip_layer_norm", "skip_layer_norm"] * LAYERS
    emb_version, qkv_version, skip_version = versions
    assert {(k, v) for k, v, _ in capture.plugins} == {
        ("emb_layer_norm", emb_version), ("qkv_to_context", qkv_version), ("skip_layer_norm", skip_version)}
    f32, i32 = trt.PluginFieldType.FLOAT32, trt.PluginFieldType.INT32
    emb, qkv, skip = capture.plugins[0][2], capture.plugins[1][2], capture.plugins[2][2]
    assert {name: kind for name, (kind, _) in emb.items()} == {
        "bert_embeddings_layernorm_beta": f32, "bert_embeddings_layernorm_gamma": f32,
        "bert_embeddings_word_embeddings": f32, "bert_embeddings_token_type_embeddings": f32,
        "bert_embeddings_position_embeddings": f32, "output_fp16": i32, "mha_type_id": i32}
    assert emb["output_fp16"][1].tolist() == [1] and emb["mha_type_id"][1].tolist() == [int(trt.DataType.HALF)]
    assert emb["bert_embeddings_word_embeddings"][1].size == config.vocab_size * E
    assert {name: (kind, data.tolist()) for name, (kind, data) in qkv.items()} == {
        "type_id": (i32, [1]), "hidden_size": (i32, [E]), "num_heads": (i32, [HEADS]), "has_mask": (i32, [1])}
    assert {name: kind for name, (kind, _) in skip.items()} == {"ld": i32, "beta": f32, "gamma": f32, "type_id": i32}
    assert skip["type_id"][1].tolist() == [int(trt.DataType.HALF)]

    tensors = capture.tensors()
    for name in ("embeddings_output", "l0_attention_qkv_mult", "l0_attention_context_layer", "l0_gelu",
                 "l0_output_dense", "l5_output_reshape"):
        assert name in tensors, name
    assert tensors["embeddings_output"].shape == (16, 2, E, 1, 1)           # sequence-major
    assert tensors["l0_attention_qkv_mult"].shape == (16, 2, 3 * E, 1, 1)
    logits = capture.network.get_output(0)
    assert capture.network.num_outputs == 1 and logits.name == "logits_out" and logits.shape == (2, 16, 2, 1, 1)
    assert capture.layer("cls_squad_logits").second_transpose == (1, 0, 2, 3, 4)


def test_fused_qkv_weights_are_head_major(trt, fixture_model, capture):
    """The fused QKV convolution's output channels: per head, its H query rows, H key rows, H value rows."""
    config, weights = fixture_model
    build_fixed_engine(builder_args(batch_size=[1], sequence_length=[16]), config, weights)
    kernel = capture.layer("l3_attention_qkv_mult").kernel.numpy().reshape(3 * E, E)
    bias = capture.layer("l3_attention_qkv_mult").bias.numpy()
    for head in (0, 7, 11):
        for part, name in enumerate(("query", "key", "value")):
            rows = slice((3 * head + part) * HEAD, (3 * head + part + 1) * HEAD)
            source = slice(head * HEAD, (head + 1) * HEAD)
            np.testing.assert_array_equal(kernel[rows], weights[f"l3_attention_self_{name}_kernel"][source])
            np.testing.assert_array_equal(bias[rows], weights[f"l3_attention_self_{name}_bias"][source])


def gelu_layers(capture, n):
    """The 13 layers of layer n's GELU subgraph: between the intermediate dense output and l{n}_gelu."""
    net = capture.network
    layers = [net.get_layer(i) for i in range(net.num_layers)]
    end = next(i for i, layer in enumerate(layers) if layer.name == f"l{n}_gelu")
    return layers[end - 12:end + 1]


def test_varseqlen_network_structure(trt, fixture_model, capture):
    config, weights = fixture_model
    build_varseqlen_engine(varseqlen_args(fp16=True, max_batch_size=[2], max_sequence_length=32,
                                          use_deprecated_plugins=False), config, weights)
    assert [(k, v) for k, v, _ in capture.plugins[:4]] == [
        ("emb_layer_norm_huggingface", "4"), ("qkv_to_context_varseqlen", "5"), ("skip_layer_norm_varseqlen", "6"),
        ("skip_layer_norm_varseqlen", "6")]
    emb, qkv, skip = (capture.plugins[i][2] for i in (0, 1, 2))
    assert emb["output_fp16"][1].tolist() == [1] and "mha_type_id" not in emb
    i32 = trt.PluginFieldType.INT32
    assert {name: (kind, data.tolist()) for name, (kind, data) in qkv.items()} == {
        "hidden_size": (i32, [E]), "num_heads": (i32, [HEADS]), "has_mask": (i32, [1]), "type_id": (i32, [1]),
        "var_seqlen": (i32, [1])}
    assert sorted(skip) == ["beta", "gamma", "ld", "type_id"]
    assert capture.layer("l0_attention_qkv_to_ctx").num_inputs == 4
    gelu = gelu_layers(capture, 2)
    assert sum(isinstance(layer, trt.IConstantLayer) for layer in gelu) == 5
    assert all(layer.precision_is_set and layer.precision == trt.DataType.FLOAT for layer in gelu)
    logits = capture.network.get_output(0)
    assert logits.name == "logits_out" and logits.shape == (2, -1, 1, 1)
    assert capture.layer("cls_squad_logits").second_transpose == (1, 0, 2, 3)


# ------------------------------------------------------------------------------------------------ INT8
def test_fixed_qat_dynamic_ranges(trt, fixture_model, capture):
    config, weights = fixture_model
    scales = qat_scales(config)
    build_fixed_engine(builder_args(batch_size=[2], sequence_length=[48], fp16=True, int8=True,
                                    force_int8_skipln=True, onnx="model.onnx"), config, {**weights, **scales})
    c = capture.config
    assert c.get_flag(trt.BuilderFlag.INT8) and c.int8_calibrator is None
    tensors = capture.tensors()

    def amax(name):
        return float(scales[name])

    expected = {"embeddings_output": amax("l0_attention_self_query_input_amax")}
    for n in range(LAYERS):
        p = f"l{n}_"
        if n:
            expected[f"l{n - 1}_output_reshape"] = amax(f"{p}attention_self_query_input_amax")
        expected[f"{p}attention_qkv_mult"] = max(amax(f"{p}attention_self_{q}_quantizer_amax")
                                                 for q in ("qv_a_input", "qv_b_input", "av_b_input"))
        expected[f"{p}attention_context_layer"] = amax(f"{p}attention_output_dense_input_amax")
        expected[f"{p}gelu"] = amax(f"{p}output_dense_input_amax")
        expected[f"{p}output_dense"] = amax(f"{p}output_add_local_input_quantizer_amax")
        attention_dense = capture.consumer(tensors[f"{p}attention_context_layer"]).get_output(0)
        assert attention_dense.dynamic_range == pytest.approx(
            (-amax(f"{p}attention_output_add_local_input_quantizer_amax"),
             amax(f"{p}attention_output_add_local_input_quantizer_amax")))
    expected[f"l{LAYERS - 1}_output_reshape"] = amax("bert_encoder_final_input_quantizer_amax")
    for name, value in expected.items():
        assert tensors[name].dynamic_range == pytest.approx((-value, value)), name
    # the mask index output: +-1
    emb = capture.layer("embeddings_layer")
    assert emb.get_output(1).dynamic_range == (-1.0, 1.0)
    # dq_probs = av_a amax / 127, type_id INT8 only with -imh (here FP16); skip-LN INT8 with -iln
    qkv = [fields for key, _, fields in capture.plugins if key == "qkv_to_context"][2]
    assert qkv["dq_probs"][1][0] == pytest.approx(amax("l2_attention_self_av_a_input_quantizer_amax") / 127)
    assert qkv["type_id"][1].tolist() == [int(trt.DataType.HALF)]
    skip = next(fields for key, _, fields in capture.plugins if key == "skip_layer_norm")
    assert skip["type_id"][1].tolist() == [int(trt.DataType.INT8)]


def test_fixed_ptq_ranges_and_missing_scales(trt, fixture_model, capture, tmp_path):
    config, weights = fixture_model
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-100-EntropyCalibration2\n")  # an existing cache: no calibration pass, no GPU needed
    build_fixed_engine(builder_args(batch_size=[1], sequence_length=[16], int8=True, calib_path=str(cache)),
                       config, weights)
    c = capture.config
    assert c.int8_calibrator is not None and c.get_quantization_flag(trt.QuantizationFlag.CALIBRATE_BEFORE_FUSION)
    tensors = capture.tensors()
    ranged = {name for name, t in tensors.items() if t.dynamic_range is not None}
    assert ranged == {f"l{n}_gelu" for n in range(LAYERS)}  # PTQ: only upstream's fixed "gelu10"
    assert tensors["l4_gelu"].dynamic_range == (-10.0, 10.0)
    # INT8 without FP16 and without -iln: the dense layers before skip-LayerNorm keep FLOAT outputs
    dense = capture.consumer(tensors["l0_attention_context_layer"])
    assert dense.get_output_type(0) == trt.DataType.FLOAT

    scales = qat_scales(config)
    del scales["l3_intermediate_dense_input_amax"]
    with pytest.raises(BertError, match="l3_intermediate_dense_input_amax"):
        build_fixed_engine(builder_args(sequence_length=[16], int8=True), config, {**weights, **scales})


def test_megatron_network_ranges_and_plugins(trt, capture):
    config, weights = head64_model()
    scales = qat_scales(config, megatron=True)
    build_varseqlen_engine(varseqlen_args(fp16=True, int8=True, interleaved=True, megatron=True, pickle="x.pkl",
                                          max_batch_size=[1], max_sequence_length=32), config, {**weights, **scales})
    keys = [(key, version) for key, version, _ in capture.plugins]
    assert keys[0] == ("emb_layer_norm_megatron", "3")
    per_layer = [("qkv_to_context_interleaved", "3"), ("skip_layer_norm_megatron", "4")]
    assert keys[1:] == (per_layer + [("skip_layer_norm_megatron", "4")]) * (LAYERS - 1) + per_layer + [
        ("skip_layer_norm_huggingface", "3")]
    qkv, skip = capture.plugins[1][2], capture.plugins[2][2]
    assert sorted(qkv) == ["dq_probs", "hidden_size", "num_heads"] and sorted(skip) == ["beta", "gamma"]
    assert capture.plugins[0][2]["output_fp16"][1].tolist() == [1]  # INT8 implies half embeddings
    # the residual stream: embeddings' raw sum, then each Megatron skip-LayerNorm's second output
    emb = capture.layer("embeddings_layer")
    assert emb.get_output(1).dynamic_range == pytest.approx(
        (-float(scales["l0_attention_output_add_residual_input_quantizer_amax"]),
         float(scales["l0_attention_output_add_residual_input_quantizer_amax"])))
    net = capture.network
    layers = [net.get_layer(i) for i in range(net.num_layers)]
    megatron_layers = [layer for layer in layers if isinstance(layer, trt.IPluginV2Layer) and layer.num_outputs == 2
                       and layer.name != "embeddings_layer"]
    assert len(megatron_layers) == 2 * LAYERS - 1
    first = megatron_layers[0].get_output(1)
    value = float(scales["l0_output_add_residual_input_quantizer_amax"])
    assert first.dynamic_range == pytest.approx((-value, value))
    hidden = config.hidden_size
    assert capture.tensors()["embeddings_output"].shape == (-1, hidden, 1, 1)
    interleave = capture.consumer(capture.tensors()["embeddings_output"])
    assert interleave.second_transpose == (2, 1, 0, 3) and interleave.get_output(0).shape == (1, hidden, -1, 1)
    assert capture.layer("cls_squad_logits").second_transpose == (1, 2, 0, 3)
