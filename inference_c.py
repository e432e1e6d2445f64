#!/usr/bin/env python3
"""
This script uses a prebuilt BERT engine through the C++ extension `infer_c` (built with CMakeLists.txt into build/),
optionally replaying a CUDA graph per batch shape (--enable-graph), to answer questions from a passage or a SQuAD json.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers.interrupts import quiet_interrupts  # noqa: E402 (loads nothing Python has not already)

quiet_interrupts()   # a Ctrl-C while the modules below load ends with one line, not a traceback

from helpers.errors import BertError, StrictParser, run_cli  # noqa: E402
from helpers.qa_app import add_inference_args, parse_inference_args, run_app  # noqa: E402
from helpers.runtime import check_engine_path  # noqa: E402


def main(argv=None):
    parser = StrictParser(description=__doc__)
    add_inference_args(parser, batch=False, doc_stride=False)
    parser.add_argument("--enable-graph", action="store_true", help="Enable CUDA Graph support")
    args = parse_inference_args(parser, argv)
    if not args.engine:
        raise BertError("no engine given: pass -e/--engine")
    # the files named are checked before the extension loads, so that a missing one is named, built or not
    check_engine_path(args.engine)
    for what, path in (("vocabulary file", args.vocab_file), ("SQuAD file", args.squad_json),
                       ("passage file", args.passage_file), ("question file", args.question_file)):
        if path and not os.path.exists(path):
            raise BertError(f"{what} not found: {path}")
    from helpers.backends.infer_c_runner import InferCRunner
    runner = InferCRunner(args.engine, enable_graph=args.enable_graph, max_seq_length=args.sequence_length)
    return run_app(args, runner, batch_size=1)


if __name__ == "__main__":
    run_cli(main)
