"""The plugin registry and demoBERT's three plugin families, computed from their documented semantics.

Each (name, version) below is one of TensorRT 10.16's BERT plugin creators: versions 1-3 (emb-LN), 1-3 (QKV) and
1-4 (skip-LN) are IPluginV2DynamicExt; 4-6, 4-6 and 5-8 are their IPluginV3 ports with the same fields and I/O.
Creation validates fields as the C++ creators do (and, stricter, checks each field's declared PluginFieldType
against the type the creator reads); shapes and types are checked as getOutputDimensions /
supportsFormatCombination do. Kernel availability (SM versions, head size 64, hidden sizes of the INT8 kernels) is
not modelled: the stand-in always takes the plugin's general math.
"""
import math
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from . import _core
from ._core import ILogger, report_error
from ._enums import FLOATING, NUMPY_OF_FIELD, DataType, PluginFieldType, TensorRTPhase
from ._layers import ILayer, check_tensor

FLT_EPSILON = float(np.finfo(np.float32).eps)
HALF_EPSILON = float(np.finfo(np.float16).eps)
WEIGHT_TYPES = (PluginFieldType.FLOAT32, PluginFieldType.FLOAT16)


class PluginField:
    """A named plugin attribute: `data` is a numpy array whose dtype must match `type`."""

    def __init__(self, name="", data=None, type=PluginFieldType.UNKNOWN):
        self.name = str(name)
        self.type = PluginFieldType(type)
        if data is not None:
            data = np.ascontiguousarray(data)
            expected = NUMPY_OF_FIELD.get(self.type)
            if expected is None or data.dtype != np.dtype(expected):
                # TensorRT would reinterpret the bytes; a mismatch is always a bug in the caller.
                raise TypeError(f"PluginField {self.name!r}: data of dtype {data.dtype} does not match "
                                f"{self.type.name}")
        self.data = data

    @property
    def size(self):
        return 0 if self.data is None else int(self.data.size)


class PluginFieldCollection(list):
    """A list of PluginField (TensorRT's constructor takes the list positionally)."""

    def __init__(self, fields=(), /):
        fields = list(fields)
        if not all(isinstance(f, PluginField) for f in fields):
            raise TypeError("PluginFieldCollection takes PluginField objects")
        super().__init__(fields)


# ------------------------------------------------------------------------------------------------ field specs
@dataclass(frozen=True)
class Field:
    name: str
    types: tuple
    required: bool = False


def _weights(*names):
    return tuple(Field(n, WEIGHT_TYPES, True) for n in names)


def _ints(*names, required=False):
    return tuple(Field(n, (PluginFieldType.INT32,), required) for n in names)


EMB_WEIGHTS = _weights("bert_embeddings_layernorm_beta", "bert_embeddings_layernorm_gamma",
                       "bert_embeddings_word_embeddings", "bert_embeddings_token_type_embeddings",
                       "bert_embeddings_position_embeddings")
DQ_PROBS = Field("dq_probs", (PluginFieldType.FLOAT32,))


class PluginError(Exception):
    """A creator rejected its fields (TensorRT logs it and create_plugin returns None)."""


# ------------------------------------------------------------------------------------------------ plugin objects
class _OfKind:
    """What plugins and their creators both report about their plugin kind (all in the default namespace)."""

    def __init__(self, kind):
        self._kind = kind

    @property
    def plugin_version(self):
        return self._kind.version

    @property
    def plugin_namespace(self):
        return ""


class _BertPlugin(_OfKind):
    """What both plugin interfaces share: the creator's fields and the computation."""

    def __init__(self, kind, name, fields):
        super().__init__(kind)
        self._layer_name = name
        self._fields = {f.name: f.data for f in fields}
        self._kind.validate(self._fields)

    @property
    def plugin_type(self):
        return self._kind.plugin_name

    @property
    def num_outputs(self):
        return self._kind.num_outputs(self._fields)


class IPluginV2(_BertPlugin):
    pass


class IPluginV3(_BertPlugin):
    pass


class IPluginCreator(_OfKind):
    """An IPluginV2 creator: `create_plugin(name, field_collection)`."""

    @property
    def name(self):
        return self._kind.plugin_name

    @property
    def field_names(self):
        return PluginFieldCollection(PluginField(f.name, None, f.types[0]) for f in self._kind.fields)

    def create_plugin(self, name, field_collection):
        return _create(IPluginV2, self._kind, name, field_collection)


