#!/usr/bin/env python3
"""Session 13 probe: why the peer's b1 latency is 8% lower in gpu_bench's compare child than in its own script.

Hypothesis: CUDA-event timing of a graph replay includes the host's launch of the graph (start is recorded on an
idle stream, so the GPU waits for the launch), and that host cost depends on the process and the CPU's state.

  python3 scripts/probes/s13_launch.py                    # the driver: every child below, in order
  python3 scripts/probes/s13_launch.py --side peer|ours   # one child: one side's forwards, timed four ways
Timings per shape (ms, medians of 200): script = the side's own script's timing code; gpu = the same with a spin
kernel queued before the start event (the launch hidden: GPU time only); host_us = the replay call's host time.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPES = [(1, 128), (1, 384)]


def child(side, model_size):
    import torch
    sys.path.insert(0, ROOT)
    if side == "peer":
        import importlib.util
        spec = importlib.util.spec_from_file_location("torch_baseline", os.path.join(ROOT, "bench/torch_baseline.py"))
        peer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(peer)
        from transformers import BertConfig, BertForQuestionAnswering
        torch.manual_seed(0)
        model = BertForQuestionAnswering(BertConfig(**peer.SIZES[model_size], attn_implementation="sdpa")).cuda().half().eval()
        stream = torch.cuda.current_stream()
        forwards, keep = {}, []
        for B, S in SHAPES:
            ids = torch.randint(0, 30522, (B, S), device="cuda")
            segs, mask = torch.zeros_like(ids), torch.ones_like(ids)
            keep.append((ids, segs, mask))
            with torch.inference_mode():
                side_stream = torch.cuda.Stream()
                side_stream.wait_stream(stream)
                with torch.cuda.stream(side_stream):
                    for _ in range(3):
                        model(input_ids=ids, token_type_ids=segs, attention_mask=mask)
                stream.wait_stream(side_stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    model(input_ids=ids, token_type_ids=segs, attention_mask=mask)
            forwards[(B, S)] = graph.replay
            keep.append(graph)

        def script_ms(B, S):
            return peer.time_ms(forwards[(B, S)], 200)[0]
    else:
        import importlib.util
        spec = importlib.util.spec_from_file_location("gpu_bench", os.path.join(ROOT, "scripts/gpu_bench.py"))
        gb = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gb)
        eng, options = gb.variant_engine(model_size, gb.random_weights(model_size), "auto/tanh", SHAPES)
        runner = gb.GpuRunner(eng, **options)
        stream = runner.stream
        forwards = {(B, S): runner.benchmark_forward(B, S, seed=12345) for B, S in SHAPES}

        def script_ms(B, S):
            return statistics.median(runner.benchmark(B, S, warmup=10, iterations=200, duration=0.0, seed=12345))

    def gpu_ms(fn):
        times = []
        with torch.cuda.stream(stream):
            for _ in range(10):
                fn()
            for _ in range(200):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda._sleep(2_000_000)   # ~1 ms at 1.98 GHz: the launch below is queued before start runs
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end))
        return statistics.median(times)

    def host_us(fn):
        times = []
        with torch.cuda.stream(stream):
            for _ in range(200):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e6)
            torch.cuda.synchronize()
        return statistics.median(times)

    for B, S in SHAPES:
        fn = forwards[(B, S)]
        row = dict(side=side, shape=f"{B}x{S}", script=script_ms(B, S), gpu=gpu_ms(fn), host_us=host_us(fn))
        row["script_again"] = script_ms(B, S)
        print("ROW " + json.dumps(row), flush=True)


def run_child(label, cmd, burner=False):
    burn = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if burner else None
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if burn:
        burn.kill()
    rows = [json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")]
    rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    print(f"== {label} ({time.time() - t0:.0f} s, exit {proc.returncode})", flush=True)
    for row in rows:
        print("  " + json.dumps(row), flush=True)
    if proc.returncode:
        print(proc.stderr[-1500:], flush=True)


def cpu_mhz():
    with open("/proc/cpuinfo") as f:
        mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
    return f"{min(mhz):.0f}-{max(mhz):.0f} MHz over {len(mhz)} cpus"


def driver(model_size):
    me = [sys.executable, os.path.abspath(__file__), "--model", model_size]
    script = [sys.executable, os.path.join(ROOT, "bench/torch_baseline.py"), "latency", "--model", model_size,
              "--shape", "1x128", "--shape", "1x384", "--iters", "200"]
    print("cpu", cpu_mhz(), flush=True)
    for path in ("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "/sys/devices/system/cpu/cpuidle/current_driver"):
        if os.path.exists(path):
            print(path, open(path).read().strip(), flush=True)
    run_child("peer script alone", script)
    run_child("peer probe child", me + ["--side", "peer"])
    run_child("ours probe child", me + ["--side", "ours"])
    run_child("peer script, a CPU-bound process beside it", script, burner=True)
    run_child("peer probe child, a CPU-bound process beside it", me + ["--side", "peer"], burner=True)
    run_child("ours probe child, a CPU-bound process beside it", me + ["--side", "ours"], burner=True)
    run_child("peer script alone, again", script)
    print("cpu", cpu_mhz(), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", choices=("peer", "ours"))
    ap.add_argument("--model", default="large")
    args = ap.parse_args()
    child(args.side, args.model) if args.side else driver(args.model)
