"""The stand-in rejects what TensorRT rejects (in the API subset it implements) and its plugins follow the documented
semantics (spec §3C) on small hand-made inputs."""
import math

import numpy as np
import pytest

from helpers.errors import BertError
from helpers.trt_plugins import create_plugin, float_field, int_field, load_plugin_library


@pytest.fixture(scope="module")
def registry(trt):
    return load_plugin_library(trt, trt.Logger(trt.Logger.ERROR))


@pytest.fixture
def net(trt):
    logger = trt.Logger(trt.Logger.INTERNAL_ERROR)
    builder = trt.Builder(logger)
    return builder, builder.create_network(0), builder.create_builder_config(), logger


def standin_error(trt):
    from tensorrt._core import TrtStandinError
    return TrtStandinError


def constant(trt, network, array):
    array = np.ascontiguousarray(array, dtype=np.float32)
    return network.add_constant(array.shape, trt.Weights(array)).get_output(0)


def run(trt, builder, network, config, inputs):
    """Build and execute; `inputs` {name: array}; returns {output name: array}."""
    plan = builder.build_serialized_network(network, config)
    assert plan is not None
    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    buffers = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            assert context.set_input_shape(name, inputs[name].shape)
            buffers[name] = np.ascontiguousarray(inputs[name])
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            dtype = {trt.DataType.FLOAT: np.float32, trt.DataType.INT32: np.int32}[engine.get_tensor_dtype(name)]
            buffers[name] = np.zeros(context.get_tensor_shape(name), dtype=dtype)
        context.set_tensor_address(name, buffers[name].ctypes.data)
    assert context.execute_async_v3(0)
    return {n: a for n, a in buffers.items() if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT}


# ------------------------------------------------------------------------------------------------ rejections
def test_plugin_field_types_are_checked(trt, registry):
    good = [int_field(trt, "type_id", 0), int_field(trt, "hidden_size", 64), int_field(trt, "num_heads", 2),
            int_field(trt, "has_mask", 1)]
    assert create_plugin(trt, registry, "qkv_to_context", good, True) is not None
    wrong = good[:1] + [float_field(trt, "hidden_size", 64.0)] + good[2:]
    with pytest.raises(BertError, match="rejected its fields"):
        create_plugin(trt, registry, "qkv_to_context", wrong, True)
    with pytest.raises(BertError, match="rejected its fields"):  # a required field missing
        create_plugin(trt, registry, "qkv_to_context", good[:3], False)
    with pytest.raises(TypeError):  # data whose dtype does not match the declared type
        trt.PluginField("ld", np.array([3], dtype=np.int64), trt.PluginFieldType.INT32)


def test_varseqlen_attention_has_no_fp32(trt, registry):
    fields = [int_field(trt, "hidden_size", 64), int_field(trt, "num_heads", 2), int_field(trt, "has_mask", 1),
              int_field(trt, "var_seqlen", 1)]
    assert create_plugin(trt, registry, "qkv_to_context_varseqlen", fields + [int_field(trt, "type_id", 1)], True)
    with pytest.raises(BertError, match="rejected its fields"):
        create_plugin(trt, registry, "qkv_to_context_varseqlen", fields + [int_field(trt, "type_id", 0)], True)


def test_v2_and_v3_plugins_go_through_their_own_add_call(trt, registry, net):
    _, network, _, _ = net
    fields = [int_field(trt, "ld", 4), trt.PluginField("beta", np.zeros(4, np.float32), trt.PluginFieldType.FLOAT32),
              trt.PluginField("gamma", np.ones(4, np.float32), trt.PluginFieldType.FLOAT32),
              int_field(trt, "type_id", 0)]
    x = network.add_input("x", trt.DataType.FLOAT, (2, 1, 4, 1, 1))
    v3 = create_plugin(trt, registry, "skip_layer_norm", fields, False)
    with pytest.raises(TypeError):
        network.add_plugin_v2([x, x], v3)
    assert network.add_plugin_v3([x, x], [], v3).get_output(0).shape == (2, 1, 4, 1, 1)


def test_concatenation_axis_defaults_as_tensorrt(trt, net):
    """IConcatenationLayer.axis: the number of dimensions minus three, 0 for fewer than three (TensorRT's docs)."""
    _, network, _, _ = net
    for shape, axis in (((4,), 0), ((2, 3), 0), ((2, 3, 4), 0), ((2, 3, 4, 5), 1), ((1, 2, 3, 4, 5), 2)):
        tensor = constant(trt, network, np.zeros(shape))
        assert network.add_concatenation([tensor, tensor]).axis == axis