class IPluginCreatorV3One(IPluginCreator):
    """An IPluginV3 creator: `create_plugin(name, field_collection, phase)`."""

    def create_plugin(self, name, field_collection, phase):
        if not isinstance(phase, TensorRTPhase):
            raise TypeError("create_plugin: phase must be a tensorrt.TensorRTPhase")
        return _create(IPluginV3, self._kind, name, field_collection)


def _create(cls, kind, name, field_collection):
    if not isinstance(field_collection, PluginFieldCollection):
        raise TypeError("create_plugin: field_collection must be a tensorrt.PluginFieldCollection")
    try:
        return cls(kind, name, field_collection)
    except PluginError as exc:  # TensorRT: caughtError(e) -> logged, nullptr -> None in Python
        _registry_logger.log(ILogger.Severity.ERROR, f"{kind.plugin_name} v{kind.version}: {exc}")
        return None


# ------------------------------------------------------------------------------------------------ the plugin kinds
def _scalar(fields, name, default=None):
    value = fields.get(name)
    return default if value is None else value.reshape(-1)[0].item()


def _layer_norm(x, gamma, beta, eps, axis=-1):
    mean = x.mean(axis=axis, keepdims=True)
    var = (x * x).mean(axis=axis, keepdims=True) - mean * mean  # the kernels' E[x^2] - mu^2
    with np.errstate(divide="ignore", invalid="ignore"):
        return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _softmax_attention(q, k, v, scale, valid_keys=None):
    """q, k, v (N, L, H) -> (N, L, H); keys at index >= valid_keys get probability 0."""
    scores = q @ np.swapaxes(k, -1, -2) * scale
    if valid_keys is not None:
        scores[..., valid_keys:] = -np.inf
    scores = scores - scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    return probs @ v


def _check_cu_seqlens(cu, total):
    cu = np.asarray(cu, dtype=np.int64)
    if len(cu) < 1 or cu[0] != 0 or np.any(np.diff(cu) < 0) or cu[-1] > total:
        raise PluginError(f"cu_seqlens {cu.tolist()} must start at 0, not decrease and stay within {total} tokens")
    return cu


class _Kind:
    plugin_name = ""
    version = ""
    fields = ()

    def validate(self, fields):
        specs = {f.name: f for f in self.fields}
        missing = [f.name for f in self.fields if f.required and f.name not in fields]
        if missing:
            raise PluginError(f"missing required fields {missing}")
        for name, data in fields.items():
            spec = specs.get(name)
            if spec is None:
                continue  # creators ignore unknown fields
            if data is None:
                raise PluginError(f"field {name} has no data")
            if field_type_of(data) not in spec.types:
                raise PluginError(f"field {name} must be {'/'.join(t.name for t in spec.types)}, "
                                  f"got {field_type_of(data).name}")
        self.check_values(fields)

    def check_values(self, fields):
        pass

    def num_outputs(self, fields):
        return 1

    # Implemented per kind:
    #   infer(fields, shapes, dtypes) -> [(shape, dtype)]        (shapes may hold -1)
    #   io_precision(fields) -> DataType the plugin runs its float I/O in
    #   run(fields, arrays) -> [arrays]


def field_type_of(data):
    for field_type, np_type in NUMPY_OF_FIELD.items():
        if data.dtype == np.dtype(np_type) and field_type != PluginFieldType.CHAR:
            return field_type
    return PluginFieldType.UNKNOWN


