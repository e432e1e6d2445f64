"""Atomic file writes: a crash never leaves a half-written engine, cache or predictions file."""
import os
import tempfile
from contextlib import contextmanager

from .errors import BertError


def check_writable(path, inputs=()):
    """Raise BertError unless `path` could be written atomically (before long work, not after); touches nothing.

    `inputs`: (what, path) pairs the run reads: files, TensorFlow checkpoint prefixes, or folders whose files it
    reads (engines in them excepted: rebuilding one is the point). An output that would replace one is refused."""
    named = path
    path = os.path.realpath(os.fspath(path))  # through symlinks: replace the file they point to, not the link
    folder = os.path.dirname(path)
    if os.path.islink(path):
        raise BertError(f"output path is a symbolic link that never reaches a file (a loop?): {named}")
    if os.path.isfile(path):
        _refuse_overwriting_inputs(named, path, inputs)
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
        # an existing file keeps its permissions (a private file stays private); a new one gets the umask's
        os.chmod(tmp, os.stat(path).st_mode & 0o7777 if os.path.isfile(path) else 0o666 & ~_umask())
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


def _refuse_overwriting_inputs(named, target, inputs):
    for what, source in inputs:
        if not source:
            continue
        source = os.path.realpath(os.fspath(source))
        if os.path.isdir(source):
            clash = os.path.dirname(target) == source and not _is_engine(target)
            what = f"a file of the {what} folder"
        elif os.path.exists(source):
            clash = os.path.samefile(target, source)
        else:   # a TensorFlow checkpoint prefix: its files are prefix.index, prefix.data-*
            clash = target.startswith(source + ".")
        if clash:
            raise BertError(f"output {named} would overwrite {what if what.startswith('a ') else 'the ' + what} "
                            f"this run reads: choose another output path")


def _is_engine(path):
    from .engine_format import MAGIC, TENSORRT_PLAN_MAGIC
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head.startswith((MAGIC, TENSORRT_PLAN_MAGIC))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
