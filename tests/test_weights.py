"""Weight loading: the real TF-written fixture checkpoint, our converted Hugging Face folder, PyTorch/DLE, ONNX
fake-quant and Megatron sources all give the same canonical map; bad files fail with one-line BertErrors."""
import os
import pickle
import shutil
import warnings

import numpy as np
import pytest

from conftest import MODEL_DIR, load_script, shared_path
from helpers import tf_checkpoint, weights as W
from helpers.config import BertConfig, load_config
from helpers.errors import BertError

TINY = BertConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=2, intermediate_size=16, vocab_size=20,
                  max_position_embeddings=12, type_vocab_size=2)


def tiny_tf_variables(seed=0):
    return load_script("make_random_checkpoint").random_tf_variables(
        {**TINY.to_dict(), "initializer_range": 0.02}, seed)


def assert_same_map(actual, expected):
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype, name
        np.testing.assert_array_equal(actual[name], value, err_msg=name)


@pytest.fixture(scope="module")
def tf_weights(fixture_ckpt):
    return W.load_tf_checkpoint(fixture_ckpt)


@pytest.fixture(scope="module")
def fixture_config(fixture_dir):
    return load_config(fixture_dir / "bert_config.json")


@pytest.fixture(scope="module")
def model_config():
    return load_config(MODEL_DIR)


@pytest.fixture(scope="module")
def model_weights():
    """The shipped FP16 folder's weights (equal to the fixture's TF checkpoint; present without shared data)."""
    return W.load_hf_folder(MODEL_DIR)


@pytest.fixture(scope="module")
def hf_model():
    transformers = pytest.importorskip("transformers")
    return transformers.BertForQuestionAnswering.from_pretrained(MODEL_DIR, torch_dtype="float32").eval()


# ---------------------------------------------------------------------------------------------------- CRC-32C
def _bitwise_crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_matches_bitwise_definition():
    assert tf_checkpoint.crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert tf_checkpoint.crc32c(b"") == 0
    rng = np.random.default_rng(1)
    for size in (1, 63, 64, 65, 1000, 4099, 20000):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert tf_checkpoint.crc32c(data) == _bitwise_crc32c(data), size


def test_snappy_block_decoding():
    # varint length 10; literal "abc"; copy of 7 bytes from offset 3 (1-byte-offset form)
    assert tf_checkpoint._snappy_decompress(b"\x0a\x08abc\x0d\x03", "test") == b"abcabcabca"
    with pytest.raises(BertError, match="snappy"):
        tf_checkpoint._snappy_decompress(b"\x0a\x08abc\x0d\x09", "test")


# ---------------------------------------------------------------------------------------------------- TF
def test_tf_fixture_reads_to_canonical_map(fixture_ckpt, tf_weights, fixture_config):
    W.validate(tf_weights, fixture_config)
    assert len(tf_weights) == 103
    assert all(v.dtype == np.float32 for v in tf_weights.values())
    raw = tf_checkpoint.TFCheckpoint(fixture_ckpt)
    entry = raw.entry("bert/encoder/layer_3/intermediate/dense/kernel")
    assert entry.shape == (384, 1536) and entry.dtype == 1 and entry.crc32c is not None
    kernel = raw.read("bert/encoder/layer_3/intermediate/dense/kernel")
    np.testing.assert_array_equal(tf_weights["l3_intermediate_dense_kernel"], kernel.T)
    np.testing.assert_array_equal(tf_weights["cls_squad_output_weights"], raw.read("cls/squad/output_weights"))


def test_checkpoint_path_forms(fixture_ckpt):
    """Upstream's prefix, the .index file and the folder (through its `checkpoint` file) name the same checkpoint."""
    names = tf_checkpoint.TFCheckpoint(fixture_ckpt).names()
    assert tf_checkpoint.TFCheckpoint(fixture_ckpt + ".index").names() == names
    assert tf_checkpoint.TFCheckpoint(os.path.dirname(fixture_ckpt)).names() == names


def test_tf_values_equal_hf_model(tf_weights, hf_model):
    """Every tensor of the converted folder, as transformers loads it, equals the TF checkpoint's (transposed)."""
    hf_state = {k: v.numpy() for k, v in hf_model.state_dict().items()}
    ours = W.to_hf_state_dict(tf_weights)
    assert sorted(ours) == sorted(hf_state)
    for name, value in hf_state.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)


def test_converted_folder_reproduces_reference_logits(hf_model, fixture_dir):
    torch = pytest.importorskip("torch")
    ref = np.load(fixture_dir / "reference" / "logits_first10.npz")
    with torch.no_grad():
        out = hf_model(input_ids=torch.from_numpy(ref["input_ids"][:4]).long(),
                       token_type_ids=torch.from_numpy(ref["segment_ids"][:4]).long(),
                       attention_mask=torch.from_numpy(ref["input_mask"][:4]).long())
    np.testing.assert_allclose(out.start_logits.numpy(), ref["start_logits"][:4], atol=1e-4)
    np.testing.assert_allclose(out.end_logits.numpy(), ref["end_logits"][:4], atol=1e-4)