# -- CustomEmbLayerNormPluginDynamic ---------------------------------------------------------------------------
class _EmbLayerNormBase(_Kind):
    plugin_name = "CustomEmbLayerNormPluginDynamic"

    def check_values(self, fields):
        ld = fields["bert_embeddings_layernorm_beta"].size
        if ld == 0 or fields["bert_embeddings_layernorm_gamma"].size != ld:
            raise PluginError("beta and gamma must be non-empty and of one size")
        for name in ("word", "token_type", "position"):
            if fields[f"bert_embeddings_{name}_embeddings"].size % ld:
                raise PluginError(f"{name} embeddings are not a multiple of the hidden size {ld}")

    @staticmethod
    def hidden(fields):
        return fields["bert_embeddings_layernorm_beta"].size

    @staticmethod
    def output_type(fields):
        return DataType.HALF if _scalar(fields, "output_fp16", 0) else DataType.FLOAT

    def io_precision(self, fields):
        return self.output_type(fields)

    @staticmethod
    def tables(fields):
        e = _EmbLayerNormBase.hidden(fields)

        def get(name):
            return fields[f"bert_embeddings_{name}"].astype(np.float64)

        return (get("word_embeddings").reshape(-1, e), get("token_type_embeddings").reshape(-1, e),
                get("position_embeddings").reshape(-1, e), get("layernorm_gamma"), get("layernorm_beta"))

    @staticmethod
    def embed(fields, ids, segs, positions):
        """word[id] + tok[seg] + pos[position], 0 where an id or segment is out of range; then LayerNorm with no
        epsilon (the kernel's rsqrt(E[v^2] - mu^2))."""
        word, tok, pos, gamma, beta = _EmbLayerNormBase.tables(fields)
        ok = (ids >= 0) & (ids < len(word)) & (segs >= 0) & (segs < len(tok)) & (positions < len(pos))
        v = np.zeros(ids.shape + (word.shape[1],))
        v[ok] = word[ids[ok]] + tok[segs[ok]] + pos[positions[ok]]
        return v, _layer_norm(v, gamma, beta, 0.0)


class EmbLayerNormFixed(_EmbLayerNormBase):
    """v1 / v6: inputs ids, segments, mask (S, B) int32; outputs (S, B, E, 1, 1) and mask index (B, 1)."""
    fields = EMB_WEIGHTS + _ints("output_fp16", "full_mask", "mha_type_id")

    def __init__(self, version):
        self.version = version

    def check_values(self, fields):
        super().check_values(fields)
        if not 0 <= _scalar(fields, "mha_type_id", 0) <= 3:
            raise PluginError("mha_type_id must be in 0..3")

    def num_outputs(self, fields):
        return 2

    def infer(self, fields, shapes, dtypes):
        if len(shapes) != 3 or any(len(s) != 2 for s in shapes) or len({tuple(s) for s in shapes}) != 1:
            raise PluginError(f"expects three (S, B) inputs of one shape, got {shapes}")
        if any(d != DataType.INT32 for d in dtypes):
            raise PluginError("inputs must be INT32")
        s, b = shapes[0]
        return [((s, b, self.hidden(fields), 1, 1), self.output_type(fields)), ((b, 1), DataType.INT32)]

    def run(self, fields, arrays):
        ids, segs, mask = (a.astype(np.int64) for a in arrays)
        positions = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)
        _, out = self.embed(fields, ids, segs, positions)
        # The unfused attention's mask index: the first 0 of each sequence's mask (its length if none).
        valid = mask != 0
        mask_idx = np.where(valid.all(0), ids.shape[0], np.argmin(valid, axis=0))
        return [out[..., None, None], mask_idx.reshape(-1, 1).astype(np.int32)]


class EmbLayerNormVarSeqlen(_EmbLayerNormBase):
    """v2 / v4 (HuggingFace) and v3 / v5 (Megatron): inputs ids (T), segments (T), cu_seqlens (B+1), max_seqlen (S,
    shape only); output 0 (T, E, 1, 1); output 1 an empty placeholder (HF) or the un-normalized sum (Megatron)."""
    fields = EMB_WEIGHTS + _ints("output_fp16")
    MAX_WRITTEN = 384  # the kernels only cover positions below 384 (issue #2948)

    def __init__(self, version, megatron):
        self.version = version
        self.megatron = megatron

    def num_outputs(self, fields):
        return 2

    def infer(self, fields, shapes, dtypes):
        if len(shapes) != 4 or any(len(s) != 1 for s in shapes):
            raise PluginError(f"expects four 1-D inputs (input_ids, segment_ids, cu_seqlens, max_seqlen), got {shapes}")
        if shapes[0] != shapes[1] and -1 not in (shapes[0][0], shapes[1][0]):
            raise PluginError("input_ids and segment_ids differ in length")
        if any(d != DataType.INT32 for d in dtypes[:3]):
            raise PluginError("input_ids, segment_ids and cu_seqlens must be INT32")
        out = ((shapes[0][0], self.hidden(fields), 1, 1), self.output_type(fields))
        return [out, out if self.megatron else ((), DataType.INT32)]

    def run(self, fields, arrays):
        ids, segs, cu = (a.astype(np.int64) for a in arrays[:3])
        total = len(ids)
        cu = _check_cu_seqlens(cu, total)
        positions = np.full(total, -1)
        for lo, hi in pairwise(cu):
            positions[lo:hi] = np.arange(hi - lo)
        written = (positions >= 0) & (positions < self.MAX_WRITTEN)
        raw, out = self.embed(fields, ids, segs, np.maximum(positions, 0))
        out[~written] = np.nan  # never written by the kernel: garbage in a real engine
        raw[~written] = np.nan
        second = raw[..., None, None] if self.megatron else np.zeros((), dtype=np.int32)
        return [out[..., None, None], second]


