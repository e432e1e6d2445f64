#!/usr/bin/env python3
"""Session 12 probe, BERT-Large b128 s384, FP16, tanh GELU (random weights):

A  ours and the peer's (bench/torch_baseline.py's model, built as it builds it) CUDA graphs in one process, timed
   in alternating rounds (ABBA): does the standing check's order (our process right after its tuning, then the
   peer's process) move the ratio?
B  per-kernel GPU time of one graph replay of each (torch.profiler).
D  the thermal transient: each engine's replays after the GPU idled, medians of consecutive blocks.
C  the LayerNorms' rows taken last-first (gpu_kernels.LAYERNORM_REVERSE) against first-last, in the whole forward:
   two graphs of our engine, interleaved. Last-first reads first the rows the product before wrote last (still in
   L2) and writes last the rows the product after reads first.

    python3 scripts/probes/s12_b128.py [--rounds 8] [--replays 15]
"""
import argparse
import importlib.util
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from helpers.backends import gpu_kernels as K  # noqa: E402
from helpers.backends.gpu import GpuRunner  # noqa: E402
from helpers.native_builder import build_native_engine, fixed_profiles  # noqa: E402

B, S = 128, 384


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load("scripts/gpu_bench.py", "gpu_bench")


def our_graph(runner):
    runner.benchmark(B, S, warmup=2, iterations=2, duration=0.0, seed=12345)   # tunes (once), captures
    return runner._graphs[(B * S, B, S, True)].replay


def peer_graph(size):
    tb = load("bench/torch_baseline.py", "torch_baseline")
    from transformers import BertConfig, BertForQuestionAnswering
    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig(**tb.SIZES[size], attn_implementation="sdpa")).cuda().half().eval()
    ids = torch.randint(0, 30522, (B, S), device="cuda")
    segs, mask = torch.zeros_like(ids), torch.ones_like(ids)
    with torch.inference_mode():
        def run():
            return model(input_ids=ids, token_type_ids=segs, attention_mask=mask)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
    peer_graph.keep = (model, ids, segs, mask, graph)
    return graph.replay


def timed(replay, replays, stream, warmup=3):
    marks = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            replay()
        for start, end in marks:
            start.record()
            replay()
            end.record()
    stream.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in marks)


def alternate(named, rounds, replays, stream):
    """ABBA rounds over the named replays; per-round medians."""
    names = list(named)
    times = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            times[n].append(timed(named[n], replays, stream))
        print(f"  round {r}: " + "  ".join(f"{n} {times[n][-1]:.3f}" for n in names), flush=True)
    return times


def profile_replay(replay, stream, label):
    from torch.profiler import ProfilerActivity, profile
    with torch.cuda.stream(stream):
        replay()
    stream.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        with torch.cuda.stream(stream):
            start.record()
            replay()
            replay()
            end.record()
        stream.synchronize()
    print(f"B {label}: the two profiled replays took {start.elapsed_time(end) / 2:.3f} ms each", flush=True)
    if os.environ.get("OUT"):
        prof.export_chrome_trace(os.path.join(os.environ["OUT"], f"trace_{label}.json"))
    rows = []
    for evt in prof.key_averages():
        total = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        if total > 0 and evt.count > 0:
            rows.append((total / 2, evt.count // 2, evt.key))
    rows.sort(reverse=True)
    whole = sum(r[0] for r in rows)
    print(f"B {label}: {whole / 1e3:.3f} ms of kernels per replay, {sum(r[1] for r in rows)} kernels", flush=True)
    for total, count, key in rows[:16]:
        print(f"  {total / 1e3:8.3f} ms {100 * total / whole:5.1f}%  x{count:<4} {total / max(count, 1):8.1f} us  "
              f"{key[:100]}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--replays", type=int, default=15)
    ap.add_argument("--skip", default="", help="parts to skip, e.g. B")
    ap.add_argument("--idle", type=float, default=15.0, help="D: seconds of idle GPU before each engine's run")
    args = ap.parse_args()
    config = bench.model_config("large")
    eng = build_native_engine(config, bench.random_weights("large"), precision="fp16",
                              profiles=fixed_profiles([B], [S]), variable_seqlen=False)
    eng.numerics = dict(eng.numerics, gelu="tanh")
    runner = GpuRunner(eng)
    ours = our_graph(runner)
    peer = peer_graph("large")
    stream = torch.cuda.Stream()

    if "A" not in args.skip:
        print("A: ours and the peer, alternating rounds (ms per forward, median of each round)", flush=True)
        t = alternate({"ours": ours, "peer": peer}, args.rounds, args.replays, stream)
        ratios = [o / p for o, p in zip(t["ours"], t["peer"])]
        print(f"A: ours {statistics.median(t['ours']):.3f} ms, peer {statistics.median(t['peer']):.3f} ms, ratio of "
              f"medians {statistics.median(t['ours']) / statistics.median(t['peer']):.4f}; per-round ratios "
              f"{min(ratios):.4f}-{max(ratios):.4f} (median {statistics.median(ratios):.4f})", flush=True)
    if "B" not in args.skip:
        profile_replay(ours, stream, "ours")
        profile_replay(peer, stream, "peer")
    if "D" not in args.skip:
        import time
        for name, replay in (("ours", ours), ("peer", peer)):
            time.sleep(args.idle)
            marks = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(150)]
            with torch.cuda.stream(stream):
                for a, b in marks:
                    a.record()
                    replay()
                    b.record()
            stream.synchronize()
            ms = [a.elapsed_time(b) for a, b in marks]
            print(f"D {name} after {args.idle:.0f} s idle, medians of blocks of 25 replays: "
                  + " ".join(f"{statistics.median(ms[i:i + 25]):.2f}" for i in range(0, 150, 25)), flush=True)
    if "C" not in args.skip:
        K.LAYERNORM_REVERSE = True
        runner.reset_graphs()
        reverse = our_graph(runner)
        K.LAYERNORM_REVERSE = False
        print("C: LayerNorm rows first-last (forward) and last-first (reverse), alternating rounds", flush=True)
        t = alternate({"forward": ours, "reverse": reverse, "peer": peer}, args.rounds, args.replays, stream)
        f, r = statistics.median(t["forward"]), statistics.median(t["reverse"])
        print(f"C: forward {f:.3f} ms, reverse {r:.3f} ms ({100 * (r / f - 1):+.2f}%), peer "
              f"{statistics.median(t['peer']):.3f}", flush=True)


if __name__ == "__main__":
    main()
