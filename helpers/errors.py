"""One error type for everything a user can get wrong, and the CLI wrapper that turns it into one line.

Library code raises `BertError` (or lets `FileNotFoundError`/`PermissionError`/`IsADirectoryError` escape);
`run_cli` prints `error: <message>` on stderr and exits with status 2, never a traceback.
OSErrors (missing or unwritable files, a full disk) are reported the same way.
"""
import argparse
import gzip
import json
import os
import re
import signal
import stat
import sys
import threading
import zlib

from .interrupts import fail, ignore_signals


class BertError(Exception):
    """A problem with the user's input, files or machine, described in one line."""


class _StoreOnce(argparse._StoreAction):
    """A single-valued option: given twice, argparse would keep the last value and silently drop the first (a
    second -q question would never be answered), so the second is an error."""

    def __call__(self, parser, namespace, values, option_string=None):
        if self.dest in parser.given:
            raise argparse.ArgumentError(self, "given more than once (only one value can count)")
        parser.given.add(self.dest)
        super().__call__(parser, namespace, values, option_string)


class StrictParser(argparse.ArgumentParser):
    """argparse without prefix abbreviation (upstream's `--sp` -> `--sparse` hid typos), refusing a single-valued
    option given twice; errors are one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        for name in (None, "store"):   # the default action, in the registry that argument groups share too
            self.register("action", name, _StoreOnce)

    def parse_known_args(self, args=None, namespace=None):
        self.given = set()   # dests of the single-valued options met by this parse (parse_args comes here too)
        return super().parse_known_args(args, namespace)

    def error(self, message):
        raise BertError(f"{self.prog}: {message}")

    def _get_option_tuples(self, option_string):
        # allow_abbrev=False leaves single-dash options abbreviable (Python 3.11: '-t' reached '-tcf'); keep only
        # exact names and a one-letter option glued to its value ('-b8')
        return [match for match in super()._get_option_tuples(option_string)
                if match[1] == option_string or (len(match[1]) == 2 and option_string.startswith(match[1]))]


def read_bytes(path, what):
    """The content of a file the user named; a missing, unreadable or directory path, or a device (/dev/zero would
    be read until memory runs out), is a BertError naming `what`. Pipes are read (process substitution)."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                raise BertError(f"{what} is a device, not a file: {path}")
            return f.read()
    except FileNotFoundError:
        raise BertError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise BertError(f"{what} is a directory: {path}") from None
    except OSError as exc:
        raise BertError(f"cannot read {what} {path}: {exc.strerror}") from None


def refuse_empty_paths(flag_paths):
    """A BertError for the first (flag, path) pair whose path is '' (given, but naming no file: it would read as the
    flag not given)."""
    for flag, path in flag_paths:
        if path == "":
            raise BertError(f"{flag} is an empty path")