# -- CustomQKVToContextPluginDynamic ---------------------------------------------------------------------------
class _QKVBase(_Kind):
    plugin_name = "CustomQKVToContextPluginDynamic"

    def check_values(self, fields):
        hidden, heads = _scalar(fields, "hidden_size"), _scalar(fields, "num_heads")
        if hidden <= 0 or heads <= 0 or hidden % heads:
            raise PluginError(f"invalid hidden_size {hidden} / num_heads {heads}")
        if "dq_probs" in fields and not _scalar(fields, "dq_probs") > 0:
            raise PluginError("dq_probs must be > 0")

    @staticmethod
    def dims(fields):
        e, n = _scalar(fields, "hidden_size"), _scalar(fields, "num_heads")
        return e, n, e // n


class QKVFixed(_QKVBase):
    """v1 / v4: qkv (S, B, 3E, 1, 1) laid out [N][3][H] per token, mask index (B, P); output (S, B, E, 1, 1)."""
    fields = _ints("type_id", "hidden_size", "num_heads", "has_mask", required=True) + (DQ_PROBS,)
    PACKED_MASK_SEQ = (64, 96, 128, 384)

    def __init__(self, version):
        self.version = version

    def check_values(self, fields):
        super().check_values(fields)
        if not 0 <= _scalar(fields, "type_id") <= 2:
            raise PluginError(f"QKV: Invalid TypeId {_scalar(fields, 'type_id')}")
        if _scalar(fields, "has_mask") not in (0, 1):
            raise PluginError("QKV: Invalid hasMask")

    def io_precision(self, fields):
        return DataType(_scalar(fields, "type_id"))

    def infer(self, fields, shapes, dtypes):
        e, _, _ = self.dims(fields)
        has_mask = _scalar(fields, "has_mask")
        if len(shapes) != 1 + has_mask:
            raise PluginError(f"expects {1 + has_mask} inputs, got {len(shapes)}")
        qkv = shapes[0]
        if len(qkv) != 5 or qkv[2] not in (-1, 3 * e) or qkv[3:] != (1, 1):
            raise PluginError(f"qkv input must be (S, B, {3 * e}, 1, 1), got {qkv}")
        if has_mask and (len(shapes[1]) != 2 or dtypes[1] != DataType.INT32 or
                         -1 not in (shapes[1][0], qkv[1]) and shapes[1][0] != qkv[1]):
            raise PluginError(f"mask must be INT32 (B, P), got {shapes[1]}")
        if self.io_precision(fields) == DataType.INT8 and qkv[0] not in self.PACKED_MASK_SEQ:
            raise PluginError("INT8 IO only support sequence length 64, 96, 128, 384 (a static sequence length)")
        return [((qkv[0], qkv[1], e, 1, 1), dtypes[0])]

    def run(self, fields, arrays):
        e, n, h = self.dims(fields)
        qkv = arrays[0][..., 0, 0]                              # (S, B, 3E)
        s, b = qkv.shape[:2]
        heads = qkv.reshape(s, b, n, 3, h).transpose(1, 3, 2, 0, 4)  # (B, 3, N, S, H)
        mask_idx = arrays[1].reshape(b, -1)[:, 0] if _scalar(fields, "has_mask") else np.full(b, s)
        out = np.empty((s, b, e))
        for i in range(b):
            ctx = _softmax_attention(heads[i, 0], heads[i, 1], heads[i, 2], 1.0 / math.sqrt(h), int(mask_idx[i]))
            out[:, i] = ctx.transpose(1, 0, 2).reshape(s, e)   # channel n*H + h
        return [out[..., None, None]]


