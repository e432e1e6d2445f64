"""Atomic file writes: a crash never leaves a half-written engine, cache or predictions file."""
import os
import stat
import tempfile
from contextlib import contextmanager

from .errors import BertError


def check_writable(path, inputs=()):
    """Raise BertError unless `path` could be written atomically (before long work, not after); touches nothing.

    `inputs`: (what, path) pairs the run reads: files, or folders whose files it reads (engines in them excepted:
    rebuilding one is the point). An output that would replace one is refused."""
    named = path
    if not os.fspath(path):
        raise BertError("output path is empty")
    if os.fspath(path).endswith(os.sep):   # names a folder: realpath below would drop the slash and write a file
        raise BertError(f"output path names a directory: {named}")
    try:
        mode = os.stat(named).st_mode   # what the name reaches, through symlinks (/dev/stdout: a pipe, say)
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise BertError(f"output path {named} cannot be reached: {exc.strerror}") from None   # a symlink loop
    if mode is not None and stat.S_ISDIR(mode):
        raise BertError(f"output path is a directory: {named}")
    if mode is not None and not stat.S_ISREG(mode):
        raise BertError(f"output path is not a regular file (a device or pipe?): {named}")
    path = os.path.realpath(os.fspath(path))  # through symlinks: replace the file they point to, not the link
    folder = os.path.dirname(path)
    _refuse_overwriting_inputs(named, path, mode is not None, inputs)
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


def _refuse_overwriting_inputs(named, target, exists, inputs):
    """An input file is refused as output whether or not it exists yet (a cache is read if present, and a build
    may write it back); a new file inside an input folder is fine, an existing non-engine one is not."""
    for what, source in inputs:
        if not source:
            continue
        source = os.path.realpath(os.fspath(source))
        if os.path.isdir(source):
            clash = exists and os.path.dirname(target) == source and not _is_engine(target)
            victim = f"a file of the {what.removesuffix(' folder')} folder"
        else:
            clash = target == source or (exists and os.path.exists(source) and os.path.samefile(target, source))
            victim = f"the {what}"
        if clash:
            raise BertError(f"output {named} would overwrite {victim} this run reads: choose another output path")


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
