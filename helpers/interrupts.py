"""Ctrl-C and SIGTERM as one line, from a script's first statement on.

This module imports only what Python has loaded before any script runs (sys, and _signal, the C module under the
signal package, whose enums would load half the standard library), so a script installs the handlers before
anything slow loads: errors.py alone pulls in argparse, and the engines numpy and torch.
"""
import sys

import _signal as signal


def ignore_signals():
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def fail(message, finished=lambda: None):
    """Print `error: <message>` (one line, whatever the cause carried) on stderr and exit with status 2."""
    finished()
    message = " ".join(str(message).split())
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def quiet_interrupts():
    """For a script to call before its other imports: Ctrl-C or SIGTERM while they load ends the process with the
    one line errors.run_cli would print, not a traceback from inside an import. run_cli takes over from there."""
    try:
        signal.signal(signal.SIGINT, lambda signum, frame: fail("interrupted", ignore_signals))
        signal.signal(signal.SIGTERM, lambda signum, frame: fail("terminated", ignore_signals))
    except ValueError:   # not the main thread (a script run inside a larger program): leave its handlers alone
        pass
