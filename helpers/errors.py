"""One error type for everything a user can get wrong, and the CLI wrapper that turns it into one line.

Library code raises `BertError` (or lets `FileNotFoundError`/`PermissionError`/`IsADirectoryError` escape);
`run_cli` prints `error: <message>` on stderr and exits with status 2, never a traceback.
OSErrors (missing or unwritable files, a full disk) are reported the same way.
"""
import argparse
import os
import signal
import sys
import threading


class BertError(Exception):
    """A problem with the user's input, files or machine, described in one line."""


class StrictParser(argparse.ArgumentParser):
    """argparse without prefix abbreviation (upstream's `--sp` -> `--sparse` hid typos); errors are one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise BertError(f"{self.prog}: {message}")


def read_bytes(path, what):
    """The content of a file the user named; a missing, unreadable or directory path is a BertError naming `what`."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise BertError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise BertError(f"{what} is a directory: {path}") from None
    except OSError as exc:
        raise BertError(f"cannot read {what} {path}: {exc.strerror}") from None


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that cleanups run (temporary files of
    atomic writes are removed) instead of the process dying where it stands."""


def _raise_terminated(signum, frame):
    raise Terminated()


def run_cli(main, argv=None):
    """Run `main(argv)`; turn expected failures into `error: ...` on stderr and exit status 2."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        code = main(argv)
    except BertError as exc:
        _fail(str(exc))
    except BrokenPipeError:
        os._exit(1)
    except OSError as exc:  # missing, unreadable or unwritable files, full disks
        name = exc.filename if exc.filename is not None else ""
        _fail(f"{exc.strerror or exc}: {name}".rstrip(": "))
    except KeyboardInterrupt:
        _fail("interrupted")
    except Terminated:
        _fail("terminated")
    except MemoryError:
        _fail("out of memory")
    sys.exit(code or 0)


def _fail(message):
    message = " ".join(str(message).split())  # one line, whatever the cause carried
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)
