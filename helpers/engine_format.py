"""The native engine file: what builder.py writes when TensorRT is not used, read back by every runtime.

Layout (little-endian):
    8 bytes   magic b"BQAENG01"
    8 bytes   u64 length of the JSON header
    N bytes   JSON header (utf-8): format version, which builder made it, precision, model config,
              optimization profiles, numerics and, per tensor, dtype/shape/offset/nbytes
    padding   to a multiple of 64 bytes
    blob      the tensors, each starting on a 64-byte boundary; the header holds the blob's CRC-32 and its own
              (header_crc32: of the header serialised without that key, sorted keys, as written)

The scripts recognise an engine by its content, not its name: `engine_kind()` says whether a file is a native engine,
a TensorRT plan, or neither.
"""
import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .atomic import atomic_open
from .config import BertConfig
from .errors import BertError

MAGIC = b"BQAENG01"
TENSORRT_PLAN_MAGIC = b"ftrt"  # TensorRT's serialized-plan tag (kPLAN_MAGIC_TAG): the first 4 bytes of every plan
FORMAT_VERSION = 1
ALIGN = 64
_DTYPES = {"float32", "float16"}   # what builders store; reading other bits as weights would be a wrong model
PRECISIONS = ("fp32", "fp16")   # native engines (INT8 needs TensorRT)


@dataclass
class Profile:
    """One optimization profile: (min, opt, max) of the batch size and of the sequence length.

    Fixed-length engines (builder.py) have profiles over input shape (B, S), as upstream: min (1, s), opt = max = (b, s).
    Variable-length engines (builder_varseqlen.py) have min batch 1, max batch b, and max_seq the longest sequence.
    """
    batch: tuple
    seq: tuple

    def covers(self, batch_size, seq_len):
        return self.batch[0] <= batch_size <= self.batch[2] and self.seq[0] <= seq_len <= self.seq[2]

    def to_dict(self):
        return {"batch": list(self.batch), "seq": list(self.seq)}

    @classmethod
    def from_dict(cls, d):
        values = (d["batch"], d["seq"])
        if not all(isinstance(v, list) and len(v) == 3 and all(_is_int(x) for x in v) for v in values):
            raise ValueError(f"profile {d} is not (min, opt, max) integers")
        return cls(*(tuple(v) for v in values))


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


class ProfileSet:
    """Largest shapes and profile selection over `self.profiles`; shared by native engines and TensorRT plans."""

    @property
    def max_batch(self):
        return max(p.batch[2] for p in self.profiles)

    @property
    def max_seq(self):
        return max(p.seq[2] for p in self.profiles)

    def select_profile(self, batch_size, seq_len):
        """The first profile whose (min, max) covers the shape, as upstream picks it; None if no profile does."""
        for index, profile in enumerate(self.profiles):
            if profile.covers(batch_size, seq_len) and self.profile_fits(index, batch_size, seq_len):
                return index
        return None

    def profile_fits(self, index, batch_size, seq_len):
        """Limits of profile `index` beyond its (batch, seq) ranges; a native engine has none."""
        return True


