"""Open an engine file with the runtime its content calls for: native engines on the GPU or the CPU, TensorRT plans
with TensorRT."""
import importlib.util
import os
import stat
import sys

from .engine_format import EngineFile, engine_kind
from .errors import BertError

DEVICES = ("auto", "cpu", "gpu")


def cuda_available():
    """A CUDA GPU PyTorch can use. Cheap checks first, so CPU machines do not pay PyTorch's import on every run."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "" or importlib.util.find_spec("torch") is None:
        return False
    if sys.platform.startswith("linux") and not any(os.path.exists(d) for d in ("/dev/nvidiactl", "/dev/dxg")):
        return False  # no NVIDIA driver device (native or WSL)
    import torch
    return torch.cuda.is_available()


def check_engine_path(path):
    """Raise BertError unless `path` names a regular file (what the engine holds is checked on loading)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise BertError(f"engine not found: {path}") from None
    except OSError as exc:   # a symlink loop, a name too long, a folder on the way that is no folder
        raise BertError(f"engine path {path} cannot be reached: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise BertError(f"engine path is a directory: {path}")
    if not stat.S_ISREG(mode):   # a pipe would be read twice (its kind, then its content): name it instead
        raise BertError(f"engine is not a regular file (a device or pipe?): {path}")


def open_engine(path, device="auto"):
    """A runner for the engine at `path` (see docs/DESIGN.md for the runner contract)."""
    check_engine_path(path)
    kind = engine_kind(path)
    if kind == "tensorrt":
        if device == "cpu":
            raise BertError(f"{path} is a TensorRT engine: it runs on a GPU with TensorRT, not with --device cpu")
        from .trt_runtime import TrtRunner
        try:
            return TrtRunner(path)
        except BertError as exc:
            raise BertError(f"{path} is a TensorRT engine: {exc}") from None
    if kind != "native":
        raise BertError(f"{path} is not an engine file (neither a native engine nor a TensorRT plan)")
    engine = EngineFile.load(path)
    if device == "gpu" or (device == "auto" and cuda_available()):
        if not cuda_available():
            raise BertError("--device gpu: no CUDA GPU is usable here (PyTorch with CUDA is needed)")
        from .backends.gpu import GpuRunner
        return GpuRunner(engine)
    from .backends.cpu import CpuRunner
    return CpuRunner(engine)
