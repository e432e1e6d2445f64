#!/usr/bin/env python3
"""
Benchmark a fixed-sequence-length BERT engine: GPU time per batch (CUDA-graph replays of the engine,
no copies) on a GPU, wall time on the CPU; average, 95th and 99th percentile per batch size.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers.interrupts import quiet_interrupts  # noqa: E402 (loads nothing Python has not already)

quiet_interrupts()   # a Ctrl-C while the modules below load ends with one line, not a traceback

from helpers.errors import run_cli  # noqa: E402
from helpers.perf_cli import run_perf  # noqa: E402


def main(argv=None):
    return run_perf(argv, variable_seqlen=False)


if __name__ == "__main__":
    run_cli(main)
