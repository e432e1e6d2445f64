"""The reference forward pass against Hugging Face, and the CPU engine against the reference."""
import numpy as np
import pytest

from conftest import MODEL_DIR, shared_path
from helpers import reference
from helpers.backends import cpu
from helpers.backends.cpu import CpuRunner
from helpers.config import BertConfig
from helpers.engine_format import Profile
from helpers.errors import BertError
from helpers.native_builder import build_native_engine, varseqlen_profiles
from helpers.weights import from_state_dict

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def fixture_inputs():
    ref = np.load(shared_path("fixtures", "minilm-l6-squad11", "reference", "logits_first10.npz"))
    return {k: ref[k] for k in ref.files}


def random_hf_model(seed, hidden_act="gelu", **shape):
    sizes = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128, vocab_size=100,
                 max_position_embeddings=64, type_vocab_size=2)
    sizes.update(shape)
    torch.manual_seed(seed)
    hf = transformers.BertForQuestionAnswering(transformers.BertConfig(hidden_act=hidden_act, **sizes)).eval()
    with torch.no_grad():
        for p in hf.parameters():  # weights larger than the init scale, so differences are not hidden
            p.normal_(0.0, 0.2)
    weights = from_state_dict({k: v.numpy() for k, v in hf.state_dict().items()})
    return BertConfig(hidden_act=hidden_act, **sizes), weights, hf


def hf_logits(hf, ids, segs, mask):
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids, dtype=torch.long), token_type_ids=torch.tensor(segs, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long))
    return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)


def random_batch(rng, B, S, vocab, lengths=None):
    lengths = np.asarray(lengths if lengths is not None else rng.integers(1, S + 1, size=B))
    ids = rng.integers(0, vocab, size=(B, S)).astype(np.int32)
    segs = rng.integers(0, 2, size=(B, S)).astype(np.int32)
    mask = (np.arange(S)[None, :] < lengths[:, None]).astype(np.int32)
    return ids, segs, mask, lengths


def assert_close_on_tokens(got, expected, lengths, atol):
    for row, n in enumerate(lengths):
        np.testing.assert_allclose(got[row, :n], expected[row, :n], atol=atol, rtol=0)


def cpu_runner(config, weights, precision="fp32", threads=None):
    engine = build_native_engine(config, weights, precision=precision, profiles=varseqlen_profiles([8], 64),
                                 variable_seqlen=True)
    return CpuRunner(engine, threads=threads)


# ---- reference vs Hugging Face ---------------------------------------------------------------------------------
def test_reference_matches_huggingface_and_fixture_logits(fixture_model, fixture_inputs):
    config, weights = fixture_model
    ids, segs, mask = (fixture_inputs[k][:3] for k in ("input_ids", "segment_ids", "input_mask"))
    lengths = mask.sum(1)
    got = reference.forward(weights, config, ids, segs, mask)
    hf = transformers.BertForQuestionAnswering.from_pretrained(str(MODEL_DIR), dtype=torch.float32).eval()
    assert_close_on_tokens(got, hf_logits(hf, ids, segs, mask), lengths, atol=1e-4)
    expected = np.stack([fixture_inputs["start_logits"][:3], fixture_inputs["end_logits"][:3]], -1)
    assert_close_on_tokens(got, expected, lengths, atol=1e-4)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_reference_matches_huggingface_on_random_models(hidden_act):
    config, weights, hf = random_hf_model(1, hidden_act)
    ids, segs, mask, lengths = random_batch(np.random.default_rng(2), 3, 40, config.vocab_size)
    assert_close_on_tokens(reference.forward(weights, config, ids, segs, mask), hf_logits(hf, ids, segs, mask),
                           lengths, atol=1e-4)


def test_demobert_numerics_differ_only_slightly(fixture_model, fixture_inputs):
    """tanh GELU and TensorRT's LayerNorm epsilons move the fixture's logits a little (its README: < 0.02)."""
    config, weights = fixture_model
    ids, segs, mask = (fixture_inputs[k][:2] for k in ("input_ids", "segment_ids", "input_mask"))
    exact = reference.forward(weights, config, ids, segs, mask)
    trt = reference.forward(weights, config, ids, segs, mask, reference.Numerics.demobert("fp32"))
    diff = max(np.abs(exact[r, :n] - trt[r, :n]).max() for r, n in enumerate(mask.sum(1)))
    assert 1e-6 < diff < 0.05


# ---- CPU engine vs reference -----------------------------------------------------------------------------------
def test_cpu_engine_matches_reference_on_fixture(fixture_model, fixture_inputs):
    config, weights = fixture_model
    ids, segs, mask = (fixture_inputs[k][:4] for k in ("input_ids", "segment_ids", "input_mask"))
    lengths = mask.sum(1)
    expected = reference.forward(weights, config, ids, segs, mask)
    got = cpu_runner(config, weights).infer_fixed(ids, segs, mask)
    assert_close_on_tokens(got, expected, lengths, atol=1e-4)
    for row, n in enumerate(lengths):
        assert np.all(got[row, n:] == 0)  # padding positions cost nothing and read 0
    fp16 = cpu_runner(config, weights, "fp16").infer_fixed(ids, segs, mask)
    assert_close_on_tokens(fp16, expected, lengths, atol=0.05)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
