"""Atomic file writes: a crash never leaves a half-written engine, cache or predictions file."""
import os
import signal
import stat
import tempfile
import threading
from contextlib import contextmanager

from .errors import WRITTEN, BertError

_TEMP_SUFFIX_CHARS = 1 + 8 + 4   # mkstemp's ".", its 8 random characters and ".tmp"


def check_writable(path, inputs=(), what="output"):
    """Raise BertError unless `path` could be written atomically (before long work, not after); touches nothing.

    `inputs`: (what, path) pairs the run reads: files, or folders whose files it reads (engines in them excepted:
    rebuilding one is the point). An output that would replace one is refused. `what` names the path in messages
    (an output, a timing cache...)."""
    named = path
    if not os.fspath(path):
        raise BertError(f"{what} path is empty")
    if os.fspath(path).endswith(os.sep):   # names a folder: realpath below would drop the slash and write a file
        raise BertError(f"{what} path names a directory: {named}")
    try:
        info = os.stat(named)   # what the name reaches, through symlinks (/dev/stdout: a pipe, say)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise BertError(f"{what} path {named} cannot be reached: {exc.strerror}") from None   # a symlink loop
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise BertError(f"{what} path is a directory: {named}")
    if info is not None and not stat.S_ISREG(info.st_mode):
        raise BertError(f"{what} path is not a regular file (a device or pipe?): {named}")
    path = os.path.realpath(os.fspath(path))  # through symlinks: replace the file they point to, not the link
    folder = os.path.dirname(path)
    _refuse_overwriting_inputs(named, path, info is not None, inputs)
    if not os.path.isdir(folder):
        raise BertError(f"{what} folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BertError(f"cannot write {path}: its folder is not writable")
    if info is not None and _sticky_refuses_replacing(folder, info):
        raise BertError(f"cannot replace {path}: it belongs to another user, in a folder where only a file's owner "
                        f"may replace it")
    return path, folder


@contextmanager
def atomic_open(path, mode="wb"):
    """Open a temporary file beside `path`; on success fsync it and rename it over `path`."""
    path, folder = check_writable(path)
    # the temporary name must fit the file system's limit even when `path`'s own name nearly fills it
    stem = os.fsencode(os.path.basename(path))[:max(1, _name_max(folder) - 1 - _TEMP_SUFFIX_CHARS)]
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.fsdecode(stem) + ".", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise BertError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # an existing file keeps its permissions (a private file stays private); a new one gets the umask's
        os.chmod(tmp, os.stat(path).st_mode & 0o7777 if os.path.isfile(path) else 0o666 & ~_umask())
        with _signals_held():   # the rename and its record happen together: an interrupt is raised after both
            try:
                os.replace(tmp, path)
            except OSError as exc:   # name the destination, not the hidden temporary file
                raise BertError(f"cannot write {path}: {exc.strerror}") from None
            WRITTEN.append(path)
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


@contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM held back until this ends, then acted on as they would have been. Python runs signal
    handlers in the main thread whichever thread the signal reached, so the handlers are swapped (a signal mask
    would hold it back from this thread only). A signal that lands while they are swapped back is passed on, never
    kept: the holding handler forwards once `holding` is off."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending, previous, holding = [], {}, [True]

    def hold(signum, frame):
        if holding[0]:
            pending.append(signum)
        else:
            _act_on(signum, previous[signum])
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, hold)
        yield
    finally:
        holding[0] = False
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        if pending:
            _act_on(pending[0], previous[pending[0]])


def _act_on(signum, handler):
    """Do what `handler` (as signal.signal returned it; None: installed outside Python) does with `signum`."""
    signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    if callable(handler):
        handler(signum, None)   # KeyboardInterrupt, or errors.Terminated
    elif handler != signal.SIG_IGN:
        signal.raise_signal(signum)


def _name_max(folder):
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _sticky_refuses_replacing(folder, info):
    """In a sticky folder (/tmp) only the file's owner, the folder's owner or root may rename over a file."""
    uid = os.geteuid()
    folder_info = os.stat(folder)
    return bool(folder_info.st_mode & stat.S_ISVTX) and uid not in (0, info.st_uid, folder_info.st_uid)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
