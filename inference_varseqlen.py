#!/usr/bin/env python3
"""
This script uses a prebuilt variable-sequence-length BERT engine to answer questions from a passage, or from every
question of a SQuAD json into predictions.json. Windows are sent without padding (packed with cu_seqlens); in SQuAD
mode many windows share one launch, up to the engine's largest batch size.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers.interrupts import quiet_interrupts  # noqa: E402 (loads nothing Python has not already)

quiet_interrupts()   # a Ctrl-C while the modules below load ends with one line, not a traceback

from helpers.errors import BertError, StrictParser, run_cli  # noqa: E402
from helpers.qa_app import add_inference_args, parse_inference_args, run_app  # noqa: E402
from helpers.runtime import DEVICES, open_engine  # noqa: E402


def main(argv=None):
    parser = StrictParser(description=__doc__)
    add_inference_args(parser, batch=False)
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="where a native engine runs (beyond upstream): auto = GPU if usable, else CPU")
    args = parse_inference_args(parser, argv)
    if not args.engine:
        raise BertError("no engine given: pass -e/--engine")
    runner = open_engine(args.engine, args.device)
    info = runner.engine_info
    if not info.variable_seqlen:
        raise BertError(f"{args.engine} is a fixed-sequence-length engine: run it with inference.py")
    batch = info.max_batch if args.squad_json and args.passage is None and not args.passage_file else 1
    return run_app(args, runner, batch_size=batch)


if __name__ == "__main__":
    run_cli(main)
