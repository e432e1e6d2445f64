"""helpers/trt_runtime.py's engine logic on stand-in engines: plan recognition, profiles as the scripts see them,
profile selection per batch (spec §13.10: perf on variable-length engines), shapes and address binding. The CUDA
side (buffers, copies, events) needs a GPU and is not exercised here."""
import numpy as np
import pytest
from conftest import load_fixture_model
from trt_support import builder_args, varseqlen_args

from helpers.engine_format import MAGIC as NATIVE_MAGIC
from helpers.errors import BertError
from helpers.trt_builder import build_fixed_engine, build_varseqlen_engine
from helpers.trt_runtime import (TrtRunner, bind_addresses, engine_info, is_tensorrt_plan, pack_padded, packed_shapes,
                                 pad_packed, padded_length, select_packed_profile, set_shapes)


@pytest.fixture(scope="module")
def engines(trt):
    config, weights = load_fixture_model()
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    fixed = build_fixed_engine(builder_args(batch_size=[4, 1], sequence_length=[64, 32]), config, weights)
    packed = build_varseqlen_engine(varseqlen_args(fp16=True, max_batch_size=[1, 4], max_sequence_length=32),
                                    config, weights)
    return runtime.deserialize_cuda_engine(fixed), runtime.deserialize_cuda_engine(packed)


def test_plans_are_recognised_by_their_magic():
    assert is_tensorrt_plan(b"ftrt" + bytes(12))
    assert not is_tensorrt_plan(NATIVE_MAGIC + bytes(8))
    assert not is_tensorrt_plan(b"\x80\x04")


def test_engine_info_of_a_fixed_engine(engines):
    info = engine_info(engines[0])
    assert not info.variable_seqlen and info.config is None
    assert [(p.batch, p.seq) for p in info.profiles] == [
        ((1, 1, 1), (32, 32, 32)), ((1, 1, 1), (64, 64, 64)), ((1, 4, 4), (32, 32, 32)), ((1, 4, 4), (64, 64, 64))]
    assert (info.max_batch, info.max_seq) == (4, 64)
    assert [info.select_profile(b, s) for b, s in ((1, 32), (1, 64), (3, 32), (4, 64))] == [0, 1, 2, 3]
    assert info.select_profile(5, 32) is None and info.select_profile(2, 48) is None


def test_variable_length_profiles_are_chosen_per_batch(engines):
    engine = engines[1]
    info = engine_info(engine)
    assert info.variable_seqlen
    assert [(p.batch, p.seq) for p in info.profiles] == [((1, 1, 1), (1, 32, 32)), ((1, 4, 4), (1, 32, 32))]
    assert info.max_tokens == [32, 128]
    assert info.select_profile(1, 32) == 0 and info.select_profile(3, 32) == 1 and info.select_profile(5, 32) is None
    # perf_varseqlen.py's full-length batches: upstream always took profile 0, which cannot run batch 3
    assert select_packed_profile(engine, packed_shapes(32, 1, 32)) == 0
    assert select_packed_profile(engine, packed_shapes(96, 3, 32)) == 1
    assert select_packed_profile(engine, packed_shapes(160, 5, 32)) is None
    assert select_packed_profile(engine, packed_shapes(40, 2, 33)) is None  # longer than -s


def test_packing_and_padding_between_engine_kinds(engines):
    """A padded batch on a variable-length engine is packed; packed sequences on a fixed-length engine are padded
    to the shortest length a profile takes."""
    ids = np.array([[5, 6, 7, 0], [8, 0, 9, 9]], np.int32)
    segs = np.array([[0, 1, 1, 0], [0, 0, 1, 1]], np.int32)
    mask = np.array([[1, 1, 1, 0], [1, 0, 1, 1]], np.int32)  # a row ends at its mask's first 0
    packed_ids, packed_segs, cu, rows = pack_padded(ids, segs, mask)
    assert packed_ids.tolist() == [5, 6, 7, 8] and packed_segs.tolist() == [0, 1, 1, 0]
    assert cu.tolist() == [0, 3, 4] and rows.tolist() == [0, 1, 2, 4]
    padded_ids, padded_segs, padded_mask = pad_packed(packed_ids, packed_segs, cu, 5)
    assert padded_ids.tolist() == [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]]
    assert padded_segs.tolist() == [[0, 1, 1, 0, 0], [0, 0, 0, 0, 0]]
    assert padded_mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]]
    with pytest.raises(BertError, match="no tokens"):
        pack_padded(ids, segs, np.array([[0, 0, 0, 0], [1, 1, 1, 1]]))
    info = engine_info(engines[0])  # profiles (1,32) (1,64) (1..4,32) (1..4,64)
    assert padded_length(info, 1, 20) == 32 and padded_length(info, 3, 40) == 64
    with pytest.raises(BertError, match="no optimization profile"):
        padded_length(info, 5, 20)


def test_shapes_and_addresses(trt, engines):
    engine = engines[1]
    context = engine.create_execution_context()
    assert context.set_optimization_profile_async(1, 0)
    set_shapes(context, packed_shapes(70, 3, 30))
    assert context.get_tensor_shape("logits_out") == (2, 70, 1, 1)
    with pytest.raises(BertError, match="rejected shape"):
        set_shapes(context, packed_shapes(200, 3, 30))
    buffers = {name: np.zeros(256, np.int32) for name in ("input_ids", "segment_ids", "cu_seqlens", "max_seqlen")}
    with pytest.raises(BertError, match="no buffer for TensorRT tensor logits_out"):
        bind_addresses(context, engine, {name: a.ctypes.data for name, a in buffers.items()})
    output = np.zeros(2 * 256, np.float32)
    addresses = {name: a.ctypes.data for name, a in buffers.items()}
    bind_addresses(context, engine, {**addresses, "logits_out": output.ctypes.data})
    assert context.get_tensor_address("logits_out") == output.ctypes.data


def test_runner_refuses_what_it_cannot_run(trt, tmp_path):
    not_a_plan = tmp_path / "x.engine"
    not_a_plan.write_bytes(NATIVE_MAGIC + bytes(56))
    with pytest.raises(BertError, match="is not a TensorRT plan"):
        TrtRunner(str(not_a_plan))
    corrupt = tmp_path / "y.engine"
    corrupt.write_bytes(b"ftrt" + bytes(60))
    with pytest.raises(BertError, match="could not deserialize"):
        TrtRunner(str(corrupt))
