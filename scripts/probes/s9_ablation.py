"""Session 9 probe: what each kernel of the BERT-Large b1 s384 forward costs *in the chain*.

Each ablation captures the engine's own forward (tuned as perf.py tunes it) with one kind of kernel left out (its
output buffer keeps stale values) and times it beside the full forward in interleaved rounds. The difference is
that kernel's marginal cost, launch and boundary included, which is what a faster kernel could save.
    python3 scripts/probes/s9_ablation.py [--shape 1x384]
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import torch  # noqa: E402

import gpu_bench  # noqa: E402
from helpers.backends import gpu as G  # noqa: E402
from helpers.backends import gpu_kernels as K  # noqa: E402
from helpers.native_builder import build_native_engine, fixed_profiles  # noqa: E402


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
    layers = config.num_hidden_layers

    real_ln = K.add_layernorm
    real_dense, real_before = runner._dense, runner._dense_before_layernorm
    calls = {"ln": 0}

    def ln_skipping(which):
        def ln(*a, **kw):
            calls["ln"] += 1
            if (calls["ln"] % 2 == 1) != (which == 2):   # odd calls: LN1, even: LN2 (the last LN2 is the head)
                return None
            return real_ln(*a, **kw)
        return ln

    def dense_skipping(role):
        return lambda a, dense, out, **kw: None if dense.role == role else real_dense(a, dense, out, **kw)

    def before_skipping(role):
        def before(a, dense, residual, scratch, pdl, norm):
            if dense.role == role:
                return residual, None, dense.bias
            return real_before(a, dense, residual, scratch, pdl, norm)
        return before

    ablations = {
        "full": {},
        "no attention": {(K, "varlen_attention"): lambda *a, **kw: None},
        "no LN1": {(K, "add_layernorm"): ln_skipping(1)},
        "no LN2 (but the last)": {(K, "add_layernorm"): ln_skipping(2)},
        "no QKV": {(runner, "_dense"): dense_skipping("qkv")},
        "no FFN-in": {(runner, "_dense"): dense_skipping("ffn_in")},
        "no attn-out": {(runner, "_dense_before_layernorm"): before_skipping("attn_out")},
        "no FFN-out": {(runner, "_dense_before_layernorm"): before_skipping("ffn_out")},
        "products only": {(K, "varlen_attention"): lambda *a, **kw: None, (K, "add_layernorm"): lambda *a, **kw: None},
        "our kernels only": {(runner, "_dense"): lambda *a, **kw: None,
                             (runner, "_dense_before_layernorm"): lambda a, d, r, *rest, **kw: (r, None, d.bias)},
    }

    def forward_with(patches):
        def run():
            saved = {(obj, name): getattr(obj, name) for obj, name in patches}
            try:
                for (obj, name), fn in patches.items():
                    setattr(obj, name, fn)
                calls["ln"] = 0
                runner.forward(*key)
            finally:
                for (obj, name), fn in saved.items():
                    setattr(obj, name, fn)
        return run

    with torch.cuda.stream(runner.stream):
        timed = G.graphs_ms({name: forward_with(p) for name, p in ablations.items()}, rounds=7, replays=5)
    full = timed["full"]
    print(f"{args.model} {B}x{S}: full forward {full:.4f} ms")
    for name, ms in timed.items():
        print(f"  {name:>24}: {ms:.4f} ms, saves {1e3 * (full - ms):7.1f} us = {1e3 * (full - ms) / layers:5.2f} us "
              f"a layer")


if __name__ == "__main__":
    main()