class QKVVarSeqlen(_QKVBase):
    """v2 / v5 with var_seqlen=1: qkv (T, 3E, 1, 1) [N][3][H] per token, a dummy mask, cu_seqlens, max_seqlen."""
    fields = (_ints("type_id", "hidden_size", "num_heads", "has_mask", required=True) + (DQ_PROBS,)
              + _ints("var_seqlen", "use_int8_scale_max"))

    def __init__(self, version):
        self.version = version

    def check_values(self, fields):
        super().check_values(fields)
        type_id = _scalar(fields, "type_id")
        if not 0 <= type_id <= 2:
            raise PluginError(f"QKV: Invalid TypeId {type_id}")
        if not _scalar(fields, "var_seqlen", 0):
            raise PluginError("var_seqlen=0 (fixed length) is not implemented by this plugin version (issue #2375)")
        if DataType(type_id) not in (DataType.HALF, DataType.INT8):
            raise PluginError("variable sequence length needs type_id HALF or INT8 (the fused kernels have no FP32)")
        if self.dims(fields)[2] > 64:
            raise PluginError("head size above 64 is not supported")

    def io_precision(self, fields):
        return DataType(_scalar(fields, "type_id"))

    def infer(self, fields, shapes, dtypes):
        e, _, _ = self.dims(fields)
        if len(shapes) != 4:
            raise PluginError("for varseqlen, expected 4 inputs (qkv, mask, cu_seqlens, max_seqlen)")
        qkv = shapes[0]
        if len(qkv) != 4 or qkv[1] != 3 * e or qkv[2:] != (1, 1):
            raise PluginError(f"qkv input must be (T, {3 * e}, 1, 1), got {qkv}")
        if len(shapes[2]) != 1 or dtypes[2] != DataType.INT32 or len(shapes[3]) != 1:
            raise PluginError("cu_seqlens must be 1-D INT32 and max_seqlen 1-D")
        return [((qkv[0], e, 1, 1), dtypes[0])]

    def run(self, fields, arrays):
        e, n, h = self.dims(fields)
        qkv = arrays[0][:, :, 0, 0]
        total = qkv.shape[0]
        cu = _check_cu_seqlens(arrays[2], total)
        if arrays[3].shape[0] > 512:
            raise PluginError("No implementation for variable sequence length multi-head attention with sequence > 512")
        out = np.full((total, e), np.nan)  # tokens past cu_seqlens[-1] are never written
        for lo, hi in pairwise(cu):
            t = qkv[lo:hi].reshape(hi - lo, n, 3, h).transpose(2, 1, 0, 3)  # (3, N, L, H)
            out[lo:hi] = _softmax_attention(t[0], t[1], t[2], 1.0 / math.sqrt(h)).transpose(1, 0, 2).reshape(-1, e)
        return [out[..., None, None]]


class QKVInterleaved(_QKVBase):
    """v3 / v6: INT8 CHW32 qkv (1, 3E, T, 1) laid out [Q | K | V], cu_seqlens, max_seqlen; output (1, E, T, 1) INT8.
    The kernel's BMM1 scale is hard-coded to 1/sqrt(64)."""
    fields = (_ints("hidden_size", "num_heads", required=True) + (DQ_PROBS,)
              + _ints("use_int8_scale_max", "use_explicit_int8")
              + (Field("input_qkv_scale", (PluginFieldType.FLOAT32,)),
                 Field("output_ctx_scale", (PluginFieldType.FLOAT32,))))
    BMM1_SCALE = 0.125

    def __init__(self, version):
        self.version = version

    def io_precision(self, fields):
        return DataType.INT8

    def infer(self, fields, shapes, dtypes):
        e, _, _ = self.dims(fields)
        if len(shapes) != 3:
            raise PluginError("expects 3 inputs (qkv, cu_seqlens, max_seqlen)")
        qkv = shapes[0]
        if len(qkv) != 4 or qkv[0] != 1 or qkv[1] != 3 * e or qkv[3] != 1:
            raise PluginError(f"qkv input must be (1, {3 * e}, T, 1), got {qkv}")
        return [((1, e, qkv[2], 1), DataType.INT8)]

    def run(self, fields, arrays):
        e, n, h = self.dims(fields)
        qkv = arrays[0][0, :, :, 0].T                    # (T, 3E)
        total = qkv.shape[0]
        cu = _check_cu_seqlens(arrays[1], total)
        out = np.full((total, e), np.nan)
        for lo, hi in pairwise(cu):
            t = qkv[lo:hi].reshape(hi - lo, 3, n, h).transpose(1, 2, 0, 3)  # (3, N, L, H)
            out[lo:hi] = _softmax_attention(t[0], t[1], t[2], self.BMM1_SCALE).transpose(1, 0, 2).reshape(-1, e)
        return [out.T[None, :, :, None]]


