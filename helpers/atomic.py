"""Atomic file writes: a crash never leaves a half-written engine, cache or predictions file."""
import os
import tempfile
from contextlib import contextmanager

from .errors import BertError


def check_writable(path):
    """Raise BertError unless `path` could be written atomically (before long work, not after); touches nothing."""
    path = os.path.realpath(os.fspath(path))  # through symlinks: replace the file they point to, not the link
    folder = os.path.dirname(path)
    if os.path.isdir(path):
        raise BertError(f"output path is a directory: {path}")
    if os.path.exists(path) and not os.path.isfile(path):
        raise BertError(f"output path is not a regular file (a device or pipe?): {path}")
    if not os.path.isdir(folder):
        raise BertError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BertError(f"cannot write {path}: its folder is not writable")
    return path, folder


@contextmanager
def atomic_open(path, mode="wb"):
    """Open a temporary file beside `path`; on success fsync it and rename it over `path`."""
    path, folder = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise BertError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_bytes_atomic(path, data):
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text_atomic(path, text):
    with atomic_open(path, "w") as f:
        f.write(text)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
