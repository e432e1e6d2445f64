"""The runner over the C++ extension `infer_c` (the engine path of inference_c.py).

CMake builds the extension from infer_c/ into <repo>/build/. It runs native engines with its own CUDA kernels and
cuBLAS, and TensorRT plans through nvinfer when CMake found TensorRT, optionally replaying a CUDA graph captured per
prepared batch size. This adapter gives it the runner contract of docs/DESIGN.md: one `bert_inf` per sequence length,
batches split to the engine's profiles, and every error as a one-line BertError.
"""
import glob
import importlib.machinery
import importlib.util
import json
import os
import sys

import numpy as np

from ..config import BertConfig
from ..engine_format import EngineFile, Profile
from ..errors import BertError

BUILD_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "build")
NOT_BUILT = ("infer_c is not built: on a machine with an NVIDIA GPU, the CUDA toolkit (cuBLAS) and pybind11 (pip "
             "install -e '.[gpu]'), run cmake -S . -B build && cmake --build build; without a GPU, use inference.py "
             "or inference_varseqlen.py")


def load_infer_c(build_dir=BUILD_DIR):
    """The extension module from `build_dir` (registered as `infer_c`, as upstream imports it)."""
    candidates = [os.path.join(build_dir, "infer_c" + suffix) for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    path = next((p for p in candidates if os.path.isfile(p)), None)
    loaded = sys.modules.get("infer_c")
    if path is not None and loaded is not None and getattr(loaded, "__file__", None) == path:
        return loaded
    if path is None:
        others = glob.glob(os.path.join(build_dir, "infer_c.*.so"))
        if others:
            raise BertError(f"infer_c in {build_dir} was built for another Python ({os.path.basename(others[0])}): "
                            f"rebuild it with this one (cmake -S . -B build -DPython_EXECUTABLE={sys.executable} "
                            f"&& cmake --build build)")
        raise BertError(NOT_BUILT)
    spec = importlib.util.spec_from_file_location("infer_c", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        raise BertError(f"infer_c in {build_dir} cannot be loaded ({exc}): rebuild it") from None
    sys.modules["infer_c"] = module
    return module


def _call(function, *args):
    """Call into the extension; its RuntimeErrors are one-line user errors."""
    try:
        return function(*args)
    except RuntimeError as exc:
        raise BertError(str(exc)) from None


def read_engine_info(infer_c, path):
    """The engine's description as an EngineFile without weights (native: its header; TensorRT: its profiles)."""
    info = _call(infer_c.engine_info, path)
    profiles = [Profile(tuple(p["batch"]), tuple(p["seq"])) for p in info["profiles"]]
    if info["kind"] != "native":
        return EngineFile(config=None, precision="unknown", variable_seqlen=info["variable_seqlen"],
                          profiles=profiles, weights={})
    header = json.loads(info["header"])
    return EngineFile(config=BertConfig.from_dict(header["config"]), precision=info["precision"],
                      variable_seqlen=info["variable_seqlen"], profiles=profiles, weights={},
                      numerics=header.get("numerics", {}), build_info=header.get("build_info", {}))


class InferCRunner:
    """Runs an engine through infer_c on the GPU."""

    device = "gpu"

    def __init__(self, path, enable_graph=False, max_seq_length=None):
        """`max_seq_length`, when given, loads the engine for that length now (its errors surface here)."""
        self._infer_c = load_infer_c()
        self.path = path
        self.enable_graph = enable_graph
        self.engine_info = read_engine_info(self._infer_c, path)
        self._sessions = {}  # sequence length -> infer_c.bert_inf
        self._last_session = None
        if max_seq_length is not None:
            self._session(self._packed_seq_len(max_seq_length) if self.engine_info.variable_seqlen
                          else max_seq_length)

    @property
    def last_infer_ms(self):
        """GPU milliseconds the engine itself spent in the latest infer_fixed/infer_packed call (upstream's
        eval time: no copies, no host work); None before the first call."""
        return None if self._last_session is None else float(sum(self._last_session.times))

    # ---- public runner contract ---------------------------------------------------------------------------------
    def infer_fixed(self, input_ids, segment_ids, input_mask):
        """Padded (B, S) int inputs -> (B, S, 2) float32 logits (0 at padding positions)."""
        arrays = [np.asarray(a) for a in (input_ids, segment_ids, input_mask)]
        if arrays[0].ndim != 2 or any(a.shape != arrays[0].shape for a in arrays):
            raise BertError(f"inputs must be three (batch, seq) arrays of one shape, got "
                            f"{', '.join(str(a.shape) for a in arrays)}")
        rows, seq_len = arrays[0].shape
        out = np.empty((rows, seq_len, 2), dtype=np.float32)
        if rows == 0:
            return out
        session = self._start(seq_len)
        for first, count, batch in self._chunks(rows, seq_len):
            chunk = [_repeat_first(a[first:first + count], batch) for a in arrays]
            logits = _call(session.run, *chunk)
            if session.variable_seqlen:  # (2, B*S): start logits, then end logits
                logits = logits.reshape(2, batch, seq_len).transpose(1, 2, 0)
            out[first:first + count] = logits.reshape(batch, seq_len, 2)[:count]
        return out

    def infer_packed(self, input_ids, segment_ids, cu_seqlens, max_seqlen=None):
        """Packed int (T,) inputs with cu_seqlens (B+1,) -> (2, T) float32 logits."""
        ids, segs = np.asarray(input_ids).reshape(-1), np.asarray(segment_ids).reshape(-1)
        cu = np.asarray(cu_seqlens, dtype=np.int64).reshape(-1)
        if ids.shape != segs.shape:
            raise BertError(f"input_ids and segment_ids differ in length ({len(ids)} vs {len(segs)})")
        if len(cu) < 2 or cu[0] != 0 or cu[-1] != len(ids) or np.any(np.diff(cu) <= 0):
            raise BertError("cu_seqlens must start at 0, rise strictly and end at the token count")
        longest = int(np.diff(cu).max())
        if max_seqlen is not None and longest > max_seqlen:
            raise BertError(f"a sequence of {longest} tokens exceeds max_seqlen {max_seqlen}")
        session = self._start(self._packed_seq_len(longest))
        out = np.empty((2, len(ids)), dtype=np.float32)
        for first, count, batch in self._chunks(len(cu) - 1, session.max_seq_length):
            lo, hi = cu[first], cu[first + count]
            chunk_cu = cu[first:first + count + 1] - lo
            chunk_ids, chunk_segs = ids[lo:hi], segs[lo:hi]
            if batch > count:  # a profile needs more sequences: repeat the first one, drop its logits
                extra, length = batch - count, chunk_cu[1]
                chunk_ids = np.concatenate([chunk_ids] + [chunk_ids[:length]] * extra)
                chunk_segs = np.concatenate([chunk_segs] + [chunk_segs[:length]] * extra)
                chunk_cu = np.concatenate([chunk_cu, chunk_cu[-1] + length * np.arange(1, extra + 1)])
            logits = _call(session.run_packed, chunk_ids, chunk_segs, chunk_cu)
            out[:, lo:hi] = logits[:, :hi - lo]
        return out

    def benchmark(self, batch_size, seq_len, warmup, iterations, duration, seed, progress=None):
        """Per-iteration GPU times (ms) of the engine on random full-length batches, as build/perf measures them
        (the loop runs in C++: `progress` is not called)."""
        session = self._session(seq_len)
        if batch_size > session.max_batch_size:
            raise BertError(f"batch size {batch_size} exceeds the engine's largest profile batch "
                            f"{session.max_batch_size} at sequence length {seq_len}")
        return list(_call(session.benchmark, batch_size, warmup, iterations, duration, seed))

    # ---- internals ----------------------------------------------------------------------------------------------
    def _profiles_for(self, seq_len):
        return [p for p in self.engine_info.profiles if p.seq[0] <= seq_len <= p.seq[2]]

    def _session(self, seq_len):
        if seq_len not in self._sessions:
            profiles = self._profiles_for(seq_len)
            if not profiles:
                raise BertError(f"None of the engine's profiles covers sequence length {seq_len}")
            max_batch = max(p.batch[2] for p in profiles)
            self._sessions[seq_len] = _call(self._infer_c.bert_inf, self.path, max_batch, seq_len, self.enable_graph)
        return self._sessions[seq_len]

    def _start(self, seq_len):
        """The session of an infer_* call, its timings restarted."""
        session = self._session(seq_len)
        session.clear_times()
        self._last_session = session
        return session

    def _packed_seq_len(self, longest):
        """Packed sequences run padded to the smallest profile length that holds the longest one."""
        lengths = [p.seq[2] for p in self.engine_info.profiles if p.seq[2] >= longest]
        if not lengths:
            raise BertError(f"a sequence of {longest} tokens exceeds the engine's longest profile "
                            f"({self.engine_info.max_seq})")
        return min(lengths)

    def _chunks(self, rows, seq_len):
        """(first row, rows, batch size to run) covering `rows`: chunks of the largest profile batch, each run at the
        smallest batch size a profile covers (a static engine of batch 8 runs 3 rows as 8)."""
        profiles = self._profiles_for(seq_len)
        largest = max(p.batch[2] for p in profiles)
        first = 0
        while first < rows:
            count = min(largest, rows - first)
            batch = min(max(count, p.batch[0]) for p in profiles if count <= p.batch[2])
            yield first, count, batch
            first += count


def _repeat_first(rows, batch):
    """`rows` grown to `batch` rows with copies of its first row (real inputs, so no empty sequence runs)."""
    if len(rows) == batch:
        return rows
    return np.concatenate([rows, np.repeat(rows[:1], batch - len(rows), axis=0)])