# -- CustomSkipLayerNormPluginDynamic --------------------------------------------------------------------------
def _epsilon(dtype):
    """Machine epsilon of the compute type (FLT_EPSILON; 2^-10 for half, which the INT8 I/O kernels compute in)."""
    return FLT_EPSILON if dtype == DataType.FLOAT else HALF_EPSILON


class SkipLayerNorm(_Kind):
    """v1 / v5 (fixed, 5-D (S, B, E, 1, 1)) and v2 / v6 (varseqlen, any shape): out = LN(x + skip [+ bias])."""
    plugin_name = "CustomSkipLayerNormPluginDynamic"

    def __init__(self, version, varseqlen):
        self.version = version
        self.varseqlen = varseqlen
        self.fields = (_ints("type_id", required=True) + _ints("ld", required=not varseqlen)
                       + _weights("beta", "gamma") + (Field("bias", WEIGHT_TYPES),))

    def check_values(self, fields):
        if not 0 <= _scalar(fields, "type_id") <= 3:
            raise PluginError(f"SkipLayerNorm: Invalid type ID: {_scalar(fields, 'type_id')}")
        if fields["beta"].size == 0 or fields["gamma"].size != fields["beta"].size:
            raise PluginError("SkipLayerNorm: invalid beta / gamma")

    def io_precision(self, fields):
        return DataType(_scalar(fields, "type_id"))

    def infer(self, fields, shapes, dtypes):
        if len(shapes) != 2 or len(shapes[0]) != len(shapes[1]):
            raise PluginError(f"expects two inputs of one rank, got {shapes}")
        if any(a >= 0 and b >= 0 and a != b for a, b in zip(*shapes)):
            raise PluginError(f"inputs must have the same shape, got {shapes}")
        shape, ld = shapes[0], fields["beta"].size
        if not self.varseqlen and (len(shape) != 5 or shape[3:] != (1, 1) or shape[2] not in (-1, ld)):
            raise PluginError(f"input must be (S, B, {ld}, 1, 1), got {shape}")
        if self.varseqlen and (len(shape) < 2 or shape[1] not in (-1, ld)):
            raise PluginError(f"input must be (T, {ld}, ...), got {shape}")
        return [(shape, dtypes[0])]

    def run(self, fields, arrays):
        hidden_axis = 1 if self.varseqlen else 2
        rows = np.moveaxis(arrays[0] + arrays[1], hidden_axis, -1)  # the hidden axis last
        if "bias" in fields:
            rows = rows + fields["bias"].astype(np.float64)
        out = _layer_norm(rows, fields["gamma"].astype(np.float64), fields["beta"].astype(np.float64),
                          _epsilon(self.io_precision(fields)))
        return [np.moveaxis(out, -1, hidden_axis)]


class SkipLayerNormInterleaved(_Kind):
    """v3 / v7 (HuggingFace) and v4 / v8 (Megatron): INT8 CHW32 (1, E, T, 1) inputs; LayerNorm over E with no
    epsilon; Megatron also outputs the pre-LayerNorm sum."""
    plugin_name = "CustomSkipLayerNormPluginDynamic"
    fields = _weights("beta", "gamma")

    def __init__(self, version, megatron):
        self.version = version
        self.megatron = megatron

    def num_outputs(self, fields):
        return 2 if self.megatron else 1

    def io_precision(self, fields):
        return DataType.INT8

    def infer(self, fields, shapes, dtypes):
        e = fields["beta"].size
        if len(shapes) != 2 or any(len(s) != 4 or s[0] != 1 or s[1] != e or s[3] != 1 for s in shapes):
            raise PluginError(f"expects two (1, {e}, T, 1) inputs, got {shapes}")
        out = (shapes[0], DataType.INT8)
        return [out, out] if self.megatron else [out]

    def run(self, fields, arrays):
        x = arrays[0] + arrays[1]
        out = _layer_norm(x, fields["gamma"].astype(np.float64).reshape(1, -1, 1, 1),
                          fields["beta"].astype(np.float64).reshape(1, -1, 1, 1), 0.0, axis=1)
        return [out, x] if self.megatron else [out]


