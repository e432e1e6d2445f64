"""The native engine file: round trip, recognition by content, corruption, atomic writes."""
import os

import numpy as np
import pytest

from conftest import random_weights
from helpers.config import BertConfig
from helpers.engine_format import MAGIC, EngineFile, Profile, engine_kind
from helpers.errors import BertError


def small_engine(dtype=np.float32):
    config = BertConfig(num_hidden_layers=1, hidden_size=8, num_attention_heads=2, intermediate_size=16,
                        vocab_size=20, max_position_embeddings=64)
    weights = {name: array.astype(dtype) if name.endswith("_kernel") else array
               for name, array in random_weights(config, 0).items()}
    return EngineFile(config=config, precision="fp32", variable_seqlen=True,
                      profiles=[Profile((1, 4, 4), (1, 64, 64)), Profile((1, 1, 1), (1, 64, 64))], weights=weights,
                      numerics={"gelu": "erf"}, build_info={"builder": "test"})


def test_round_trip(tmp_path):
    engine = small_engine(np.float16)
    path = tmp_path / "e.engine"
    engine.save(path)
    loaded = EngineFile.load(path)
    assert loaded.config == engine.config and loaded.profiles == engine.profiles
    assert loaded.variable_seqlen and loaded.precision == "fp32" and loaded.numerics == {"gelu": "erf"}
    for name, array in engine.weights.items():
        assert loaded.weights[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded.weights[name], array)
    assert engine_kind(path) == "native"
    assert loaded.select_profile(3, 100) is None and loaded.select_profile(3, 64) == 0
    assert loaded.select_profile(1, 10) == 0 and loaded.max_batch == 4 and loaded.max_seq == 64


def test_files_are_recognised_by_content(tmp_path):
    trt = tmp_path / "model.engine"
    trt.write_bytes(b"ftrt" + bytes(60))
    other = tmp_path / "notes.engine"
    other.write_text("hello")
    empty = tmp_path / "empty.engine"
    empty.write_bytes(b"")
    assert engine_kind(trt) == "tensorrt" and engine_kind(other) == "unknown"
    with pytest.raises(BertError, match="empty"):
        engine_kind(empty)
    with pytest.raises(BertError, match="TensorRT engine"):
        EngineFile.load(trt)
    with pytest.raises(BertError, match="not an engine"):
        EngineFile.load(other)


@pytest.mark.parametrize("damage", ["truncate", "flip", "header"])
def test_corruption_is_detected(tmp_path, damage):
    path = tmp_path / "e.engine"
    small_engine().save(path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-10]
    elif damage == "flip":
        data[-5] ^= 0xFF
    else:
        data[len(MAGIC) + 8 + 3] = ord("}")
    path.write_bytes(bytes(data))
    with pytest.raises(BertError, match="corrupt"):
        EngineFile.load(path)


def test_failed_save_leaves_no_file(tmp_path):
    engine = small_engine()
    engine.weights["bad"] = np.zeros(3, dtype=np.complex64)
    path = tmp_path / "e.engine"
    with pytest.raises(BertError, match="unsupported dtype"):
        engine.save(path)
    assert os.listdir(tmp_path) == []


def test_save_into_missing_folder_is_one_error(tmp_path):
    with pytest.raises(BertError, match="does not exist"):
        small_engine().save(tmp_path / "missing" / "e.engine")


