"""Session 10 probe: can a side kernel that brings each product's weights into L2 ahead of it speed up the b1 s384
forward, where the products are cuBLAS's and read their weights cold (session 7: hot weights are worth up to
2.3 us a layer)?

Sessions 7-8 issued the prefetch from the forward's own kernels or from kernels forked before each product; both
slowed the products more than hot weights saved. Here one kernel, forked once at the start of the graph and joined
at its end, runs beside the whole forward on a few SMs and paces itself by %globaltimer along the forward's
measured timeline (layer period from the plain forward, product offsets from session 9's timeline), issuing each
product's weights `lead` us before the product starts. Modes: 0 paces but fetches nothing (the cost of the side
kernel itself), 1 bulk prefetches (cp.async.bulk.prefetch.L2, the TMA unit), 2 one prefetch.global.L2 per line.
    python3 scripts/probes/s10_side_prefetch.py [--shape 1x384]
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.language.extra.cuda import globaltimer  # noqa: E402

import gpu_bench  # noqa: E402
from helpers.backends import gpu as G  # noqa: E402
from helpers.backends import gpu_kernels as K  # noqa: E402
from helpers.native_builder import build_native_engine, fixed_profiles  # noqa: E402

OFFSETS = (0.0, 12.8, 19.7, 28.0)   # us into a 38.46 us layer where QKV, attn-out, FFN-in, FFN-out start (s9)


@triton.jit
def _nap(x):
    return tl.inline_asm_elementwise("{ nanosleep.u32 100; mov.u32 $0, $1; }", "=r,r", [x], dtype=tl.int32,
                                     is_pure=False, pack=1)


@triton.jit
def _side_prefetch(table_ptr, n, THREADS: tl.constexpr, MODE: tl.constexpr):
    """table rows: (when ns after this kernel starts, address, bytes, bytes per lane)."""
    t0 = globaltimer()
    lane = tl.program_id(0) * THREADS + tl.arange(0, THREADS)
    for i in range(n):
        when = tl.load(table_ptr + 4 * i)
        addr = tl.load(table_ptr + 4 * i + 1)
        nbytes = tl.load(table_ptr + 4 * i + 2)
        chunk = tl.load(table_ptr + 4 * i + 3)
        dummy = tl.full([1], 0, tl.int32)
        while globaltimer() - t0 < when:
            dummy = _nap(dummy)
        if MODE == 1:
            K._prefetch_l2(addr.to(tl.pointer_type(tl.int8)), nbytes, chunk, THREADS)
        if MODE == 2:
            total = tl.num_programs(0) * THREADS
            for line in range(0, nbytes // 128, total):
                offset = (line + lane).to(tl.int64) * 128
                tl.inline_asm_elementwise(
                    "{ .reg .pred p; setp.lt.s64 p, $2, $3; @p prefetch.global.L2::evict_last [$1]; mov.u32 $0, 0; }",
                    "=r,l,l,l", [addr.to(tl.pointer_type(tl.int8)) + offset, offset, nbytes], dtype=tl.int32,
                    is_pure=False, pack=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="large")
    ap.add_argument("--shape", default="1x384")
    ap.add_argument("--programs", type=int, default=16)
    args = ap.parse_args()
    B, S = map(int, args.shape.split("x"))
    config = gpu_bench.model_config(args.model)
    eng = build_native_engine(config, gpu_bench.random_weights(args.model), precision="fp16",
                              profiles=fixed_profiles([B], [S]), variable_seqlen=False)
    eng.numerics = dict(eng.numerics, gelu="tanh")
    runner = G.GpuRunner(eng)
    runner.benchmark(B, S, warmup=5, iterations=20, duration=0.0, seed=1)   # tunes, as perf.py does
    key, = runner._graphs
    layers = runner.weights.layers
    side = torch.cuda.Stream()
    lanes = args.programs * 32

    with torch.cuda.stream(runner.stream):
        plain = G.graphs_ms({"plain": lambda: runner.forward(*key)}, rounds=3, replays=10)["plain"]
        layer_us = (plain * 1e3 - 3.0) / len(layers)
        print(f"plain forward {plain:.4f} ms, layer period taken as {layer_us:.2f} us")

        def table(lead_us):
            rows = []
            for n, layer in enumerate(layers):
                for offset, dense in zip(OFFSETS, (layer.qkv, layer.attn_out, layer.ffn_in, layer.ffn_out)):
                    start = 1.5 + n * layer_us + offset * layer_us / 38.46
                    nbytes = dense.weight.numel() * dense.weight.element_size()
                    chunk = -(-nbytes // (lanes * 16)) * 16
                    rows.append([int(max(0.0, start - lead_us) * 1e3), dense.weight.data_ptr(), nbytes, chunk])
            return torch.tensor(rows, dtype=torch.int64, device="cuda")

        def variant(mode, lead_us):
            t = table(lead_us)

            def calls():
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    _side_prefetch[(args.programs,)](t, t.shape[0], THREADS=32, MODE=mode, num_warps=1)
                runner.forward(*key)
                torch.cuda.current_stream().wait_stream(side)
            return calls

        runs = {"plain": lambda: runner.forward(*key), "spin lead 8": variant(0, 8.0)}
        for lead in (4.0, 8.0, 16.0, 30.0):
            runs[f"bulk lead {lead:g}"] = variant(1, lead)
        for lead in (8.0, 16.0):
            runs[f"lines lead {lead:g}"] = variant(2, lead)
        for attempt in range(2):
            timed = G.graphs_ms(runs, rounds=5, replays=10)
            print(f"pass {attempt}: " + ", ".join(f"{k} {v:.4f}" for k, v in timed.items()))


if __name__ == "__main__":
    main()
