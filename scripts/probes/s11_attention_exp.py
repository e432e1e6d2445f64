#!/usr/bin/env python3
"""Probe (session 11): is the attention at BERT-Large b128 s384 (head size 64) bound by the softmax's
exponentials? With 64-wide heads an SM computes 16 exponentials per clock against 4,096 FLOP of products, exactly
the 2 x 64 FLOP a score costs, so exponentials and products each need as long as the other unless they overlap.

Our kernel (a copy of gpu_kernels._varlen_attention_kernel, uniform batches only) with the exponential computed:
  exp2    tl.exp2, as the engine (one MUFU op per score)
  f16x2   ex2.approx.f16x2 on the scores rounded to FP16: two exponentials per MUFU op, if the unit does two
  poly50  half the scores on the MUFU, half by a degree-3 polynomial on the FMA pipe (Cody-Waite, 1.4e-4 relative)
  fma     no exponential at all (wrong output; bound test only)
  hsum    exp2, the row sums of each key block added in FP16 (packed adds) before joining the FP32 running sum
against cuDNN's (SDPA, as the engine runs it), each in CUDA graphs of 24 calls, timed in interleaved rounds.
    OUT=/tmp/x python3 scripts/probes/s11_attention_exp.py
"""
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from helpers.backends.gpu import graphs_ms  # noqa: E402

MODES = {"exp2": 0, "fma": 3}


@triton.jit
def _exp2_f16x2(x):
    return tl.inline_asm_elementwise("ex2.approx.f16x2 $0, $1;", "=r,r", [x.to(tl.float16)], dtype=tl.float16,
                                     is_pure=True, pack=2)


@triton.jit
def _exp2_half_poly(x):
    # of each pair: the first on the MUFU, the second as 2^j * p(f), j = round(x), f = x - j in [-0.5, 0.5]
    return tl.inline_asm_elementwise(
        """{
        .reg .b32 t, j, f, p, e;
        ex2.approx.ftz.f32 $0, $2;
        max.ftz.f32 f, $3, 0fC2FC0000;
        add.rn.ftz.f32 t, f, 0f4B400000;
        sub.rn.ftz.f32 j, t, 0f4B400000;
        sub.rn.ftz.f32 f, f, j;
        fma.rn.ftz.f32 p, f, 0f3D61665F, 0f3E781237;
        fma.rn.ftz.f32 p, p, f, 0f3F317908;
        fma.rn.ftz.f32 p, p, f, 0f3F7FFCD0;
        shl.b32 e, t, 23;
        add.s32 $1, p, e;
        }""",
        "=r,=r,r,r", [x], dtype=tl.float32, is_pure=True, pack=2)


@triton.jit
def _attention(qkv_ptr, out_ptr, qk_scale, NUM_HEADS, E, seqlen, HEAD: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr, MODE: tl.constexpr):
    block = tl.program_id(0)
    seq = tl.program_id(1) // NUM_HEADS
    head = tl.program_id(1) % NUM_HEADS
    start = seq * seqlen
    row_stride = 3 * E
    base = qkv_ptr + start.to(tl.int64) * row_stride + head * HEAD
    q_rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD)
    q = tl.load(base + q_rows[:, None] * row_stride + dims[None, :])
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD], tl.float32)
    for k_first in range(0, seqlen, BLOCK_N):
        k_rows = k_first + tl.arange(0, BLOCK_N)
        k_t = tl.load(base + E + k_rows[None, :] * row_stride + dims[:, None])
        s = tl.dot(q, k_t)
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)
        x = s * qk_scale - m_new[:, None]
        if MODE == 0:
            p = tl.exp2(x)
        elif MODE == 1:
            p = _exp2_f16x2(x)
        elif MODE == 2:
            p = _exp2_half_poly(x)
        elif MODE == 3:
            p = x * 0.001 + 1.0
        else:
            p = tl.exp2(x).to(tl.float16)
        alpha = tl.exp2(m_i - m_new)
        if MODE == 4:
            l_i = l_i * alpha + tl.sum(p, axis=1).to(tl.float32)
        else:
            l_i = l_i * alpha + tl.sum(p.to(tl.float32), axis=1)
        acc = acc * alpha[:, None]
        v = tl.load(base + 2 * E + k_rows[:, None] * row_stride + dims[None, :])
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    acc = acc / l_i[:, None]
    out = out_ptr + start.to(tl.int64) * E + head * HEAD
    tl.store(out + q_rows[:, None] * E + dims[None, :], acc.to(out_ptr.dtype.element_ty))


@triton.jit
def _attention_tma(q_desc, kv_desc, out_desc, qk_scale, NUM_HEADS, E, seqlen, HEAD: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """_attention with every tile moved by the TMA unit (tensor descriptors) instead of per-thread addresses."""
    block = tl.program_id(0)
    seq = tl.program_id(1) // NUM_HEADS
    head = tl.program_id(1) % NUM_HEADS
    start = seq * seqlen
    col = head * HEAD
    q = q_desc.load([start + block * BLOCK_M, col])
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD], tl.float32)
    for k_first in range(0, seqlen, BLOCK_N):
        k = kv_desc.load([start + k_first, E + col])
        s = tl.dot(q, k.T)
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)
        p = tl.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        v = kv_desc.load([start + k_first, 2 * E + col])
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    acc = acc / l_i[:, None]
    out_desc.store([start + block * BLOCK_M, col], acc.to(tl.float16))


