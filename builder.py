#!/usr/bin/env python3
"""Build a fixed-sequence-length BERT question-answering engine (upstream's builder.py flags).

With TensorRT importable the engine is a TensorRT plan built as demoBERT builds it; otherwise (or with
--backend native) it is this project's native engine, which inference.py and perf.py run on the GPU or the CPU.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers.interrupts import quiet_interrupts  # noqa: E402 (loads nothing Python has not already)

quiet_interrupts()   # a Ctrl-C while the modules below load ends with one line, not a traceback

from helpers.errors import run_cli  # noqa: E402
from helpers import build_cli  # noqa: E402
from helpers.native_builder import check_shapes, fixed_profiles  # noqa: E402


def parse_args(argv):
    parser = build_cli.make_parser()
    build_cli.add_common_args(parser)
    parser.add_argument("-b", "--batch-size", default=[], action="append", type=int,
                        help="Batch size(s) to optimize for. The engine will be usable with any batch size below "
                             "this, but may not be optimal for smaller sizes. Can be specified multiple times.")
    parser.add_argument("-s", "--sequence-length", default=[], action="append", type=int,
                        help="Sequence length of the BERT model (can be specified multiple times)")
    parser.add_argument("-t", "--strict", action="store_true",
                        help="Indicates that inference should be run in strict precision mode (TensorRT only)")
    parser.add_argument("-g", "--force-fc2-gemm", action="store_true", help="Force use gemm to implement FC2 layer "
                        "(accepted for compatibility; no effect since TensorRT 10.6, as upstream)")
    parser.add_argument("-iln", "--force-int8-skipln", action="store_true",
                        help="Run skip layernorm with INT8 (FP32 or FP16 by default) inputs and output (TensorRT only)")
    parser.add_argument("-imh", "--force-int8-multihead", action="store_true",
                        help="Run multi-head attention with INT8 (FP32 or FP16 by default) input and output "
                             "(TensorRT only)")
    parser.add_argument("--distributive_independence", action="store_true",
                        help="Set DISTRIBUTIVE_INDEPENDENCE and build a single optimization profile")
    args = parser.parse_args(argv)
    # a repeated value counts once, for both backends (upstream's TensorRT builder made a duplicate profile)
    args.batch_size = list(dict.fromkeys(args.batch_size or [1]))
    args.sequence_length = list(dict.fromkeys(args.sequence_length or [128]))
    if args.workspace_size is None:
        args.workspace_size = 2500
    return args


def main(argv=None):
    args = parse_args(argv)
    backend = build_cli.choose_backend(args)
    config, weights = build_cli.load_model(args, priority=("onnx", "pytorch", "ckpt"))
    check_shapes(config, args.batch_size, args.sequence_length)
    if backend == "tensorrt":
        from helpers.trt_builder import build_fixed_engine
        build_cli.save_engine(args, lambda: build_fixed_engine(args, config, weights))
        return 0
    profiles = fixed_profiles(args.batch_size, args.sequence_length, args.distributive_independence)
    build_cli.save_native_engine(args, config, weights, profiles, variable_seqlen=False, script="builder.py")
    return 0


if __name__ == "__main__":
    run_cli(main, result_is_a_file=True)
