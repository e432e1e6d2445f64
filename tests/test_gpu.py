"""The native GPU engine (helpers/backends/gpu.py, gpu_kernels.py) against independent references.

Each Triton kernel is checked against PyTorch's own float32 operators on fresh random inputs with poisoned outputs;
the whole engine against the numpy reference forward pass (helpers/reference.py) in FP32 (TF32 off) and FP16, on
random weights and on the shipped fixture model. Skips cleanly where PyTorch, Triton or a CUDA GPU is missing.
"""
import numpy as np
import pytest

from conftest import random_inputs, random_weights
from helpers import reference
from helpers.config import BertConfig
from helpers.errors import BertError
from helpers.native_builder import build_native_engine, fixed_profiles, varseqlen_profiles

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():   # checked before importing Triton: see tests/test_gpu_kernels_interpreted.py
    pytest.skip("no CUDA GPU", allow_module_level=True)
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from helpers.backends import gpu_kernels as K  # noqa: E402
from helpers.backends.gpu import (CONTEXT_ATTENTION_CONFIGS, CONTEXT_LAYERNORM_CONFIGS, GpuRunner,  # noqa: E402
                                  token_bucket)

CUDA = torch.device("cuda")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
# ||out - ref|| / ||ref|| bounds: float32 arithmetic lands far below 1e-5; FP16 storage (11-bit mantissa) near 1e-3.
REL_TOL = {torch.float32: 1e-5, torch.float16: 3e-3}
SMALL = BertConfig(num_hidden_layers=2, hidden_size=256, num_attention_heads=4, intermediate_size=1024,
                   vocab_size=500, max_position_embeddings=160, type_vocab_size=2)


@pytest.fixture(autouse=True)
def no_tf32():
    """FP32 engines must compute in IEEE float32; PyTorch's default is already TF32-off, make sure of it."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


def rel_err(out, ref):
    out, ref = (torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a).double().cpu() for a in (out, ref))
    assert torch.isfinite(out).all(), "non-finite output"
    return ((out - ref).norm() / ref.norm()).item()


def poisoned(*shape, dtype):
    return torch.full(shape, float("nan"), dtype=dtype, device=CUDA)


def random_cu_seqlens(gen, num_seqs, max_len):
    lengths = torch.randint(1, max_len + 1, (num_seqs,), generator=gen)
    lengths[0] = max_len  # the longest sequence fills the grid exactly; the others end inside a block
    cu = torch.zeros(num_seqs + 1, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    return cu.to(CUDA), lengths.tolist()


# ---- kernels ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_embed_layernorm_restarts_positions_per_sequence(dtype):
    gen = torch.Generator().manual_seed(1)
    E, vocab, max_pos = 384, 1000, 200
    cu, lengths = random_cu_seqlens(gen, 5, 130)
    T = sum(lengths)
    word, pos, typ = (torch.randn(n, E, generator=gen).to(CUDA, dtype) for n in (vocab, max_pos, 2))
    gamma, beta = (torch.randn(E, generator=gen).to(CUDA) for _ in range(2))
    ids = torch.randint(0, vocab, (T,), generator=gen, dtype=torch.int32).to(CUDA)
    segs = torch.randint(0, 2, (T,), generator=gen, dtype=torch.int32).to(CUDA)
    out = poisoned(T + 7, E, dtype=dtype)
    K.embed_layernorm(ids, segs, cu, 5, 130, word, pos, typ, gamma, beta, 1e-12, out)
    positions = torch.cat([torch.arange(n) for n in lengths]).to(CUDA)
    v = word[ids.long()].float() + typ[segs.long()].float() + pos[positions].float()
    assert rel_err(out[:T], F.layer_norm(v, (E,), gamma, beta, 1e-12)) < REL_TOL[dtype]
    assert torch.isnan(out[T:]).all(), "rows outside the sequences were written"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("head_size,num_heads", [(32, 12), (64, 16)])
def test_varlen_attention_matches_sdpa_per_sequence(dtype, head_size, num_heads):
    gen = torch.Generator().manual_seed(2)
    E = head_size * num_heads
    cu, lengths = random_cu_seqlens(gen, 4, 200)
    T = sum(lengths)
    qkv = torch.randn(T, 3 * E, generator=gen).to(CUDA, dtype)
    out = poisoned(T, E, dtype=dtype)
    K.varlen_attention(qkv, cu, 4, 200, num_heads, out)
    refs = []
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        q, k, v = qkv[lo:hi].float().view(hi - lo, 3, num_heads, head_size).permute(1, 2, 0, 3)
        refs.append(F.scaled_dot_product_attention(q, k, v).permute(1, 0, 2).reshape(hi - lo, E))
    assert rel_err(out, torch.cat(refs)) < REL_TOL[dtype]


@pytest.mark.parametrize("config", sorted({(128, 64, 8, 3), (64, 32, 4, 2), *CONTEXT_ATTENTION_CONFIGS}))
def test_attention_tile_shapes_agree(config):
    """Every tile shape computes the same attention as the default one, on a batch that fills the GPU."""
    gen = torch.Generator().manual_seed(3)
    cu, lengths = random_cu_seqlens(gen, 40, 384)
    qkv = torch.randn(sum(lengths), 3 * 1024, generator=gen).to(CUDA, torch.float16)
    default, other = (poisoned(sum(lengths), 1024, dtype=torch.float16) for _ in range(2))
    K.varlen_attention(qkv, cu, 40, 384, 16, default)
    K.varlen_attention(qkv, cu, 40, 384, 16, other, config=config)
    assert rel_err(other, default) < 2e-3


@pytest.mark.parametrize("config", [None, *CONTEXT_ATTENTION_CONFIGS])
def test_uniform_attention_matches_the_packed_one(config):
    """perf.py's uniform batches (every sequence full length) are attended without reading cu_seqlens: with a
    zeroed cu_seqlens the result is bit for bit the packed kernel's, PDL-launched as in the forward."""
    gen = torch.Generator().manual_seed(6)
    B, S = 2, 384
    qkv = torch.randn(B * S, 3 * 1024, generator=gen).to(CUDA, torch.float16)
    cu = torch.arange(0, B * S + 1, S, dtype=torch.int32, device=CUDA)
    packed, uniform = (poisoned(B * S, 1024, dtype=torch.float16) for _ in range(2))
    pdl = K.pdl_supported()
    K.varlen_attention(qkv, cu, B, S, 16, packed, config=config, pdl=pdl)
    K.varlen_attention(qkv, torch.zeros_like(cu), B, S, 16, uniform, config=config, pdl=pdl, uniform=True)
    assert torch.equal(packed, uniform)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("config", [None, *CONTEXT_LAYERNORM_CONFIGS])   # the tiles the forward may choose
