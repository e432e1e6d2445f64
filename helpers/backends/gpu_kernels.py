"""Triton kernels of the native GPU engine, and the small Python functions that launch them.

Every kernel works on *packed* tokens: activations are (T, features) row-major, sequence b owning rows
cu_seqlens[b] .. cu_seqlens[b+1]-1 (spec §3.8), so padding costs nothing. Kernels that need to know sequences
(embedding positions, attention) take a grid over (blocks of a sequence, sequences) and return early where a
sequence is shorter than the grid allows: one grid shape serves every batch of up to B sequences of up to S tokens,
which is what lets one CUDA graph replay any such batch.

Accumulation is always float32; results are rounded to the activation dtype (float16 or float32) when stored.
Matrix products of float32 engines use IEEE float32 (no TF32) so that FP32 engines match the FP32 reference.

Programmatic dependent launch (PDL, Hopper and later): with `pdl=True` a kernel is launched so that it may start
while the previous kernel on the stream is still running. Each such kernel first lets its own successor launch
(`gdc_launch_dependents`), then waits for its predecessor to finish and flush (`gdc_wait`) before it touches any
activation. Few-token batches are a chain of 2-7 us kernels, much of it launch and ramp-up; PDL overlaps that with
the previous kernel's tail.
"""
import functools
import math
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait

GELU_KINDS = ("erf", "tanh")
_ACT_CODE = {None: 0, "erf": 1, "tanh": 2}


@functools.lru_cache(maxsize=None)
def pdl_supported(device_index=0):
    """PDL needs a Hopper-class GPU and a Triton that launches with it; BERT_GPU_PDL=0 turns it off."""
    if os.environ.get("BERT_GPU_PDL", "1") == "0" or os.environ.get("TRITON_INTERPRET") == "1":
        return False
    from triton.backends.nvidia.compiler import CUDAOptions
    return ("launch_pdl" in CUDAOptions.__dataclass_fields__
            and torch.cuda.get_device_capability(device_index) >= (9, 0))


def _launch_options(pdl):
    """Keyword arguments of a kernel launch: the PDL launch attribute only when asked for (Triton's interpreter
    knows no such option)."""
    return {"launch_pdl": True} if pdl else {}


PREFETCH_MIN_CHUNK = 1024   # bytes per thread's bulk prefetch, at least (fewer, larger requests)


