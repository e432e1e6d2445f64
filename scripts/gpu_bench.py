#!/usr/bin/env python3
"""Build, check and time the native GPU engine against the peer (bench/torch_baseline.py) in one GPU run.

    python3 scripts/gpu_bench.py                                  # everything, BERT-Base and BERT-Large
    python3 scripts/gpu_bench.py --phases latency --models large --shapes 1x128,128x384 --out results/

Phases (run in this order, each one independent of the others' success):
  check    random-weight BERT engines (FP16, the builder's numerics) against the numpy reference forward pass
  micro    each GEMM of a layer by every route (cuBLAS, cuBLASLt GELU epilogue, cuBLAS + GELU kernel, Triton
           with fused epilogue or split-K, several tile shapes), and the attention kernel's tile shapes, in CUDA graphs
           that cycle through one weight copy per layer (weights come from memory, as in the model)
  tune     coordinate search of the few-token (PDL) path's product plans on whole-model b1 latency; the winners
           stay installed for the later phases
  latency  the engine's CUDA-graph latency per shape and GEMM route, GPU memory after loading, and the peer's
           latency measured in the same run; prints the ratio table. Each engine variant runs in a process of its
           own, as perf.py runs it (--in-process: all in this one; implied by the tune phase, whose plans stay
           installed in this process only)
  compare  ours (one engine variant, --compare-variant) and the peer's model, built as bench/torch_baseline.py
           builds it, each in a process of its own that stays up, their CUDA graphs timed in alternating rounds
           (ABBA), so that both see the same thermal state: an H200 at its power limit runs 2-3% slower a few
           seconds into a full load than just after idling, which engines timed one after another feel unequally.
           (Both in one process would not do: what ran before in a process slows our b1 s384 by 5-8%, run 21.)
           The peer's side is flattered, never ours: a PyTorch process that lives while another process runs GPU
           work runs its b1 graphs 7% faster from then on (session 13; ours does not move), so the peer's b1 rows
           here are 7% below what its own script measures alone and are no measure of the b1 targets
  serve    (the compare phase's children) one side's forwards, timed on request
  profile  per-kernel GPU time of one eager forward pass (torch.profiler), BERT-Large
  variant  (the latency phase's child process) one model's one variant, its result as a RESULT json line
Random weights come from scripts/make_random_checkpoint.py's generator.
Results: stdout, and OUT/gpu_bench.json + OUT/gpu_bench.txt when --out (default $OUT) is set.
"""
import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
import traceback

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from helpers import reference  # noqa: E402
from helpers.backends import gpu_kernels as K  # noqa: E402
from helpers.backends.gpu import GpuRunner, graphs_ms  # noqa: E402
from helpers.config import BertConfig  # noqa: E402
from helpers.native_builder import build_native_engine, fixed_profiles  # noqa: E402
from helpers.weights import tf_to_trt_name  # noqa: E402

# The targets: our latency over the peer's, same run.
TARGETS = {("large", 1, 128): 0.5, ("large", 1, 384): 0.5, ("large", 128, 384): 0.75,
           ("base", 1, 128): 0.5, ("base", 128, 384): 0.75}
ATTENTION_CONFIGS = [(64, 64, 4, 3), (64, 64, 4, 2), (64, 64, 4, 4), (128, 64, 8, 3), (128, 64, 4, 3),
                     (64, 128, 4, 3), (128, 128, 8, 3), (64, 32, 4, 3), (32, 64, 2, 3), (32, 64, 4, 3),
                     (32, 128, 4, 3), (16, 64, 2, 3), (16, 128, 4, 3)]
LARGE_M_CONFIGS = [(128, 256, 64, 8, 3), (128, 128, 64, 8, 4)]
SPLIT_CONFIGS = [(128, 64, 128, 4, 3), (64, 64, 128, 4, 3), (128, 32, 128, 4, 3)]
FUSED_CONFIGS = [(64, 64, 128, 4, 4), (64, 128, 64, 4, 4), (128, 64, 64, 4, 4)]
LAYERNORM_CONFIGS = [(2, 8), (1, 4), (2, 4), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16)]
GELU_CONFIGS = [(4, 1024, 4), (8, 1024, 8), (16, 1024, 8), (32, 512, 8), (8, 512, 4), (64, 256, 8)]