def test_add_layernorm_in_place_and_with_the_squad_head(dtype, config):
    gen = torch.Generator().manual_seed(4)
    T, E = 333, 768
    x, res = (torch.randn(T, E, generator=gen).to(CUDA, dtype) for _ in range(2))
    gamma, beta = (torch.randn(E, generator=gen).to(CUDA) for _ in range(2))
    ref = F.layer_norm(x.float() + res.float(), (E,), gamma, beta, 1e-6)
    out = poisoned(T, E, dtype=dtype)
    K.add_layernorm(x, res, None, gamma, beta, 1e-6, out, config=config)
    assert rel_err(out, ref) < REL_TOL[dtype]
    inplace = x.clone()
    K.add_layernorm(inplace, res, None, gamma, beta, 1e-6, inplace, config=config)
    assert torch.equal(inplace, out)
    head_w, head_b = torch.randn(2, E, generator=gen).to(CUDA), torch.randn(2, generator=gen).to(CUDA)
    logits = poisoned(T, 2, dtype=torch.float32)
    K.add_layernorm_head(x.clone(), res, None, gamma, beta, 1e-6, head_w, head_b, logits)
    assert rel_err(logits, ref.to(dtype).float() @ head_w.T + head_b) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("kind", ["erf", "tanh"])
def test_bias_gelu_in_place(dtype, kind):
    gen = torch.Generator().manual_seed(5)
    x = (3 * torch.randn(257, 1536, generator=gen)).to(CUDA, dtype)
    bias = torch.randn(1536, generator=gen).to(CUDA)
    ref = F.gelu(x.float() + bias, approximate="none" if kind == "erf" else "tanh")
    K.bias_gelu_(x, bias, kind)
    assert rel_err(x, ref) < REL_TOL[dtype]


