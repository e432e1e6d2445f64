"""Run TensorRT engines (spec §4, §6): the runner contract of docs/DESIGN.md with TensorRT 10 and cuda-python.

The engine logic (which profile, which shapes, which addresses) is plain code on the TensorRT engine and context
objects, separate from the CUDA memory it binds, so it is tested on the stand-in without a GPU. Fixes against
upstream (spec §13.10): perf on variable-length engines selects, per batch size, the profile that covers it instead
of always profile 0. Addresses are bound per tensor name: with TensorRT 10's name-based API upstream's list padded
with `profile_index * num_io_tensors` zeros binds every name to the same buffer as a plain name -> address map.
"""
from dataclasses import dataclass, field

import numpy as np

from . import cuda_utils
from .engine_format import TENSORRT_PLAN_MAGIC, Profile, ProfileSet
from .backends.inputs import perf_inputs, perf_loop
from .errors import BertError
from .trt_plugins import import_tensorrt

VOCAB_SIZE, TYPE_VOCAB_SIZE = 30522, 2  # perf's random inputs, as upstream (a plan does not record the model)
FIXED_INPUTS = ("input_ids", "segment_ids", "input_mask")
PACKED_INPUTS = ("input_ids", "segment_ids", "cu_seqlens", "max_seqlen")
OUTPUT = "logits_out"


def is_tensorrt_plan(first_bytes):
    return bytes(first_bytes[:4]) == TENSORRT_PLAN_MAGIC


@dataclass
class TrtEngineInfo(ProfileSet):
    """What the scripts need to know about a TensorRT engine (a plan does not record the model config)."""
    variable_seqlen: bool
    profiles: list                     # [helpers.engine_format.Profile]
    config: object = None
    precision: str = "tensorrt"
    max_tokens: list = field(default_factory=list)  # variable length: per profile, the most packed tokens

    def profile_fits(self, index, batch_size, seq_len):
        """A variable-length profile also bounds the packed tokens (its input_ids length)."""
        return not self.variable_seqlen or batch_size * seq_len <= self.max_tokens[index]


# ---------------------------------------------------------------------------------------------------- engine logic
def io_names(engine):
    return [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]


def engine_info(engine):
    """Profiles as (batch, seq) ranges: from input_ids (B, S) for fixed-length engines; from cu_seqlens (B+1),
    max_seqlen (S) and input_ids (T) for variable-length ones."""
    names = io_names(engine)
    variable = "cu_seqlens" in names
    expected = PACKED_INPUTS if variable else FIXED_INPUTS
    missing = [n for n in expected + (OUTPUT,) if n not in names]
    if missing:
        raise BertError(f"this TensorRT engine is not a BERT QA engine of this project (it lacks {missing})")
    profiles, max_tokens = [], []
    for index in range(engine.num_optimization_profiles):
        if variable:
            cu = engine.get_tensor_profile_shape("cu_seqlens", index)
            seq = engine.get_tensor_profile_shape("max_seqlen", index)
            tokens = engine.get_tensor_profile_shape("input_ids", index)
            profiles.append(Profile(batch=tuple(max(int(s[0]) - 1, 1) for s in cu),
                                    seq=tuple(int(s[0]) for s in seq)))
            max_tokens.append(int(tokens[2][0]))
        else:
            shapes = engine.get_tensor_profile_shape("input_ids", index)
            profiles.append(Profile(batch=tuple(int(s[0]) for s in shapes), seq=tuple(int(s[1]) for s in shapes)))
    return TrtEngineInfo(variable_seqlen=variable, profiles=profiles, max_tokens=max_tokens)


def packed_shapes(total_tokens, batch_size, max_seqlen):
    return {"input_ids": (total_tokens,), "segment_ids": (total_tokens,), "cu_seqlens": (batch_size + 1,),
            "max_seqlen": (max_seqlen,)}


def select_packed_profile(engine, shapes):
    """The first profile whose ranges hold every packed input shape, or None."""
    for index in range(engine.num_optimization_profiles):
        if all(_within(engine.get_tensor_profile_shape(name, index), shape) for name, shape in shapes.items()):
            return index
    return None


def _within(profile_shapes, shape):
    lo, _, hi = profile_shapes
    return len(lo) == len(shape) and all(a <= d <= b for a, d, b in zip(lo, shape, hi))


def set_shapes(context, shapes):
    """Set every input shape; then every shape must be known (upstream asserts infer_shapes() is empty)."""
    for name, shape in shapes.items():
        if not context.set_input_shape(name, shape):
            raise BertError(f"TensorRT rejected shape {shape} for {name}")
    unknown = context.infer_shapes()
    if unknown:
        raise BertError(f"TensorRT engine: shapes of {unknown} are not specified")