def load_module(path):
    """A script of this repository (path relative to its root) as a module."""
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RANDOM_CKPT = load_module("scripts/make_random_checkpoint.py")
PEER = load_module("bench/torch_baseline.py")


class Log:
    def __init__(self):
        self.lines, self.results = [], {}

    def __call__(self, *parts):
        line = " ".join(str(p) for p in parts)
        print(line, flush=True)
        self.lines.append(line)


LOG = Log()


def model_config(size):
    return BertConfig(**{k: v for k, v in {**RANDOM_CKPT.COMMON, **RANDOM_CKPT.SIZES[size]}.items()
                         if k in BertConfig.__dataclass_fields__})


def random_weights(size, seed=0):
    """The canonical weight map of make_random_checkpoint.py's random TF variables (renamed and transposed in
    memory, as the checkpoint reader would: writing and reading 1.3 GB costs device time for nothing)."""
    config = {**RANDOM_CKPT.COMMON, **RANDOM_CKPT.SIZES[size]}
    return {tf_to_trt_name(name): np.ascontiguousarray(value.T) if "kernel" in name else value
            for name, value in RANDOM_CKPT.random_tf_variables(config, seed).items()}


def rel_err(out, ref):
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


_STREAM = []


def graph_ms(calls, replays):
    """GPU ms per call of `calls` captured back to back in one CUDA graph (launch gaps included, as in the engine)."""
    if not _STREAM:
        _STREAM.append(torch.cuda.Stream())   # one stream: cuBLAS keeps a workspace per stream
    stream = _STREAM[0]
    stream.wait_stream(torch.cuda.current_stream())   # inputs were made on the default stream
    with torch.cuda.stream(stream):
        return graphs_ms({None: lambda: [call() for call in calls]}, rounds=1, replays=replays)[None] / len(calls)


# ---- check -----------------------------------------------------------------------------------------------------------
def phase_check(args, weights_by_model):
    for size in args.models:
        config, weights = model_config(size), weights_by_model[size]
        eng = build_native_engine(config, weights, precision="fp16", profiles=fixed_profiles([2], [64]),
                                  variable_seqlen=False)
        runner = GpuRunner(eng)
        rng = np.random.default_rng(5)
        ids = rng.integers(0, config.vocab_size, (2, 64)).astype(np.int32)
        segs = rng.integers(0, 2, (2, 64)).astype(np.int32)
        mask = np.zeros((2, 64), np.int32)
        mask[0], mask[1, :37] = 1, 1
        out = runner.infer_fixed(ids, segs, mask)
        ref = reference.forward(weights, config, ids, segs, mask)
        errs = [rel_err(out[0], ref[0]), rel_err(out[1, :37], ref[1, :37])]
        LOG(f"check {size} fp16 vs FP32 reference: rel err {errs[0]:.2e} (64 tokens), {errs[1]:.2e} (37 tokens)")
        LOG.results.setdefault("check", {})[size] = errs
        del runner


# ---- micro -----------------------------------------------------------------------------------------------------------
def report(label, row, flops=None, unit="TF/s"):
    ranked = sorted(row.items(), key=lambda kv: kv[1])
    LOG(f"micro {label}: " + ", ".join(f"{r} {t * 1e3:.1f}us" + (f" ({flops / t / 1e9:.0f} {unit})" if flops else "")
                                       for r, t in ranked[:6]) + f"  -> best {ranked[0][0]}")
    LOG.results.setdefault("micro", {})[label] = row


def time_routes(label, routes, replays, flops=None):
    row = {}
    for route, calls in routes.items():
        try:
            row[route] = graph_ms(calls, replays)
        except Exception as exc:  # a tile shape that does not fit is a result, not a failure
            LOG(f"  micro {label} {route}: failed ({type(exc).__name__}: {exc})"[:240])
    if row:
        report(label, row, flops)