@pytest.mark.parametrize("M", [1, 128, 1000])
@pytest.mark.parametrize("gelu", [None, "erf", "tanh"])
def test_triton_linear_with_fused_epilogue(M, gelu):
    gen = torch.Generator().manual_seed(6)
    K_, N = 1024, 768
    a = torch.randn(M, K_, generator=gen).to(CUDA, torch.float16)
    w = (torch.randn(N, K_, generator=gen) / 32).to(CUDA, torch.float16)
    bias = torch.randn(N, generator=gen).to(CUDA, torch.float16)
    out = poisoned(M, N, dtype=torch.float16)
    K.linear(a, w, bias, out, gelu=gelu)
    ref = a.float() @ w.float().T + bias.float()
    if gelu:
        ref = F.gelu(ref, approximate="none" if gelu == "erf" else "tanh")
    assert rel_err(out, ref) < REL_TOL[torch.float16]


@pytest.mark.parametrize("splits,head", [(3, False), (8, True)])
def test_split_k_partials_are_summed_by_the_layernorm(splits, head):
    """Split-K shares of K (uneven: 8 blocks over 3 splits) stored as float32 partials, then reduced with the bias
    and the residual inside the LayerNorm (or LayerNorm + SQuAD head) kernel."""
    gen = torch.Generator().manual_seed(8)
    M, K_, N = 200, 1024, 768
    a = torch.randn(M, K_, generator=gen).to(CUDA, torch.float16)
    w = (torch.randn(N, K_, generator=gen) / 32).to(CUDA, torch.float16)
    bias = torch.randn(N, generator=gen).to(CUDA, torch.float16)
    res = torch.randn(M, N, generator=gen).to(CUDA, torch.float16)
    gamma, beta = (torch.randn(N, generator=gen).to(CUDA) for _ in range(2))
    parts = poisoned(splits, M, N, dtype=torch.float32)
    K.linear(a, w, bias, parts, config=(128, 64, 128, 4, 3), split_k=splits)
    ref_product = a.float() @ w.float().T
    assert rel_err(parts.sum(0), ref_product) < 1e-5
    ref = F.layer_norm(ref_product + bias.float() + res.float(), (N,), gamma, beta, 1e-6)
    if head:
        head_w, head_b = torch.randn(2, N, generator=gen).to(CUDA), torch.randn(2, generator=gen).to(CUDA)
        logits = poisoned(M, 2, dtype=torch.float32)
        K.add_layernorm_head(parts, res, bias, gamma, beta, 1e-6, head_w, head_b, logits)
        assert rel_err(logits, ref.half().float() @ head_w.T + head_b) < 3e-3
    else:
        out = poisoned(M, N, dtype=torch.float16)
        K.add_layernorm(parts, res, bias, gamma, beta, 1e-6, out)
        assert rel_err(out, ref) < REL_TOL[torch.float16]


@pytest.mark.skipif(not torch.cuda.get_device_capability() >= (9, 0), reason="bulk L2 prefetch needs Hopper")
def test_kernels_that_prefetch_weights_compute_the_same():
    """The kernels that bring the next products' weights into L2 (few-token forwards) give bit-identical results,
    whatever the tensors' sizes against the launch: 2,002 bytes (not whole 16-byte units), and 8 MB over one
    program's 256 threads (32 KB requests) or over many programs."""
    gen = torch.Generator().manual_seed(9)
    odd, big = (torch.randn(n, generator=gen).to(CUDA, torch.float16) for n in (1001, 4 << 20))
    for prefetch in [(odd,), (big, odd), (odd, big)]:
        for T in (2, 384):   # one LayerNorm program (2 rows x 8 warps), or 192
            x, res = (torch.randn(T, 1024, generator=gen).to(CUDA, torch.float16) for _ in range(2))
            gamma, beta = (torch.randn(1024, generator=gen).to(CUDA) for _ in range(2))
            plain, fetching = (poisoned(T, 1024, dtype=torch.float16) for _ in range(2))
            K.add_layernorm(x, res, None, gamma, beta, 1e-6, plain, pdl=True)
            K.add_layernorm(x, res, None, gamma, beta, 1e-6, fetching, pdl=True, prefetch=prefetch)
            assert torch.equal(plain, fetching)
        cu, lengths = random_cu_seqlens(gen, 3, 384)
        qkv = torch.randn(sum(lengths), 3 * 1024, generator=gen).to(CUDA, torch.float16)
        plain, fetching = (poisoned(sum(lengths), 1024, dtype=torch.float16) for _ in range(2))
        K.varlen_attention(qkv, cu, 3, 384, 16, plain, pdl=True)
        K.varlen_attention(qkv, cu, 3, 384, 16, fetching, pdl=True, prefetch=prefetch)
        assert torch.equal(plain, fetching)
        ids = torch.randint(0, 500, (sum(lengths),), generator=gen, dtype=torch.int32).to(CUDA)
        segs = torch.randint(0, 2, (sum(lengths),), generator=gen, dtype=torch.int32).to(CUDA)
        word, pos, types = (torch.randn(n, 1024, generator=gen).to(CUDA, torch.float16) for n in (500, 384, 2))
        plain, fetching = (poisoned(sum(lengths), 1024, dtype=torch.float16) for _ in range(2))
        K.embed_layernorm(ids, segs, cu, 3, 384, word, pos, types, gamma, beta, 1e-6, plain, pdl=True)
        K.embed_layernorm(ids, segs, cu, 3, 384, word, pos, types, gamma, beta, 1e-6, fetching, pdl=True,
                          prefetch=prefetch)
        assert torch.equal(plain, fetching)
    torch.cuda.synchronize()   # a faulting prefetch would surface here at the latest