def bind_addresses(context, engine, addresses):
    """Bind each IO tensor by name; `addresses` must hold every name (inputs and the output)."""
    for name in io_names(engine):
        if name not in addresses:
            raise BertError(f"no buffer for TensorRT tensor {name}")
        context.set_tensor_address(name, addresses[name])


def pack_padded(ids, segs, mask):
    """Padded (B, S) rows -> packed ids, segments, cu_seqlens and the flat row positions of the real tokens. A row's
    length is its mask's first 0 (upstream's mask semantics)."""
    s = ids.shape[1]
    valid = mask != 0
    lengths = np.where(valid.all(1), s, np.argmin(valid, axis=1))
    if np.any(lengths == 0):
        raise BertError("a sequence with no tokens (its input_mask starts with 0)")
    rows = np.concatenate([np.arange(n) + i * s for i, n in enumerate(lengths)])
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return ids.reshape(-1)[rows], segs.reshape(-1)[rows], cu, rows


def pad_packed(ids, segs, cu, seq_len):
    """Packed tokens -> padded (B, seq_len) ids, segments and mask."""
    lengths = np.diff(cu)
    padded = np.zeros((3, len(lengths), seq_len), dtype=np.int32)
    for i, (lo, n) in enumerate(zip(cu[:-1], lengths)):
        padded[0, i, :n], padded[1, i, :n], padded[2, i, :n] = ids[lo:lo + n], segs[lo:lo + n], 1
    return padded[0], padded[1], padded[2]


def padded_length(info, batch_size, longest):
    """The shortest padded length a fixed-length engine's profiles allow for this batch (a static engine takes
    only its own)."""
    fitting = [max(longest, p.seq[0]) for p in info.profiles
               if p.batch[0] <= batch_size <= p.batch[2] and p.seq[2] >= longest]
    if not fitting:
        raise BertError(f"no optimization profile of this engine runs {batch_size} sequences of up to {longest} "
                        f"tokens")
    return min(fitting)


def run_bound(context, stream_handle):
    if not context.execute_async_v3(stream_handle):
        raise BertError("TensorRT execution failed (execute_async_v3 returned False; see TensorRT's message above)")