@dataclass
class EngineFile(ProfileSet):
    config: BertConfig
    precision: str                      # "fp32" | "fp16" | "int8"
    variable_seqlen: bool               # built by builder_varseqlen.py (packed input with cu_seqlens)
    profiles: list                      # [Profile]
    weights: dict                       # canonical weight map (helpers/weights.py names) -> np.ndarray
    numerics: dict = field(default_factory=dict)   # {"gelu": "erf"|"tanh", "layer_norm_eps": float, ...}
    build_info: dict = field(default_factory=dict)  # flags and facts recorded by the builder, for the record

    # ---- writing -------------------------------------------------------------------------------------------------
    def save(self, path):
        tensors, chunks, offset = {}, [], 0
        for name in sorted(self.weights):
            array = np.ascontiguousarray(self.weights[name])
            if array.dtype.name not in _DTYPES:
                raise BertError(f"engine tensor {name} has unsupported dtype {array.dtype}")
            pad = (-offset) % ALIGN
            if pad:
                chunks.append(b"\0" * pad)
                offset += pad
            data = array.tobytes()
            tensors[name] = {"dtype": array.dtype.name, "shape": list(array.shape), "offset": offset, "nbytes": len(data)}
            chunks.append(data)
            offset += len(data)
        blob = b"".join(chunks)
        header = {
            "format": "bert-qa-engine", "format_version": FORMAT_VERSION,
            "precision": self.precision, "variable_seqlen": self.variable_seqlen,
            "config": self.config.to_dict(), "profiles": [p.to_dict() for p in self.profiles],
            "numerics": self.numerics, "build_info": self.build_info,
            "tensors": tensors, "blob_bytes": len(blob), "blob_crc32": zlib.crc32(blob),
        }
        header["header_crc32"] = _header_crc(header)
        head = json.dumps(header, sort_keys=True).encode("utf-8")
        prefix = MAGIC + struct.pack("<Q", len(head)) + head
        prefix += b"\0" * ((-len(prefix)) % ALIGN)
        with atomic_open(path, "wb") as f:
            f.write(prefix)
            f.write(blob)

    # ---- reading -------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except IsADirectoryError:
            raise BertError(f"engine path is a directory: {path}") from None
        if not data.startswith(MAGIC):
            kind = engine_kind_of_bytes(data[:64])
            if kind == "tensorrt":
                raise BertError(f"{path} is a TensorRT engine, not a native engine")
            raise BertError(f"{path} is not an engine file (unrecognised content)")
        try:
            (head_len,) = struct.unpack_from("<Q", data, len(MAGIC))
            start = len(MAGIC) + 8
            if start + head_len > len(data):
                raise ValueError("header longer than the file")
            header = json.loads(data[start:start + head_len].decode("utf-8"))
            blob_start = start + head_len + ((-(start + head_len)) % ALIGN)
            if not isinstance(header, dict):
                raise ValueError("header is not an object")
        except (struct.error, ValueError, UnicodeDecodeError):
            raise BertError(f"engine {path} is corrupt (unreadable header)") from None
        version = header.get("format_version")
        if not _is_int(version) or version != FORMAT_VERSION:
            raise BertError(f"engine {path} has format version {version!r}; "
                            f"this runtime reads version {FORMAT_VERSION}: rebuild the engine")
        # every engine of this format version has the checksum: a header without one is damaged, not old
        if header.get("header_crc32") != _header_crc(header):
            raise BertError(f"engine {path} is corrupt (its header does not match its checksum): rebuild it")
        blob = memoryview(data)[blob_start:]
        if len(blob) != header.get("blob_bytes") or zlib.crc32(blob) != header.get("blob_crc32"):
            raise BertError(f"engine {path} is corrupt or truncated (checksum mismatch): rebuild it")
        try:
            if not isinstance(header["variable_seqlen"], bool):
                raise ValueError(f"variable_seqlen is {header['variable_seqlen']!r}, not true or false")
            engine = cls(config=BertConfig.from_dict(header["config"]), precision=header["precision"],
                         variable_seqlen=header["variable_seqlen"],
                         profiles=[Profile.from_dict(p) for p in header["profiles"]],
                         weights=_tensors(blob, header["tensors"]),
                         numerics=dict(header.get("numerics", {})), build_info=header.get("build_info", {}))
            engine.check()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BertError(f"engine {path} is corrupt (bad header: {type(exc).__name__} {exc})") from None
        except BertError as exc:
            raise BertError(f"engine {path} is corrupt: {exc}") from None
        return engine

    def check(self):
        """Raise BertError unless precision, profiles and weights are consistent with the config."""
        from .weights import validate
        if self.precision not in PRECISIONS:
            raise BertError(f"unknown precision {self.precision!r}")
        if not self.profiles:
            raise BertError("no optimization profiles")
        for p in self.profiles:
            for lo, opt, hi in (p.batch, p.seq):
                if not 1 <= lo <= opt <= hi:
                    raise BertError(f"bad profile {p.to_dict()}")
            if p.seq[2] > self.config.max_position_embeddings:
                raise BertError(f"profile sequence length {p.seq[2]} exceeds the model's "
                                f"{self.config.max_position_embeddings} positions")
        validate(self.weights, self.config)
        for key, value in self.numerics.items():
            if key == "gelu":
                ok = value in ("erf", "tanh")
            else:   # the epsilons: demoBERT's embedding LayerNorm has none (0)
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1
            if not ok or key not in ("gelu", "emb_eps", "layer_norm_eps"):
                raise BertError(f"bad numerics entry {key}: {value!r}")


def _header_crc(header):
    return zlib.crc32(json.dumps({k: v for k, v in header.items() if k != "header_crc32"}, sort_keys=True).encode())


def _tensors(blob, entries):
    """The blob's tensors as the header places them: each inside the blob, 64-byte aligned, none overlapping
    another (a damaged header could otherwise read any bytes as any tensor)."""
    tensors, end = {}, 0
    for name, t in sorted(entries.items(), key=lambda item: item[1]["offset"]):
        dtype = np.dtype(t["dtype"]) if t["dtype"] in _DTYPES else None
        if dtype is None:
            raise ValueError(f"unknown dtype {t['dtype']!r} of {name}")
        shape, offset = t["shape"], t["offset"]
        if not (isinstance(shape, list) and all(_is_int(v) and v >= 0 for v in shape) and _is_int(offset)):
            raise ValueError(f"bad shape or offset of {name}")
        count = int(np.prod(shape, dtype=np.int64))
        if offset % ALIGN or offset < end or offset + count * dtype.itemsize > len(blob) or \
                t.get("nbytes", count * dtype.itemsize) != count * dtype.itemsize:
            raise ValueError(f"tensor {name} is misplaced in the blob")
        end = offset + count * dtype.itemsize
        tensors[name] = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(shape)
    return tensors


def engine_kind_of_bytes(head):
    """'native', 'tensorrt' or 'unknown' from the first bytes of a file."""
    if head.startswith(MAGIC):
        return "native"
    if head.startswith(TENSORRT_PLAN_MAGIC):
        return "tensorrt"
    return "unknown"


def engine_kind(path):
    """Recognise an engine file by its content: 'native', 'tensorrt' or 'unknown'."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except IsADirectoryError:
        raise BertError(f"engine path is a directory: {path}") from None
    except FileNotFoundError:
        raise BertError(f"engine not found: {path}") from None
    if not head:
        raise BertError(f"engine {path} is empty")
    return engine_kind_of_bytes(head)
