"""TensorFlow V2 checkpoints ("tensor bundles") read and written without TensorFlow.

A checkpoint `PREFIX` is `PREFIX.index` plus data shards `PREFIX.data-0000K-of-0000N`.
The index is a LevelDB table (an SSTable): blocks of prefix-compressed, sorted key/value entries, an index block
pointing at them, and a 48-byte footer. Its first key is the empty string, whose value is a `BundleHeaderProto`
(number of shards, endianness); every other key is a tensor name whose value is a `BundleEntryProto` (dtype, shape,
shard, offset, size, masked CRC-32C of the bytes). Both protobufs are decoded by hand from the wire format.
"""
import functools
import os
import re
import struct
from dataclasses import dataclass

import numpy as np

from .atomic import atomic_open
from .errors import BertError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the 8-byte magic
BLOCK_TRAILER_SIZE = 5  # compression type byte + masked CRC-32C
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1

# TensorFlow's DataType enum values -> numpy dtypes (bfloat16 has no numpy dtype: read as uint16, widened below).
DT_BFLOAT16 = 14
TF_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
             10: np.bool_, DT_BFLOAT16: np.uint16, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}
NUMPY_TO_TF = {np.dtype(np.float32): 1, np.dtype(np.int32): 3, np.dtype(np.int64): 9, np.dtype(np.float16): 19}


# ---------------------------------------------------------------------------------------------------- CRC-32C
def _crc32c_table():
    table = np.zeros(256, dtype=np.uint32)
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table[byte] = crc
    return table


_CRC_TABLE = _crc32c_table()


def _apply(op, states):
    """Apply a GF(2)-linear map on 32-bit CRC states, given as its 32 column images `op[bit]`."""
    states = np.asarray(states, dtype=np.uint32)
    out = np.zeros_like(states)
    for bit in range(32):
        out ^= np.where((states >> np.uint32(bit)) & np.uint32(1), op[bit], np.uint32(0))
    return out


@functools.lru_cache(maxsize=256)
def _zeros_operator(nbytes):
    """The linear map 'feed `nbytes` zero bytes into a CRC register', by repeated squaring."""
    unit = np.uint32(1) << np.arange(32, dtype=np.uint32)
    one_byte = (unit >> np.uint32(8)) ^ _CRC_TABLE[unit & np.uint32(0xFF)]
    result, power = unit.copy(), one_byte
    while nbytes:
        if nbytes & 1:
            result = _apply(power, result)
        power = _apply(power, power)
        nbytes >>= 1
    return result


