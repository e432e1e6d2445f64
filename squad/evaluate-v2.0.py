#!/usr/bin/env python3
"""Official evaluation script for SQuAD version 2.0.

In addition to basic functionality, we also compute additional statistics and plot precision-recall
curves if an additional na_prob.json file is provided. This file is expected to map question ID's to
the model's predicted probability that a question is unanswerable.

Same flags and output as the official script. Differences: the data file may be gzip-compressed;
--out-file is written atomically; a prediction file that misses questions, malformed files or
(with --out-image-dir) a missing matplotlib give one `error: ...` line and exit status 2 instead
of a traceback.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from helpers.interrupts import quiet_interrupts  # noqa: E402 (loads nothing Python has not already)

quiet_interrupts()   # a Ctrl-C while the modules below load ends with one line, not a traceback

import json  # noqa: E402
import math  # noqa: E402

from helpers.errors import BertError, StrictParser, run_cli  # noqa: E402
from helpers.atomic import check_writable, write_text_atomic  # noqa: E402
from helpers.squad_metrics import (evaluate_v2, load_dataset, load_na_probs, load_predictions,  # noqa: E402
                                   load_pyplot, question_ids)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = StrictParser(description="Official evaluation script for SQuAD version 2.0.")
    parser.add_argument("data_file", metavar="data.json", help="Input data JSON file.")
    parser.add_argument("pred_file", metavar="pred.json", help="Model predictions.")
    parser.add_argument("--out-file", "-o", metavar="eval.json",
                        help="Write accuracy metrics to file (default is stdout).")
    parser.add_argument("--na-prob-file", "-n", metavar="na_prob.json",
                        help="Model estimates of probability of no answer.")
    parser.add_argument("--na-prob-thresh", "-t", type=float, default=1.0,
                        help='Predict "" if no-answer probability exceeds this (default = 1.0).')
    parser.add_argument("--out-image-dir", "-p", metavar="out_images", default=None,
                        help="Save precision-recall curves to directory.")
    parser.add_argument("--verbose", "-v", action="store_true")
    if not argv:
        parser.print_help()
        return 1
    args = parser.parse_args(argv)
    if math.isnan(args.na_prob_thresh):   # inf is the official script's way to never count a question no-answer
        raise BertError(f"--na-prob-thresh must be a number, got {args.na_prob_thresh}")
    if args.out_image_dir:
        load_pyplot()  # fail before the work, as the official script's import does
    if args.out_file:   # before the work: a bad output path fails at once, and never replaces an input
        check_writable(args.out_file, inputs=[("data file", args.data_file), ("predictions", args.pred_file),
                                              ("no-answer probabilities", args.na_prob_file)])
    dataset = load_dataset(args.data_file)["data"]
    ids = question_ids(dataset)
    preds = load_predictions(args.pred_file, ids)
    na_probs = load_na_probs(args.na_prob_file, ids) if args.na_prob_file else None
    out_eval = evaluate_v2(dataset, preds, na_probs, args.na_prob_thresh, args.out_image_dir)
    if args.out_file:
        write_text_atomic(args.out_file, json.dumps(out_eval))
    else:
        print(json.dumps(out_eval, indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
