#!/usr/bin/env python3
"""Session 12 probe: every cuDNN execution plan for the attention of BERT-Large b128 s384 (16 heads of 64, FP16,
no mask), Q/K/V read in place from the QKV product's (T, 3E) rows and O written as (T, E), as the engine has them;
timed against PyTorch's SDPA (its cuDNN route picks the heuristic's first plan). Needs nvidia-cudnn-frontend
(PYTHONPATH) and PyTorch's libcudnn.

    PYTHONPATH=path/to/frontend python3 scripts/probes/s12_cudnn_sdpa.py [--budget 120]
"""
import argparse
import itertools
import statistics
import time

import torch

import cudnn

B, H, S, D = 128, 16, 384, 64
E, T = H * D, B * S


def views(qkv, out):
    parts = qkv.view(B, S, 3, H, D)
    q, k, v = (parts[:, :, i].permute(0, 2, 1, 3) for i in range(3))   # (B, H, S, D)
    return q, k, v, out.view(B, S, H, D).permute(0, 2, 1, 3)


def new_graph(handle, tensors, implementation):
    g = cudnn.pygraph(io_data_type=cudnn.data_type.HALF, intermediate_data_type=cudnn.data_type.FLOAT,
                      compute_data_type=cudnn.data_type.FLOAT, handle=handle)
    q, k, v, o = tensors
    nodes = [g.tensor(name=n, dim=list(t.shape), stride=list(t.stride()), data_type=cudnn.data_type.HALF)
             for n, t in zip("qkv", (q, k, v))]
    out, _ = g.sdpa(name="sdpa", q=nodes[0], k=nodes[1], v=nodes[2], generate_stats=False, attn_scale=D ** -0.5,
                    implementation=implementation)
    out.set_output(True).set_dim(list(o.shape)).set_stride(list(o.stride())).set_data_type(cudnn.data_type.HALF)
    g.validate()
    g.build_operation_graph()
    return g, dict(zip(nodes + [out], (q, k, v, o)))


def timed(fn, stream, replays=20, warmup=3):
    marks = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(replays)]
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
        for a, b in marks:
            a.record()
            fn()
            b.record()
    stream.synchronize()
    return statistics.median(a.elapsed_time(b) * 1e3 for a, b in marks)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=120.0, help="seconds for building candidate plans")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    print(f"cudnn backend {cudnn.backend_version()}, frontend module {cudnn.__file__}", flush=True)
    torch.manual_seed(0)
    qkv = torch.randn(T, 3 * E, device="cuda", dtype=torch.half)
    out = torch.empty(T, E, device="cuda", dtype=torch.half)
    tensors = views(qkv, out)
    q, k, v, o = tensors
    stream = torch.cuda.Stream()
    handle = cudnn.create_handle()
    cudnn.set_stream(handle=handle, stream=stream.cuda_stream)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)

    candidates = {}   # label -> (graph, pack, index)
    for impl in (cudnn.attention_implementation.AUTO, cudnn.attention_implementation.UNIFIED,
                 cudnn.attention_implementation.COMPOSITE):
        try:
            g, pack = new_graph(handle, tensors, impl)
            g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.B, cudnn.heur_mode.FALLBACK])
            g.check_support()
            g.build_plans(cudnn.build_plan_policy.ALL)
            n = g.get_execution_plan_count()
            print(f"{impl}: {n} plans from the heuristics; engines {g.get_engine_count()}", flush=True)
            for i in range(n):
                candidates[f"{impl.name} heur#{i} {g.get_plan_name_at_index(i)}"] = (g, pack, i)
        except Exception as exc:   # noqa: BLE001 (a probe: report and go on)
            print(f"{impl}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)

    # every engine and knob setting, each in its own graph, within the budget
    began = time.time()
    g0, _ = new_graph(handle, tensors, cudnn.attention_implementation.AUTO)
    g0.create_execution_plans([cudnn.heur_mode.A])
    engines = g0.get_engine_count()
    for engine in range(engines):
        try:
            knobs = g0.get_knobs_for_engine(engine)
        except Exception as exc:   # noqa: BLE001
            print(f"engine {engine}: knobs {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            continue
        ranges = []
        for kn in knobs:
            attrs = {a: getattr(kn, a) for a in dir(kn) if not a.startswith("_")}
            print(f"engine {engine} knob {attrs}", flush=True)
            lo, hi = int(kn.min_value), int(kn.max_value)
            step = max(1, int(kn.stride))
            ranges.append((kn.type, list(range(lo, hi + 1, step))[:16]))
        for combo in itertools.islice(itertools.product(*[r for _, r in ranges]), 64):
            if time.time() - began > args.budget:
                break
            setting = {t: val for (t, _), val in zip(ranges, combo)}
            try:
                g, pack = new_graph(handle, tensors, cudnn.attention_implementation.AUTO)
                g.create_execution_plan(engine, setting)
                g.check_support()
                g.build_plans(cudnn.build_plan_policy.ALL)
                if g.get_execution_plan_count() == 0:
                    continue
                label = f"engine {engine} {[(t.name, val) for t, val in setting.items()]} {g.get_plan_name_at_index(0)}"
                candidates[label] = (g, pack, 0)
            except Exception:   # noqa: BLE001 (unsupported settings are the common case)
                continue
    print(f"{len(candidates)} candidate plans built in {time.time() - began:.1f} s", flush=True)

    runs = {"torch sdpa (cudnn)": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)}
    for label, (g, pack, index) in candidates.items():
        workspace = torch.empty(max(1, g.get_workspace_size_plan_at_index(index)), device="cuda", dtype=torch.uint8)
        try:
            out.zero_()
            g.execute_plan_at_index(pack, workspace, index, handle=handle)
            torch.cuda.synchronize()
            err = (out.view(B, S, H, D).permute(0, 2, 1, 3) - ref).abs().max().item()
        except Exception as exc:   # noqa: BLE001
            print(f"{label}: execute {type(exc).__name__}: {str(exc)[:120]}", flush=True)
            continue
        print(f"{label}: max |diff| against torch's {err:.2e}", flush=True)
        if err > 1e-2:
            continue
        runs[label] = lambda g=g, pack=pack, index=index, ws=workspace: g.execute_plan_at_index(pack, ws, index,
                                                                                              handle=handle)
    times = {label: [] for label in runs}
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
        for _ in range(args.rounds):
            for label, fn in runs.items():
                times[label].append(timed(fn, stream))
    for label, t in sorted(times.items(), key=lambda kv: statistics.median(kv[1])):
        print(f"{statistics.median(t):8.1f} us  ({min(t):.1f}-{max(t):.1f})  {label}", flush=True)


if __name__ == "__main__":
    main()