def test_cublaslt_gelu_epilogue_is_the_tanh_approximation():
    """The engine uses torch._addmm_activation for FP16 tanh-GELU engines: it must compute tanh GELU on CUDA."""
    gen = torch.Generator().manual_seed(7)
    a = torch.randn(384, 1024, generator=gen).to(CUDA, torch.float16)
    w = (torch.randn(4096, 1024, generator=gen) / 32).to(CUDA, torch.float16)
    bias = torch.randn(4096, generator=gen).to(CUDA, torch.float16)
    out = poisoned(384, 4096, dtype=torch.float16)
    torch._addmm_activation(bias, a, w.T, use_gelu=True, out=out)
    pre = a.float() @ w.float().T + bias.float()
    assert rel_err(out, F.gelu(pre, approximate="tanh")) < REL_TOL[torch.float16]


@pytest.mark.parametrize("M", [384, 1000])
@pytest.mark.parametrize("epilogue,accumulate,splits", [("none", False, 1), ("bias", False, 1),
                                                        ("gelu_bias", False, 1), ("none", True, 1),
                                                        ("none", False, 2), ("none", False, 8)])
def test_every_cublaslt_candidate_computes_the_product(M, epilogue, accumulate, splits):
    """Each algorithm the tuner may pick (cublaslt.py through ctypes: layouts, transposes, epilogues, beta = 1,
    split-K as a strided batch of float32 partials; the heuristic's picks and their neighbours) against float32
    PyTorch, on a poisoned output (or a random one it accumulates into)."""
    from helpers.backends.cublaslt import LtProducts
    gen = torch.Generator().manual_seed(9)
    K_, N = 1024, 768
    a = torch.randn(M, K_, generator=gen).to(CUDA, torch.float16)
    w = (torch.randn(N, K_, generator=gen) / 32).to(CUDA, torch.float16)
    bias = torch.randn(N, generator=gen).to(CUDA, torch.float16)
    ref = a.float() @ w.float().T
    if epilogue != "none":
        ref += bias.float()
    if epilogue == "gelu_bias":
        ref = F.gelu(ref, approximate="tanh")
    lt = LtProducts(CUDA)
    picks = lt.candidates(M, N, K_, epilogue, bias, splits=splits)
    assert picks, "cuBLASLt offered no algorithm"
    plans = lt.candidates(M, N, K_, epilogue, bias, splits=splits, neighbours=True)
    if torch.cuda.get_device_capability()[0] == 9:   # Hopper's kernels take cluster shapes and custom options
        assert len(plans) > len(picks), "no neighbour of the heuristic's picks was accepted"
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    for plan in plans:
        residual = torch.randn(M, N, generator=gen).to(CUDA, torch.float16)
        if splits > 1:
            out = poisoned(splits, M, N, dtype=torch.float32)
        else:
            out = residual.clone() if accumulate else poisoned(M, N, dtype=torch.float16)
        with torch.cuda.stream(stream):
            lt.run(plan, a, w, bias, out, accumulate=out if accumulate else None)
        stream.synchronize()
        if splits > 1:
            assert rel_err(out.sum(0), ref) < 1e-5   # float32 partials of float32 accumulation
        else:
            assert rel_err(out, ref + residual.float() if accumulate else ref) < REL_TOL[torch.float16]