def phase_micro(args):
    for size in args.models:
        config = model_config(size)
        E, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
        dense = lambda n, k, copies: [((torch.randn(n, k, device="cuda") / 32).half(),  # noqa: E731
                                       torch.randn(n, device="cuda").half()) for _ in range(copies)]
        g, bt = torch.rand(E, device="cuda") + 0.5, torch.randn(E, device="cuda")
        for M in args.micro_m:
            copies = L if M <= 4096 else 4     # a weight copy per layer: weights come from memory, as in the model
            replays = 20 if M <= 4096 else 5
            # intermediate product + bias + exact GELU
            a = torch.randn(M, E, device="cuda").half()
            h = torch.empty(M, I, device="cuda").half()
            ws = dense(I, E, copies)
            routes = {"cublas+gelu": [lambda w=w, b=b: (torch.mm(a, w.t(), out=h), K.bias_gelu_(h, b, "erf"))
                                      for w, b in ws],
                      "cublasLt-tanh": [lambda w=w, b=b: torch._addmm_activation(b, a, w.t(), use_gelu=True, out=h)
                                        for w, b in ws],
                      "cublas-no-gelu": [lambda w=w, b=b: torch.addmm(b, a, w.t(), out=h) for w, b in ws]}
            for cfg in (FUSED_CONFIGS if M <= 512 else LARGE_M_CONFIGS):
                routes[f"triton{cfg}"] = [lambda w=w, b=b, cfg=cfg: K.linear(a, w, b, h, gelu="erf", config=cfg)
                                          for w, b in ws]
            time_routes(f"{size} M={M} ffn_in+erf ({I}x{E})", routes, replays, 2 * M * I * E)
            # products feeding a residual LayerNorm: cuBLAS + LN against split-K partials summed by the LN
            for name, (N, Kd) in (("attn_out", (E, E)), ("ffn_out", (E, I)), ("qkv", (3 * E, E))):
                a = torch.randn(M, Kd, device="cuda").half()
                out = torch.empty(M, N, device="cuda").half()
                res = torch.randn(M, N, device="cuda").half()
                ws = dense(N, Kd, copies)
                if name == "qkv":
                    routes = {"cublas": [lambda w=w, b=b: torch.addmm(b, a, w.t(), out=out) for w, b in ws]}
                    for cfg in (FUSED_CONFIGS[:1] if M <= 512 else LARGE_M_CONFIGS):
                        routes[f"triton{cfg}"] = [lambda w=w, b=b, cfg=cfg: K.linear(a, w, b, out, config=cfg)
                                                  for w, b in ws]
                    time_routes(f"{size} M={M} {name} ({N}x{Kd})", routes, replays, 2 * M * N * Kd)
                    continue
                routes = {"cublas+ln": [lambda w=w, b=b: (torch.addmm(b, a, w.t(), out=out),
                                                          K.add_layernorm(out, res, None, g, bt, 1e-12, out)) for w, b in ws]}
                if M <= 512:
                    for splits in ((2, 4) if Kd <= 1024 else (4, 8)):
                        parts = torch.empty(splits, M, N, device="cuda")
                        for cfg in SPLIT_CONFIGS:
                            routes[f"split{splits}{cfg}+ln"] = [
                                lambda w=w, b=b, cfg=cfg, splits=splits, parts=parts: (
                                    K.linear(a, w, b, parts, config=cfg, split_k=splits),
                                    K.add_layernorm(parts, res, b, g, bt, 1e-12, out)) for w, b in ws]
                time_routes(f"{size} M={M} {name}+ln ({N}x{Kd})", routes, replays, 2 * M * N * Kd)
        N, H = config.num_attention_heads, config.head_size
        for B, S in args.shapes:
            T = B * S
            qkv = torch.randn(T, 3 * E, device="cuda", dtype=torch.float16)
            out = torch.empty(T, E, device="cuda", dtype=torch.float16)
            cu = torch.arange(0, T + 1, S, device="cuda", dtype=torch.int32)
            routes = {str(cfg): [lambda cfg=cfg: K.varlen_attention(qkv, cu, B, S, N, out, config=cfg)] * 8
                      for cfg in ATTENTION_CONFIGS}
            # PyTorch's fused attention on strided views of the same QKV buffer, as the engine would call it
            from torch.nn.attention import SDPBackend, sdpa_kernel
            q, k, v = (t.transpose(1, 2) for t in qkv.view(B, S, 3, N, H).unbind(2))
            for backend in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
                def sdpa(backend=getattr(SDPBackend, backend)):
                    with sdpa_kernel([backend]):
                        torch.nn.functional.scaled_dot_product_attention(q, k, v)
                routes[f"sdpa-{backend.split('_')[0].lower()}"] = [sdpa] * 8
            qv, kv, vv = qkv.view(T, 3, N, H).unbind(1)
            routes["fa2-varlen"] = [lambda: torch.ops.aten._flash_attention_forward(
                qv, kv, vv, cu, cu, S, S, 0.0, False, False, scale=H ** -0.5)] * 8
            time_routes(f"{size} attention {B}x{S}", routes, 10, 4 * B * N * S * S * H)
            x, r = (torch.randn(T, E, device="cuda", dtype=torch.float16) for _ in range(2))
            bias = torch.randn(E, device="cuda", dtype=torch.float16)
            routes = {}
            for cfg in LAYERNORM_CONFIGS:
                routes[f"x+res{cfg}"] = [lambda cfg=cfg: K.add_layernorm(x, r, None, g, bt, 1e-12, x, config=cfg)] * 8
                routes[f"x+bias{cfg}"] = [lambda cfg=cfg: K.add_layernorm(x, None, bias, g, bt, 1e-12, x,
                                                                           config=cfg)] * 8
            time_routes(f"{size} add_layernorm T={T} (GB/s of x+res)", routes, 10, 3 * T * E * 2 * 1e3)
            if B * S >= 4096:
                h = torch.randn(T, config.intermediate_size, device="cuda", dtype=torch.float16)
                hb = torch.randn(config.intermediate_size, device="cuda", dtype=torch.float16)
                routes = {f"gelu{cfg}": [lambda cfg=cfg: K.bias_gelu_(h, hb, "erf", config=cfg)] * 4
                          for cfg in GELU_CONFIGS}
                time_routes(f"{size} bias_gelu erf T={T} (GB/s)", routes, 10, 2 * h.numel() * 2 * 1e3)


