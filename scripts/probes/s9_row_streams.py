"""Session 9 probe: does splitting a b1 s384 BERT-Large forward's rows over concurrent streams pay?

At 384 rows cuBLAS's products fill 72-96 of 132 SMs and every kernel boundary into a product costs ~1.25 us.
Rows are independent everywhere but in attention, so the layer can run as `splits` row chunks, each on its own
stream, joined only where attention reads every chunk's keys and values. Each chunk's products are smaller but run
beside the other chunks' kernels. This times the same chain (PyTorch's kernels: cuBLAS products with the engine's
epilogues and in-place accumulation, SDPA, F.layer_norm) as one CUDA graph with 1..4 chunks.
    python3 scripts/probes/s9_row_streams.py [--rows 384] [--layers 24]
"""
import argparse
import statistics

import torch
import torch.nn.functional as F

E, I, HEADS, HEAD = 1024, 4096, 16, 64


def weights(layers, device):
    g = torch.Generator(device="cpu").manual_seed(0)

    def w(*shape):
        return (torch.randn(*shape, generator=g) * 0.02).to(device, torch.float16)

    return [dict(qkv=w(3 * E, E), qkv_b=w(3 * E), o=w(E, E), o_b=w(E), i=w(I, E), i_b=w(I), out=w(E, I),
                 out_b=w(E), g1=torch.ones(E, device=device, dtype=torch.float16), b1=w(E),
                 g2=torch.ones(E, device=device, dtype=torch.float16), b2=w(E)) for _ in range(layers)]


def forward(x, qkv, h, ws, splits, streams, main):
    rows = x.shape[0]
    bounds = [(rows * k // splits, rows * (k + 1) // splits) for k in range(splits)]
    start = torch.cuda.Event()
    start.record(main)
    for s in streams:
        s.wait_event(start)
    for w in ws:
        done = []
        for (a, b), s in zip(bounds, streams):
            with torch.cuda.stream(s):
                torch.addmm(w["qkv_b"], x[a:b], w["qkv"].t(), out=qkv[a:b])
                e = torch.cuda.Event()
                e.record(s)
                done.append(e)
        for k, ((a, b), s) in enumerate(zip(bounds, streams)):
            with torch.cuda.stream(s):
                for j, e in enumerate(done):
                    if j != k:
                        s.wait_event(e)
                q = qkv[a:b, :E].view(1, b - a, HEADS, HEAD).transpose(1, 2)
                kk = qkv[:, E:2 * E].view(1, rows, HEADS, HEAD).transpose(1, 2)
                v = qkv[:, 2 * E:].view(1, rows, HEADS, HEAD).transpose(1, 2)
                ctx = F.scaled_dot_product_attention(q, kk, v).transpose(1, 2).reshape(b - a, E)
                xr = x[a:b]
                xr.addmm_(ctx, w["o"].t())
                y = F.layer_norm(xr + w["o_b"], (E,), w["g1"], w["b1"])
                torch._addmm_activation(w["i_b"], y, w["i"].t(), use_gelu=True, out=h[a:b])
                y.addmm_(h[a:b], w["out"].t())
                xr.copy_(F.layer_norm(y + w["out_b"], (E,), w["g2"], w["b2"]))
    for s in streams:
        main.wait_stream(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=384)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--splits", default="1,2,3,4")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    dev = torch.device("cuda")
    ws = weights(args.layers, dev)
    x0 = torch.randn(args.rows, E, device=dev, dtype=torch.float16)
    x = x0.clone()
    qkv = torch.empty(args.rows, 3 * E, device=dev, dtype=torch.float16)
    h = torch.empty(args.rows, I, device=dev, dtype=torch.float16)
    main_stream = torch.cuda.Stream()
    graphs, outs = {}, {}
    for n in map(int, args.splits.split(",")):
        streams = [main_stream] + [torch.cuda.Stream() for _ in range(n - 1)]
        with torch.cuda.stream(main_stream):
            x.copy_(x0)
            forward(x, qkv, h, ws, n, streams, main_stream)   # warm-up, eager
            main_stream.synchronize()
            g = torch.cuda.CUDAGraph()
            g.capture_begin()
            forward(x, qkv, h, ws, n, streams, main_stream)
            g.capture_end()
            x.copy_(x0)
            g.replay()
            main_stream.synchronize()
            outs[n] = x.float().clone()
        graphs[n] = g
    ref = outs[min(outs)]
    times = {n: [] for n in graphs}
    for _ in range(args.rounds):   # interleaved, so that clocks and L2 treat each split alike
        for n, g in graphs.items():
            with torch.cuda.stream(main_stream):
                for _ in range(3):
                    g.replay()
                t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                t0.record(main_stream)
                for _ in range(20):
                    g.replay()
                t1.record(main_stream)
                t1.synchronize()
                times[n].append(t0.elapsed_time(t1) / 20)
    base = statistics.median(times[min(times)])
    for n, t in times.items():
        err = ((outs[n] - ref).abs().max() / ref.abs().max()).item()
        med = statistics.median(t)
        print(f"rows {args.rows} splits {n}: {med:.4f} ms ({med / base:.3f} of 1 split), max rel diff {err:.2e}")


if __name__ == "__main__":
    main()
