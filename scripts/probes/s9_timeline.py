"""Session 9 probe: a %globaltimer timeline of the b1 s384 forward around our kernels.

The attention and LayerNorm kernels are swapped for copies that stamp the global timer in every program at entry,
after griddepcontrol.wait (its predecessor, a cuBLAS product, has finished and flushed), before the final store
and after it. The engine's tuned forward is captured with them and replayed; the last replay's stamps give, per
layer: the windows of the cuBLAS products between our kernels (from our kernel's last program's end to the next
kernel's first release), and our kernels' own work (first release to last end).
    python3 scripts/probes/s9_timeline.py [--shape 1x384]
"""
import argparse
import math
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait, globaltimer  # noqa: E402

import gpu_bench  # noqa: E402
from helpers.backends import gpu as G  # noqa: E402
from helpers.backends import gpu_kernels as K  # noqa: E402
from helpers.native_builder import build_native_engine, fixed_profiles  # noqa: E402


@triton.jit
def _attention_timed(qkv_ptr, out_ptr, cu_ptr, ts_ptr, qk_scale, NUM_HEADS, E, HEAD: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Stamps (8 per program): 0 entry, 1 release, 2 Q loaded, 3 first key block's scores and max, 4 loop done,
    5 after the final store. A stamp after a value first stores that value (to the program's slot 7), so that the
    in-order issue of the store holds the timer read back until the value exists."""
    stamp = ts_ptr + (tl.program_id(0) + tl.program_id(1) * tl.num_programs(0)) * 8
    tl.store(stamp, globaltimer())
    gdc_launch_dependents()
    gdc_wait()
    tl.store(stamp + 1, globaltimer())
    block = tl.program_id(0)
    seq = tl.program_id(1) // NUM_HEADS
    head = tl.program_id(1) % NUM_HEADS
    start = tl.load(cu_ptr + seq)
    length = tl.load(cu_ptr + seq + 1) - start
    row_stride = 3 * E
    base = qkv_ptr + start.to(tl.int64) * row_stride + head * HEAD
    q_rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, HEAD)
    q = tl.load(base + q_rows[:, None] * row_stride + dims[None, :], mask=q_rows[:, None] < length, other=0.0)
    tl.store(stamp + 7, tl.sum(tl.sum(q.to(tl.float32), axis=1), axis=0).to(tl.int64))
    tl.store(stamp + 2, globaltimer())
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD], tl.float32)
    for k_first in range(0, length, BLOCK_N):
        k_rows = k_first + tl.arange(0, BLOCK_N)
        k_mask = k_rows < length
        k_t = tl.load(base + E + k_rows[None, :] * row_stride + dims[:, None], mask=k_mask[None, :], other=0.0)
        s = tl.dot(q, k_t)
        s = tl.where(k_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * qk_scale)
        if k_first == 0:
            tl.store(stamp + 7, tl.max(m_new, axis=0).to(tl.int64))
            tl.store(stamp + 3, globaltimer())
        p = tl.exp2(s * qk_scale - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None]
        v = tl.load(base + 2 * E + k_rows[:, None] * row_stride + dims[None, :], mask=k_mask[:, None], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(stamp + 7, tl.sum(tl.sum(acc, axis=1), axis=0).to(tl.int64))
    tl.store(stamp + 4, globaltimer())
    out = out_ptr + start.to(tl.int64) * E + head * HEAD
    tl.store(out + q_rows[:, None] * E + dims[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=q_rows[:, None] < length)
    tl.store(stamp + 5, globaltimer())


@triton.jit
def _layernorm_timed(x_ptr, res_ptr, bias_ptr, gamma_ptr, beta_ptr, out_ptr, ts_ptr, T, E, eps,
                     PARTS: tl.constexpr, ADD_BIAS: tl.constexpr, ADD_RES: tl.constexpr, ROWS: tl.constexpr,
                     BLOCK_E: tl.constexpr):
    stamp = ts_ptr + tl.program_id(0) * 4
    tl.store(stamp, globaltimer())
    gdc_launch_dependents()
    gdc_wait()
    tl.store(stamp + 1, globaltimer())
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cols = tl.arange(0, BLOCK_E)
    col_mask = cols < E
    mask = (rows < T)[:, None] & col_mask[None, :]
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
    y = K._normalize_rows(v, gamma, beta, col_mask, E, eps).to(out_ptr.dtype.element_ty)
    tl.store(stamp + 2, globaltimer())
    tl.store(out_ptr + offsets, y, mask=mask)
    tl.store(stamp + 3, globaltimer())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="1x384")
    ap.add_argument("--model", default="large")
    args = ap.parse_args()
    B, S = map(int, args.shape.split("x"))
    config = gpu_bench.model_config(args.model)
    eng = build_native_engine(config, gpu_bench.random_weights(args.model), precision="fp16",
                              profiles=fixed_profiles([B], [S]), variable_seqlen=False)
    eng.numerics = dict(eng.numerics, gelu="tanh")
    runner = G.GpuRunner(eng)
    runner.benchmark(B, S, warmup=5, iterations=20, duration=0.0, seed=1)   # tunes, as perf.py does
    key, = runner._graphs
    print(f"{args.model} {B}x{S}: tiles attention {runner._kernel_configs.get(('attention', key))}, "
          f"layernorm {runner._kernel_configs.get(('layernorm', key))}; plans "
          + ", ".join(f"{role} {runner._lt_plans.get((role, key[0])) is not None}"
                      for role in ("qkv", "attn_out", "ffn_in", "ffn_out")))

    stamps = torch.zeros(4 * config.num_hidden_layers, 4096 * 8, dtype=torch.int64, device="cuda")
    calls, order = [0], []

    def slot(kind):
        order.append(kind)
        calls[0] += 1
        return stamps[calls[0] - 1]

    def attention(qkv, cu, num_seqs, max_seqlen, heads, out, config=None, pdl=False, prefetch=()):
        block_m, block_n, warps, stages = config or K.attention_config(num_seqs, max_seqlen, heads, 64, qkv.dtype)
        grid = (triton.cdiv(max_seqlen, block_m), num_seqs * heads)
        E = out.shape[1]
        _attention_timed[grid](qkv, out, cu, slot("attention"), math.log2(math.e) / math.sqrt(E // heads), heads, E,
                               HEAD=E // heads, BLOCK_M=block_m, BLOCK_N=block_n, num_warps=warps,
                               num_stages=stages, launch_pdl=True)

    def layernorm(x, res, bias, gamma, beta, eps, out, pdl=False, config=None, prefetch=()):
        T, E = out.shape[0], gamma.shape[0]
        rows, warps = config or K.layernorm_config(E, T)
        _layernorm_timed[(triton.cdiv(T, rows),)](
            x, gamma if res is None else res, gamma if bias is None else bias, gamma, beta, out, slot("layernorm"),
            T, E, eps, PARTS=x.shape[0] if x.dim() == 3 else 0, ADD_BIAS=bias is not None, ADD_RES=res is not None,
            ROWS=rows, BLOCK_E=triton.next_power_of_2(E), num_warps=warps, launch_pdl=True)

    real = K.varlen_attention, K.add_layernorm
    K.varlen_attention, K.add_layernorm = attention, layernorm
    try:
        with torch.cuda.stream(runner.stream):
            runner.forward(*key)   # compiles
            calls[0] = 0
            order.clear()
            graph = torch.cuda.CUDAGraph()
            graph.capture_begin()
            runner.forward(*key)
            graph.capture_end()
            for _ in range(20):
                graph.replay()
            runner.stream.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            print(f"timed forward {start.elapsed_time(end):.4f} ms")
    finally:
        K.varlen_attention, K.add_layernorm = real

    kernels = []
    for n, kind in enumerate(order):
        t = stamps[n].cpu().view(-1, 8 if kind == "attention" else 4)
        t = t[t[:, 0] > 0]
        last = 5 if kind == "attention" else 3
        phases = {f"phase{i}": statistics.median((t[:, i] - t[:, i - 1]).tolist()) for i in range(2, last + 1)}
        kernels.append({"kind": kind, "entry": t[:, 0].min().item(), "release_first": t[:, 1].min().item(),
                        "release_last": t[:, 1].max().item(), "end_last": t[:, last].max().item(),
                        "program": statistics.median((t[:, last] - t[:, 1]).tolist()),
                        "store": phases[f"phase{last}"], "programs": len(t), **phases})
    # per layer: attention, LN1, LN2; the windows between them hold the cuBLAS products
    rows = {name: [] for name in ("QKV window (LN2 end -> attention release)", "attention entry before release",
                                  "attention release spread", "attention work (first release -> last end)",
                                  "attention per program (release -> end)", "attention: release -> Q loaded",
                                  "attention: Q -> first key block's max", "attention: -> loop done",
                                  "attention final store",
                                  "attn-out window (attention end -> LN1 release)", "LN1 work", "LN1 per program",
                                  "FFN-in + FFN-out window (LN1 end -> LN2 release)", "LN2 work", "layer")}
    layers = len(order) // 3
    for layer in range(1, layers - 1):
        prev_ln2, attn, ln1, ln2 = (kernels[3 * layer - 1], kernels[3 * layer], kernels[3 * layer + 1],
                                    kernels[3 * layer + 2])
        us = lambda ns: ns / 1e3  # noqa: E731
        rows["QKV window (LN2 end -> attention release)"].append(us(attn["release_first"] - prev_ln2["end_last"]))
        rows["attention entry before release"].append(us(attn["release_first"] - attn["entry"]))
        rows["attention release spread"].append(us(attn["release_last"] - attn["release_first"]))
        rows["attention work (first release -> last end)"].append(us(attn["end_last"] - attn["release_first"]))
        rows["attention per program (release -> end)"].append(us(attn["program"]))
        rows["attention: release -> Q loaded"].append(us(attn["phase2"]))
        rows["attention: Q -> first key block's max"].append(us(attn["phase3"]))
        rows["attention: -> loop done"].append(us(attn["phase4"]))
        rows["attention final store"].append(us(attn["store"]))
        rows["attn-out window (attention end -> LN1 release)"].append(us(ln1["release_first"] - attn["end_last"]))
        rows["LN1 work"].append(us(ln1["end_last"] - ln1["release_first"]))
        rows["LN1 per program"].append(us(ln1["program"]))
        rows["FFN-in + FFN-out window (LN1 end -> LN2 release)"].append(us(ln2["release_first"] - ln1["end_last"]))
        rows["LN2 work"].append(us(ln2["end_last"] - ln2["release_first"]))
        rows["layer"].append(us(ln2["end_last"] - prev_ln2["end_last"]))
    print(f"us, median over layers 2-{layers - 1} (programs: attention {kernels[3]['programs']}, "
          f"LN {kernels[4]['programs']})")
    for name, values in rows.items():
        print(f"  {name:>52}: {statistics.median(values):6.2f}  (min {min(values):.2f}, max {max(values):.2f})")


if __name__ == "__main__":
    main()
