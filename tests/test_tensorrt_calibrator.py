"""INT8 post-training calibration (spec §3.7, §5.3): the calibration sentences, the cache file, and how a build
uses an existing cache. Features are checked against Hugging Face's tokenizer on the same SQuAD questions."""
import os

import numpy as np
import pytest
from conftest import MODEL_DIR, load_fixture_model, shared_path
from trt_support import builder_args

from helpers import cuda_utils
from helpers.calibrator import CalibrationCache, calibration_inputs, make_calibrator
from helpers.errors import BertError
from helpers.trt_builder import build_fixed_engine, default_calibration_cache

SEQ = 64


@pytest.fixture(scope="module")
def squad():
    return shared_path("data", "squad", "dev-v1.1.json")


def test_calibration_inputs_are_the_first_window_of_each_question(squad):
    """Upstream feeds the first window of each of the first -n questions; Hugging Face's WordPiece tokenizer with
    only-second truncation makes the same first window."""
    import json

    from tokenizers import BertWordPieceTokenizer
    inputs = calibration_inputs(str(squad), str(MODEL_DIR / "vocab.txt"), SEQ, num_inputs=6)
    assert len(inputs) == 6 and inputs.input_ids.shape == (6, SEQ) and inputs.input_ids.dtype == np.int32
    tokenizer = BertWordPieceTokenizer(str(MODEL_DIR / "vocab.txt"), lowercase=True)
    tokenizer.enable_truncation(max_length=SEQ, strategy="only_second")
    tokenizer.enable_padding(length=SEQ)
    with open(squad, encoding="utf-8") as f:
        paragraph = json.load(f)["data"][0]["paragraphs"][0]  # the first six questions share this passage
    for row, qa in enumerate(paragraph["qas"][:6]):
        first = tokenizer.encode(qa["question"], paragraph["context"])
        np.testing.assert_array_equal(inputs.input_ids[row], first.ids)
        np.testing.assert_array_equal(inputs.segment_ids[row], first.type_ids)
        np.testing.assert_array_equal(inputs.input_mask[row], first.attention_mask)
    batch = inputs.batch(4, 2)
    np.testing.assert_array_equal(batch["segment_ids"], inputs.segment_ids[4:6])
    with pytest.raises(BertError, match="--calib-num"):
        calibration_inputs(str(squad), str(MODEL_DIR / "vocab.txt"), SEQ, num_inputs=0)


def test_cache_is_written_atomically(tmp_path):
    cache = CalibrationCache(tmp_path / "BertSquadCalibCache")
    assert cache.read() is None
    cache.write(b"TRT-100-EntropyCalibration2\ninput_ids: 3c010a14\n")
    cache.write(b"TRT-100-EntropyCalibration2\nl0_gelu: 3d000000\n")
    assert cache.read() == b"TRT-100-EntropyCalibration2\nl0_gelu: 3d000000\n"
    assert os.listdir(tmp_path) == ["BertSquadCalibCache"]  # no temporary file left behind


def test_calibrator_reads_its_cache_without_touching_the_gpu(trt, tmp_path):
    path = tmp_path / "calib.cache"
    calibrator = make_calibrator(trt, squad_json="missing.json", vocab_file="missing.txt", cache_file=str(path),
                                 batch_size=1, max_seq_length=SEQ, num_inputs=10)
    assert isinstance(calibrator, trt.IInt8LegacyCalibrator)
    assert calibrator.read_calibration_cache() is None
    calibrator.write_calibration_cache(b"cache")
    assert calibrator.read_calibration_cache() == b"cache"
    assert calibrator.get_batch_size() == 1
    assert (calibrator.get_quantile(), calibrator.get_regression_cutoff()) == (0.9999, 1.0)
    assert calibrator.buffers is None and calibrator.inputs is None


def test_ptq_build_uses_an_existing_cache_and_needs_a_gpu_otherwise(trt, tmp_path, monkeypatch):
    config, weights = load_fixture_model()
    monkeypatch.chdir(tmp_path)
    default = default_calibration_cache(config, [32, 16])
    assert default == "BertSquadL6H32A12S32-16CalibCache"
    if cuda_utils.compute_capability() is None:
        with pytest.raises(BertError, match="INT8 calibration needs a CUDA GPU"):
            build_fixed_engine(builder_args(int8=True, sequence_length=[32, 16]), config, weights)
        assert not os.path.exists(default)
    (tmp_path / default).write_bytes(b"TRT-100-EntropyCalibration2\n")
    assert build_fixed_engine(builder_args(int8=True, sequence_length=[32, 16]), config, weights)
