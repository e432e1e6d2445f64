"""Session 9 probe: attention tiles in the whole b1 s384 forward, beyond the in-forward search's five.

The ablation probe (s9_ablation.py) found the attention kernel worth 5.8 us a layer at Large b1 s384: more than any
product but FFN-in and FFN-out, for 0.6 GFLOP. The in-forward search only offers 64- and 128-query blocks over
64- or 128-key blocks. Wider key blocks (256, 512: one or two passes over a 384-token sequence, so the online
softmax's loop-carried chain is one or two steps long) and narrower query blocks (16, 32: more programs) are timed
here in the forward, interleaved.
    python3 scripts/probes/s9_attention_tiles.py [--shape 1x384]
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
from helpers.native_builder import build_native_engine, fixed_profiles  # noqa: E402

TILES = [None, (64, 128, 4, 3), (64, 256, 4, 2), (64, 256, 8, 2), (64, 512, 8, 1), (64, 512, 8, 2),
         (32, 128, 4, 3), (32, 256, 4, 2), (32, 512, 4, 1), (32, 512, 8, 1), (16, 128, 4, 3), (16, 256, 4, 2),
         (16, 512, 4, 1), (128, 128, 8, 3), (128, 256, 8, 2)]


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
    chosen = runner._kernel_configs.get(("attention", key))
    print(f"{args.model} {B}x{S}: the in-forward search chose attention tile {chosen}")
    tiles = TILES + ([chosen] if chosen not in TILES else [])

    def forward_with(tile):
        def run():
            runner._kernel_configs[("attention", key)] = tile
            runner.forward(*key)
        return run

    with torch.cuda.stream(runner.stream):
        runner.forward(*key)
        reference = runner.buffers.logits[:B * S].float().clone()
        errors = {}
        for tile in tiles:
            try:
                forward_with(tile)()
            except Exception as exc:   # a tile that does not fit (shared memory, registers)
                print(f"  {str(tile):>18}: {type(exc).__name__}")
                continue
            out = runner.buffers.logits[:B * S].float()
            errors[tile] = ((out - reference).norm() / reference.norm()).item()
        timed = G.graphs_ms({tile: forward_with(tile) for tile in errors}, rounds=7, replays=5)
    base = timed[chosen]
    for tile, ms in sorted(timed.items(), key=lambda kv: kv[1]):
        print(f"  {str(tile):>18}: {ms:.4f} ms ({1e3 * (ms - base) / config.num_hidden_layers:+6.2f} us a layer "
              f"against the chosen), logits rel diff {errors[tile]:.1e}")


if __name__ == "__main__":
    main()