# ---------------------------------------------------------------------------------------------------- the runner
class TrtRunner:
    """Runs a TensorRT plan on the GPU. Device buffers are sized once for the largest profile."""

    device = "gpu"

    def __init__(self, path):
        trt = import_tensorrt()
        from .trt_plugins import load_plugin_library
        with open(path, "rb") as f:
            plan = f.read()
        if not is_tensorrt_plan(plan[:4]):
            raise BertError(f"{path} is not a TensorRT plan")
        self.logger = trt.Logger(trt.Logger.ERROR)
        load_plugin_library(trt, self.logger)  # the BERT plugins must be registered before deserializing
        self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BertError(f"TensorRT could not deserialize {path}: it was built by another TensorRT version or "
                            f"on another GPU, or is corrupt; rebuild it here")
        self.engine_info = engine_info(self.engine)
        self.context = self.engine.create_execution_context()
        self.stream = cuda_utils.CudaStream()
        self.profile = None
        self.buffers = {name: cuda_utils.DeviceBuffer(self._max_bytes(name)) for name in io_names(self.engine)}
        # page-locked host memory for the logits, as upstream registers its output array
        self.host_output = cuda_utils.PinnedArray((self._max_bytes(OUTPUT) // 4,), np.float32)

    def _max_bytes(self, name):
        if name == OUTPUT:
            info = self.engine_info
            if info.variable_seqlen:
                return 2 * max(info.max_tokens) * 4
            return 2 * max(p.batch[2] * p.seq[2] for p in info.profiles) * 4
        volumes = [int(np.prod(self.engine.get_tensor_profile_shape(name, i)[2]))
                   for i in range(self.engine.num_optimization_profiles)]
        return max(volumes) * 4  # every input is int32

    def _use_profile(self, index):
        if index != self.profile:
            if not self.context.set_optimization_profile_async(index, self.stream.handle):
                raise BertError(f"TensorRT could not switch to optimization profile {index}")
            self.profile = index

    def _prepare(self, shapes, host_inputs):
        """Select the profile, set shapes, copy inputs, bind addresses (upstream's order)."""
        index = (select_packed_profile(self.engine, shapes) if self.engine_info.variable_seqlen
                 else self.engine_info.select_profile(*shapes["input_ids"]))
        if index is None:
            raise BertError(f"Could not find any profile that can run input shapes {shapes}")
        self._use_profile(index)
        set_shapes(self.context, shapes)
        for name, array in host_inputs.items():
            cuda_utils.memcpy_htod_async(self.buffers[name].ptr, np.ascontiguousarray(array, dtype=np.int32),
                                         self.stream)
        bind_addresses(self.context, self.engine, {name: buf.ptr for name, buf in self.buffers.items()})

    def _fetch(self, shape):
        staging = self.host_output.array[:int(np.prod(shape))]
        cuda_utils.memcpy_dtoh_async(staging, self.buffers[OUTPUT].ptr, self.stream)
        self.stream.synchronize()
        return staging.reshape(shape).copy()

    # ---- runner contract --------------------------------------------------------------------------------------
    def infer_fixed(self, input_ids, segment_ids, input_mask):
        arrays = [np.asarray(a) for a in (input_ids, segment_ids, input_mask)]
        if arrays[0].ndim != 2 or any(a.shape != arrays[0].shape for a in arrays):
            raise BertError("inputs must be three (batch, seq) arrays of one shape")
        if self.engine_info.variable_seqlen:  # pack each row's real tokens (its mask's first 0)
            ids, segs, cu, rows = pack_padded(*arrays)
            out = np.zeros((arrays[0].size, 2), dtype=np.float32)
            out[rows] = self.infer_packed(ids, segs, cu).T
            return out.reshape(arrays[0].shape + (2,))
        b, s = arrays[0].shape
        self._prepare({name: (b, s) for name in FIXED_INPUTS}, dict(zip(FIXED_INPUTS, arrays)))
        run_bound(self.context, self.stream.handle)
        return self._fetch((b, s, 2, 1, 1)).reshape(b, s, 2)

    def infer_packed(self, input_ids, segment_ids, cu_seqlens, max_seqlen=None):
        ids, segs = (np.asarray(a).reshape(-1) for a in (input_ids, segment_ids))
        cu = np.asarray(cu_seqlens).reshape(-1)
        lengths = np.diff(cu)
        if len(cu) < 2 or cu[0] != 0 or cu[-1] != len(ids) or np.any(lengths <= 0) or len(segs) != len(ids):
            raise BertError("cu_seqlens must start at 0, rise strictly and end at the token count")
        if not self.engine_info.variable_seqlen:  # pad to a length one of the engine's profiles takes
            seq_len = padded_length(self.engine_info, len(lengths), int(lengths.max()))
            logits = self.infer_fixed(*pad_packed(ids, segs, cu, seq_len))
            return np.concatenate([logits[i, :n] for i, n in enumerate(lengths)]).T
        longest = max(int(max_seqlen or 0), int(lengths.max()))  # the kernels pick their tile from it
        shapes = packed_shapes(len(ids), len(cu) - 1, longest)
        # max_seqlen's contents are never read (only its shape); its buffer is bound but not written
        self._prepare(shapes, {"input_ids": ids, "segment_ids": segs, "cu_seqlens": cu})
        run_bound(self.context, self.stream.handle)
        return self._fetch((2, len(ids), 1, 1)).reshape(2, len(ids))

    def benchmark(self, batch_size, seq_len, warmup, iterations, duration, seed, progress=None):
        """GPU time (ms) of execute_async_v3 alone per iteration, between CUDA events, as upstream's perf.py."""
        ids, segs = perf_inputs(batch_size, seq_len, seed, VOCAB_SIZE, TYPE_VOCAB_SIZE)
        if self.engine_info.variable_seqlen:
            cu = np.arange(0, batch_size * seq_len + 1, seq_len, dtype=np.int32)
            self._prepare(packed_shapes(len(ids), batch_size, seq_len),
                          {"input_ids": ids, "segment_ids": segs, "cu_seqlens": cu})
        else:
            shape = (batch_size, seq_len)
            self._prepare({name: shape for name in FIXED_INPUTS},
                          {"input_ids": ids.reshape(shape), "segment_ids": segs.reshape(shape),
                           "input_mask": np.ones(shape, dtype=np.int32)})
        def run():
            run_bound(self.context, self.stream.handle)

        def time_run():
            start.record(self.stream)
            run()
            end.record(self.stream)
            return end.elapsed_ms_since(start)
        start, end = cuda_utils.CudaEvent(), cuda_utils.CudaEvent()
        try:
            return perf_loop(run, time_run, warmup, iterations, duration, progress,
                             after_warmup=self.stream.synchronize)
        finally:
            start.destroy()
            end.destroy()