def test_token_buckets_bound_padding_and_graph_count():
    buckets = {token_bucket(t, 49152) for t in range(1, 49153)}
    assert len(buckets) < 130
    for t in (1, 63, 64, 65, 1000, 4097, 49151):
        assert t <= token_bucket(t, 49152) <= t + max(63, t / 8)
    assert token_bucket(49152, 49152) == 49152


# ---- the engine ---------------------------------------------------------------------------------------------------

def engine(config, weights, precision, profiles, variable_seqlen=False, numerics=None):
    eng = build_native_engine(config, weights, precision=precision, profiles=profiles, variable_seqlen=variable_seqlen)
    if numerics is not None:
        eng.numerics = numerics
    return eng


@pytest.fixture(scope="module")
def small_weights():
    return random_weights(SMALL, seed=11)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("gelu,emb_eps", [("erf", 1e-12), ("tanh", 0.0)])
@pytest.mark.parametrize("lengths", [[60, 1, 37, 20], [160, 1, 77, 129]], ids=["few-tokens", "many-tokens"])
@pytest.mark.parametrize("pdl", [None, False], ids=["pdl-auto", "no-pdl"])
def test_engine_matches_reference_forward(small_weights, precision, gelu, emb_eps, lengths, pdl):
    """FP16 with PDL (Hopper): for 118 tokens every kernel is PDL-chained, the products Triton's; for 367 (384
    rows) the products are cuBLAS's and the Triton kernels between them PDL-launched. Without: 118 tokens take the
    split-K output product and the fused erf product, 367 the cuBLAS ones."""
    numerics = reference.Numerics(gelu=gelu, emb_eps=emb_eps, ln_eps=1e-3 if precision == "fp16" else 1e-7)
    eng = engine(SMALL, small_weights, precision, fixed_profiles([1, 4], [160]),
                 numerics={"gelu": gelu, "emb_eps": emb_eps, "layer_norm_eps": numerics.ln_eps})
    runner = GpuRunner(eng, pdl=pdl)
    hopper = torch.cuda.get_device_capability()[0] >= 9
    assert runner.pdl == (pdl is None and precision == "fp16" and hopper)   # the PDL path really runs where it can
    ids, segs, mask = random_inputs(SMALL, 4, 160, seed=12, lengths=lengths)
    out = runner.infer_fixed(ids, segs, mask)
    ref = reference.forward(small_weights, SMALL, ids, segs, mask, numerics)
    for b, n in enumerate(mask.sum(1)):
        assert rel_err(out[b, :n], ref[b, :n]) < 10 * REL_TOL[DTYPES[precision]], (b, n)
        assert not out[b, n:].any(), "padding positions must hold 0"


@pytest.mark.parametrize("lengths,prefetched", [([60, 1, 37, 20], True), ([160, 1, 77, 129], False)],
                         ids=["few-tokens", "many-tokens"])
def test_forward_prefetches_each_product_weight_once_and_changes_no_result(small_weights, lengths, prefetched,
                                                                            monkeypatch):
    """On the all-Triton PDL chain (118 tokens: 128 rows) our kernels ask for the next products' weights to be
    brought into L2: every product's weight exactly once per forward. Before cuBLAS's products (367 tokens: 384
    rows) nothing is prefetched. Either way the logits are bit for bit those of a runner that does not prefetch."""
    eng = engine(SMALL, small_weights, "fp16", fixed_profiles([1, 4], [160]))
    runner = GpuRunner(eng)
    if not runner.pdl:
        pytest.skip("no PDL on this GPU: nothing is prefetched")
    requested = []
    real = K.prefetch_args
    monkeypatch.setattr(K, "prefetch_args", lambda tensors, *args: requested.extend(tensors) or real(tensors, *args))
    ids, segs, mask = random_inputs(SMALL, 4, 160, seed=17, lengths=lengths)
    out = runner.infer_fixed(ids, segs, mask)
    layers = runner.weights.layers
    weights = [getattr(layer, role).weight for layer in layers for role in ("qkv", "attn_out", "ffn_in", "ffn_out")]
    assert sorted(t.data_ptr() for t in requested) == sorted(t.data_ptr() for t in weights if prefetched)
    assert np.array_equal(out, GpuRunner(eng, prefetch=False).infer_fixed(ids, segs, mask))