def test_repo_model_folder_is_fp16_and_complete():
    config = load_config(MODEL_DIR)
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    stored = safetensors_numpy.load_file(str(MODEL_DIR / "model.safetensors"))
    assert {v.dtype for v in stored.values()} == {np.dtype(np.float16)}
    weights = W.load_weights(config, pytorch=str(MODEL_DIR))
    for name, value in W.to_hf_state_dict(weights).items():
        np.testing.assert_array_equal(value, stored[name].astype(np.float32), err_msg=name)
    assert config.do_lower_case is True


def test_tf_optimizer_slots_and_pooler_are_dropped(tmp_path):
    variables = tiny_tf_variables()
    extra = {"global_step": np.array(1000, np.int64), "beta1_power": np.array(0.9, np.float32),
             "bert/pooler/dense/kernel": np.ones((8, 8), np.float32),
             # mixed-precision training's loss-scaling state: integer counters beside a float scale (2^32 in
             # DeepLearningExamples' AMP runs: beyond float16, so carried along it would refuse an fp16 build)
             "good_steps": np.array(17, np.int32), "bad_steps": np.array(0, np.int64),
             "current_loss_scale": np.array(2.0 ** 32, np.float32),
             "bert/encoder/layer_norm_stats/accum": np.ones(8, np.float32)}
    for name in ("bert/encoder/layer_0/attention/self/query/kernel", "cls/squad/output_bias",
                 "bert/embeddings/LayerNorm/gamma"):
        extra.update({f"{name}/{slot}": variables[name]
                      for slot in ("adam_m", "Adam", "Adam_1", "LAMB", "LAMB_1", "Momentum", "accum")})
    tf_checkpoint.write_checkpoint(str(tmp_path / "plain"), variables)
    tf_checkpoint.write_checkpoint(str(tmp_path / "trained"), {**variables, **extra})
    plain = W.load_tf_checkpoint(str(tmp_path / "plain"))
    W.validate(plain, TINY)
    assert_same_map(W.load_tf_checkpoint(str(tmp_path / "trained")), plain)
    np.testing.assert_array_equal(plain["l1_output_dense_kernel"],
                                  variables["bert/encoder/layer_1/output/dense/kernel"].T)


def test_writer_round_trip_keeps_dtypes(tmp_path):
    tensors = {"a/kernel": np.arange(12, dtype=np.float32).reshape(3, 4), "step": np.array(7, np.int64),
               "half": np.linspace(-1, 1, 5).astype(np.float16), "ints": np.arange(6, dtype=np.int32).reshape(2, 3),
               "empty": np.zeros((0, 3), np.float32)}
    tf_checkpoint.write_checkpoint(str(tmp_path / "m"), tensors)
    checkpoint = tf_checkpoint.TFCheckpoint(str(tmp_path / "m"))
    assert checkpoint.names() == sorted(tensors)
    for name, value in tensors.items():
        read = checkpoint.read(name)
        assert read.dtype == value.dtype and read.shape == value.shape
        np.testing.assert_array_equal(read, value)


def test_writer_matches_tensorflow_entries(fixture_ckpt, tf_weights, tmp_path):
    """Re-writing the TF-written fixture with our writer gives the same dtypes, shapes and checksums."""
    original = tf_checkpoint.TFCheckpoint(fixture_ckpt)
    tf_checkpoint.write_checkpoint(str(tmp_path / "copy"), {n: original.read(n) for n in original.names()})
    copy = tf_checkpoint.TFCheckpoint(str(tmp_path / "copy"))
    for name in original.names():
        a, b = original.entry(name), copy.entry(name)
        assert (a.dtype, a.shape, a.size, a.crc32c) == (b.dtype, b.shape, b.size, b.crc32c), name
    assert_same_map(W.load_tf_checkpoint(str(tmp_path / "copy")), tf_weights)


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.fixture()
def tiny_ckpt(tmp_path):
    prefix = str(tmp_path / "model.ckpt")
    tf_checkpoint.write_checkpoint(prefix, tiny_tf_variables())
    return prefix


def test_checkpoint_named_by_its_index_or_data_file(tiny_ckpt):
    """Besides the prefix, a user may name either file of the checkpoint (upstream takes only the prefix)."""
    plain = W.load_tf_checkpoint(tiny_ckpt)
    for path in (tiny_ckpt + ".index", tiny_ckpt + ".data-00000-of-00001"):
        assert tf_checkpoint.checkpoint_files(path)[0] == tiny_ckpt + ".index"
        assert_same_map(W.load_tf_checkpoint(path), plain)