def test_crash_during_write_keeps_the_old_engine(tmp_path, monkeypatch):
    import helpers.atomic
    path = tmp_path / "e.engine"
    small_engine().save(path)
    before = path.read_bytes()

    def crash(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(helpers.atomic.os, "fsync", crash)
    engine = small_engine()
    engine.weights["extra"] = np.ones(1000, dtype=np.float32)
    with pytest.raises(OSError):
        engine.save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["e.engine"]


def rewrite_header(path, edit, checksum=True):
    """Apply `edit` to the engine's JSON header, keeping the blob (so only header checks can catch it); with
    checksum, the header's own CRC is made to match (a deliberate edit, which the content checks must catch)."""
    import json
    import struct
    import zlib
    data = path.read_bytes()
    (length,) = struct.unpack_from("<Q", data, len(MAGIC))
    header = json.loads(data[len(MAGIC) + 8:len(MAGIC) + 8 + length])
    edit(header)
    if checksum:
        header.pop("header_crc32", None)
        header["header_crc32"] = zlib.crc32(json.dumps(header, sort_keys=True).encode())
    start = len(MAGIC) + 8 + length
    blob = data[start + (-start) % 64:]
    head = json.dumps(header).encode()
    prefix = MAGIC + struct.pack("<Q", len(head)) + head
    path.write_bytes(prefix + b"\0" * ((-len(prefix)) % 64) + blob)


@pytest.mark.parametrize("edit, message", [
    (lambda h: h["config"].update(num_hidden_layers=2), "missing"),
    (lambda h: h["config"].update(num_hidden_layers=0), "num_hidden_layers"),
    (lambda h: h.update(precision="int3"), "precision"),
    (lambda h: h["profiles"].append({"batch": [1, 1, 1], "seq": [1, 9999, 9999]}), "9999"),
    (lambda h: h["tensors"].pop("cls_squad_output_bias"), "cls_squad_output_bias"),
    (lambda h: next(iter(h["tensors"].values())).update(dtype="bogus"), "dtype"),
    (lambda h: h["tensors"]["cls_squad_output_bias"].update(dtype="int32"), "dtype"),   # no builder stores one
    (lambda h: next(iter(h["tensors"].values())).update(offset=10 ** 9), "misplaced in the blob"),
    (lambda h: h["tensors"]["l0_output_dense_kernel"].update(offset=h["tensors"]["l0_output_dense_kernel"]["offset"]
                                                              + 64), "misplaced in the blob"),   # overlaps the next
    (lambda h: h["tensors"]["l0_output_dense_kernel"].update(offset=h["tensors"]["l0_output_dense_kernel"]["offset"]
                                                              - 700), "misplaced in the blob"),  # unaligned
    (lambda h: h.update(precision="int8"), "precision"),
    (lambda h: h.update(variable_seqlen="false"), "variable_seqlen"),
    (lambda h: h["profiles"][0].update(batch=["1", 1, 1]), "profile"),
    (lambda h: h["profiles"][0].update(seq=[1, 1.7, 2]), "profile"),
    (lambda h: h.pop("tensors"), "tensors"),
    (lambda h: h["numerics"].update(layer_norm_eps=-1.0), "layer_norm_eps"),
    (lambda h: h["numerics"].update(gelu="xyz"), "gelu"),
    (lambda h: h["numerics"].update(emb_eps=float("nan")), "emb_eps"),
    (lambda h: h["config"].update(do_lower_case=1234), "do_lower_case"),
])
def test_damaged_headers_are_named(tmp_path, edit, message):
    path = tmp_path / "e.engine"
    small_engine().save(path)
    rewrite_header(path, edit)
    with pytest.raises(BertError, match=f"corrupt.*{message}"):
        EngineFile.load(path)


def test_header_checksum_catches_any_edit(tmp_path):
    """One changed digit of a tensor's offset (aligned, inside the blob: a different tensor's bytes) would load
    and answer wrongly; the header's own CRC refuses it. A header without the CRC is refused too (one changed
    byte of its key would otherwise let any other edit through), and format_version must be the integer 1 (JSON
    true equals 1 in Python)."""
    path = tmp_path / "e.engine"
    small_engine().save(path)
    tensors = EngineFile.load(path).weights
    first, second = sorted(tensors)[:2]

    def swap(h):
        h["tensors"][first]["offset"], h["tensors"][second]["offset"] = (h["tensors"][second]["offset"],
                                                                          h["tensors"][first]["offset"])
    rewrite_header(path, swap, checksum=False)
    with pytest.raises(BertError, match="does not match its checksum"):
        EngineFile.load(path)
    small_engine().save(path)
    rewrite_header(path, lambda h: h.update(header_crc33=h.pop("header_crc32")), checksum=False)
    with pytest.raises(BertError, match="does not match its checksum"):
        EngineFile.load(path)
    small_engine().save(path)
    assert sorted(EngineFile.load(path).weights) == sorted(tensors)
    rewrite_header(path, lambda h: h.update(format_version=True))
    with pytest.raises(BertError, match="format version True"):
        EngineFile.load(path)
