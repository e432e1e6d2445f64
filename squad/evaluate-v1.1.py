#!/usr/bin/env python3
"""Official evaluation script for v1.1 of the SQuAD dataset, with demoBERT's accuracy gate.

usage: evaluate-v1.1.py dataset_file prediction_file f1_acc

Prints `&&&& PASSED TensorRT BERT Squad Accuracy matches reference.` (or FAILED, when the F1 is more
than 0.5 below f1_acc), then the json line {"exact_match": ..., "f1": ...}. Questions without a
prediction score 0 and are named on stderr. The dataset may be gzip-compressed.

Deliberate change from demoBERT: the exit status is 0 on PASSED and 1 on FAILED (upstream always
exits 0), so scripts and CI can rely on it; the printed text is unchanged. Bad files or arguments
print one `error: ...` line and exit with status 2.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from helpers.interrupts import quiet_interrupts  # noqa: E402 (loads nothing Python has not already)

quiet_interrupts()   # a Ctrl-C while the modules below load ends with one line, not a traceback

import json  # noqa: E402
import math  # noqa: E402

from helpers.errors import BertError, StrictParser, run_cli  # noqa: E402
from helpers.squad_metrics import (accuracy_line, accuracy_passes, load_dataset, load_predictions,  # noqa: E402
                                   question_ids, score_v1, v1_questions)

EXPECTED_VERSION = "1.1"


def main(argv=None):
    parser = StrictParser(description="Evaluation for SQuAD " + EXPECTED_VERSION)
    parser.add_argument("dataset_file", help="Dataset file")
    parser.add_argument("prediction_file", help="Prediction File")
    parser.add_argument("f1_acc", type=float, help="Reference Accuracy")
    args = parser.parse_args(argv)
    if not math.isfinite(args.f1_acc):
        raise BertError(f"f1_acc must be a finite number, got {args.f1_acc}")
    dataset_json = load_dataset(args.dataset_file)
    predictions = load_predictions(args.prediction_file, question_ids(dataset_json["data"]))
    questions = v1_questions(dataset_json["data"], predictions)
    version = dataset_json.get("version")
    if version != EXPECTED_VERSION:  # upstream's notice, first as upstream's; once the files are known usable
        print(f"Evaluation expects v-{EXPECTED_VERSION}, but got dataset with v-{version}", file=sys.stderr)
    result = score_v1(questions, predictions)
    passed = accuracy_passes(result["f1"], args.f1_acc)
    print(accuracy_line(passed))
    print(json.dumps(result))
    return 0 if passed else 1


if __name__ == "__main__":
    run_cli(main)