@pytest.mark.parametrize("gemm", ["cublas", "triton"])
def test_gemm_routes_agree(small_weights, gemm):
    eng = engine(SMALL, small_weights, "fp16", fixed_profiles([2], [160]))
    ids, segs, mask = random_inputs(SMALL, 2, 160, seed=13)
    auto = GpuRunner(eng).infer_fixed(ids, segs, mask)
    other = GpuRunner(eng, gemm=gemm).infer_fixed(ids, segs, mask)
    assert rel_err(other, auto) < 5e-3


@pytest.mark.parametrize("attention", ["sdpa", "triton"])
def test_attention_routes_on_perf_batches_match_reference(small_weights, attention):
    """perf.py's dense batches (640 tokens: past the PDL path) by either attention route against the reference, in
    a captured graph (SDPA's output lives in the graphs' shared pool)."""
    eng = engine(SMALL, small_weights, "fp16", fixed_profiles([4], [160]))
    ids, segs, mask = random_inputs(SMALL, 4, 160, seed=15, lengths=[160] * 4)
    ref = reference.forward(small_weights, SMALL, ids, segs, mask)
    runner = GpuRunner(eng, attention=attention)
    cu = np.arange(0, 641, 160)
    with torch.cuda.stream(runner.stream):
        runner._prepare(ids.reshape(-1), segs.reshape(-1), cu, 160, benchmark=True)()
        out = runner.buffers.logits[:640].cpu().numpy().reshape(4, 160, 2)
    assert list(runner._graphs) == [(640, 4, 160, True)]
    assert rel_err(out, ref) < 10 * REL_TOL[torch.float16]


def test_benchmark_tunes_products_and_inference_uses_them(small_weights):
    """perf.py's first run of a shape times cuBLASLt's algorithms for each of the four products; later inference
    on that many rows takes the winners and agrees with an untuned runner, whichever kind of plan won: forced
    split-K plans (float32 partials the LayerNorm sums) and other algorithms compute the same forward."""
    eng = engine(SMALL, small_weights, "fp16", fixed_profiles([2], [160]))
    runner = GpuRunner(eng)
    runner.benchmark(2, 160, warmup=1, iterations=2, duration=0.0, seed=3)   # 320 rows: past the PDL path
    tuned = {(t["role"], t["rows"]) for t in runner.product_tuning}
    assert tuned == {(role, 320) for role in ("qkv", "attn_out", "ffn_in", "ffn_out")}
    assert all(t["candidates"] > 0 for t in runner.product_tuning)   # cuBLASLt's heuristic answered (ctypes)
    assert {t["role"] for t in runner.product_tuning if t["with_layernorm"]} == {"attn_out", "ffn_out"}
    ids, segs, mask = random_inputs(SMALL, 2, 160, seed=16, lengths=[160] * 2)
    untuned = GpuRunner(eng, tune_products=False)
    expected = untuned.infer_fixed(ids, segs, mask)
    assert not untuned.product_tuning
    assert rel_err(runner.infer_fixed(ids, segs, mask), expected) < 5e-3
    E, I = SMALL.hidden_size, SMALL.intermediate_size
    for role, (N, K_), epilogue, splits in (("qkv", (3 * E, E), "bias", 1), ("ffn_in", (I, E), "none", 1),
                                            ("attn_out", (E, E), "none", 4), ("ffn_out", (E, I), "none", 8)):
        bias = getattr(runner.weights.layers[0], role).bias
        runner._lt_plans[(role, 320)] = runner._lt.candidates(320, N, K_, epilogue, bias, splits=splits)[-1]
    runner.reset_graphs()
    for _ in range(3):   # eager, captured, replayed
        assert rel_err(runner.infer_fixed(ids, segs, mask), expected) < 5e-3
    assert len(runner._graphs) == 1