def ours_tma(qkv, out, batch, seqlen, heads, tile):
    from triton.tools.tensor_descriptor import TensorDescriptor
    block_m, block_n, warps, stages = tile
    E = out.shape[1]
    head = E // heads
    q_desc = TensorDescriptor.from_tensor(qkv, [block_m, head])
    kv_desc = TensorDescriptor.from_tensor(qkv, [block_n, head])
    out_desc = TensorDescriptor.from_tensor(out, [block_m, head])
    grid = (seqlen // block_m, batch * heads)
    _attention_tma[grid](q_desc, kv_desc, out_desc, math.log2(math.e) / math.sqrt(head), heads, E, seqlen,
                         HEAD=head, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps, num_stages=stages)


def ours(qkv, out, batch, seqlen, heads, mode, tile):
    block_m, block_n, warps, stages = tile
    E = out.shape[1]
    grid = (seqlen // block_m, batch * heads)
    _attention[grid](qkv, out, math.log2(math.e) / math.sqrt(E // heads), heads, E, seqlen, HEAD=E // heads,
                     BLOCK_M=block_m, BLOCK_N=block_n, MODE=MODES[mode], num_warps=warps, num_stages=stages)


def sdpa(qkv, batch, seqlen, heads, backend=None):
    E = qkv.shape[1] // 3
    q, k, v = (t.transpose(1, 2) for t in qkv.view(batch, seqlen, 3, heads, E // heads).unbind(2))
    if backend is None:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    else:
        with torch.nn.attention.sdpa_kernel([backend]):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(batch * seqlen, E)


def main():
    batch, seqlen, heads, E = 128, 384, 16, 1024
    calls = 24
    torch.cuda.set_stream(torch.cuda.Stream())
    g = torch.Generator(device="cuda").manual_seed(0)
    # Q and K as the QKV product of a LayerNorm output gives them (N(0, 0.64^2) with N(0, 0.02) weights); scores
    # then spread like a trained model's only loosely, which is all timing needs
    qkv = (torch.randn(batch * seqlen, 3 * E, device="cuda", generator=g) * 0.64).half()
    out = torch.empty(batch * seqlen, E, device="cuda", dtype=torch.float16)
    reference = sdpa(qkv, batch, seqlen, heads).float()
    tiles = [(64, 64, 4, 3), (64, 128, 4, 3)]
    only = os.environ.get("TILES")
    if only:
        tiles = [tuple(int(v) for v in t.split("x")) for t in only.split(",")]
    runs, errors = {"sdpa": lambda: [sdpa(qkv, batch, seqlen, heads) for _ in range(calls)]}, {}
    B = torch.nn.attention.SDPBackend
    for name, backend in (("sdpa flash", B.FLASH_ATTENTION), ("sdpa efficient", B.EFFICIENT_ATTENTION),
                          ("sdpa cudnn", B.CUDNN_ATTENTION)):
        try:
            errors[name] = float((sdpa(qkv, batch, seqlen, heads, backend).float() - reference).abs().max())
            runs[name] = lambda backend=backend: [sdpa(qkv, batch, seqlen, heads, backend) for _ in range(calls)]
        except Exception as exc:   # noqa: BLE001 - a backend this build lacks
            errors[name] = f"{type(exc).__name__}: {str(exc)[:200]}"
    for tile in [(64, 64, 4, 3), (64, 128, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (64, 64, 4, 4),
                 (128, 128, 8, 2)]:
        key = f"tma {'x'.join(map(str, tile))}"
        try:
            out.zero_()
            ours_tma(qkv, out, batch, seqlen, heads, tile)
            torch.cuda.synchronize()
        except Exception as exc:   # noqa: BLE001 - a tile that does not compile or fit
            errors[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
            continue
        errors[key] = float((out.float() - reference).abs().max())
        runs[key] = lambda tile=tile: [ours_tma(qkv, out, batch, seqlen, heads, tile) for _ in range(calls)]
    for mode in MODES:
        for tile in tiles:
            key = f"{mode} {'x'.join(map(str, tile))}"
            try:
                ours(qkv, out, batch, seqlen, heads, mode, tile)
                torch.cuda.synchronize()
            except Exception as exc:   # noqa: BLE001 - a tile that does not compile or fit
                errors[key] = f"{type(exc).__name__}: {str(exc)[:200]}"
                continue
            errors[key] = float((out.float() - reference).abs().max())
            runs[key] = lambda mode=mode, tile=tile: [ours(qkv, out, batch, seqlen, heads, mode, tile)
                                                      for _ in range(calls)]
    timed = graphs_ms(runs, rounds=5, replays=3)
    flops = 4 * batch * heads * seqlen * seqlen * (E // heads)
    rows = []
    for key, ms in sorted(timed.items(), key=lambda kv: kv[1]):
        us = 1e3 * ms / calls
        rows.append({"variant": key, "us": us, "tflops": flops / us / 1e6, "max_abs_err": errors.get(key)})
        print(f"{key:>20} {us:8.1f} us {flops / us / 1e6:6.0f} TFLOP/s  max err vs SDPA {errors.get(key)}", flush=True)
    for key, err in errors.items():
        if isinstance(err, str):
            print(f"{key:>20} failed: {err}")
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "attention_exp.json"), "w") as f:
            json.dump({"rows": rows, "errors": errors}, f, indent=1)


if __name__ == "__main__":
    main()
