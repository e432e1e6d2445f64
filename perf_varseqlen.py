#!/usr/bin/env python3
"""
Benchmark a variable-sequence-length BERT engine with full-length packed sequences (cu_seqlens = 0, S, 2S, ...),
choosing the optimization profile that covers each batch size (upstream always used profile 0).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers.interrupts import quiet_interrupts  # noqa: E402 (loads nothing Python has not already)

quiet_interrupts()   # a Ctrl-C while the modules below load ends with one line, not a traceback

from helpers.errors import run_cli  # noqa: E402
from helpers.perf_cli import run_perf  # noqa: E402


def main(argv=None):
    return run_perf(argv, variable_seqlen=True)


if __name__ == "__main__":
    run_cli(main)