def test_close_choices_are_timed_again_in_the_whole_forward(small_weights, monkeypatch):
    """Up to 512 rows perf.py's tuning times each product's close runners-up, and a few tile configs of the
    attention and LayerNorm kernels, again in the whole forward's graph and keeps the fastest there (here every
    product has runners-up: any plan counts as close); the forward with the choices so made agrees with an
    untuned runner. Over 512 rows nothing is timed in context."""
    import helpers.backends.gpu as gpu
    monkeypatch.setattr(gpu, "CONTEXT_SLACK", 10.0)
    eng = engine(SMALL, small_weights, "fp16", fixed_profiles([2, 4], [160]))
    runner = GpuRunner(eng)
    runner.benchmark(2, 160, warmup=1, iterations=2, duration=0.0, seed=3)   # 320 rows
    kinds = ["qkv", "attn_out", "ffn_in", "ffn_out", "attention", "layernorm"]
    assert [t["choice"] for t in runner.context_tuning] == kinds * gpu.CONTEXT_PASSES
    for t in runner.context_tuning:
        assert len(t["forward_ms"]) >= 2
        assert t["forward_ms"][t["chosen"]] == min(t["forward_ms"])
    key = (320, 2, 160, True)
    defaults = {"attention": K.attention_config(2, 160, SMALL.num_attention_heads, SMALL.head_size, torch.float16),
                "layernorm": K.layernorm_config(SMALL.hidden_size, 320)}
    for kernel, default in defaults.items():   # every tile of the constants, the default (None) timed only once
        options = runner._tile_options(kernel, key)
        tiles = gpu.CONTEXT_ATTENTION_CONFIGS if kernel == "attention" else gpu.CONTEXT_LAYERNORM_CONFIGS
        assert {tuple(default), *(tuple(t) for t in tiles)} == {tuple(t or default) for t in options}
        assert len(options) == len({tuple(t or default) for t in options})
    for t in runner.context_tuning[-len(kinds):]:   # the last pass's choices are the ones installed
        if t["choice"] in defaults:
            assert runner._kernel_configs[(t["choice"], key)] == runner._tile_options(t["choice"], key)[t["chosen"]]
        else:
            assert runner._lt_plans[(t["choice"], 320)] is runner._lt_runners_up[(t["choice"], 320)][t["chosen"]]
    ids, segs, mask = random_inputs(SMALL, 2, 160, seed=16, lengths=[160] * 2)
    untuned = GpuRunner(eng, tune_products=False)
    outputs = []
    for r in (runner, untuned):   # the benchmark's own graph: the choices made in context are in it
        with torch.cuda.stream(r.stream):
            r._prepare(ids.reshape(-1), segs.reshape(-1), np.array([0, 160, 320]), 160, benchmark=True)()
            outputs.append(r.buffers.logits[:320].cpu())
    assert not untuned.context_tuning
    assert rel_err(outputs[0], outputs[1]) < 5e-3
    assert rel_err(runner.infer_fixed(ids, segs, mask), untuned.infer_fixed(ids, segs, mask)) < 5e-3
    runner.benchmark(4, 160, warmup=1, iterations=2, duration=0.0, seed=3)   # 640 rows
    assert {t["rows"] for t in runner.context_tuning} == {320}
    assert {rows for _, rows in runner._lt_runners_up} == {320}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_packed_equals_padded_and_graph_equals_eager(small_weights, precision):
    eng = engine(SMALL, small_weights, precision, varseqlen_profiles([8], 160), variable_seqlen=True)
    ids, segs, mask = random_inputs(SMALL, 6, 160, seed=14)
    lengths = mask.sum(1)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat_ids = np.concatenate([ids[b, :n] for b, n in enumerate(lengths)])
    flat_segs = np.concatenate([segs[b, :n] for b, n in enumerate(lengths)])
    runner = GpuRunner(eng)
    first = runner.infer_packed(flat_ids, flat_segs, cu, int(lengths.max()))     # a shape's first run: eager
    assert not runner._graphs
    packed = runner.infer_packed(flat_ids, flat_segs, cu, int(lengths.max()))    # second: captured and replayed
    assert len(runner._graphs) == 1
    assert packed.shape == (2, cu[-1]) and packed.dtype == np.float32
    tol = 1e-5 if precision == "fp32" else 2e-3
    assert rel_err(packed, first) < tol
    padded = runner.infer_fixed(ids, segs, mask)                                  # the same graph again
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(packed[:, cu[b]:cu[b + 1]].T, padded[b, :n])
    eager = GpuRunner(eng, use_graphs=False)
    assert rel_err(eager.infer_packed(flat_ids, flat_segs, cu, int(lengths.max())), packed) < tol
    # A shorter batch replays a graph of another token bucket (other GEMM shapes, so rounding may differ);
    # nothing of the first batch may leak into it.
    for _ in range(2):
        again = runner.infer_packed(flat_ids[:cu[2]], flat_segs[:cu[2]], cu[:3], int(lengths[:2].max()))
    assert len(runner._graphs) == 2
    assert rel_err(again, packed[:, :cu[2]]) < 3 * tol


