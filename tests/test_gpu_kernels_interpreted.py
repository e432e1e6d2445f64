"""The GPU engine's Triton kernels run by Triton's interpreter on the CPU, against PyTorch's float32 operators.

This lets machines without a GPU (CI) check the kernels' arithmetic and indexing; tests/test_gpu.py runs the same
kernels compiled on a GPU. Skips where PyTorch or Triton is missing, and on GPU machines (the compiled suite covers
them there, and one process cannot hold both the interpreted and the compiled kernels).
"""
import os
import sys

import pytest

torch = pytest.importorskip("torch")
if torch.cuda.is_available():
    pytest.skip("GPU present: tests/test_gpu.py runs the compiled kernels", allow_module_level=True)
if "triton" in sys.modules:
    pytest.skip("Triton was imported before interpretation could be chosen", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"   # Triton reads it when imported and when kernels are defined: set it first
pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from helpers.backends import gpu_kernels as K  # noqa: E402
from helpers.backends.gpu import CONTEXT_ATTENTION_CONFIGS, CONTEXT_LAYERNORM_CONFIGS  # noqa: E402


def rel_err(out, ref):
    out, ref = out.double(), ref.double()
    assert torch.isfinite(out).all(), "non-finite output"
    return ((out - ref).norm() / ref.norm()).item()


def cu_seqlens(lengths):
    cu = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu[1:] = torch.tensor(lengths).cumsum(0)
    return cu


TOL = {torch.float32: 1e-5, torch.float16: 3e-3}
LENGTHS = [5, 33, 1, 17]   # one sequence per block-size case: shorter than, longer than and equal to a block


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_embed_layernorm(dtype):
    gen = torch.Generator().manual_seed(1)
    E, cu, T = 48, cu_seqlens(LENGTHS), sum(LENGTHS)
    word, pos, typ = (torch.randn(n, E, generator=gen).to(dtype) for n in (40, 36, 2))
    gamma, beta = torch.randn(E, generator=gen), torch.randn(E, generator=gen)
    ids = torch.randint(0, 40, (T,), generator=gen, dtype=torch.int32)
    segs = torch.randint(0, 2, (T,), generator=gen, dtype=torch.int32)
    out = torch.full((T + 3, E), float("nan"), dtype=dtype)
    K.embed_layernorm(ids, segs, cu, len(LENGTHS), 36, word, pos, typ, gamma, beta, 1e-12, out)
    positions = torch.cat([torch.arange(n) for n in LENGTHS])
    v = word[ids.long()].float() + typ[segs.long()].float() + pos[positions].float()
    assert rel_err(out[:T], F.layer_norm(v, (E,), gamma, beta, 1e-12)) < TOL[dtype]
    assert torch.isnan(out[T:]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("head_size", [32, 64])
@pytest.mark.parametrize("config", [(16, 16, 4, 2), *CONTEXT_ATTENTION_CONFIGS])   # tiles past the sequences too
def test_varlen_attention(dtype, head_size, config):
    gen = torch.Generator().manual_seed(2)
    N, cu, T = 2, cu_seqlens(LENGTHS), sum(LENGTHS)
    E = N * head_size
    qkv = torch.randn(T, 3 * E, generator=gen).to(dtype)
    out = torch.full((T, E), float("nan"), dtype=dtype)
    K.varlen_attention(qkv, cu, len(LENGTHS), 40, N, out, config=config)
    refs = []
    for lo, hi in zip(cu[:-1].tolist(), cu[1:].tolist()):
        q, k, v = qkv[lo:hi].float().view(hi - lo, 3, N, head_size).permute(1, 2, 0, 3)
        refs.append(F.scaled_dot_product_attention(q, k, v).permute(1, 0, 2).reshape(hi - lo, E))
    assert rel_err(out, torch.cat(refs)) < TOL[dtype]


@pytest.mark.parametrize("q_with_keys", [False, True])
def test_uniform_attention_ignores_cu_seqlens(q_with_keys):
    """A uniform batch (every sequence max_seqlen long, back to back) is attended without reading cu_seqlens: a
    cu_seqlens of zeros gives the same result as the real one, and both match PyTorch per sequence."""
    gen = torch.Generator().manual_seed(5)
    B, S, N, H = 3, 37, 2, 32
    E = N * H
    qkv = torch.randn(B * S, 3 * E, generator=gen).to(torch.float16)
    config = (32, 16, 4, 2, q_with_keys)
    outs = []
    for cu in (cu_seqlens([S] * B), torch.zeros(B + 1, dtype=torch.int32)):
        out = torch.full((B * S, E), float("nan"), dtype=torch.float16)
        K.varlen_attention(qkv, cu, B, S, N, out, config=config, uniform=True)
        outs.append(out)
    assert torch.equal(outs[0], outs[1])
    q, k, v = qkv.float().view(B, S, 3, N, H).permute(2, 0, 3, 1, 4)
    ref = F.scaled_dot_product_attention(q, k, v).permute(0, 2, 1, 3).reshape(B * S, E)
    assert rel_err(outs[0], ref) < TOL[torch.float16]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("summands", ["x+res", "x+bias"])
@pytest.mark.parametrize("config", [None, *CONTEXT_LAYERNORM_CONFIGS])   # the tiles the forward may choose
def test_add_layernorm_and_head(dtype, summands, config):
    """LN(x + res), written in place over x, or LN(x + bias) (the large-batch route: cuBLAS has already added the
    product into the residual), then the SQuAD head over the same sum."""
    gen = torch.Generator().manual_seed(3)
    T, E = 37, 96
    x, res = (torch.randn(T, E, generator=gen).to(dtype) for _ in range(2))
    bias = torch.randn(E, generator=gen).to(dtype)
    res, bias = (res, None) if summands == "x+res" else (None, bias)
    gamma, beta = torch.randn(E, generator=gen), torch.randn(E, generator=gen)
    ref = F.layer_norm(x.float() + (res if res is not None else bias).float(), (E,), gamma, beta, 1e-6)
    if res is not None:
        out = x.clone()
        K.add_layernorm(out, res, None, gamma, beta, 1e-6, out, config=config)
    else:
        out = torch.full((T, E), float("nan")).to(dtype)
        K.add_layernorm(x, None, bias, gamma, beta, 1e-6, out, config=config)
    assert rel_err(out, ref) < TOL[dtype]
    head_w, head_b = torch.randn(2, E, generator=gen), torch.randn(2, generator=gen)
    logits = torch.full((T, 2), float("nan"))
    K.add_layernorm_head(x, res, bias, gamma, beta, 1e-6, head_w, head_b, logits)
    assert rel_err(logits, ref.to(dtype).float() @ head_w.T + head_b) < 1e-5


@pytest.mark.parametrize("kind", ["erf", "tanh"])
def test_bias_gelu(kind):
    gen = torch.Generator().manual_seed(4)
    x = 2 * torch.randn(19, 80, generator=gen)   # within exp's float32 range inside the tanh form's sigmoid
    bias = torch.randn(80, generator=gen)
    ref = F.gelu(x + bias, approximate="none" if kind == "erf" else "tanh")
    K.bias_gelu_(x, bias, kind)
    assert rel_err(x, ref) < 1e-6


@pytest.mark.parametrize("gelu", [None, "erf", "tanh"])
def test_linear_with_epilogue(gelu):
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(70, 96, generator=gen).half()
    w = (torch.randn(80, 96, generator=gen) / 10).half()
    bias = torch.randn(80, generator=gen).half()
    out = torch.full((70, 80), float("nan")).half()
    K.linear(a, w, bias, out, gelu=gelu, config=(32, 32, 32, 4, 2))
    ref = a.float() @ w.float().T + bias.float()
    if gelu:
        ref = F.gelu(ref, approximate="none" if gelu == "erf" else "tanh")
    assert rel_err(out, ref) < TOL[torch.float16]


def test_split_k_partials_summed_by_layernorm():
    gen = torch.Generator().manual_seed(6)
    M, K_, N = 40, 256, 64
    a = torch.randn(M, K_, generator=gen).half()
    w = (torch.randn(N, K_, generator=gen) / 16).half()
    bias, res = torch.randn(N, generator=gen).half(), torch.randn(M, N, generator=gen).half()
    gamma, beta = torch.randn(N, generator=gen), torch.randn(N, generator=gen)
    parts = torch.full((3, M, N), float("nan"))
    K.linear(a, w, bias, parts, config=(32, 32, 32, 4, 2), split_k=3)   # 8 blocks of K over 3 splits
    assert rel_err(parts.sum(0), a.float() @ w.float().T) < 1e-6
    out = torch.full((M, N), float("nan")).half()
    K.add_layernorm(parts, res, bias, gamma, beta, 1e-6, out)
    ref = F.layer_norm(a.float() @ w.float().T + bias.float() + res.float(), (N,), gamma, beta, 1e-6)
    assert rel_err(out, ref) < TOL[torch.float16]


@pytest.mark.parametrize("sizes", [(), (2002,), (6 << 20, 2 << 20), (8 << 20, 8 << 20)])
@pytest.mark.parametrize("programs,warps", [(1, 8), (96, 4), (192, 8)])
def test_prefetch_requests_cover_each_tensor(sizes, programs, warps):
    """The launch's threads, each asking for one chunk of each tensor (chunk t covers bytes [t * chunk,
    (t + 1) * chunk)), reach every byte of the largest tensor; chunks are whole 16-byte units (cp.async.bulk's
    rule), at least PREFETCH_MIN_CHUNK; unused pointers get the placeholder and 0 bytes. (The prefetch itself is
    inline PTX, which the interpreter cannot run: tests/test_gpu.py runs it.)"""
    tensors = [torch.empty(n // 2, dtype=torch.float16) for n in sizes]
    placeholder = torch.empty(1)
    args = K.prefetch_args(tensors, programs, warps, placeholder)
    chunk, threads = args["pf_chunk"], args["THREADS"]
    assert threads == 32 * warps and args["PREFETCH"] == len(sizes)
    assert chunk % 16 == 0 and chunk >= K.PREFETCH_MIN_CHUNK
    assert programs * threads * chunk >= max(sizes, default=0)
    for slot, n in zip("ab", [*sizes, 0, 0]):
        assert args[f"pf_{slot}_bytes"] == n
        assert args[f"pf_{slot}"] is (tensors["ab".index(slot)] if n else placeholder)
    with pytest.raises(ValueError):
        K.prefetch_args(tensors * 3 or [placeholder] * 3, programs, warps, placeholder)


# ---- the GPU engine's forward pass, composed of the interpreted kernels --------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("gemm", ["auto", "triton", "cublas"])
@pytest.mark.parametrize("lengths", [[40, 1, 23], [160, 3, 97]], ids=["few-tokens", "many-tokens"])
def test_gpu_runner_forward_matches_reference(precision, gemm, lengths):
    """GpuRunner's forward on CPU tensors: every product route (split-K partials summed by the LayerNorm, products
    accumulated into the residual, the fused-GELU Triton product), the packing and the grids padded with empty
    sequences against the reference. 64 tokens take the few-token routes, 260 the many-token ones."""
    from conftest import random_inputs, random_weights
    from helpers import reference
    from helpers.backends.gpu import GpuRunner
    from helpers.config import BertConfig
    from helpers.native_builder import build_native_engine, fixed_profiles

    config = BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=256,
                        vocab_size=300, max_position_embeddings=160, type_vocab_size=2)
    weights = random_weights(config, seed=31)
    # capacity 4 sequences: the 3 given run on kernel grids for 4, the 4th empty (GpuRunner._prepare)
    engine = build_native_engine(config, weights, precision=precision, profiles=fixed_profiles([3, 4], [160]),
                                 variable_seqlen=False)
    runner = GpuRunner(engine, gemm=gemm)
    ids, segs, mask = random_inputs(config, 3, 160, seed=32, lengths=lengths)
    out = runner.infer_fixed(ids, segs, mask)
    ref = reference.forward(weights, config, ids, segs, mask)
    for b, n in enumerate(mask.sum(1)):
        assert rel_err(torch.from_numpy(out[b, :n]), torch.from_numpy(ref[b, :n])) < (
            1e-5 if precision == "fp32" else 1e-2), (b, n)
        assert not out[b, n:].any(), "padding positions must hold 0"
