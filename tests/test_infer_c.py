"""infer_c (the C++ extension built into build/ by CMake, and build/perf) against independent references.

Native engines run through the extension must match the numpy reference forward pass (helpers/reference.py) on
random weights, and the shipped fixture model must match Hugging Face's own FP32 logits; a CUDA-graph replay must
give exactly what direct launches give. Tests skip cleanly where the extension is not built or no GPU is usable.
"""
import os
import re
import subprocess

import numpy as np
import pytest

from conftest import MODEL_DIR, random_inputs, random_weights, shared_path
from helpers import reference
from helpers.backends.infer_c_runner import BUILD_DIR, NOT_BUILT, InferCRunner, load_infer_c
from helpers.config import BertConfig, load_config
from helpers.engine_format import EngineFile
from helpers.errors import BertError
from helpers.native_builder import build_native_engine, fixed_profiles, varseqlen_profiles

PERF = os.path.join(BUILD_DIR, "perf")
# ||out - ref|| / ||ref|| bounds: float32 arithmetic lands far below 1e-4, FP16 storage near 1e-3.
REL_TOL = {"fp32": 1e-4, "fp16": 2e-2}
HEAD32 = BertConfig(num_hidden_layers=2, hidden_size=128, num_attention_heads=4, intermediate_size=512,
                    vocab_size=300, max_position_embeddings=96, type_vocab_size=2)
HEAD64 = BertConfig(num_hidden_layers=2, hidden_size=256, num_attention_heads=4, intermediate_size=640,
                    vocab_size=300, max_position_embeddings=96, type_vocab_size=2)


def rel_err(out, ref):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert np.isfinite(out).all(), "non-finite output"
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def save_engine(path, config, weights, precision, profiles, variable_seqlen=False, numerics=None):
    engine = build_native_engine(config, weights, precision=precision, profiles=profiles,
                                 variable_seqlen=variable_seqlen)
    if numerics is not None:
        engine.numerics = {"gelu": numerics.gelu, "emb_eps": numerics.emb_eps, "layer_norm_eps": numerics.ln_eps}
    engine.save(str(path))
    return str(path)


# ---- without a GPU ---------------------------------------------------------------------------------------------------

def test_missing_build_is_a_one_line_error(tmp_path):
    with pytest.raises(BertError, match=re.escape(NOT_BUILT)):
        load_infer_c(str(tmp_path))


@pytest.fixture(scope="module")
def infer_c():
    try:
        return load_infer_c()
    except BertError as exc:
        pytest.skip(str(exc))