def test_shapes_that_do_not_broadcast_are_rejected(trt, net):
    _, network, _, _ = net
    a = network.add_input("a", trt.DataType.FLOAT, (2, 3))
    with pytest.raises(standin_error(trt), match="do not broadcast"):
        network.add_elementwise(a, constant(trt, network, np.ones((4, 3))), trt.ElementWiseOperation.SUM)
    with pytest.raises(standin_error(trt), match="same number of dimensions"):
        network.add_elementwise(a, constant(trt, network, np.ones(3)), trt.ElementWiseOperation.SUM)
    x = network.add_input("x", trt.DataType.FLOAT, (1, 3, 1, 1))
    kernel, bias = trt.Weights(np.ones(5, np.float32)), trt.Weights(np.ones(2, np.float32))  # kernel needs 2 x 3
    with pytest.raises(standin_error(trt), match="kernel weights has count"):
        network.add_convolution_nd(x, 2, (1, 1), kernel, bias)


def test_dynamic_inputs_need_a_profile_that_bounds_the_run(trt, net):
    builder, network, config, logger = net
    x = network.add_input("x", trt.DataType.FLOAT, (-1, 4))
    network.mark_output(network.add_activation(x, trt.ActivationType.TANH).get_output(0))
    assert builder.build_serialized_network(network, config) is None
    assert "no optimization profile" in logger._messages[-1][1]
    profile = builder.create_optimization_profile()
    with pytest.raises(ValueError):
        profile.set_shape("x", (1, 4), (8, 4), (4, 4))  # opt above max
    profile.set_shape("x", (1, 4), (2, 4), (3, 4))
    config.add_optimization_profile(profile)
    engine = trt.Runtime(logger).deserialize_cuda_engine(builder.build_serialized_network(network, config))
    context = engine.create_execution_context()
    assert context.infer_shapes() == ["x"]
    assert context.set_input_shape("x", (3, 4))
    assert not context.set_input_shape("x", (4, 4))  # outside the profile
    assert not context.set_input_shape("x", (2, 5))  # a static dimension changed


def test_plugin_precision_needs_the_builder_flag(trt, registry, net):
    builder, network, config, logger = net
    beta = trt.PluginField("beta", np.zeros(4, np.float32), trt.PluginFieldType.FLOAT32)
    gamma = trt.PluginField("gamma", np.ones(4, np.float32), trt.PluginFieldType.FLOAT32)
    x = network.add_input("x", trt.DataType.FLOAT, (2, 1, 4, 1, 1))
    half = create_plugin(trt, registry, "skip_layer_norm", [int_field(trt, "ld", 4), beta, gamma,
                                                            int_field(trt, "type_id", 1)], True)
    network.mark_output(network.add_plugin_v2([x, x], half).get_output(0))
    assert builder.build_serialized_network(network, config) is None
    assert "could not find any supported formats" in logger._messages[-1][1]
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is not None


def test_int8_plugins_need_dynamic_ranges(trt, registry, net):
    builder, network, config, logger = net
    beta = trt.PluginField("beta", np.zeros(32, np.float32), trt.PluginFieldType.FLOAT32)
    gamma = trt.PluginField("gamma", np.ones(32, np.float32), trt.PluginFieldType.FLOAT32)
    x = network.add_input("x", trt.DataType.FLOAT, (1, 32, 5, 1))
    layer = network.add_plugin_v2([x, x], create_plugin(trt, registry, "skip_layer_norm_huggingface",
                                                        [beta, gamma], True))
    network.mark_output(layer.get_output(0))
    config.set_flag(trt.BuilderFlag.INT8)
    assert builder.build_serialized_network(network, config) is None
    assert "dynamic ranges" in logger._messages[-1][1]
    x.dynamic_range = (-4.0, 4.0)
    layer.get_output(0).dynamic_range = (-4.0, 4.0)
    assert builder.build_serialized_network(network, config) is not None


def test_a_plan_is_no_tensorrt_plan_and_vice_versa(trt, net):
    from helpers.trt_runtime import is_tensorrt_plan
    builder, network, config, logger = net
    x = network.add_input("x", trt.DataType.FLOAT, (2,))
    network.mark_output(network.add_activation(x, trt.ActivationType.RELU).get_output(0))
    plan = builder.build_serialized_network(network, config)
    assert not is_tensorrt_plan(plan[:4])
    assert trt.Runtime(logger).deserialize_cuda_engine(b"ftrt" + bytes(60)) is None


