#!/usr/bin/env python3
"""Session 13 probe: which part of a process's set-up makes BERT-Large b1 forwards 7-8% faster (both sides).

Call 1 (s13_launch.py): the peer's b1 s384 graph takes 1.85 ms of GPU time in its script and in a plain child, but
1.70 in gpu_bench.py's serve child; ours 0.98 in a plain child, 0.91 in gpu_bench's children. Host launch is not it
(a queued spin kernel hides the launch and changes nothing). Each variant here is a fresh process:
  python3 scripts/probes/s13_bisect.py             # the driver
  python3 scripts/probes/s13_bisect.py --variant V
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS = ["plain", "init_first", "triton_init_first", "gpu_bench_import", "gpu_bench_import_init_first"]


def child(variant):
    import importlib.util
    import torch
    sys.path.insert(0, ROOT)
    if variant in ("triton_init_first",):
        import triton  # noqa: F401
    if variant.startswith("gpu_bench_import"):
        spec = importlib.util.spec_from_file_location("gpu_bench", os.path.join(ROOT, "scripts/gpu_bench.py"))
        gb = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gb)
    if variant.endswith("init_first"):
        torch.cuda.get_device_properties(0)
    spec = importlib.util.spec_from_file_location("torch_baseline", os.path.join(ROOT, "bench/torch_baseline.py"))
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    peer.latency(argparse.Namespace(model="large", shape=["1x128", "1x384"], iters=200, no_graph=False))
    print(f"smi {query()}", flush=True)


def query():
    return subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,power.draw,temperature.gpu,"
                           "clocks_event_reasons.active", "--format=csv,noheader"],
                          capture_output=True, text=True).stdout.strip()


def run(label, cmd, stdin=None):
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, input=stdin)
    keep = [line for line in proc.stdout.splitlines() if line.startswith(("{", "MS", "smi"))]
    print(f"== {label} ({time.time() - t0:.0f} s, exit {proc.returncode}): " + " | ".join(keep), flush=True)
    if proc.returncode:
        print(proc.stderr[-1500:], flush=True)


def driver():
    me = [sys.executable, os.path.abspath(__file__)]
    serve = [sys.executable, os.path.join(ROOT, "scripts/gpu_bench.py"), "--phases", "serve", "--models", "large",
             "--shapes", "1x128,1x384", "--out", ""]
    print("idle", query(), flush=True)
    run("serve peer child, stdin from the driver", serve + ["--side", "peer"], stdin="1 128 200\n1 384 200\n")
    for variant in VARIANTS:
        run(variant, me + ["--variant", variant])
    run("serve peer child again", serve + ["--side", "peer"], stdin="1 128 200\n1 384 200\n")
    run("serve ours child", serve + ["--side", "ours"], stdin="1 128 200\n1 384 200\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=VARIANTS)
    args = ap.parse_args()
    child(args.variant) if args.variant else driver()