def read_json_file(path, what="json file"):
    """Parse a json (or gzip-compressed json) file; every failure is a one-line BertError naming `what`."""
    raw = read_bytes(path, what)
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise BertError(f"{what} is a damaged gzip file: {path} ({exc})") from None
    try:
        return json.loads(raw.decode("utf-8-sig"))   # a leading byte-order mark is no part of the json
    except UnicodeDecodeError:
        raise BertError(f"{what} is not UTF-8 text: {path}") from None
    except json.JSONDecodeError as exc:
        raise BertError(f"{what} is not valid json: {path} "
                        f"(line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:
        raise BertError(f"{what} is nested too deeply: {path}") from None
    except ValueError as exc:   # a number of more digits than Python converts (sys.get_int_max_str_digits)
        raise BertError(f"{what} is not valid json: {path} ({str(exc).split(':')[0]})") from None


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def require_unicode(text, what, decoded_with=None):
    """`text`, unless it holds lone surrogates: bytes that were not UTF-8, as Python decodes command-line words and
    standard input in a C locale (or a JSON \\ud800 escape). The tokenizer would drop them silently.
    `decoded_with`: the encoding Python decoded the text's bytes with, undecodable ones kept as surrogate escapes
    (ASCII in a C locale without UTF-8 mode); bytes that are UTF-8 after all are decoded as such."""
    if decoded_with and _LONE_SURROGATE.search(text):
        try:
            text = text.encode(decoded_with, "surrogateescape").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError, LookupError):
            pass   # not UTF-8 either: refused below
    if _LONE_SURROGATE.search(text):
        raise BertError(f"{what} is not UTF-8 text (it holds bytes or escapes that are no characters)")
    return text


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that cleanups run (temporary files of
    atomic writes are removed) instead of the process dying where it stands."""


def _raise_terminated(signum, frame):
    raise Terminated()


# The files this process has replaced atomically (helpers.atomic records them), in order: an interrupt's line names
# the last of its run's, complete and in place (a Ctrl-C just after the rename must not read as "nothing written").
WRITTEN = []


def _written_note(before):
    """' after FILE was written' for the last file written since WRITTEN held `before` entries, else ''."""
    written = WRITTEN[before:]
    return f" after {written[-1]} was written" if written else ""


class _OutlivingItsReader:
    """A standard stream for a run whose result is a file (a builder's engine): when the pipe's reader goes away
    (`builder.py ... | head -1`), later lines go to /dev/null instead of ending the build; so do all of them when
    the stream was closed before the run (`>&-`: Python's is None)."""

    def __init__(self, stream):
        self._stream = stream if stream is not None else open(os.devnull, "w", encoding="utf-8")

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self._stream.fileno())   # what the stream still buffers drains there too
        os.close(null)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def run_cli(main, argv=None, result_is_a_file=False):
    """Run `main(argv)`; turn expected failures into `error: ...` on stderr and exit status 2. `result_is_a_file`:
    the run goes on when its stdout or stderr reader goes away (else it ends quietly, as Unix tools do)."""
    main_thread = threading.current_thread() is threading.main_thread()
    written_before = len(WRITTEN)
    if main_thread:
        signal.signal(signal.SIGINT, signal.default_int_handler)   # KeyboardInterrupt again: cleanups run
        signal.signal(signal.SIGTERM, _raise_terminated)
    # Once a script's work is done (or has failed) a signal could only interrupt the interpreter's shutdown (thread
    # pools' finalizers, say) with a traceback: from then on it is ignored. Not for callers inside a larger program.
    finished = ignore_signals if main_thread and main.__module__ == "__main__" else (lambda: None)
    for stream in (sys.stdout, sys.stderr):   # a passage the terminal's encoding lacks is escaped, not a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    if result_is_a_file:
        sys.stdout, sys.stderr = _OutlivingItsReader(sys.stdout), _OutlivingItsReader(sys.stderr)
    try:
        if sys.stdout is None and not result_is_a_file:   # started with it closed (`>&-`): print() would drop the
            raise BertError("standard output is closed: the results could not be printed")   # results silently
        code = main(argv)
        finished()
    except BertError as exc:
        fail(str(exc), finished)
    except ModuleNotFoundError as exc:   # run outside the environment the quick start installs
        if (exc.name or "helpers").split(".")[0] == "helpers":
            raise   # the project's own module: a bug, shown whole
        fail(f"the Python package {exc.name!r} is missing: run the scripts with .venv/bin/python (made by "
             f"scripts/quickstart.sh), or pip install -e . into this Python", finished)
    except BrokenPipeError:
        os._exit(1)
    except OSError as exc:  # missing, unreadable or unwritable files, full disks
        name = exc.filename if exc.filename is not None else ""
        fail(f"{exc.strerror or exc}: {name}".rstrip(": "), finished)
    except KeyboardInterrupt:
        fail("interrupted" + _written_note(written_before), finished)
    except Terminated:
        fail("terminated" + _written_note(written_before), finished)
    except MemoryError:
        fail("out of memory", finished)
    sys.exit(code or 0)