def test_engine_info_reads_the_header_and_rejects_bad_files(infer_c, tmp_path):
    path = save_engine(tmp_path / "e.engine", HEAD32, random_weights(HEAD32, 1), "fp16",
                       varseqlen_profiles([8, 2], 64), variable_seqlen=True)
    info = infer_c.engine_info(path)
    assert (info["kind"], info["precision"], info["variable_seqlen"]) == ("native", "fp16", True)
    assert [(p["batch"], p["seq"]) for p in info["profiles"]] == [((1, 8, 8), (1, 64, 64)), ((1, 2, 2), (1, 64, 64))]
    data = open(path, "rb").read()
    heads = b'"num_attention_heads": 4'
    assert data.count(heads) == 1
    cases = {
        # still valid JSON, and the weights' shapes would still fit: only the header's own checksum tells
        "header edited": (data.replace(heads, b'"num_attention_heads": 2'), "header does not match its checksum"),
        "checksum renamed": (data.replace(heads, b'"num_attention_heads": 2').replace(b'"header_crc32"',
                                                                                      b'"header_crc33"'),
                             "header does not match its checksum"),
        "truncated": (data[:-5], "truncated"),
        "text": (b"not an engine at all", "not an engine file"),
        "bad header": (data[:17] + b"#" + data[18:], "corrupt"),
        "empty": (b"", "empty"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(RuntimeError, match=message):
            infer_c.engine_info(str(bad))
    with pytest.raises(RuntimeError, match="directory"):
        infer_c.engine_info(str(tmp_path))
    with pytest.raises(RuntimeError, match="not found"):
        infer_c.engine_info(str(tmp_path / "missing.engine"))


@pytest.fixture(scope="module")
def perf():
    if not os.access(PERF, os.X_OK):
        pytest.skip(NOT_BUILT)
    return PERF


@pytest.mark.parametrize("argv,message", [
    (["--bogus"], "unrecognized option --bogus"),
    (["-e", "x.engine", "-b", "0"], "--batch_size needs an integer"),
    (["-e", "x.engine", "--sequence_length"], "needs a value"),
    (["-b", "1"], "an engine is required"),
    (["-e", "/nonexistent/x.engine"], "engine not found"),
])
def test_perf_rejects_bad_arguments_in_one_line(perf, argv, message):
    result = subprocess.run([perf] + argv, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("[DemoBERT][E] ") and message in result.stderr


# ---- on the GPU ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpu(infer_c, tmp_path_factory):
    """Skips the GPU tests where no CUDA GPU is usable (the extension says so when asked to load an engine)."""
    path = save_engine(tmp_path_factory.mktemp("probe") / "probe.engine", HEAD32, random_weights(HEAD32, 0), "fp32",
                       fixed_profiles([1], [16]))
    try:
        infer_c.bert_inf(path, 1, 16, False)
    except RuntimeError as exc:
        if "no CUDA GPU" in str(exc):
            pytest.skip(str(exc))
        raise
    return infer_c


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("config,gelu,emb_eps", [(HEAD32, "erf", 1e-12), (HEAD64, "tanh", 0.0)])
def test_fixed_engine_matches_reference_and_graph_equals_direct(gpu, tmp_path, precision, config, gelu, emb_eps):
    weights = random_weights(config, 2)
    numerics = reference.Numerics(gelu=gelu, emb_eps=emb_eps, ln_eps=1e-3 if precision == "fp16" else 1e-6)
    path = save_engine(tmp_path / "e.engine", config, weights, precision, fixed_profiles([1, 4], [96]),
                       numerics=numerics)
    ids, segs, mask = random_inputs(config, 4, 96, seed=3, lengths=[96, 1, 50, 77])
    ref = reference.forward(weights, config, ids, segs, mask, numerics)
    direct = InferCRunner(path, enable_graph=False).infer_fixed(ids, segs, mask)
    graphed = InferCRunner(path, enable_graph=True).infer_fixed(ids, segs, mask)
    assert direct.shape == (4, 96, 2) and direct.dtype == np.float32
    np.testing.assert_array_equal(graphed, direct)
    for b, n in enumerate(mask.sum(1)):
        assert rel_err(direct[b, :n], ref[b, :n]) < REL_TOL[precision], (b, n)
        assert not direct[b, n:].any(), "padding positions must hold 0"


def test_graph_replays_read_new_inputs_and_batches_switch(gpu, tmp_path):
    weights = random_weights(HEAD32, 4)
    path = save_engine(tmp_path / "e.engine", HEAD32, weights, "fp32", fixed_profiles([1, 4], [64]))
    bert = gpu.bert_inf(path, 4, 64, True)
    first = random_inputs(HEAD32, 4, 64, seed=5, lengths=[64, 30, 12, 64])
    second = random_inputs(HEAD32, 1, 64, seed=6, lengths=[20])
    out_first = bert.run(*first)
    assert out_first.shape == (4, 64, 2, 1, 1) and bert.batch_size == 4
    out_second = bert.run(*second)  # another batch size: prepare() recaptures
    assert bert.batch_size == 1 and len(bert.times) == 2 and all(t > 0 for t in bert.times)
    np.testing.assert_array_equal(bert.run(*first), out_first)
    ref = reference.forward(weights, HEAD32, *second)
    assert rel_err(out_second[0, :20, :, 0, 0], ref[0, :20]) < REL_TOL["fp32"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_variable_length_engine_packed_and_padded(gpu, tmp_path, precision):
    weights = random_weights(HEAD64, 7)
    numerics = reference.Numerics(gelu="erf", emb_eps=1e-12, ln_eps=1e-3 if precision == "fp16" else 1e-6)
    path = save_engine(tmp_path / "e.engine", HEAD64, weights, precision, varseqlen_profiles([4], 96),
                       variable_seqlen=True, numerics=numerics)
    lengths = [5, 96, 40, 61, 17, 88]  # six sequences: two chunks of the profile's 4
    ids, segs, mask = random_inputs(HEAD64, len(lengths), 96, seed=8, lengths=lengths)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat_ids = np.concatenate([ids[b, :n] for b, n in enumerate(lengths)])
    flat_segs = np.concatenate([segs[b, :n] for b, n in enumerate(lengths)])
    runner = InferCRunner(path, enable_graph=True)
    packed = runner.infer_packed(flat_ids, flat_segs, cu, max(lengths))
    assert packed.shape == (2, cu[-1]) and packed.dtype == np.float32
    ref = reference.forward(weights, HEAD64, ids, segs, mask, numerics)
    for b, n in enumerate(lengths):
        assert rel_err(packed[:, cu[b]:cu[b + 1]].T, ref[b, :n]) < REL_TOL[precision], (b, n)
    padded = runner.infer_fixed(ids, segs, mask)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(padded[b, :n], packed[:, cu[b]:cu[b + 1]].T)
    # upstream's run() layout for a variable-length engine: (2 * B * S,), start logits then end logits
    raw = gpu.bert_inf(path, 4, 96, False).run(ids[:2], segs[:2], mask[:2])
    assert raw.shape == (2 * 2 * 96,)
    raw = raw.reshape(2, 2, 96).transpose(1, 2, 0)
    for b, n in enumerate(lengths[:2]):
        assert rel_err(raw[b, :n], ref[b, :n]) < REL_TOL[precision], (b, n)
        assert not raw[b, n:].any(), "padding positions must hold 0"


def test_static_engine_pads_batches_and_fixed_engine_takes_packed_input(gpu, tmp_path):
    weights = random_weights(HEAD32, 9)
    path = save_engine(tmp_path / "e.engine", HEAD32, weights, "fp32", fixed_profiles([4], [64]))
    runner = InferCRunner(path, enable_graph=True, max_seq_length=64)
    ids, segs, mask = random_inputs(HEAD32, 6, 64, seed=10, lengths=[64, 3, 33, 50, 64, 9])  # 6 rows: 4 + 2 padded to 4
    out = runner.infer_fixed(ids, segs, mask)
    ref = reference.forward(weights, HEAD32, ids, segs, mask)
    for b, n in enumerate(mask.sum(1)):
        assert rel_err(out[b, :n], ref[b, :n]) < REL_TOL["fp32"], (b, n)
    assert runner.last_infer_ms > 0
    lengths = mask.sum(1)[:3]
    cu = np.concatenate([[0], np.cumsum(lengths)])
    packed = runner.infer_packed(np.concatenate([ids[b, :n] for b, n in enumerate(lengths)]),
                                 np.concatenate([segs[b, :n] for b, n in enumerate(lengths)]), cu)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(packed[:, cu[b]:cu[b + 1]].T, out[b, :n])


def test_bad_inputs_and_engines_raise_one_line_errors(gpu, tmp_path):
    weights = random_weights(HEAD32, 11)
    path = save_engine(tmp_path / "e.engine", HEAD32, weights, "fp16", fixed_profiles([1, 2], [32]))
    runner = InferCRunner(path)
    ids, segs, mask = random_inputs(HEAD32, 2, 32, seed=12, lengths=[32, 10])
    bad_ids = ids.copy()
    bad_ids[1, 3] = HEAD32.vocab_size
    with pytest.raises(BertError, match=r"input_ids\[35\] = 300 is out of the vocabulary"):
        runner.infer_fixed(bad_ids, segs, mask)
    with pytest.raises(BertError, match="must hold integers"):
        runner.infer_fixed(ids.astype(np.float32), segs, mask)
    with pytest.raises(BertError, match="profiles covers sequence length 64"):
        runner.infer_fixed(*random_inputs(HEAD32, 1, 64, seed=13, lengths=[5]))
    with pytest.raises(BertError, match="cu_seqlens"):
        runner.infer_packed(ids[0, :5], segs[0, :5], [0, 3])
    with pytest.raises(RuntimeError, match="None of the dynamic shape profiles meets the requirement batch = 3"):
        gpu.bert_inf(path, 4, 32, True).prepare(3)
    corrupt = bytearray(open(path, "rb").read())
    corrupt[-3] ^= 0xFF
    (tmp_path / "corrupt.engine").write_bytes(bytes(corrupt))
    with pytest.raises(BertError, match="checksum mismatch"):
        InferCRunner(str(tmp_path / "corrupt.engine"), max_seq_length=32)
    engine = EngineFile.load(path)
    del engine.weights["l1_output_dense_bias"]
    engine.save(str(tmp_path / "incomplete.engine"))
    with pytest.raises(BertError, match="lacks weight l1_output_dense_bias"):
        InferCRunner(str(tmp_path / "incomplete.engine"), max_seq_length=32)


def test_benchmark_counts_iterations_and_duration(gpu, tmp_path):
    path = save_engine(tmp_path / "e.engine", HEAD32, random_weights(HEAD32, 14), "fp16", fixed_profiles([1, 4], [64]))
    runner = InferCRunner(path, enable_graph=True)
    times = runner.benchmark(4, 64, warmup=2, iterations=7, duration=0.0, seed=1)
    assert len(times) == 7 and all(t > 0 for t in times)
    assert len(runner.benchmark(1, 64, warmup=0, iterations=1, duration=0.2, seed=1)) > 1
    with pytest.raises(BertError, match="exceeds the engine's largest profile batch"):
        runner.benchmark(8, 64, 1, 1, 0.0, 1)


# ---- the shipped fixture model against Hugging Face -------------------------------------------------------------------

@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_fixture_model_matches_hugging_face_logits(gpu, tmp_path, precision, tolerance):
    if not (MODEL_DIR / "model.safetensors").is_file():
        pytest.skip("models/minilm-l6-squad11 not present")
    from helpers.weights import load_hf_folder
    expected = np.load(shared_path("fixtures", "minilm-l6-squad11", "reference", "logits_first10.npz"))
    config = load_config(str(MODEL_DIR))
    path = save_engine(tmp_path / "e.engine", config, load_hf_folder(str(MODEL_DIR)), precision,
                       fixed_profiles([10], [384]))
    out = InferCRunner(path, enable_graph=True).infer_fixed(
        expected["input_ids"], expected["segment_ids"], expected["input_mask"])
    for b, n in enumerate(expected["input_mask"].sum(1)):
        want = np.stack([expected["start_logits"][b, :n], expected["end_logits"][b, :n]], axis=1)
        assert rel_err(out[b, :n], want) < tolerance, b
        if precision == "fp32":
            assert out[b, :n, 0].argmax() == want[:, 0].argmax() and out[b, :n, 1].argmax() == want[:, 1].argmax()


# ---- build/perf ------------------------------------------------------------------------------------------------------

def test_perf_prints_upstreams_report(gpu, perf, tmp_path):
    path = save_engine(tmp_path / "e.engine", HEAD32, random_weights(HEAD32, 15), "fp16", fixed_profiles([1, 4], [64]))
    result = subprocess.run([perf, "-e", path, "-b", "4", "-b", "1", "--sequence_length", "64", "-i", "20", "-w", "3",
                             "--random_seed", "7", "--enable_graph"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in ("[DemoBERT][I] Using BERT inference C++", "[DemoBERT][I] CUDA Graph is enabled",
                 "[DemoBERT][I] === Device Information ===", "[DemoBERT][I] === Software Information ==="):
        assert line in out
    assert re.search(r"^\[DemoBERT\]\[I\] Compute Capability: \d+\.\d+$", out, re.M)
    reports = re.findall(r"^\[DemoBERT\]\[I\] Running (\d+) iterations with Batch Size: (\d+)\n"
                         r"\[DemoBERT\]\[I\] \tTotal Time: ([\d.e+-]+) ms \n"
                         r"\[DemoBERT\]\[I\] \tAverage Time: ([\d.e+-]+) ms\n"
                         r"\[DemoBERT\]\[I\] \t95th Percentile Time: ([\d.e+-]+) ms\n"
                         r"\[DemoBERT\]\[I\] \t99th Percentile Time: ([\d.e+-]+) ms\n"
                         r"\[DemoBERT\]\[I\] \tThroughput: (\d+) sentences/s$", out, re.M)
    assert [(int(n), int(b)) for n, b, *_ in reports] == [(20, 4), (20, 1)]  # in the order given
    for n, b, total, average, p95, p99, throughput in reports:
        assert float(average) == pytest.approx(float(total) / int(n), rel=1e-3)
        assert 0 < float(average) <= float(p95) <= float(p99)
        assert abs(int(throughput) - int(b) * 1000 / float(average)) <= 1 + 1e-5 * int(throughput)
    timed = subprocess.run([perf, "-e", path, "-s", "64", "-i", "1", "-w", "0", "-d", "0.3", "--ramdon_seed", "7"],
                           capture_output=True, text=True, timeout=300)
    assert timed.returncode == 0, timed.stderr
    assert "CUDA Graph is disabled" in timed.stdout
    assert int(re.search(r"Running (\d+) iterations", timed.stdout).group(1)) > 1
    unprofiled = subprocess.run([perf, "-e", path, "-s", "64", "-b", "5"], capture_output=True, text=True, timeout=300)
    assert unprofiled.returncode != 0
    assert "None of the dynamic shape profiles meets the requirement batch = 5" in unprofiled.stderr