def test_benchmark_times_graph_replays_and_checks_profiles(small_weights):
    runner = GpuRunner(engine(SMALL, small_weights, "fp16", fixed_profiles([1, 4], [128])))
    times = runner.benchmark(4, 128, warmup=2, iterations=5, duration=0.0, seed=1)
    assert len(times) == 5 and all(t > 0 for t in times)
    with pytest.raises(BertError, match="None of the dynamic shape profiles"):
        runner.benchmark(8, 128, 1, 1, 0.0, 1)
    with pytest.raises(BertError, match="profile"):
        runner.infer_fixed(*random_inputs(SMALL, 2, 64, seed=2))


def test_benchmark_forward_computes_the_perf_batch(small_weights):
    """The replay that gpu_bench.py's compare phase times is the forward of perf.py's batch: its logits are the
    reference forward's of the same ids and segments (all-ones mask)."""
    from helpers.backends.inputs import perf_inputs
    runner = GpuRunner(engine(SMALL, small_weights, "fp32", fixed_profiles([3], [96])))
    run = runner.benchmark_forward(3, 96, seed=5)
    runner.buffers.logits.zero_()
    with torch.cuda.stream(runner.stream):
        run()
    runner.stream.synchronize()
    logits = runner.buffers.logits[:3 * 96].cpu().numpy()
    ids, segs = perf_inputs(3, 96, 5, SMALL.vocab_size, SMALL.type_vocab_size)
    ref = reference.forward(small_weights, SMALL, ids.reshape(3, 96), segs.reshape(3, 96), np.ones((3, 96), np.int32))
    assert rel_err(logits, np.asarray(ref).reshape(-1, 2)) < REL_TOL[torch.float32]


def test_bad_inputs_raise_one_line_errors(small_weights):
    runner = GpuRunner(engine(SMALL, small_weights, "fp16", varseqlen_profiles([2], 160), variable_seqlen=True))
    ids = np.array([1, 2, 3], np.int32)
    with pytest.raises(BertError, match="token id"):
        runner.infer_packed(np.array([1, 2, SMALL.vocab_size], np.int32), np.zeros(3, np.int32), [0, 3], 3)
    with pytest.raises(BertError, match="cu_seqlens"):
        runner.infer_packed(ids, np.zeros(3, np.int32), [0, 2], 3)
    with pytest.raises(BertError, match="profile"):
        runner.infer_packed(np.ones(3, np.int32), np.zeros(3, np.int32), [0, 1, 2, 3], 1)
    with pytest.raises(BertError, match="fp32 and fp16"):
        eng = engine(SMALL, small_weights, "fp16", varseqlen_profiles([2], 160))
        eng.precision = "int8"
        GpuRunner(eng)


def test_memory_after_load_is_weights_plus_activations(small_weights):
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    runner = GpuRunner(engine(SMALL, small_weights, "fp16", fixed_profiles([8], [160])))
    inputs = random_inputs(SMALL, 8, 160, seed=3)
    runner.infer_fixed(*inputs)
    runner.infer_fixed(*inputs)   # the second run captures a graph: that must not allocate activations either
    report = runner.memory_report()
    held = torch.cuda.memory_allocated() - before
    # cuBLAS keeps one workspace per stream (32 MiB on Hopper); the runner uses a single stream.
    assert held <= 1.2 * (report["weights"] + report["activations"]) + (40 << 20)


# ---- the shipped fixture model -------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fixture_model_matches_reference(fixture_model, precision):
    config, weights = fixture_model
    runner = GpuRunner(engine(config, weights, precision, fixed_profiles([3], [384])))
    ids, segs, mask = random_inputs(config, 3, 384, seed=21, lengths=[384, 171, 9])
    out = runner.infer_fixed(ids, segs, mask)
    ref = reference.forward(weights, config, ids, segs, mask)
    for b, n in enumerate(mask.sum(1)):
        assert rel_err(out[b, :n], ref[b, :n]) < (1e-5 if precision == "fp32" else 1e-2)