@pytest.mark.parametrize("threads", [1, 2])
def test_cpu_engine_matches_reference_on_random_models(hidden_act, threads):
    config, weights, _ = random_hf_model(3, hidden_act, num_attention_heads=2)
    ids, segs, mask, lengths = random_batch(np.random.default_rng(4), 5, 48, config.vocab_size, [48, 1, 17, 30, 2])
    got = cpu_runner(config, weights, threads=threads).infer_fixed(ids, segs, mask)
    assert_close_on_tokens(got, reference.forward(weights, config, ids, segs, mask), lengths, atol=1e-4)


def test_packed_equals_padded_and_chunking_is_invisible(monkeypatch):
    config, weights, _ = random_hf_model(5)
    runner = cpu_runner(config, weights)
    ids, segs, mask, lengths = random_batch(np.random.default_rng(6), 6, 32, config.vocab_size)
    padded = runner.infer_fixed(ids, segs, mask)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    packed_ids = np.concatenate([ids[r, :n] for r, n in enumerate(lengths)])
    packed_segs = np.concatenate([segs[r, :n] for r, n in enumerate(lengths)])
    packed = runner.infer_packed(packed_ids, packed_segs, cu, int(lengths.max()))
    assert packed.shape == (2, lengths.sum())
    for r, n in enumerate(lengths):
        np.testing.assert_allclose(packed[:, cu[r]:cu[r + 1]].T, padded[r, :n], atol=1e-6)
    monkeypatch.setattr(cpu, "TOKENS_PER_CHUNK", 40)  # forces several chunks
    np.testing.assert_allclose(runner.infer_packed(packed_ids, packed_segs, cu), packed, atol=1e-6)


def test_erf_polynomial_is_accurate():
    from scipy.special import erf
    x = np.linspace(-6, 6, 100001, dtype=np.float32)
    assert np.abs(cpu.erf_(x.copy()) - erf(x.astype(np.float64))).max() < 1e-6


@pytest.mark.parametrize("bad, message", [
    (dict(ids=[0, 1, 100]), "token id out of range"),
    (dict(segs=[0, 0, 2]), "segment id out of range"),
    (dict(cu=[0, 2]), "cu_seqlens"),
    (dict(cu=[0, 0, 3]), "cu_seqlens"),
])
def test_cpu_engine_rejects_bad_packed_input(bad, message):
    config, weights, _ = random_hf_model(7)
    runner = cpu_runner(config, weights)
    args = dict(ids=[0, 1, 2], segs=[0, 0, 1], cu=[0, 3])
    args.update(bad)
    with pytest.raises(BertError, match=message):
        runner.infer_packed(np.array(args["ids"]), np.array(args["segs"]), np.array(args["cu"]))


def test_cpu_engine_rejects_sequences_beyond_the_model():
    config, weights, _ = random_hf_model(8, max_position_embeddings=16)
    runner = cpu_runner(config, weights)
    with pytest.raises(BertError, match="exceeds the model's 16 positions"):
        runner.infer_fixed(*random_batch(np.random.default_rng(0), 1, 20, config.vocab_size, [20])[:3])


def test_native_profiles_accept_the_shapes_a_tensorrt_plan_would():
    """builder.py's native engines and its TensorRT plans from the same -b/-s take the same shapes, profile for
    profile (a fully static plan has none: its one shape is its inputs')."""
    import itertools

    from helpers import trt_builder
    from helpers.native_builder import fixed_profiles
    for bs, ss, independent in itertools.product([[1], [4], [2, 4], [8, 1, 2]], [[32], [64, 32], [16, 48, 96]],
                                                 [False, True]):
        native = fixed_profiles(sorted(set(bs)), sorted(set(ss)), independent)
        plan = [Profile(*((lo[d], opt[d], hi[d]) for d in (0, 1)))
                for lo, opt, hi in (p["input_ids"] for p in trt_builder.fixed_profiles(bs, ss, independent))]
        assert native == (plan or [Profile((bs[0],) * 3, (ss[0],) * 3)]), (bs, ss, independent)


def test_benchmark_returns_one_time_per_iteration():
    config, weights, _ = random_hf_model(9)
    times = cpu_runner(config, weights).benchmark(2, 16, warmup=1, iterations=5, duration=0, seed=1)
    assert len(times) == 5 and all(t > 0 for t in times)


def test_native_profiles_follow_upstream():
    from helpers.native_builder import fixed_profiles
    assert fixed_profiles([1], [384]) == [Profile((1, 1, 1), (384, 384, 384))]
    assert fixed_profiles([8, 1], [384, 128]) == [Profile((1, 1, 1), (128,) * 3), Profile((1, 1, 1), (384,) * 3),
                                                  Profile((1, 8, 8), (128,) * 3), Profile((1, 8, 8), (384,) * 3)]
    assert fixed_profiles([8, 1], [128, 384], distributive_independence=True) == [Profile((1, 8, 8), (384,) * 3)]
    # one -b: the batch is static (upstream's network), with one -s or several
    assert fixed_profiles([4], [64, 32]) == [Profile((4, 4, 4), (32,) * 3), Profile((4, 4, 4), (64,) * 3)]
    assert varseqlen_profiles([4, 1], 256) == [Profile((1, 4, 4), (1, 256, 256)), Profile((1, 1, 1), (1, 256, 256))]