# ------------------------------------------------------------------------------------------------ registry
def _kinds():
    return [(EmbLayerNormFixed("1"), False), (EmbLayerNormFixed("6"), True),
            (EmbLayerNormVarSeqlen("2", False), False), (EmbLayerNormVarSeqlen("4", False), True),
            (EmbLayerNormVarSeqlen("3", True), False), (EmbLayerNormVarSeqlen("5", True), True),
            (QKVFixed("1"), False), (QKVFixed("4"), True),
            (QKVVarSeqlen("2"), False), (QKVVarSeqlen("5"), True),
            (QKVInterleaved("3"), False), (QKVInterleaved("6"), True),
            (SkipLayerNorm("1", False), False), (SkipLayerNorm("5", False), True),
            (SkipLayerNorm("2", True), False), (SkipLayerNorm("6", True), True),
            (SkipLayerNormInterleaved("3", False), False), (SkipLayerNormInterleaved("7", False), True),
            (SkipLayerNormInterleaved("4", True), False), (SkipLayerNormInterleaved("8", True), True)]


_BERT_CREATORS = {(kind.plugin_name, kind.version): (IPluginCreatorV3One(kind) if v3 else IPluginCreator(kind))
                  for kind, v3 in _kinds()}
_registry_logger = _core.Logger(ILogger.Severity.ERROR)
_plugins_initialized = False


def _bert_plugins_shipped():
    """TensorRT 11 removed the BERT plugins; the stand-in follows whatever tensorrt.__version__ says."""
    from . import __version__
    return int(__version__.split(".")[0]) < 11


class IPluginRegistry:
    def get_creator(self, type, version, plugin_namespace):
        if not _plugins_initialized or not _bert_plugins_shipped():
            return None
        return _BERT_CREATORS.get((str(type), str(version))) if plugin_namespace == "" else None

    @property
    def plugin_creator_list(self):
        if not _plugins_initialized or not _bert_plugins_shipped():
            return []
        return list(_BERT_CREATORS.values())


_REGISTRY = IPluginRegistry()


def get_plugin_registry():
    return _REGISTRY


def init_libnvinfer_plugins(logger, namespace):
    """Registers the library's plugin creators (TensorRT's initLibNvInferPlugins)."""
    global _plugins_initialized, _registry_logger
    _plugins_initialized = True
    _registry_logger = logger
    return True


# ------------------------------------------------------------------------------------------------ plugin layers
class _PluginLayer(ILayer):
    def __init__(self, network, inputs, plugin):
        super().__init__(network, inputs, plugin.num_outputs)
        self._plugin = plugin
        self._refresh()

    @property
    def plugin(self):
        return self._plugin

    def _computes_values(self):
        return False

    def _infer(self, shapes, dtypes, values):
        try:
            return self._plugin._kind.infer(self._plugin._fields, shapes, dtypes)
        except PluginError as exc:
            self._fail(f"{self._plugin.plugin_type} v{self._plugin.plugin_version}: {exc}")

    def _run(self, arrays):
        try:
            return self._plugin._kind.run(self._plugin._fields, arrays)
        except PluginError as exc:
            self._fail(f"{self._plugin.plugin_type} v{self._plugin.plugin_version}: {exc}")

    def _io_precision(self):
        return self._plugin._kind.io_precision(self._plugin._fields)

    def _float_tensors(self):
        return [t for t in self._inputs + self._outputs if t.dtype in FLOATING]


class IPluginV2Layer(_PluginLayer):
    _kind = "PluginV2"


class IPluginV3Layer(_PluginLayer):
    _kind = "PluginV3"


def add_plugin_layer(network, inputs, shape_inputs, plugin):
    inputs = list(inputs)
    for t in inputs + list(shape_inputs or ()):
        check_tensor(network, t, "plugin input")
    if shape_inputs is None:
        if not isinstance(plugin, IPluginV2):
            raise TypeError("add_plugin_v2: plugin must be an IPluginV2 (did you create a V3 plugin?)")
        return IPluginV2Layer(network, inputs, plugin)
    if not isinstance(plugin, IPluginV3):
        raise TypeError("add_plugin_v3: plugin must be an IPluginV3 (did you create a V2 plugin?)")
    if shape_inputs:
        report_error(network._logger, "the BERT plugins take no shape inputs")
    return IPluginV3Layer(network, inputs, plugin)