def prefetch_args(tensors, programs, warps, placeholder):
    """Kernel arguments (pf_a, pf_a_bytes, pf_b, pf_b_bytes, pf_chunk, PREFETCH, THREADS) for _prefetch_weights:
    the programs x warps x 32 threads of a launch share out each of `tensors` (at most two contiguous, 16-byte
    aligned tensors, as PyTorch allocates them) in chunks of one size. `placeholder`: any tensor, passed for the
    pointers not used."""
    if len(tensors) > 2:
        raise ValueError("a kernel prefetches at most two tensors")
    threads = warps * 32
    sizes = [t.numel() * t.element_size() for t in tensors]
    chunk = max(PREFETCH_MIN_CHUNK, -(-max(sizes, default=0) // (programs * threads * 16)) * 16)
    padded = [*zip(tensors, sizes), *[(placeholder, 0)] * (2 - len(tensors))]
    return {"pf_a": padded[0][0], "pf_a_bytes": padded[0][1], "pf_b": padded[1][0], "pf_b_bytes": padded[1][1],
            "pf_chunk": chunk, "PREFETCH": len(tensors), "THREADS": threads}


# ---- shared device functions ---------------------------------------------------------------------------------------

@triton.jit
def _pdl_enter(PDL: tl.constexpr):
    """Let the next kernel launch, then wait until the previous one has finished and its writes are visible."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()


@triton.jit
def _prefetch_l2(ptr, nbytes, chunk, THREADS: tl.constexpr):
    """Ask for this program's share of bytes [ptr, ptr + nbytes) to be brought into L2: one bulk prefetch
    (cp.async.bulk.prefetch.L2, whole 16-byte units) of `chunk` bytes per thread, threads numbered across the grid.
    Nothing waits for the data."""
    program = tl.program_id(0) + tl.program_id(1) * tl.num_programs(0)
    first = (program * THREADS + tl.arange(0, THREADS)).to(tl.int64) * chunk
    size = (tl.minimum(tl.maximum(nbytes - first, 0), chunk) // 16 * 16).to(tl.int32)
    address = ptr.to(tl.pointer_type(tl.int8)) + first
    tl.inline_asm_elementwise(
        "{ .reg .pred p; setp.ne.s32 p, $2, 0; @p cp.async.bulk.prefetch.L2.global [$1], $2; mov.u32 $0, 0; }",
        "=r,l,r", [address, size], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def _prefetch_weights(pf_a, pf_a_bytes, pf_b, pf_b_bytes, pf_chunk, PREFETCH: tl.constexpr, THREADS: tl.constexpr):
    """Bring the PREFETCH (0-2) weight tensors of the next products into L2 while this kernel runs (few-token
    forwards: prefetch_args). Weights are never written, so this is issued before waiting for the predecessor."""
    if PREFETCH >= 1:
        _prefetch_l2(pf_a, pf_a_bytes, pf_chunk, THREADS)
    if PREFETCH >= 2:
        _prefetch_l2(pf_b, pf_b_bytes, pf_chunk, THREADS)


@triton.jit
def _normalize_rows(v, gamma, beta, col_mask, E, eps):
    """LayerNorm of each row of the float32 tile v [ROWS, BLOCK_E] (columns past E masked out)."""
    mean = tl.sum(v, axis=1) / E
    centered = tl.where(col_mask[None, :], v - mean[:, None], 0.0)
    var = tl.sum(centered * centered, axis=1) / E
    return centered * tl.rsqrt(var + eps)[:, None] * gamma[None, :] + beta[None, :]


@triton.jit
def _gelu(x, ACT: tl.constexpr):
    """ACT 1: exact GELU (erf); ACT 2: the tanh approximation, written as x * sigmoid(2u) = x * (1 + tanh u) / 2."""
    if ACT == 1:
        x = 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))
    elif ACT == 2:
        x = x * tl.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))
    return x


# ---- embedding + LayerNorm -----------------------------------------------------------------------------------------

@triton.jit
def _embed_layernorm_kernel(ids_ptr, segs_ptr, cu_ptr, word_ptr, pos_ptr, type_ptr, gamma_ptr, beta_ptr, out_ptr,
                            E, eps, pf_a, pf_a_bytes, pf_b, pf_b_bytes, pf_chunk, ROWS: tl.constexpr,
                            BLOCK_E: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr, THREADS: tl.constexpr):
    _prefetch_weights(pf_a, pf_a_bytes, pf_b, pf_b_bytes, pf_chunk, PREFETCH, THREADS)
    _pdl_enter(PDL)
    seq = tl.program_id(1)
    start = tl.load(cu_ptr + seq)
    length = tl.load(cu_ptr + seq + 1) - start
    first = tl.program_id(0) * ROWS
    if first >= length:
        return
    pos = first + tl.arange(0, ROWS)          # positions restart at 0 in every sequence
    cols = tl.arange(0, BLOCK_E)
    col_mask = cols < E
    row_mask = pos < length
    mask = row_mask[:, None] & col_mask[None, :]
    token = (start + pos).to(tl.int64)
    ids = tl.load(ids_ptr + token, mask=row_mask, other=0).to(tl.int64)
    segs = tl.load(segs_ptr + token, mask=row_mask, other=0).to(tl.int64)
    v = tl.load(word_ptr + ids[:, None] * E + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    v += tl.load(type_ptr + segs[:, None] * E + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    v += tl.load(pos_ptr + pos[:, None] * E + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    gamma = tl.load(gamma_ptr + cols, mask=col_mask, other=0.0)
    beta = tl.load(beta_ptr + cols, mask=col_mask, other=0.0)
    y = _normalize_rows(v, gamma, beta, col_mask, E, eps)
    tl.store(out_ptr + token[:, None] * E + cols[None, :], y.to(out_ptr.dtype.element_ty), mask=mask)


def embed_layernorm(ids, segs, cu_seqlens, num_seqs, max_seqlen, word, pos, types, gamma, beta, eps, out, pdl=False,
                    prefetch=()):
    """out[t] = LN(word[ids[t]] + types[segs[t]] + pos[position of t in its sequence]).
    prefetch: up to two weight tensors to bring into L2 meanwhile (the first products')."""
    E = out.shape[1]
    block_e = triton.next_power_of_2(E)
    rows = 4
    warps = 4 if block_e <= 512 else 8
    grid = (triton.cdiv(max_seqlen, rows), num_seqs)
    _embed_layernorm_kernel[grid](ids, segs, cu_seqlens, word, pos, types, gamma, beta, out, E, eps,
                                  **prefetch_args(prefetch, grid[0] * grid[1], warps, out),
                                  ROWS=rows, BLOCK_E=block_e, PDL=pdl, num_warps=warps, **_launch_options(pdl))


# ---- residual add + LayerNorm (optionally followed by the SQuAD head) ----------------------------------------------

@triton.jit
def _add_layernorm_kernel(x_ptr, res_ptr, bias_ptr, gamma_ptr, beta_ptr, out_ptr, head_w_ptr, head_b_ptr, logits_ptr,
                          T, E, eps, pf_a, pf_a_bytes, pf_b, pf_b_bytes, pf_chunk, PARTS: tl.constexpr,
                          ADD_BIAS: tl.constexpr, ADD_RES: tl.constexpr, HEAD: tl.constexpr, ROWS: tl.constexpr,
                          BLOCK_E: tl.constexpr, PDL: tl.constexpr, PREFETCH: tl.constexpr, THREADS: tl.constexpr):
    """out = LN(x [+ bias] [+ res]). PARTS = 0: x is one (T, E) tensor. PARTS > 0: x holds PARTS float32 partial
    products of a split-K GEMM, [PARTS, T, E], summed here (the GEMM's reduction, fused)."""
    _prefetch_weights(pf_a, pf_a_bytes, pf_b, pf_b_bytes, pf_chunk, PREFETCH, THREADS)
    _pdl_enter(PDL)
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_E)
    row_mask = rows < T
    col_mask = cols < E
    mask = row_mask[:, None] & col_mask[None, :]
    offsets = rows.to(tl.int64)[:, None] * E + cols[None, :]
    if PARTS == 0:
        v = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    else:
        v = tl.load(x_ptr + offsets, mask=mask, other=0.0)
        for part in tl.static_range(1, PARTS):
            v += tl.load(x_ptr + part * T * E + offsets, mask=mask, other=0.0)
    if ADD_BIAS:
        v += tl.load(bias_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)[None, :]
    if ADD_RES:
        v += tl.load(res_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    gamma = tl.load(gamma_ptr + cols, mask=col_mask, other=0.0)
    beta = tl.load(beta_ptr + cols, mask=col_mask, other=0.0)
    y = _normalize_rows(v, gamma, beta, col_mask, E, eps).to(out_ptr.dtype.element_ty)
    if HEAD:
        # The head sees the LayerNorm output rounded to the activation dtype, as it would after a store.
        y = y.to(tl.float32)
        w_start = tl.load(head_w_ptr + cols, mask=col_mask, other=0.0)
        w_end = tl.load(head_w_ptr + E + cols, mask=col_mask, other=0.0)
        start = tl.sum(y * w_start[None, :], axis=1) + tl.load(head_b_ptr)
        end = tl.sum(y * w_end[None, :], axis=1) + tl.load(head_b_ptr + 1)
        tl.store(logits_ptr + rows * 2, start, mask=row_mask)
        tl.store(logits_ptr + rows * 2 + 1, end, mask=row_mask)
    else:
        tl.store(out_ptr + offsets, y, mask=mask)


def layernorm_config(E, T):
    """(rows per program, num_warps) of the LayerNorm kernels, measured on an H200 (PERF_NOTES.md, run 7): 4 rows
    on 4 warps for many rows (E = 1024, T = 49152: 52 us against 72 for 2 rows on 8 warps), 2 rows on 8 warps for
    few wide rows (2.4 us at T = 128)."""
    return (4, 4) if triton.next_power_of_2(E) <= 512 or T > 1024 else (2, 8)


def _layernorm_launch(x, res, bias, gamma, beta, eps, out, head_w, head_b, logits, head, pdl, config=None,
                      prefetch=()):
    T, E = logits.shape[0] if head else out.shape[0], gamma.shape[0]
    rows, warps = config or layernorm_config(E, T)
    parts = x.shape[0] if x.dim() == 3 else 0
    grid = (triton.cdiv(T, rows),)
    _add_layernorm_kernel[grid](x, gamma if res is None else res, gamma if bias is None else bias, gamma, beta, out,
                                head_w, head_b, logits, T, E, eps, **prefetch_args(prefetch, grid[0], warps, gamma),
                                PARTS=parts, ADD_BIAS=bias is not None,
                                ADD_RES=res is not None, HEAD=head, ROWS=rows, BLOCK_E=triton.next_power_of_2(E),
                                PDL=pdl, num_warps=warps, **_launch_options(pdl))


def add_layernorm(x, res, bias, gamma, beta, eps, out, pdl=False, config=None, prefetch=()):
    """out = LN(x [+ bias] [+ res]); x is (T, E), or [parts, T, E] float32 split-K partials to sum; res and bias
    may be None. `out` may be `x` or `res` (each program reads its rows before writing them). prefetch: up to two
    weight tensors to bring into L2 meanwhile (the next products')."""
    _layernorm_launch(x, res, bias, gamma, beta, eps, out, gamma, beta, out, head=False, pdl=pdl, config=config,
                      prefetch=prefetch)


def add_layernorm_head(x, res, bias, gamma, beta, eps, head_w, head_b, logits, pdl=False):
    """logits[t] = head_w @ LN(x[t] [+ bias] [+ res[t]]) + head_b, float32 (T, 2); the normalized rows are not
    stored."""
    like = res if res is not None else x   # out is not written; the head rounds to its dtype, the activations'
    _layernorm_launch(x, res, bias, gamma, beta, eps, like, head_w, head_b, logits, head=True, pdl=pdl)


# ---- variable-length attention (FlashAttention-style, online softmax) ----------------------------------------------

@triton.jit
def _varlen_attention_kernel(qkv_ptr, out_ptr, cu_ptr, qk_scale, NUM_HEADS, E, max_seqlen, pf_a, pf_a_bytes, pf_b,
                             pf_b_bytes, pf_chunk, HEAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             Q_WITH_KEYS: tl.constexpr, UNIFORM: tl.constexpr, IEEE: tl.constexpr,
                             PDL: tl.constexpr, PREFETCH: tl.constexpr, THREADS: tl.constexpr):
    """One program: BLOCK_M queries of one head of one sequence, streaming that sequence's keys BLOCK_N at a time.

    qkv rows are [Q (E) | K (E) | V (E)], each head-major (head n owns columns n*HEAD .. n*HEAD+HEAD-1).
    qk_scale = log2(e) / sqrt(HEAD): scores are kept in base 2 so that exp2 does the softmax's exponentials.
    UNIFORM: every sequence is max_seqlen long and they follow one another, so cu_seqlens is not read.
    Q_WITH_KEYS: Q is read again with every key block (from L1/L2) rather than once before the loop. Loaded once,
    it is stored to shared memory before the pipelined loop issues its first key blocks, which puts two dependent
    round trips to memory ahead of the first product; loaded in the loop, it travels with the key blocks (0.2 us a
    layer at BERT-Large b1 s384, more on the all-Triton chain of 128 rows; PERF_NOTES session 10).
    """
    _prefetch_weights(pf_a, pf_a_bytes, pf_b, pf_b_bytes, pf_chunk, PREFETCH, THREADS)
    block = tl.program_id(0)
    seq = tl.program_id(1) // NUM_HEADS
    head = tl.program_id(1) % NUM_HEADS
    if UNIFORM:
        start = seq * max_seqlen
        length = max_seqlen
    else:
        # cu_seqlens is written only by the host's copy before the forward, never by a kernel, so it may be read
        # before waiting for the kernel before this one
        start = tl.load(cu_ptr + seq)
        length = tl.load(cu_ptr + seq + 1) - start
    _pdl_enter(PDL)
    if block * BLOCK_M >= length:
        return
    row_stride = 3 * E
    base = qkv_ptr + start.to(tl.int64) * row_stride + head * HEAD
    q_rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD)
    q_ptrs = base + q_rows[:, None] * row_stride + dims[None, :]
    if not Q_WITH_KEYS:
        q = tl.load(q_ptrs, mask=q_rows[:, None] < length, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD], tl.float32)
    for k_first in range(0, length, BLOCK_N):
        k_rows = k_first + tl.arange(0, BLOCK_N)
        k_mask = k_rows < length
        if Q_WITH_KEYS:   # the mask's loop term (always true) keeps the compiler from hoisting the load
            q = tl.load(q_ptrs, mask=(q_rows[:, None] < length) & (k_first < length), other=0.0)
        # K is loaded transposed ([HEAD, BLOCK_N]) so that Q @ K^T is a plain product.
        k_t = tl.load(base + E + k_rows[None, :] * row_stride + dims[:, None], mask=k_mask[None, :], other=0.0)
        if IEEE:
            s = tl.dot(q, k_t, input_precision="ieee")
        else:
            s = tl.dot(q, k_t)
        if k_first + BLOCK_N > length:   # only the last block holds keys past the sequence's end
            s = tl.where(k_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)
        p = tl.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        v = tl.load(base + 2 * E + k_rows[:, None] * row_stride + dims[None, :], mask=k_mask[:, None], other=0.0)
        if IEEE:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    acc = acc / l_i[:, None]
    out = out_ptr + start.to(tl.int64) * E + head * HEAD
    tl.store(out + q_rows[:, None] * E + dims[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=q_rows[:, None] < length)


H200_SMS = 132   # the default tiles were measured there


class AttentionTile(NamedTuple):
    """A tile of the attention kernel: query and key block sizes, warps, pipeline stages, and whether Q is read
    with every key block (see _varlen_attention_kernel). Shared memory per program: stages x (key block + value
    block [+ query block]) x 2 bytes x HEAD."""
    block_m: int
    block_n: int
    warps: int
    stages: int
    q_with_keys: bool = False


def attention_config(num_seqs, max_seqlen, num_heads, head_size, dtype):
    """The attention kernel's tile, the best measured on an H200 for BERT shapes (docs/PERF_NOTES.md): 64-query
    blocks throughout; 128-key blocks when fewer than two waves of programs run (b1: one sequence), with Q read
    alongside the keys when the programs fit on the SMs one each (its larger shared memory leaves room for one
    program per SM); 64-key blocks for full batches."""
    if dtype == torch.float32:
        return AttentionTile(32, 32, 4, 2)
    programs = num_seqs * num_heads * triton.cdiv(max_seqlen, 64)
    if programs <= H200_SMS:
        return AttentionTile(64, 128, 4, 3, q_with_keys=True)
    if programs < 2 * H200_SMS:
        return AttentionTile(64, 128, 4, 3)
    return AttentionTile(64, 64, 4, 3)


def varlen_attention(qkv, cu_seqlens, num_seqs, max_seqlen, num_heads, out, config=None, pdl=False, prefetch=(),
                     uniform=False):
    """out (T, E) = softmax(Q K^T / sqrt(H)) V per head of every sequence of up to `max_seqlen` tokens.
    config: an AttentionTile (or its fields as a tuple). uniform: all num_seqs sequences are max_seqlen long and
    packed back to back (cu_seqlens is then not read). prefetch: up to two weight tensors to bring into L2
    meanwhile (the next products')."""
    T, E = out.shape
    head_size = E // num_heads
    if head_size not in (16, 32, 64, 128):
        raise ValueError(f"attention kernel supports head sizes 16, 32, 64 and 128, not {head_size}")
    tile = AttentionTile(*config) if config else attention_config(num_seqs, max_seqlen, num_heads, head_size,
                                                                  qkv.dtype)
    grid = (triton.cdiv(max_seqlen, tile.block_m), num_seqs * num_heads)
    _varlen_attention_kernel[grid](qkv, out, cu_seqlens, math.log2(math.e) / math.sqrt(head_size), num_heads, E,
                                   max_seqlen, **prefetch_args(prefetch, grid[0] * grid[1], tile.warps, out),
                                   HEAD=head_size, BLOCK_M=tile.block_m, BLOCK_N=tile.block_n,
                                   Q_WITH_KEYS=tile.q_with_keys, UNIFORM=uniform, IEEE=qkv.dtype == torch.float32,
                                   PDL=pdl, num_warps=tile.warps, num_stages=tile.stages, **_launch_options(pdl))


# ---- bias + GELU (after a cuBLAS product that has no GELU epilogue) ------------------------------------------------

@triton.jit
def _bias_gelu_kernel(x_ptr, bias_ptr, M, N, ACT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    offsets = rows.to(tl.int64)[:, None] * N + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    x += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(x_ptr + offsets, _gelu(x, ACT).to(x_ptr.dtype.element_ty), mask=mask)


def bias_gelu_(x, bias, kind, config=None):
    """x = gelu(x + bias) in place; x (T, N) contiguous. 2-D tiles: the bias is loaded once per tile.
    config: (BLOCK_M, BLOCK_N, num_warps)."""
    M, N = x.shape
    block_n = min(1024, triton.next_power_of_2(N))
    block_m, block_n, warps = config or (max(1, 4096 // block_n), block_n, 4)
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n))
    _bias_gelu_kernel[grid](x, bias, M, N, ACT=_ACT_CODE[kind], BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps)


# ---- matrix product with fused bias (+ GELU) epilogue --------------------------------------------------------------

@triton.jit
def _grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Tile (row block, column block) of program `pid`: GROUP_M row blocks share each column block's weights while
    they are in L2."""
    blocks_m = tl.cdiv(M, BLOCK_M)
    blocks_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * blocks_n)
    first_m = group * GROUP_M
    group_size = min(blocks_m - first_m, GROUP_M)
    block_m = first_m + (pid % (GROUP_M * blocks_n)) % group_size
    block_n = (pid % (GROUP_M * blocks_n)) // group_size
    return block_m, block_n


@triton.jit
def _linear_epilogue(acc, bias_ptr, out_ptr, rows, cols, M, N, split, ACT: tl.constexpr, SPLIT_K: tl.constexpr):
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    offsets = rows.to(tl.int64)[:, None] * N + cols[None, :]
    if SPLIT_K == 1:
        acc += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
        acc = _gelu(acc, ACT)
        tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=mask)
    else:   # float32 partial sums [SPLIT_K, M, N]; the consumer adds them up with the bias
        tl.store(out_ptr + split.to(tl.int64) * M * N + offsets, acc, mask=mask)


@triton.jit
def _linear_kernel(a_ptr, w_ptr, bias_ptr, out_ptr, M, N, K, ACT: tl.constexpr, SPLIT_K: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                   PDL: tl.constexpr):
    """out (M, N) = act(a (M, K) @ w (N, K)^T + bias), float32 accumulation; w is the [out, in] dense kernel.
    With SPLIT_K > 1, program (tile, s) sums the s-th share of K and stores float32 partials instead."""
    block_m, block_n = _grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    split = tl.program_id(1)
    k_share = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
    k_lo = split * k_share
    k_hi = tl.minimum(K, k_lo + k_share)
    rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
    _pdl_enter(PDL)
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows.to(tl.int64)[:, None] * K + (k_lo + ks)[None, :]
    w_ptrs = w_ptr + cols.to(tl.int64)[None, :] * K + (k_lo + ks)[:, None]
    row_mask = rows[:, None] < M
    col_mask = cols[None, :] < N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k in range(k_lo, k_hi, BLOCK_K):
        a = tl.load(a_ptrs, mask=row_mask & (ks[None, :] < k_hi - k), other=0.0)
        w = tl.load(w_ptrs, mask=col_mask & (ks[:, None] < k_hi - k), other=0.0)
        acc = tl.dot(a, w, acc)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    _linear_epilogue(acc, bias_ptr, out_ptr, rows, cols, M, N, split, ACT, SPLIT_K)


def linear_config(M, N, K):
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) of the Triton product for an (M, K) x (K, N) problem."""
    if M <= 256:
        return 64, 64, 128, 4, 4
    return 128, 256, 64, 8, 3


# Row counts up to which Triton's fused erf-GELU product beats cuBLAS + the GELU kernel (PERF_NOTES.md, run 2).
FUSED_ERF_MAX_ROWS = 128
# Row counts up to which a split-K Triton product + the LayerNorm summing its partials beats cuBLAS + LayerNorm.
SPLIT_K_MAX_ROWS = 128


def split_k_plan(M, N, K):
    """(splits, config) for a product whose LayerNorm consumer sums the partials, or None when it does not pay.
    It pays for few rows and a long K (the output product, K = 4N: only N/64 output tiles otherwise)."""
    if M > SPLIT_K_MAX_ROWS or K < 2 * N:
        return None
    return 4, (64, 64, 128, 4, 3)


# The few-token path: up to this many rows every product is a Triton kernel launched with PDL (when supported).
# Measured (PERF_NOTES.md, run 5): at 128 rows the PDL chain beats cuBLAS by 15-19%; at 384 rows it loses by 18-25%
# (the Triton products themselves are slower than cuBLAS's there).
PDL_MAX_ROWS = 128
MAX_SPLITS = 8
SPLIT_MAX_ROWS = max(PDL_MAX_ROWS, SPLIT_K_MAX_ROWS)   # the most rows any split-K product runs on


def small_plan(M, N, K, can_split):
    """(splits, config) of a product on the PDL path, as split_k_plan gives them. Few rows leave few output tiles,
    so the weights would stream through a fraction of the SMs; products whose consumer sums partials (can_split)
    split K until about one wave of programs runs, keeping at least 256 of K per split."""
    config = (64, 64, 128, 4, 4)
    tiles = triton.cdiv(M, 64) * triton.cdiv(N, 64)
    splits = 1
    if can_split:
        while splits * 2 <= MAX_SPLITS and tiles * splits * 2 <= 160 and K // (splits * 2) >= 256:
            splits *= 2
    return splits, config


def linear(a, weight, bias, out, gelu=None, config=None, split_k=1, pdl=False):
    """out = gelu(a @ weight^T + bias), the bias and GELU applied to the float32 accumulator (16-bit inputs).
    split_k > 1: out is float32 [split_k, M, N] and receives partial products without bias (see add_layernorm).
    pdl: launch with programmatic dependent launch."""
    M, K = a.shape
    N = weight.shape[0]
    block_m, block_n, block_k, warps, stages = config or linear_config(M, N, K)
    grid = (triton.cdiv(M, block_m) * triton.cdiv(N, block_n), split_k)
    _linear_kernel[grid](a, weight, bias, out, M, N, K, ACT=_ACT_CODE[gelu], SPLIT_K=split_k, BLOCK_M=block_m,
                         BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=8, PDL=pdl,
                         num_warps=warps, num_stages=stages, **_launch_options(pdl))