# ---- latency ---------------------------------------------------------------------------------------------------------
def peer_latency(size, shapes):
    cmd = [sys.executable, os.path.join(ROOT, "bench", "torch_baseline.py"), "latency", "--model", size]
    for B, S in shapes:
        cmd += ["--shape", f"{B}x{S}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    peer = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            peer[(row["batch"], row["seq"])] = row["median_ms"]
    if proc.returncode != 0:
        LOG(f"peer failed: {proc.stderr[-500:]}")
    return peer


def peer_model(size):
    """bench/torch_baseline.py latency's model: Hugging Face BERT QA, random weights from seed 0, FP16, SDPA."""
    from transformers import BertConfig, BertForQuestionAnswering
    torch.manual_seed(0)
    return BertForQuestionAnswering(BertConfig(**PEER.SIZES[size], attn_implementation="sdpa")).cuda().half().eval()


def peer_forward(model, B, S):
    """The peer's latency forward (all-ones mask) as a CUDA-graph replay in this process, captured as
    bench/torch_baseline.py captures it (its set-up is not a function of its own to call, and that file stays as
    shared)."""
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
    inputs = (ids, segs, mask)   # the graph reads these buffers: they must outlive it

    def replay():
        graph.replay()
        return inputs
    return replay


def variant_engine(size, weights, variant, shapes):
    """An FP16 engine of the model for these (B, S) shapes with the variant's GELU, and the variant's GpuRunner
    options (gemm included)."""
    gemm, gelu, runner_options = parse_variant(variant)
    eng = build_native_engine(model_config(size), weights, precision="fp16",
                              profiles=fixed_profiles(sorted({b for b, _ in shapes}), sorted({s for _, s in shapes})),
                              variable_seqlen=False)
    eng.numerics = dict(eng.numerics, gelu=gelu)
    return eng, dict(runner_options, gemm=gemm)


def measure_variant(size, weights, variant, args):
    """Our latency per shape for one engine variant, its product tuning and its GPU memory; logs each."""
    eng, runner_options = variant_engine(size, weights, variant, args.shapes)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base_alloc = torch.cuda.memory_allocated()
    runner = GpuRunner(eng, **runner_options)
    loaded = runner.memory_report()
    loaded["allocated"] -= base_alloc
    medians = {}
    for B, S in args.shapes:
        iters = args.iterations if B * S < 8192 else max(20, args.iterations // 5)
        times = runner.benchmark(B, S, warmup=10, iterations=iters, duration=0.0, seed=12345)
        ordered = sorted(times)
        median = medians[f"{B}x{S}"] = statistics.median(times)
        LOG(f"ours {size} {variant:>12} {B:>4}x{S:<4} median {median:.4f} ms  "
            f"mean {sum(times) / len(times):.4f}  p95 {ordered[int(0.95 * (len(ordered) - 1))]:.4f}  "
            f"n={len(times)}")
    for t in runner.product_tuning:
        if "error" in t:
            LOG(f"  tuning {size} {variant} off: {t['error']}")
            continue
        LOG(f"  tuned {size} {variant} {t['role']:>8}{'+LN' if t['with_layernorm'] else '   '} "
            f"{t['rows']:>6} rows {t['epilogue']:>9}: PyTorch "
            f"{t['torch_us']:8.2f} us, {t['chosen']} {t['chosen_us']:8.2f} us of {t['candidates']} candidates")
    for t in runner.context_tuning:
        LOG(f"  in the forward {size} {variant} {t['choice']:>9} {t['rows']:>6} rows: "
            + ", ".join(f"#{i} {ms:.4f} ms" for i, ms in enumerate(t['forward_ms'])) + f" -> #{t['chosen']}")
    after = runner.memory_report()
    after["allocated"] -= base_alloc
    mib = lambda v: f"{v / 2**20:.0f} MiB"  # noqa: E731
    LOG(f"memory {size} {variant}: weights {mib(loaded['weights'])} + largest-profile activations "
        f"{mib(loaded['activations'])}; allocated after load {mib(loaded['allocated'])} "
        f"(ratio {loaded['allocated'] / (loaded['weights'] + loaded['activations']):.3f}), after "
        f"{len(args.shapes)} graphs {mib(after['allocated'])}; reserved {mib(after['reserved'])}")
    return {"medians": medians, "tuning": runner.product_tuning, "context": runner.context_tuning,
            "memory": {"after_load": loaded, "after_graphs": after}}


def measure_variant_isolated(size, variant, args):
    """measure_variant in a process of its own, as perf.py runs one engine per process: what one engine leaves
    behind in a process (run 21: an erf engine's run made later engines' b1 s384 5-8% slower) cannot reach the
    next one. The child's log lines pass through."""
    cmd = [sys.executable, os.path.abspath(__file__), "--phases", "variant", "--models", size, "--variants", variant,
           "--shapes", ",".join(f"{B}x{S}" for B, S in args.shapes), "--iterations", str(args.iterations),
           "--out", ""]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    result = None
    for line in proc.stdout:
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
        elif not line.startswith("device "):
            LOG(line.rstrip("\n"))
    if proc.wait() != 0 or result is None:
        raise RuntimeError(f"the {size} {variant} engine's process failed (exit {proc.returncode})")
    return result


def phase_variant(args, weights_by_model):
    """The child of measure_variant_isolated: one model, one variant; the result as one RESULT line."""
    size, = args.models
    variant, = args.variants
    print("RESULT " + json.dumps(measure_variant(size, weights_by_model[size], variant, args)), flush=True)


def phase_latency(args, weights_by_model):
    results = LOG.results.setdefault("latency", {})
    table = []
    for size in args.models:
        ours = {}
        for variant in args.variants:
            if args.in_process:
                measured = measure_variant(size, weights_by_model[size], variant, args)
                torch.cuda.empty_cache()   # the engine's memory, before the next one loads
            else:
                measured = measure_variant_isolated(size, variant, args)
            for B, S in args.shapes:
                ours[(variant, B, S)] = measured["medians"][f"{B}x{S}"]
            results[f"tuning {size} {variant}"] = measured["tuning"]
            results[f"in the forward {size} {variant}"] = measured["context"]
            results[f"memory {size} {variant}"] = measured["memory"]
        peer = peer_latency(size, args.shapes) if not args.no_peer else {}
        for B, S in args.shapes:
            best = min(args.variants, key=lambda v: ours[(v, B, S)])
            row = {"model": size, "batch": B, "seq": S, "peer_ms": peer.get((B, S)),
                   **{v: ours[(v, B, S)] for v in args.variants}, "best": best}
            table.append(row)
            results[f"{size} {B}x{S}"] = row
    LOG("")
    LOG("| model | b x s | " + " | ".join(f"ours {v} ms" for v in args.variants) + " | peer ms | ratio (best) "
        "| target |")
    LOG("|---|---|" + "---|" * len(args.variants) + "---|---|---|")
    for row in table:
        peer = row["peer_ms"]
        ratio = row[row["best"]] / peer if peer else float("nan")
        target = TARGETS.get((row["model"], row["batch"], row["seq"]))
        LOG(f"| {row['model']} | {row['batch']}x{row['seq']} | "
            + " | ".join(f"{row[v]:.3f}" for v in args.variants)
            + f" | {peer if peer else 'n/a'} | {ratio:.3f} ({row['best']}) | "
            + (f"<= {target}" + (" met" if ratio <= target else " MISSED") if target else "") + " |")


def phase_serve(args, weights_by_model):
    """The compare phase's child: one side (--side ours: our engine variant; peer: the peer's model) of one model,
    every shape's forward set up (ours tuned, graphs captured), then timed on request, each side by its own
    script's timing code (perf.py's GpuRunner.benchmark; bench/torch_baseline.py's time_ms): reads
    'B S replays' lines, answers 'MS <median ms>' lines."""
    size, = args.models
    if args.side == "ours":
        eng, runner_options = variant_engine(size, weights_by_model[size], args.compare_variant, args.shapes)
        runner = GpuRunner(eng, **runner_options)
        for B, S in args.shapes:
            runner.benchmark_forward(B, S, seed=12345)   # tuned and captured before any timing

        def median_ms(B, S, replays):
            return statistics.median(runner.benchmark(B, S, warmup=10, iterations=replays, duration=0.0, seed=12345))
    else:
        model = peer_model(size)
        forwards = {(B, S): peer_forward(model, B, S) for B, S in args.shapes}

        def median_ms(B, S, replays):
            return PEER.time_ms(forwards[(B, S)], replays)[0]   # its own warm-up (10 calls), as perf.py's -w 10
    print("READY", flush=True)
    for line in sys.stdin:
        B, S, replays = (int(v) for v in line.split())
        print(f"MS {median_ms(B, S, replays)!r}", flush=True)


class Server:
    """A phase_serve child process."""

    def __init__(self, side, size, args):
        cmd = [sys.executable, os.path.abspath(__file__), "--phases", "serve", "--side", side, "--models", size,
               "--shapes", ",".join(f"{B}x{S}" for B, S in args.shapes), "--compare-variant", args.compare_variant,
               "--out", ""]
        self.label = f"{size} {side}"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reply("READY")

    def _reply(self, tag):
        for line in self.proc.stdout:
            if line.startswith(tag):
                return line[len(tag):].strip()
            if not line.startswith(("device ", "random ")):
                LOG(line.rstrip("\n"))
        raise RuntimeError(f"the {self.label} process ended (exit {self.proc.wait()})")

    def time(self, B, S, replays):
        self.proc.stdin.write(f"{B} {S} {replays}\n")
        self.proc.stdin.flush()
        return float(self._reply("MS "))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def phase_compare(args, weights_by_model):
    results = LOG.results.setdefault("compare", {})
    table = []
    for size in args.models:
        # one after the other: our tuning must not share the GPU with the peer's set-up
        servers = {"ours": Server("ours", size, args)}
        servers["peer"] = Server("peer", size, args)
        try:
            for B, S in args.shapes:
                replays = 15 if B * S >= 8192 else 100
                rounds = {side: [] for side in servers}
                for r in range(args.rounds):
                    for side in (("ours", "peer") if r % 2 == 0 else ("peer", "ours")):
                        rounds[side].append(servers[side].time(B, S, replays))
                row = {"model": size, "batch": B, "seq": S, "variant": args.compare_variant, "rounds": rounds,
                       "ours_ms": statistics.median(rounds["ours"]), "peer_ms": statistics.median(rounds["peer"]),
                       "round_ratios": [o / p for o, p in zip(rounds["ours"], rounds["peer"])]}
                row["ratio"] = row["ours_ms"] / row["peer_ms"]
                LOG(f"compare {size} {B}x{S}: ours " + " ".join(f"{t:.3f}" for t in rounds["ours"]) + " | peer "
                    + " ".join(f"{t:.3f}" for t in rounds["peer"]))
                table.append(row)
                results[f"{size} {B}x{S}"] = row
        finally:
            for server in servers.values():
                server.close()
    LOG("")
    LOG(f"| model | b x s | ours {args.compare_variant} ms | peer ms | ratio | rounds' ratios | target |")
    LOG("|---|---|---|---|---|---|---|")
    for row in table:
        target = TARGETS.get((row["model"], row["batch"], row["seq"]))
        LOG(f"| {row['model']} | {row['batch']}x{row['seq']} | {row['ours_ms']:.3f} | {row['peer_ms']:.3f} | "
            f"{row['ratio']:.3f} | {min(row['round_ratios']):.3f}-{max(row['round_ratios']):.3f} | "
            + (f"<= {target}" + (" met" if row["ratio"] <= target else " MISSED") if target else "") + " |")


def parse_variant(variant):
    """'gemm/gelu[/option...]' -> (gemm, gelu, GpuRunner options); options: nopdl, noctx (no second timing of
    close choices in the whole forward), notune (PyTorch's cuBLAS algorithms, no timing of cuBLASLt's), nopf (no
    L2 prefetch of the next products' weights), and an attention route (triton, sdpa)."""
    gemm, gelu, *options = variant.split("/")
    runner_options = {}
    for option in options:
        if option == "nopdl":
            runner_options["pdl"] = False
        elif option == "noctx":
            runner_options["tune_in_context"] = False
        elif option == "notune":
            runner_options["tune_products"] = False
        elif option == "nopf":
            runner_options["prefetch"] = False
        else:
            runner_options["attention"] = option
    return gemm, gelu, runner_options


# ---- tune ------------------------------------------------------------------------------------------------------------
TUNE_CONFIGS = [(64, 64, 128, 4, 4), (64, 128, 64, 4, 4), (128, 64, 64, 4, 4), (64, 32, 128, 4, 4),
                (128, 128, 64, 8, 3)]


def phase_tune(args, weights_by_model):
    """Coordinate search of the PDL path's product plans (tile config, split-K) on whole-model b1 latency: each
    product of a layer in turn, the others held at their best so far. Installs the winners for later phases."""
    default_plan = K.small_plan
    tuned = {}   # (M, N, K, can_split) -> (splits, config)

    def plan(M, N, Kd, can_split):
        return tuned.get((M, N, Kd, can_split)) or default_plan(M, N, Kd, can_split)

    K.small_plan = plan
    for size in args.models:
        config, weights = model_config(size), weights_by_model[size]
        E, I = config.hidden_size, config.intermediate_size
        seqs = [s for b, s in args.shapes if b == 1 and s <= K.PDL_MAX_ROWS] or [K.PDL_MAX_ROWS]
        eng = build_native_engine(config, weights, precision="fp16", profiles=fixed_profiles([1], seqs),
                                  variable_seqlen=False)
        runner = GpuRunner(eng)

        def measure(S):
            runner.reset_graphs()
            return statistics.median(runner.benchmark(1, S, warmup=20, iterations=100, duration=0.0, seed=7))

        for S in seqs:
            products = [(S, 3 * E, E, False), (S, E, E, True), (S, I, E, False), (S, E, I, True)]
            best = measure(S)
            LOG(f"tune {size} 1x{S}: default plans {best:.4f} ms")
            for key in products:
                for cfg in TUNE_CONFIGS:
                    for splits in ((1, 2, 4, 8) if key[3] else (1,)):
                        tuned_before = tuned.get(key)
                        tuned[key] = (splits, cfg)
                        try:
                            t = measure(S)
                        except Exception as exc:
                            LOG(f"  tune {size} {key} {cfg} x{splits}: failed ({type(exc).__name__})")
                            t = float("inf")
                        if t < best:
                            best = t
                        elif tuned_before is not None:
                            tuned[key] = tuned_before
                        else:
                            del tuned[key]
                LOG(f"  tune {size} 1x{S} {key}: {tuned.get(key, 'default')} -> {best:.4f} ms")
            LOG(f"tune {size} 1x{S}: best plans {best:.4f} ms; without PDL "
                f"{statistics.median(GpuRunner(eng, pdl=False).benchmark(1, S, 20, 150, 0.0, 7)):.4f} ms")
    LOG.results["tune"] = {str(k): v for k, v in tuned.items()}
    LOG(f"tuned plans: {tuned}")


# ---- profile ---------------------------------------------------------------------------------------------------------
def phase_profile(args, weights_by_model):
    from torch.profiler import ProfilerActivity, profile
    size = "large" if "large" in args.models else args.models[0]
    config, weights = model_config(size), weights_by_model[size]
    for B, S in [s for s in args.shapes if s in ((1, 128), (1, 384), (128, 384))] or args.shapes[:1]:
        eng = build_native_engine(config, weights, precision="fp16", profiles=fixed_profiles([B], [S]),
                                  variable_seqlen=False)
        runner = GpuRunner(eng, use_graphs=False)
        runner.benchmark(B, S, warmup=3, iterations=1, duration=0.0, seed=1)  # compile, fill the buffers
        with torch.cuda.stream(runner.stream):
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                runner.forward(B * S, B, S, uniform=True)
                torch.cuda.synchronize()
        rows = []
        for evt in prof.key_averages():
            total = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
            if total > 0 and evt.count > 0:
                rows.append((total, evt.count, evt.key))
        rows.sort(reverse=True)
        whole = sum(r[0] for r in rows)
        LOG(f"profile {size} {B}x{S} eager forward: {whole / 1e3:.3f} ms of kernels, "
            f"{sum(r[1] for r in rows)} kernels")
        for total, count, key in rows[:14]:
            LOG(f"  {total / 1e3:8.3f} ms {100 * total / whole:5.1f}%  x{count:<4} {total / count:8.1f} us  {key[:90]}")
        LOG.results.setdefault("profile", {})[f"{size} {B}x{S}"] = [(t, c, k) for t, c, k in rows]
        del runner


def parse_shapes(text):
    return [tuple(int(v) for v in item.split("x")) for item in text.split(",") if item]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--models", default="base,large")
    ap.add_argument("--shapes", default="1x128,8x128,1x384,32x384,128x384")
    ap.add_argument("--phases", default="check,micro,latency,profile")
    ap.add_argument("--variants", default="auto/erf,cublas/erf,auto/tanh",
                    help="engine GEMM route / GELU kind pairs timed in the latency phase")
    ap.add_argument("--micro-m", default="128,384,49152", help="GEMM row counts of the micro phase")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--compare-variant", default="auto/tanh", help="the engine variant the compare phase times")
    ap.add_argument("--rounds", type=int, default=8, help="compare: alternating rounds per shape")
    ap.add_argument("--side", choices=("ours", "peer"), help="serve: which side this child times")
    ap.add_argument("--in-process", action="store_true",
                    help="latency: measure every engine variant in this process (default: one process each)")
    ap.add_argument("--out", default=os.environ.get("OUT", ""))
    args = ap.parse_args()
    args.models = args.models.split(",")
    args.shapes = parse_shapes(args.shapes)
    args.variants = args.variants.split(",")
    args.micro_m = [int(m) for m in args.micro_m.split(",") if m]
    phases = args.phases.split(",")
    args.in_process = args.in_process or "tune" in phases
    props = torch.cuda.get_device_properties(0)
    import triton
    LOG(f"device {props.name}, {props.multi_processor_count} SMs; torch {torch.__version__}, triton "
        f"{triton.__version__}, CUDA {torch.version.cuda}")
    started = time.time()
    weights_by_model = {}
    needs_weights = (set(phases) & {"check", "profile", "tune", "variant"}
                     or ("serve" in phases and args.side == "ours") or ("latency" in phases and args.in_process))
    if needs_weights:
        for size in args.models:
            t0 = time.time()
            weights_by_model[size] = random_weights(size)
            LOG(f"random {size} weights: {time.time() - t0:.1f} s")
    for phase in phases:
        t0 = time.time()
        try:
            {"check": lambda: phase_check(args, weights_by_model), "micro": lambda: phase_micro(args),
             "tune": lambda: phase_tune(args, weights_by_model),
             "latency": lambda: phase_latency(args, weights_by_model),
             "variant": lambda: phase_variant(args, weights_by_model),
             "compare": lambda: phase_compare(args, weights_by_model),
             "serve": lambda: phase_serve(args, weights_by_model),
             "profile": lambda: phase_profile(args, weights_by_model)}[phase]()
        except Exception:
            LOG(f"phase {phase} FAILED:\n{traceback.format_exc()}")
        LOG(f"phase {phase}: {time.time() - t0:.1f} s")
    LOG(f"total {time.time() - started:.1f} s")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_bench.json"), "w") as f:
            json.dump(LOG.results, f, indent=1, default=str)
        with open(os.path.join(args.out, "gpu_bench.txt"), "w") as f:
            f.write("\n".join(LOG.lines) + "\n")


if __name__ == "__main__":
    main()