def test_missing_checkpoint_files(tiny_ckpt, tmp_path):
    with pytest.raises(BertError, match="index not found.*nothere.ckpt.index"):
        W.load_tf_checkpoint(str(tmp_path / "nothere.ckpt"))
    os.remove(tiny_ckpt + ".data-00000-of-00001")
    with pytest.raises(BertError, match=r"data file not found.*model\.ckpt\.data-00000-of-00001"):
        W.load_tf_checkpoint(tiny_ckpt)


def test_truncated_data_file(tiny_ckpt):
    data = tiny_ckpt + ".data-00000-of-00001"
    os.truncate(data, os.path.getsize(data) - 10)
    with pytest.raises(BertError, match=r"model\.ckpt\.data-00000-of-00001 is truncated"):
        W.load_tf_checkpoint(tiny_ckpt)


def test_corrupt_data_file(tiny_ckpt):
    data = tiny_ckpt + ".data-00000-of-00001"
    with open(data, "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0x40]))
    with pytest.raises(BertError, match="corrupt: checksum mismatch in bert/"):
        W.load_tf_checkpoint(tiny_ckpt)


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupt_index(tiny_ckpt, damage):
    index = tiny_ckpt + ".index"
    raw = bytearray(open(index, "rb").read())
    if damage == "flip":
        raw[40] ^= 0xFF
    elif damage == "truncate":
        raw = raw[:-20]
    else:
        raw = bytearray(b"not a checkpoint at all" * 4)
    open(index, "wb").write(bytes(raw))
    with pytest.raises(BertError, match=r"model\.ckpt\.index"):
        W.load_tf_checkpoint(tiny_ckpt)


def test_validate_names_every_problem(model_weights, model_config):
    broken = dict(model_weights)
    del broken["l2_attention_self_key_bias"], broken["cls_squad_output_bias"]
    broken["l5_output_dense_kernel"] = broken["l5_output_dense_kernel"].T
    with pytest.raises(BertError) as info:
        W.validate(broken, model_config)
    message = str(info.value)
    assert "\n" not in message
    assert "l2_attention_self_key_bias, cls_squad_output_bias" in message or \
           "cls_squad_output_bias, l2_attention_self_key_bias" in message
    assert "l5_output_dense_kernel [1536, 384] (expected [384, 1536])" in message
    with pytest.raises(BertError, match=r"missing 48 tensor\(s\).*\(36 more\)"):
        W.validate(model_weights, BertConfig(num_hidden_layers=9, hidden_size=384, num_attention_heads=12,
                                          intermediate_size=1536))


def test_load_weights_without_source():
    with pytest.raises(BertError, match="no weights given"):
        W.load_weights(TINY)


def test_bad_pytorch_sources(tmp_path):
    with pytest.raises(BertError, match="not found"):
        W.load_weights(TINY, pytorch=str(tmp_path / "missing.pt"))
    (tmp_path / "junk.bin").write_bytes(b"hello, this is not a model")
    with pytest.raises(BertError, match="junk.bin is neither"):
        W.load_weights(TINY, pytorch=str(tmp_path / "junk.bin"))
    with pytest.raises(BertError, match="no model.safetensors or pytorch_model.bin"):
        W.load_weights(TINY, pytorch=str(tmp_path))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(BertError, match="not a valid safetensors"):
        W.load_weights(TINY, pytorch=str(tmp_path / "bad.safetensors"))


# ---------------------------------------------------------------------------------------------------- PyTorch & HF
def test_pytorch_dle_checkpoint(model_weights, hf_model, model_config, tmp_path):
    """A `{"model": state_dict}` file with DeepLearningExamples names, made from transformers' own state dict."""
    torch = pytest.importorskip("torch")
    state = {k.replace(".intermediate.dense.", ".intermediate.dense_act."): v.clone()
             for k, v in hf_model.state_dict().items()}
    assert any(".dense_act." in k for k in state)
    torch.save({"model": state}, tmp_path / "dle.pt")
    torch.save({"model": state}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    torch.save(state, tmp_path / "bare.pt")
    for name in ("dle.pt", "legacy.pt", "bare.pt"):
        assert_same_map(W.load_weights(model_config, pytorch=str(tmp_path / name)), model_weights)
    W.save_pytorch_checkpoint(model_weights, tmp_path / "ours.pt")
    saved = torch.load(tmp_path / "ours.pt", weights_only=True)["model"]
    assert sorted(saved) == sorted(state)
    assert_same_map(W.load_pytorch_checkpoint(tmp_path / "ours.pt"), model_weights)


def test_safetensors_file_and_bf16(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    weights = _tiny_weights(tmp_path)
    state = {k: torch.from_numpy(v) for k, v in W.to_hf_state_dict(weights).items()}
    safetensors_torch.save_file(state, str(tmp_path / "f32.safetensors"))
    assert_same_map(W.load_weights(TINY, pytorch=str(tmp_path / "f32.safetensors")), weights)
    bf16 = {k: v.to(torch.bfloat16) for k, v in state.items()}
    safetensors_torch.save_file(bf16, str(tmp_path / "bf16.safetensors"))
    loaded = W.load_safetensors(tmp_path / "bf16.safetensors")
    for name, value in bf16.items():
        np.testing.assert_array_equal(W.to_hf_state_dict(loaded)[name], value.float().numpy())


def _tiny_weights(tmp_path):
    tf_checkpoint.write_checkpoint(str(tmp_path / "tiny"), tiny_tf_variables())
    return W.load_tf_checkpoint(str(tmp_path / "tiny"))


def test_priority_order(tmp_path, fixture_config, tf_weights, fixture_ckpt):
    tiny_prefix = str(tmp_path / "tiny")
    tf_checkpoint.write_checkpoint(tiny_prefix, tiny_tf_variables())
    # -pt wins over -m in both builders; the tiny TF checkpoint would fail validation if it were chosen
    weights = W.load_weights(fixture_config, ckpt=tiny_prefix, pytorch=str(MODEL_DIR))
    assert_same_map(weights, tf_weights)
    # -m wins over -mp in builder_varseqlen.py (the "pickle" here is not even a pickle, so it must not be read)
    weights = W.load_weights(fixture_config, ckpt=fixture_ckpt, pickle=tiny_prefix, priority=W.VARSEQLEN_PRIORITY)
    assert_same_map(weights, tf_weights)


# ---------------------------------------------------------------------------------------------------- names & QKV
@pytest.mark.parametrize("name, expected", [
    ("bert.encoder.layer.3.attention.self.query._input_quantizer._amax", "l3_attention_self_query_input_amax"),
    ("bert.encoder.layer.3.attention.self.matmul_q_input_quantizer._amax",
     "l3_attention_self_qv_a_input_quantizer_amax"),
    ("bert.encoder.layer.3.attention.self.matmul_a_input_quantizer._amax",
     "l3_attention_self_av_a_input_quantizer_amax"),
    ("bert.encoder.final_input_quantizer._amax", "bert_encoder_final_input_quantizer_amax"),
    ("qa_outputs.weight", "cls_squad_output_weights"),
    ("qa_outputs.bias", "cls_squad_output_bias"),
    ("bert.encoder.layer.11.intermediate.dense_act.weight", "l11_intermediate_dense_kernel"),
    ("bert.encoder.layer.11.intermediate.dense_act._weight_quantizer._amax", "l11_intermediate_dense_kernel_amax"),
    ("bert.encoder.layer.0.attention.output.LayerNorm.weight", "l0_attention_output_layernorm_gamma"),
    ("bert.encoder.layer.0.output.LayerNorm.bias", "l0_output_layernorm_beta"),
    ("bert.encoder.layer.2.output.dense._input_quantizer._amax", "l2_output_dense_input_amax"),
    ("bert.embeddings.word_embeddings.weight", "bert_embeddings_word_embeddings"),
    ("bert.embeddings.LayerNorm.bias", "bert_embeddings_layernorm_beta"),
    # pytorch-pretrained-bert's state dicts name LayerNorm parameters gamma and beta
    ("bert.embeddings.LayerNorm.gamma", "bert_embeddings_layernorm_gamma"),
    ("bert.embeddings.LayerNorm.beta", "bert_embeddings_layernorm_beta"),
    ("bert.encoder.layer.5.output.LayerNorm.beta", "l5_output_layernorm_beta"),
    ("bert.encoder.layer.5.attention.output.LayerNorm.gamma", "l5_attention_output_layernorm_gamma"),
    ("bert.embeddings.word_embeddings._weight_quantizer._amax", "bert_embeddings_word_embeddings_amax"),
    ("bert.encoder.layers.4.attention.query_key_value.weight", "l4_attention_query_key_value_kernel"),
])
def test_onnx_to_trt_name(name, expected):
    assert W.onnx_to_trt_name(name) == expected


@pytest.mark.parametrize("name", ["cls.predictions.bias", "encoder.layer.0.x", "bert.embeddings.LayerNorm.scale",
                                  "bert.encoder.layer.0.attention.self.matmul_z_input_quantizer._amax"])
def test_onnx_to_trt_name_unknown(name):
    with pytest.raises(BertError, match="unknown weight name"):
        W.onnx_to_trt_name(name)


def test_tf_to_trt_name():
    assert W.tf_to_trt_name("bert/encoder/layer_0/attention/self/query/kernel") == "l0_attention_self_query_kernel"
    assert W.tf_to_trt_name("bert/embeddings/LayerNorm/beta") == "bert_embeddings_layernorm_beta"
    assert W.tf_to_trt_name("cls/squad/output_weights") == "cls_squad_output_weights"
    with pytest.raises(BertError, match="names no layer"):
        W.tf_to_trt_name("bert/encoder/something/kernel")


def test_fuse_qkv_layouts(model_weights, model_config):
    n_heads, h, e = model_config.num_attention_heads, model_config.head_size, model_config.hidden_size
    fused = W.fuse_qkv(model_weights, model_config)
    interleaved = W.fuse_qkv(model_weights, model_config, interleaved=True)
    assert sorted(fused) == sorted(f"l{n}_attention_self_qkv_{k}" for n in range(6) for k in ("kernel", "bias"))
    for layer in (0, 5):
        p = f"l{layer}_attention_self_"
        kernel, bias = fused[p + "qkv_kernel"], fused[p + "qkv_bias"]
        assert kernel.shape == (3 * e, e) and bias.shape == (3 * e,)
        for head in range(n_heads):
            for i, part in enumerate(("query", "key", "value")):
                rows = slice(head * 3 * h + i * h, head * 3 * h + (i + 1) * h)
                np.testing.assert_array_equal(kernel[rows], model_weights[f"{p}{part}_kernel"][head * h:(head + 1) * h])
                np.testing.assert_array_equal(bias[rows], model_weights[f"{p}{part}_bias"][head * h:(head + 1) * h])
        for i, part in enumerate(("query", "key", "value")):
            rows = slice(i * e, (i + 1) * e)
            np.testing.assert_array_equal(interleaved[p + "qkv_kernel"][rows], model_weights[f"{p}{part}_kernel"])
            np.testing.assert_array_equal(interleaved[p + "qkv_bias"][rows], model_weights[f"{p}{part}_bias"])


# ---------------------------------------------------------------------------------------------------- ONNX
def test_fake_quant_onnx(model_weights, model_config, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    amax = {"bert.encoder.layer.0.attention.self.query._input_quantizer._amax": np.array(3.5, np.float32),
            "bert.encoder.layer.0.attention.self.matmul_q_input_quantizer._amax": np.array(7.25, np.float32),
            "bert.encoder.layer.1.output.dense._weight_quantizer._amax": np.linspace(0.1, 1, 384).astype(np.float32),
            "bert.encoder.final_input_quantizer._amax": np.array(11.0, np.float32)}
    tensors = {**W.to_dle_state_dict(model_weights), **amax}
    initializers = [numpy_helper.from_array(np.asarray(v), k) for k, v in tensors.items()]
    node = helper.make_node("Identity", ["qa_outputs.bias"], ["out"])
    graph = helper.make_graph([node], "bert", [], [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [2])],
                              initializer=initializers)
    onnx.save(helper.make_model(graph), str(tmp_path / "fake_quant.onnx"))
    loaded = W.load_weights(model_config, onnx=str(tmp_path / "fake_quant.onnx"), ckpt="ignored: onnx comes first")
    expected = dict(model_weights)
    expected.update({"l0_attention_self_query_input_amax": amax[next(iter(amax))],
                     "l0_attention_self_qv_a_input_quantizer_amax": np.array(7.25, np.float32),
                     "l1_output_dense_kernel_amax": amax["bert.encoder.layer.1.output.dense._weight_quantizer._amax"],
                     "bert_encoder_final_input_quantizer_amax": np.array(11.0, np.float32)})
    assert_same_map(loaded, expected)
    with pytest.raises(BertError, match="ONNX model not found"):
        W.load_onnx(str(tmp_path / "none.onnx"))
    (tmp_path / "junk.onnx").write_bytes(b"\xff\xff\xff junk")
    with pytest.raises(BertError, match="junk.onnx"):
        W.load_onnx(str(tmp_path / "junk.onnx"))


# ---------------------------------------------------------------------------------------------------- Megatron
def test_megatron_pickle_round_trip(model_weights, model_config, tmp_path):
    quant = {"l0_attention_self_query_input_amax": np.array(2.0, np.float32),
             "l0_attention_self_key_input_amax": np.array(2.0, np.float32),
             "l0_attention_self_value_input_amax": np.array(2.0, np.float32),
             "l3_attention_self_av_a_input_quantizer_amax": np.array(5.0, np.float32),
             "l2_output_add_residual_input_quantizer_amax": np.array(9.0, np.float32),
             "bert_encoder_final_input_quantizer_amax": np.array(4.0, np.float32)}
    W.save_megatron_pickle({**model_weights, **quant}, model_config, tmp_path / "megatron.pkl")
    with open(tmp_path / "megatron.pkl", "rb") as f:
        state = pickle.load(f)
    qkv = state["bert.encoder.layers.1.attention.query_key_value.weight"]
    e = model_config.hidden_size
    np.testing.assert_array_equal(qkv[e:2 * e], model_weights["l1_attention_self_key_kernel"])  # [Q|K|V], [out, in]
    assert "bert.embedding.tokentype_embeddings.weight" in state
    state["bert.encoder.layers.0.attention.query_key_value.weight_scale"] = np.ones(3, np.float32)  # skipped
    with open(tmp_path / "megatron.pkl", "wb") as f:
        pickle.dump(state, f)
    loaded = W.load_weights(model_config, pickle=str(tmp_path / "megatron.pkl"), priority=W.VARSEQLEN_PRIORITY)
    # upstream keeps the fused input's scale and copies it to query/key/value
    assert_same_map(loaded, {**model_weights, **quant, "l0_attention_self_qkv_input_amax": np.array(2.0, np.float32)})
    with pytest.raises(BertError, match="no Megatron name"):
        W.save_megatron_pickle({**model_weights, "l0_mystery_amax": np.ones(1, np.float32)}, model_config,
                               tmp_path / "x.pkl")


def test_bad_megatron_pickle(tmp_path):
    (tmp_path / "bad.pkl").write_bytes(b"garbage")
    with pytest.raises(BertError, match="bad.pkl"):
        W.load_megatron_pickle(str(tmp_path / "bad.pkl"), TINY)
    with pytest.raises(BertError, match="not found"):
        W.load_megatron_pickle(str(tmp_path / "none.pkl"), TINY)


def test_megatron_fused_qkv_of_another_shape_is_refused(tmp_path):
    """A fused QKV kernel transposed ([E, 3E]) or flattened has the right number of values but would split into
    wrong query/key/value kernels: only [3E, E] (and a [3E] bias) is read."""
    rng = np.random.default_rng(3)
    weights = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in W.required_shapes(TINY).items()}
    W.save_megatron_pickle(weights, TINY, tmp_path / "good.pkl")
    with open(tmp_path / "good.pkl", "rb") as f:
        state = pickle.load(f)
    name = "bert.encoder.layers.1.attention.query_key_value.weight"
    assert_same_map(W.load_megatron_pickle(str(tmp_path / "good.pkl"), TINY), weights)
    for bad in (state[name].T, state[name].reshape(-1)):
        with open(tmp_path / "bad.pkl", "wb") as f:
            pickle.dump({**state, name: bad}, f)
        with pytest.raises(BertError, match=rf"{name} has shape \[{', '.join(map(str, bad.shape))}\], "
                                            rf"expected \[24, 8\]"):
            W.load_megatron_pickle(str(tmp_path / "bad.pkl"), TINY)


def test_megatron_pickle_of_non_numbers_is_one_error(tmp_path):
    with open(tmp_path / "strings.pkl", "wb") as f:
        pickle.dump({"bert.embedding.word_embeddings.weight": "x"}, f)
    with pytest.raises(BertError, match="holds no numbers"):
        W.load_megatron_pickle(str(tmp_path / "strings.pkl"), TINY)


def test_pytorch_checkpoint_with_pooler_and_position_ids_loads_the_qa_model(tmp_path):
    """DeepLearningExamples' SQuAD checkpoints keep the pooler, older Hugging Face ones a position-id buffer: both
    are ignored, as the TF loader ignores the pooler."""
    torch = pytest.importorskip("torch")
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in W.read_safetensors(
        str(MODEL_DIR / "model.safetensors")).items()}
    hidden = state["bert.embeddings.word_embeddings.weight"].shape[1]
    state["bert.pooler.dense.weight"] = torch.ones(hidden, hidden)
    state["bert.pooler.dense.bias"] = torch.ones(hidden)
    state["bert.embeddings.position_ids"] = torch.arange(512)[None]
    torch.save({"model": state}, tmp_path / "dle.pt")
    loaded = W.load_pytorch_checkpoint(str(tmp_path / "dle.pt"))
    expected = W.load_hf_folder(MODEL_DIR)
    assert sorted(loaded) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(loaded[name], expected[name], err_msg=name)


def test_sharded_hugging_face_folder_equals_the_whole_one(tmp_path):
    import json
    tensors = W.read_safetensors(str(MODEL_DIR / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, members in shards.items():
        W.write_safetensors(str(tmp_path / shard), {n: np.array(tensors[n]) for n in members})
    index = {"metadata": {}, "weight_map": {n: shard for shard, members in shards.items() for n in members}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    loaded, expected = W.load_hf_folder(str(tmp_path)), W.load_hf_folder(MODEL_DIR)
    assert sorted(loaded) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(loaded[name], expected[name], err_msg=name)
    # a tensor in two shards: refused, whichever copy would have won
    W.write_safetensors(str(tmp_path / "model-00002-of-00002.safetensors"),
                        {n: np.array(tensors[n]) for n in shards["model-00002-of-00002.safetensors"] + names[:1]})
    with pytest.raises(BertError, match=r"two tensors map to the weight \w+ \(one is in model-00002-of-00002"):
        W.load_hf_folder(str(tmp_path))
    index["weight_map"][names[0]] = "../elsewhere.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(BertError, match="not a valid shard index"):
        W.load_hf_folder(str(tmp_path))


def test_convert_fixture_script(fixture_dir, tmp_path):
    """The shipped folder is what the script makes from the fixture."""
    shared_path("fixtures", "minilm-l6-squad11", "tf")
    load_script("convert_fixture").main(["--fixture", str(fixture_dir), "-o", str(tmp_path / "out")])
    for name in ("model.safetensors", "config.json", "bert_config.json", "vocab.txt", "tokenizer_config.json"):
        assert (tmp_path / "out" / name).read_bytes() == (MODEL_DIR / name).read_bytes(), name
    shutil.rmtree(tmp_path / "out")


# ---------------------------------------------------------------------------------------------------- tensor kinds
def test_torch_tensors_of_any_real_dtype_load_widened_and_others_are_refused(tmp_path):
    """bfloat16 and float8 widen losslessly to float32 (in -pt checkpoints and Megatron pickles alike, tensors that
    need gradients too); complex and quantized tensors, and float64 values beyond float32, are one-line errors."""
    torch = pytest.importorskip("torch")
    weights = _tiny_weights(tmp_path)
    state = {k: torch.from_numpy(v) for k, v in W.to_hf_state_dict(weights).items()}
    name = "bert.encoder.layer.0.attention.self.query.weight"
    for dtype in (torch.bfloat16, torch.float8_e4m3fn):
        narrow = dict(state, **{name: state[name].to(dtype)})
        torch.save(narrow, tmp_path / "narrow.pt")
        loaded = W.load_weights(TINY, pytorch=str(tmp_path / "narrow.pt"))
        np.testing.assert_array_equal(loaded["l0_attention_self_query_kernel"], narrow[name].float().numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # torch: quantized tensors are deprecated
        quantized = torch.quantize_per_tensor(state[name], 0.01, 0, torch.qint8)
    for bad, pattern in ((state[name].to(torch.complex64), "complex"), (quantized, "qint8")):
        torch.save(dict(state, **{name: bad}), tmp_path / "bad.pt")
        with pytest.raises(BertError, match=pattern):
            W.load_weights(TINY, pytorch=str(tmp_path / "bad.pt"))
    huge = dict(state, **{name: state[name].double().fill_(1e300)})
    torch.save(huge, tmp_path / "huge.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # no overflow warning may precede the one-line error
        with pytest.raises(BertError, match="hold NaN or infinite values"):
            W.validate(W.load_weights(TINY, pytorch=str(tmp_path / "huge.pt")), TINY)
    megatron = tmp_path / "megatron.pkl"
    W.save_megatron_pickle(weights, TINY, megatron)
    with open(megatron, "rb") as f:
        arrays = pickle.load(f)
    for convert in (lambda a: torch.from_numpy(a).to(torch.bfloat16),
                    lambda a: torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(a)))):
        with open(tmp_path / "torch.pkl", "wb") as f:
            pickle.dump({k: convert(v) for k, v in arrays.items()}, f)
        loaded = W.load_megatron_pickle(str(tmp_path / "torch.pkl"), TINY)
        expected = {k: convert(v).detach().float().numpy() for k, v in arrays.items()}
        W.save_megatron_pickle(loaded, TINY, tmp_path / "again.pkl")
        with open(tmp_path / "again.pkl", "rb") as f:
            again = pickle.load(f)
        for key, value in expected.items():
            np.testing.assert_array_equal(again[key], value, err_msg=key)


def test_two_tensors_for_one_weight_are_refused_by_every_loader(tmp_path):
    """TF checkpoints and Megatron pickles, like state dicts: the last of two tensors would silently win."""
    variables = tiny_tf_variables()
    twin = {"bert/embeddings/layernorm/gamma": np.zeros_like(variables["bert/embeddings/LayerNorm/gamma"])}
    tf_checkpoint.write_checkpoint(str(tmp_path / "twin"), {**variables, **twin})
    with pytest.raises(BertError, match="two tensors map to the weight bert_embeddings_layernorm_gamma"):
        W.load_tf_checkpoint(str(tmp_path / "twin"))
    tf_checkpoint.write_checkpoint(str(tmp_path / "plain"), variables)
    W.save_megatron_pickle(W.load_tf_checkpoint(str(tmp_path / "plain")), TINY, tmp_path / "m.pkl")
    with open(tmp_path / "m.pkl", "rb") as f:
        state = pickle.load(f)
    state["bert.embeddings.LayerNorm.weight"] = np.zeros(TINY.hidden_size, np.float32)
    with open(tmp_path / "m.pkl", "wb") as f:
        pickle.dump(state, f)
    with pytest.raises(BertError, match="two tensors map to the weight bert_embeddings_layernorm_gamma"):
        W.load_megatron_pickle(str(tmp_path / "m.pkl"), TINY)


class _Raising:
    """Unpickles by calling divmod(1, 0): a file whose own constructors fail."""

    def __reduce__(self):
        return (divmod, (1, 0))


def test_integer_weights_and_odd_pickles_are_one_line_errors(tmp_path):
    """A weight of integers would be cast to a wrong model silently; unpickling may raise anything; a state dict
    key must be a name. Each loader says so in one line."""
    torch = pytest.importorskip("torch")
    weights = _tiny_weights(tmp_path)
    state = {k: torch.from_numpy(v) for k, v in W.to_hf_state_dict(weights).items()}
    name = "bert.embeddings.word_embeddings.weight"
    for dtype in (torch.int32, torch.bool, torch.uint8):
        torch.save(dict(state, **{name: state[name].to(dtype)}), tmp_path / "int.pt")
        with pytest.raises(BertError, match=f"word_embeddings holds {str(dtype)[6:]} values"):
            W.load_weights(TINY, pytorch=str(tmp_path / "int.pt"))
    arrays = {k: v.numpy() for k, v in state.items()}
    W.write_safetensors(tmp_path / "int.safetensors", dict(arrays, **{name: arrays[name].astype(np.int64)}))
    with pytest.raises(BertError, match="holds int64 values"):
        W.load_weights(TINY, pytorch=str(tmp_path / "int.safetensors"))
    megatron = tmp_path / "megatron.pkl"
    W.save_megatron_pickle(weights, TINY, megatron)
    with open(megatron, "rb") as f:
        pickled = pickle.load(f)
    key = next(k for k in pickled if "word_embeddings" in k)
    for bad, pattern in ((dict(pickled, **{key: pickled[key].astype(np.int8)}), "holds int8 values"),
                         ({0: pickled[key]}, "key 0 is not a tensor name"),
                         ({key: _Raising()}, "cannot read Megatron pickle .*by zero")):
        with open(tmp_path / "bad.pkl", "wb") as f:
            pickle.dump(bad, f)
        with pytest.raises(BertError, match=pattern):
            W.load_megatron_pickle(str(tmp_path / "bad.pkl"), TINY)
    for bad, pattern in (({"model": {0: state[name]}}, "key 0 is not a tensor name"),
                         ({"model": {name: _Raising()}}, "cannot read PyTorch checkpoint .*by zero")):
        torch.save(bad, tmp_path / "bad.pt")
        with pytest.raises(BertError, match=pattern):
            W.load_weights(TINY, pytorch=str(tmp_path / "bad.pt"))
    # the sparsity masks upstream reads as int8 stay integers
    assert W._canonical_value("l0_attention_self_query_mask", np.ones(3, np.int8)).dtype == np.int8


def test_safetensors_whose_header_length_looks_like_a_pickle_is_read_as_safetensors(tmp_path):
    """The first byte of a safetensors file is its header length's lowest: 0x80 is a pickle's first byte too."""
    arrays = W.to_hf_state_dict(_tiny_weights(tmp_path))
    W.write_safetensors(tmp_path / "plain.safetensors", arrays)
    data = (tmp_path / "plain.safetensors").read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = data[8:8 + size].rstrip(b" ")
    padded = header + b" " * ((0x80 - len(header)) % 256)   # JSON allows trailing spaces
    patched = len(padded).to_bytes(8, "little") + padded + data[8 + size:]
    assert patched[0] == 0x80
    (tmp_path / "x80.safetensors").write_bytes(patched)
    assert_same_map(W.load_weights(TINY, pytorch=str(tmp_path / "x80.safetensors")),
                    W.load_weights(TINY, pytorch=str(tmp_path / "plain.safetensors")))
    (tmp_path / "cut.safetensors").write_bytes(patched[:-100])
    with pytest.raises(BertError, match="cut.safetensors is truncated|not a valid safetensors"):
        W.load_weights(TINY, pytorch=str(tmp_path / "cut.safetensors"))


@pytest.mark.parametrize("content, lower", [("[]", None), ("null", None), ('"uncased"', None), ("{not json", None),
                                            ('{"do_lower_case": false}', False)])
def test_a_tokenizer_config_that_is_no_json_object_is_ignored(tmp_path, content, lower):
    """tokenizer_config.json is only a hint for do_lower_case: a malformed one leaves it unstated (the tokenizer
    then asks the vocabulary), a well-formed one is read."""
    shutil.copy(MODEL_DIR / "config.json", tmp_path / "config.json")
    (tmp_path / "tokenizer_config.json").write_text(content)
    assert load_config(str(tmp_path)).do_lower_case is lower


def test_onnx_path_that_is_no_file_says_so(tmp_path):
    pytest.importorskip("onnx")
    with pytest.raises(BertError, match="ONNX model is not a file"):
        W.load_onnx(str(tmp_path))
    with pytest.raises(BertError, match="ONNX model not found"):
        W.load_onnx(str(tmp_path / "none.onnx"))


def test_reading_a_checkpoint_shows_progress_on_a_terminal_only(tmp_path, monkeypatch):
    import io
    tf_checkpoint.write_checkpoint(str(tmp_path / "tiny"), tiny_tf_variables())

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr("sys.stderr", stream)
        W.load_tf_checkpoint(str(tmp_path / "tiny"))
        assert ("reading the TensorFlow checkpoint" in stream.getvalue()) is shown