def crc32c(data):
    """CRC-32C (Castagnoli) of a bytes-like object, vectorized with numpy.

    The register update is linear over GF(2) when started from 0, so the data is cut into k equal chunks whose
    CRCs are computed side by side (one numpy step per byte position), then merged pairwise: crc(A+B) =
    shift(crc(A), len(B)) ^ crc(B). Leading zero bytes do not change a zero-started CRC, which pads the front.
    """
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    n = buf.size
    chunk = max(64, int(np.sqrt(n)))
    count = 1 << max(0, int(np.ceil(np.log2(max(1, -(-n // chunk))))))
    padded = np.zeros(count * chunk, dtype=np.uint8)
    padded[padded.size - n:] = buf
    columns = np.ascontiguousarray(padded.reshape(count, chunk).T)
    state = np.zeros(count, dtype=np.uint32)
    for column in columns:
        state = (state >> np.uint32(8)) ^ _CRC_TABLE[(state ^ column) & np.uint32(0xFF)]
    length = chunk
    while state.size > 1:
        state = _apply(_zeros_operator(length), state[0::2]) ^ state[1::2]
        length *= 2
    initial = _apply(_zeros_operator(n), np.array([0xFFFFFFFF], dtype=np.uint32))
    return int(~(state[0] ^ initial[0]) & 0xFFFFFFFF)


def masked_crc32c(data):
    """LevelDB/TensorFlow store CRCs rotated and offset, so a CRC of data holding CRCs stays well-behaved."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------------- wire format
def _varint(buf, pos, where):
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise BertError(f"corrupt TensorFlow checkpoint index {where}: bad varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _proto_fields(buf, where):
    """Protobuf message -> {field number: [values]} (varints as int, fixed as int, length-delimited as bytes)."""
    fields, pos = {}, 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos, where)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, where)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos, where)
            value, pos = bytes(buf[pos:pos + size]), pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise BertError(f"corrupt TensorFlow checkpoint index {where}: protobuf wire type {wire}")
        if pos > len(buf):
            raise BertError(f"corrupt TensorFlow checkpoint index {where}: truncated protobuf")
        fields.setdefault(number, []).append(value)
    return fields


def _proto_field(number, wire, value):
    tag = _encode_varint(number << 3 | wire)
    if wire == 0:
        return tag + _encode_varint(value)
    if wire == 5:
        return tag + struct.pack("<I", value)
    return tag + _encode_varint(len(value)) + value


# ---------------------------------------------------------------------------------------------------- snappy
def _snappy_decompress(buf, where):
    """Snappy's raw block format: a varint length, then literal runs and back-references."""
    size, pos = _varint(buf, 0, where)
    out = bytearray()
    while pos < len(buf):
        tag = buf[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(buf[pos:pos + extra], "little")
                pos += extra
            length += 1
            out += buf[pos:pos + length]
            pos += length
            continue
        if kind == 1:
            length, offset = 4 + ((tag >> 2) & 7), (tag >> 5) << 8 | buf[pos]
            pos += 1
        else:
            width = 2 if kind == 2 else 4
            length, offset = 1 + (tag >> 2), int.from_bytes(buf[pos:pos + width], "little")
            pos += width
        if offset == 0 or offset > len(out):
            raise BertError(f"corrupt TensorFlow checkpoint index {where}: bad snappy back-reference")
        for _ in range(length):  # byte by byte: a copy may overlap its own output
            out.append(out[-offset])
    if len(out) != size:
        raise BertError(f"corrupt TensorFlow checkpoint index {where}: snappy length mismatch")
    return bytes(out)


# ---------------------------------------------------------------------------------------------------- SSTable
def _read_block(data, offset, size, where):
    end = offset + size + BLOCK_TRAILER_SIZE
    if offset < 0 or end > len(data):
        raise BertError(f"corrupt TensorFlow checkpoint index {where}: block outside the file")
    contents, kind = data[offset:offset + size], data[offset + size]
    (stored_crc,) = struct.unpack_from("<I", data, offset + size + 1)
    if masked_crc32c(data[offset:offset + size + 1]) != stored_crc:
        raise BertError(f"corrupt TensorFlow checkpoint index {where}: block checksum mismatch")
    if kind == SNAPPY_COMPRESSION:
        return _snappy_decompress(contents, where)
    if kind != NO_COMPRESSION:
        raise BertError(f"TensorFlow checkpoint index {where}: unsupported block compression {kind}")
    return bytes(contents)


def _block_entries(block, where):
    """The (key, value) pairs of one block. Keys share a prefix with the previous key (reset at restart points)."""
    if len(block) < 4:
        raise BertError(f"corrupt TensorFlow checkpoint index {where}: block too short")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise BertError(f"corrupt TensorFlow checkpoint index {where}: bad restart count")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos, where)
        unshared, pos = _varint(block, pos, where)
        value_size, pos = _varint(block, pos, where)
        if shared > len(key) or pos + unshared + value_size > limit:
            raise BertError(f"corrupt TensorFlow checkpoint index {where}: bad block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + value_size]
        pos += value_size


def _block_handle(buf, pos, where):
    offset, pos = _varint(buf, pos, where)
    size, pos = _varint(buf, pos, where)
    return offset, size, pos


def read_table(path):
    """All (key, value) pairs of a LevelDB table file, in key order."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < FOOTER_SIZE:
        raise BertError(f"corrupt TensorFlow checkpoint index {path}: file too short")
    (magic,) = struct.unpack_from("<Q", data, len(data) - 8)
    if magic != TABLE_MAGIC:
        raise BertError(f"{path} is not a TensorFlow checkpoint index (bad table magic)")
    footer = data[len(data) - FOOTER_SIZE:]
    _, _, pos = _block_handle(footer, 0, path)  # the metaindex block holds nothing a bundle needs
    index_offset, index_size, _ = _block_handle(footer, pos, path)
    entries = []
    for _, handle in _block_entries(_read_block(data, index_offset, index_size, path), path):
        offset, size, _ = _block_handle(handle, 0, path)
        entries.extend(_block_entries(_read_block(data, offset, size, path), path))
    return entries


# ---------------------------------------------------------------------------------------------------- bundle
@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes are: a `BundleEntryProto`."""
    name: str
    dtype: int  # TensorFlow DataType enum value
    shape: tuple
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked CRC-32C of the bytes


def _parse_entry(name, value, where):
    fields = _proto_fields(value, where)
    if 7 in fields:
        raise BertError(f"TensorFlow checkpoint {where}: {name} is a partitioned (sliced) variable, not supported")
    shape = []
    for shape_proto in fields.get(2, []):
        shape_fields = _proto_fields(shape_proto, where)
        if shape_fields.get(3, [0])[-1]:
            raise BertError(f"TensorFlow checkpoint {where}: {name} has an unknown rank")
        shape = [_proto_fields(dim, where).get(1, [0])[-1] for dim in shape_fields.get(2, [])]
    last = lambda number: fields.get(number, [0])[-1]  # noqa: E731 -- proto3: an absent field is 0
    return TensorEntry(name=name, dtype=last(1), shape=tuple(shape), shard_id=last(3), offset=last(4),
                       size=last(5), crc32c=fields[6][-1] if 6 in fields else None)


def checkpoint_files(path):
    """The files a checkpoint named as the loader accepts it consists of: PREFIX.index and its data shards, and
    for a folder the `checkpoint` state file that named the prefix."""
    prefix = resolve_prefix(path)
    folder, name = os.path.split(prefix)
    shards = [os.path.join(folder, n) for n in os.listdir(folder or ".") if n.startswith(name + ".data-")] \
        if os.path.isdir(folder or ".") else []
    state = [os.path.join(path, "checkpoint")] if os.path.isdir(path) else []
    return [prefix + ".index", *shards, *state]


def resolve_prefix(path):
    """Accept upstream's checkpoint prefix, the `.index` file or a data shard itself, or a folder with a
    `checkpoint` file."""
    path = os.fspath(path)
    if path.endswith(".index"):
        path = path[:-len(".index")]
    elif re.search(r"\.data-\d{5}-of-\d{5}$", path):
        path = path[:path.rindex(".data-")]
    if os.path.isdir(path):
        state = os.path.join(path, "checkpoint")
        indexes = sorted(n[:-len(".index")] for n in os.listdir(path) if n.endswith(".index"))
        if os.path.isfile(state):
            with open(state, encoding="utf-8", errors="replace") as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.strip() == "model_checkpoint_path":
                        return os.path.join(path, value.strip().strip('"'))
        if len(indexes) == 1:
            return os.path.join(path, indexes[0])
        raise BertError(f"cannot tell which TensorFlow checkpoint to use in folder {path}")
    return path


class TFCheckpoint:
    """A TensorFlow V2 checkpoint opened for reading: `names()`, `entry(name)`, `read(name)`."""

    def __init__(self, path):
        self.prefix = resolve_prefix(path)
        self.index_path = self.prefix + ".index"
        if not os.path.isfile(self.index_path):
            raise BertError(f"TensorFlow checkpoint index not found: {self.index_path}")
        table = read_table(self.index_path)
        if not table or table[0][0] != b"":
            raise BertError(f"corrupt TensorFlow checkpoint index {self.index_path}: no bundle header")
        header = _proto_fields(table[0][1], self.index_path)
        self.num_shards = header.get(1, [0])[-1]
        self.big_endian = header.get(2, [0])[-1] == 1
        self.entries = {}
        for key, value in table[1:]:
            name = key.decode("utf-8", errors="replace")
            self.entries[name] = _parse_entry(name, value, self.index_path)
        for entry in self.entries.values():
            if entry.shard_id >= self.num_shards:
                raise BertError(f"corrupt TensorFlow checkpoint index {self.index_path}: "
                                f"{entry.name} is in shard {entry.shard_id} of {self.num_shards}")
        for shard in range(self.num_shards):
            if not os.path.isfile(self.shard_path(shard)):
                raise BertError(f"TensorFlow checkpoint data file not found: {self.shard_path(shard)}")

    def shard_path(self, shard):
        return f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}"

    def names(self):
        return list(self.entries)

    def entry(self, name):
        return self.entries[name]

    def read(self, name, verify=True):
        """The tensor `name` as a numpy array (bfloat16 widened to float32); checks size and CRC."""
        entry = self.entries[name]
        if entry.dtype not in TF_DTYPES:
            raise BertError(f"TensorFlow checkpoint {self.prefix}: {name} has unsupported dtype enum {entry.dtype}")
        dtype = np.dtype(TF_DTYPES[entry.dtype]).newbyteorder(">" if self.big_endian else "<")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if count * dtype.itemsize != entry.size:
            raise BertError(f"corrupt TensorFlow checkpoint index {self.index_path}: {name} has {entry.size} bytes "
                            f"for shape {list(entry.shape)}")
        path = self.shard_path(entry.shard_id)
        with open(path, "rb") as f:
            f.seek(entry.offset)
            raw = f.read(entry.size)
        if len(raw) != entry.size:
            raise BertError(f"TensorFlow checkpoint data file {path} is truncated (reading {name})")
        if verify and entry.crc32c is not None and masked_crc32c(raw) != entry.crc32c:
            raise BertError(f"TensorFlow checkpoint data file {path} is corrupt: checksum mismatch in {name}")
        array = np.frombuffer(raw, dtype=dtype).reshape(entry.shape)
        if entry.dtype == DT_BFLOAT16:
            return (array.astype(np.uint32) << np.uint32(16)).view(np.float32)
        return array.astype(dtype.newbyteorder("="))


# ---------------------------------------------------------------------------------------------------- writer
def _block(entries):
    """An uncompressed table block with a restart point at every entry (no prefix sharing: simple and valid)."""
    body, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(body))
        body += _encode_varint(0) + _encode_varint(len(key)) + _encode_varint(len(value)) + key + value
    body += b"".join(struct.pack("<I", r) for r in restarts or [0]) + struct.pack("<I", len(restarts or [0]))
    return bytes(body)


def _append_block(out, contents):
    handle = _encode_varint(len(out)) + _encode_varint(len(contents))
    out += contents + bytes([NO_COMPRESSION])
    out += struct.pack("<I", masked_crc32c(contents + bytes([NO_COMPRESSION])))
    return handle


def write_checkpoint(prefix, tensors):
    """Write `{name: array}` (float32/float16/int32/int64) as a one-shard TensorFlow V2 checkpoint at `prefix`."""
    entries, offset = [], 0
    with atomic_open(f"{prefix}.data-00000-of-00001") as data:
        for name in sorted(tensors):
            array = np.asarray(tensors[name])
            if array.dtype not in NUMPY_TO_TF:
                raise BertError(f"cannot write {name}: dtype {array.dtype} is not supported")
            raw = memoryview(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).reshape(-1)).cast("B")
            data.write(raw)
            shape = b"".join(_proto_field(2, 2, _proto_field(1, 0, d)) for d in array.shape)
            proto = _proto_field(1, 0, NUMPY_TO_TF[array.dtype]) + _proto_field(2, 2, shape)
            proto += (_proto_field(4, 0, offset) if offset else b"") + (_proto_field(5, 0, raw.nbytes) if raw else b"")
            entries.append((name.encode("utf-8"), proto + _proto_field(6, 5, masked_crc32c(raw))))
            offset += raw.nbytes
    version = _proto_field(1, 0, 1)  # VersionDef.producer = 1, as TensorFlow writes it
    header = _proto_field(1, 0, 1) + _proto_field(3, 2, version)  # one shard, little-endian (0 is the default)
    table = bytearray()
    data_handle = _append_block(table, _block([(b"", header)] + entries))
    meta_handle = _append_block(table, _block([]))
    index_handle = _append_block(table, _block([(entries[-1][0] if entries else b"", data_handle)]))
    footer = (meta_handle + index_handle).ljust(FOOTER_SIZE - 8, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    with atomic_open(f"{prefix}.index") as f:
        f.write(bytes(table) + footer)