# ------------------------------------------------------------------------------------------------ plugin semantics
def test_embedding_layernorm_and_mask_index(trt, registry, net):
    """Fixed emb-LN: LayerNorm of word + token type + position with no epsilon; mask index = first 0."""
    builder, network, config, _ = net
    rng = np.random.RandomState(1)
    word, tok, pos = rng.randn(10, 4), rng.randn(2, 4), rng.randn(6, 4)
    gamma, beta = rng.rand(4) + 0.5, rng.randn(4)
    tables = (("layernorm_beta", beta), ("layernorm_gamma", gamma), ("word_embeddings", word),
              ("token_type_embeddings", tok), ("position_embeddings", pos))
    fields = [trt.PluginField(f"bert_embeddings_{n}", np.asarray(a, np.float32).reshape(-1),
                              trt.PluginFieldType.FLOAT32) for n, a in tables]
    fields += [int_field(trt, "output_fp16", 0), int_field(trt, "mha_type_id", 0)]
    inputs = [network.add_input(n, trt.DataType.INT32, (5, 2)) for n in ("ids", "segs", "mask")]  # (S, B)
    layer = network.add_plugin_v2(inputs, create_plugin(trt, registry, "emb_layer_norm", fields, True))
    for i, name in enumerate(("emb", "mask_idx")):
        layer.get_output(i).name = name
        network.mark_output(layer.get_output(i))
    ids = rng.randint(0, 10, (5, 2)).astype(np.int32)
    segs = rng.randint(0, 2, (5, 2)).astype(np.int32)
    mask = np.array([[1, 1], [1, 1], [1, 0], [1, 0], [0, 0]], np.int32)  # lengths 4 and 2
    out = run(trt, builder, network, config, {"ids": ids, "segs": segs, "mask": mask})
    v = word[ids] + tok[segs] + pos[np.arange(5)][:, None]
    expected = (v - v.mean(-1, keepdims=True)) / v.std(-1, keepdims=True) * gamma + beta
    np.testing.assert_allclose(out["emb"].reshape(5, 2, 4), expected, atol=1e-5)
    assert out["mask_idx"].reshape(-1).tolist() == [4, 2]


def test_attention_masks_keys_from_the_mask_index(trt, registry, net):
    """Fixed QKV: per head softmax(q k^T / sqrt(H)) v over keys below the mask index; input laid out [N][3][H]."""
    builder, network, config, _ = net
    n_heads, head, s, b = 2, 3, 4, 1
    e = n_heads * head
    fields = [int_field(trt, "type_id", 0), int_field(trt, "hidden_size", e), int_field(trt, "num_heads", n_heads),
              int_field(trt, "has_mask", 1)]
    qkv = network.add_input("qkv", trt.DataType.FLOAT, (s, b, 3 * e, 1, 1))
    mask_idx = network.add_input("mask_idx", trt.DataType.INT32, (b, 1))
    layer = network.add_plugin_v2([qkv, mask_idx], create_plugin(trt, registry, "qkv_to_context", fields, True))
    layer.get_output(0).name = "context"
    network.mark_output(layer.get_output(0))
    data = np.random.RandomState(2).randn(s, b, 3 * e, 1, 1).astype(np.float32)
    out = run(trt, builder, network, config, {"qkv": data, "mask_idx": np.array([[3]], np.int32)})["context"]
    per_head = data[:, 0, :, 0, 0].reshape(s, n_heads, 3, head)
    for h in range(n_heads):
        q, k, v = (per_head[:, h, i] for i in range(3))
        scores = q @ k[:3].T / math.sqrt(head)  # key 3 is padding
        probs = np.exp(scores - scores.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        np.testing.assert_allclose(out[:, 0, h * head:(h + 1) * head, 0, 0], probs @ v[:3], atol=1e-5)


def test_skip_layernorm_epsilon_follows_the_type(trt, registry, net):
    """out = LN(x + skip) with FLT_EPSILON for FP32 plugins, 2^-10 for FP16 ones: visible on a tiny variance."""
    builder, network, config, _ = net
    config.set_flag(trt.BuilderFlag.FP16)
    beta = trt.PluginField("beta", np.zeros(4, np.float32), trt.PluginFieldType.FLOAT32)
    gamma = trt.PluginField("gamma", np.ones(4, np.float32), trt.PluginFieldType.FLOAT32)
    x = network.add_input("x", trt.DataType.FLOAT, (3, 4, 1, 1))
    for type_id, name in ((0, "fp32"), (1, "fp16")):
        fields = [beta, gamma, int_field(trt, "ld", 4), int_field(trt, "type_id", type_id)]
        plugin = create_plugin(trt, registry, "skip_layer_norm_varseqlen", fields, True)
        layer = network.add_plugin_v2([x, x], plugin)
        layer.get_output(0).name = name
        network.mark_output(layer.get_output(0))
    data = (np.arange(12, dtype=np.float32).reshape(3, 4, 1, 1) * 1e-3)
    out = run(trt, builder, network, config, {"x": data})
    rows = 2 * data[:, :, 0, 0]
    centered = rows - rows.mean(1, keepdims=True)
    var = (centered ** 2).mean(1, keepdims=True)
    for name, eps in (("fp32", np.finfo(np.float32).eps), ("fp16", 2.0 ** -10)):
        np.testing.assert_allclose(out[name][:, :, 0, 0], centered / np.sqrt(var + eps), rtol=1e-4)
