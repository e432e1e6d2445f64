#!/usr/bin/env python3
"""Build a variable-sequence-length BERT question-answering engine (upstream's builder_varseqlen.py flags).

Inputs are packed tokens with `cu_seqlens`, so no work is spent on padding. With TensorRT importable the engine is a
TensorRT plan built as demoBERT builds it; otherwise (or with --backend native) it is this project's native engine.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers.interrupts import quiet_interrupts  # noqa: E402 (loads nothing Python has not already)

quiet_interrupts()   # a Ctrl-C while the modules below load ends with one line, not a traceback

from helpers.errors import BertError, run_cli  # noqa: E402
from helpers import build_cli  # noqa: E402
from helpers.native_builder import check_shapes, varseqlen_profiles  # noqa: E402


def parse_args(argv):
    parser = build_cli.make_parser()
    build_cli.add_common_args(parser)
    parser.add_argument("-pkl", "--pickle", required=False, help="The pickle weight dictionary file path for the "
                        "Megatron variant of BERT.")
    parser.add_argument("-b", "--max-batch-size", default=[], action="append", type=int,
                        help="Max batch size. The engine will be usable with any input with (batch-size * "
                             "sequence-length) below (max-batch-size * max-sequence-length). Can be specified "
                             "multiple times to build optimization profiles for more than one batch size.")
    parser.add_argument("-s", "--max-sequence-length", default=128, type=int,
                        help="Max sequence length of the BERT model")
    parser.add_argument("-il", "--interleaved", action="store_true",
                        help="use interleaved format, only valid in INT8 precision (TensorRT only)")
    parser.add_argument("--megatron", action="store_true",
                        help="use megatron fused kernel (requires --int8 -il and --pickle; TensorRT only)")
    args = parser.parse_args(argv)
    args.max_batch_size = list(dict.fromkeys(args.max_batch_size or [1]))   # a repeated value counts once
    if args.megatron and not (args.int8 and args.interleaved and args.pickle):
        raise BertError("--megatron requires --int8, -il/--interleaved and --pickle")
    if args.interleaved and not args.int8:
        raise BertError("-il/--interleaved is only valid with --int8")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.int8 and not (args.onnx or args.pytorch or args.pickle):
        raise BertError("Post training calibration is not supported in variable-length BERT: with --int8 give "
                        "quantization scales through --onnx, --pytorch or --pickle")
    backend = build_cli.choose_backend(args)
    config, weights = build_cli.load_model(args, priority=("onnx", "pytorch", "ckpt", "pickle"))
    check_shapes(config, args.max_batch_size, [args.max_sequence_length])
    if backend == "tensorrt":
        from helpers.trt_builder import build_varseqlen_engine
        build_cli.save_engine(args, lambda: build_varseqlen_engine(args, config, weights))
        return 0
    profiles = varseqlen_profiles(args.max_batch_size, args.max_sequence_length)
    build_cli.save_native_engine(args, config, weights, profiles, variable_seqlen=True, script="builder_varseqlen.py")
    return 0


if __name__ == "__main__":
    run_cli(main, result_is_a_file=True)
