"""INT8 post-training calibration for builder.py (spec §3.7, §5.3): SQuAD features in, a calibration cache out.

`calibration_inputs` makes the calibration batches (pure numpy, testable without a GPU); `CalibrationCache` reads
and atomically writes the cache; `make_calibrator` wraps both in a `tensorrt.IInt8LegacyCalibrator` that copies
each batch into device buffers. The buffers and the SQuAD features are only made when TensorRT actually asks for
a batch, so a build that finds its cache touches neither the GPU nor the dataset.
"""
import os
from dataclasses import dataclass

import numpy as np

from .atomic import write_bytes_atomic
from .data_processing import convert_example_to_features, read_squad_json
from .errors import BertError
from .tokenization import FullTokenizer

DOC_STRIDE = 128
MAX_QUERY_LENGTH = 64
CALIBRATION_INPUTS = ("input_ids", "segment_ids", "input_mask")


@dataclass
class CalibrationInputs:
    """int32 (N, S) arrays: one row per calibration sentence."""
    input_ids: np.ndarray
    segment_ids: np.ndarray
    input_mask: np.ndarray

    def __len__(self):
        return len(self.input_ids)

    def batch(self, start, size):
        return {name: np.ascontiguousarray(getattr(self, name)[start:start + size]) for name in CALIBRATION_INPUTS}


def calibration_inputs(squad_json, vocab_file, max_seq_length, num_inputs, do_lower_case=True):
    """The first window of each of the first `num_inputs` SQuAD questions, as upstream feeds its calibrator."""
    if num_inputs < 1:
        raise BertError("--calib-num must be at least 1")
    tokenizer = FullTokenizer(vocab_file, do_lower_case=do_lower_case)
    rows = []
    for example in read_squad_json(squad_json)[:num_inputs]:
        first = convert_example_to_features(example.doc_tokens, example.question_text, tokenizer, max_seq_length,
                                            DOC_STRIDE, MAX_QUERY_LENGTH)[0]
        rows.append((first.input_ids, first.segment_ids, first.input_mask))
    if not rows:
        raise BertError(f"{squad_json} has no questions to calibrate with")
    ids, segs, mask = (np.asarray(column, dtype=np.int32) for column in zip(*rows))
    return CalibrationInputs(ids, segs, mask)


class CalibrationCache:
    def __init__(self, path):
        self.path = os.fspath(path)

    def read(self):
        """The cache's bytes, or None when there is none yet."""
        if not os.path.isfile(self.path):
            return None
        with open(self.path, "rb") as f:
            return f.read()

    def write(self, data):
        write_bytes_atomic(self.path, bytes(data))


def make_calibrator(trt, squad_json, vocab_file, cache_file, batch_size, max_seq_length, num_inputs,
                    do_lower_case=True):
    """A BertCalibrator, TensorRT's IInt8LegacyCalibrator subclass (the class needs the tensorrt module)."""
    from . import cuda_utils

    class BertCalibrator(trt.IInt8LegacyCalibrator):
        def __init__(self):
            trt.IInt8LegacyCalibrator.__init__(self)
            self.cache = CalibrationCache(cache_file)
            self.batch_size = batch_size
            self.current_index = 0
            self.inputs = None    # CalibrationInputs, made on the first get_batch
            self.buffers = None   # {input name: DeviceBuffer}
            self.batch_count = 0

        def get_batch_size(self):
            return self.batch_size

        def get_batch(self, names):
            if self.inputs is None:
                self.inputs = calibration_inputs(squad_json, vocab_file, max_seq_length, num_inputs, do_lower_case)
                nbytes = self.batch_size * max_seq_length * np.dtype(np.int32).itemsize
                self.buffers = {name: cuda_utils.DeviceBuffer(nbytes) for name in CALIBRATION_INPUTS}
            if self.current_index + self.batch_size > len(self.inputs):
                print(f"Calibrating index {self.current_index} batch size {self.batch_size} exceed max input limit "
                      f"{len(self.inputs)} sentences")
                return None
            self.batch_count += 1
            if self.batch_count % 10 == 0:
                print(f"Calibrating batch {self.batch_count}, containing {self.batch_size} sentences")
            for name, array in self.inputs.batch(self.current_index, self.batch_size).items():
                cuda_utils.memcpy_htod(self.buffers[name].ptr, array)
            self.current_index += self.batch_size
            return [self.buffers[name].ptr for name in names]  # in the order TensorRT asks for

        def read_calibration_cache(self):
            return self.cache.read()

        def write_calibration_cache(self, cache):
            self.cache.write(cache)

        def get_quantile(self):
            return 0.9999

        def get_regression_cutoff(self):
            return 1.0

        def read_histogram_cache(self, length):
            return None

        def write_histogram_cache(self, ptr, length):
            return None

        def free(self):
            for buffer in (self.buffers or {}).values():
                buffer.free()
            self.buffers = None

    return BertCalibrator()
