"""Every weight format the builders accept, turned into one canonical weight map.

The canonical map (docs/DESIGN.md) is `{upstream weight-map name: float32 array}`, unflattened, every dense kernel
`[out, in]`; quantization scales ride along under upstream's `..._amax` names. Sources:

* TensorFlow V2 checkpoint (`-m`), read without TensorFlow (helpers/tf_checkpoint.py); renamed as upstream's
  `load_tf_weights`, kernels transposed from TF's `[in, out]`.
* PyTorch checkpoint (`-pt`): `{"model": state_dict}` with DeepLearningExamples names, a bare state dict, a
  `.safetensors` file or a Hugging Face folder; renamed through `onnx_to_trt_name` (already `[out, in]`).
* Fake-quant ONNX (`-x`): initializers renamed through `onnx_to_trt_name`.
* Megatron pickle (`-mp`, builder_varseqlen.py): fused `[Q|K|V]` kernels, split back into query/key/value here.
"""
import json
import os
import pickle
import re
import struct
import warnings

import numpy as np

from . import tf_checkpoint
from .atomic import atomic_open
from .errors import BertError, read_json_file
from .progress import progress_bar

FIXED_PRIORITY = ("onnx", "pytorch", "ckpt")  # builder.py's order when several sources are given
VARSEQLEN_PRIORITY = ("onnx", "pytorch", "ckpt", "pickle")  # builder_varseqlen.py's order

# what a PyTorch state dict may hold beside the QA model: the pooler (DeepLearningExamples' SQuAD checkpoints keep
# it) and the integer position-id and token-type-id buffers (some Hugging Face checkpoints)
_STATE_SKIPPED = re.compile(r"(^|\.)pooler\.|(^|\.)(position|token_type)_ids$")

_LAYER_TENSORS = {  # canonical suffix -> (Hugging Face module path, parameter)
    "attention_self_query_kernel": ("attention.self.query", "weight"),
    "attention_self_query_bias": ("attention.self.query", "bias"),
    "attention_self_key_kernel": ("attention.self.key", "weight"),
    "attention_self_key_bias": ("attention.self.key", "bias"),
    "attention_self_value_kernel": ("attention.self.value", "weight"),
    "attention_self_value_bias": ("attention.self.value", "bias"),
    "attention_output_dense_kernel": ("attention.output.dense", "weight"),
    "attention_output_dense_bias": ("attention.output.dense", "bias"),
    "attention_output_layernorm_gamma": ("attention.output.LayerNorm", "weight"),
    "attention_output_layernorm_beta": ("attention.output.LayerNorm", "bias"),
    "intermediate_dense_kernel": ("intermediate.dense", "weight"),
    "intermediate_dense_bias": ("intermediate.dense", "bias"),
    "output_dense_kernel": ("output.dense", "weight"),
    "output_dense_bias": ("output.dense", "bias"),
    "output_layernorm_gamma": ("output.LayerNorm", "weight"),
    "output_layernorm_beta": ("output.LayerNorm", "bias"),
}
_GLOBAL_TENSORS = {
    "bert_embeddings_word_embeddings": "bert.embeddings.word_embeddings.weight",
    "bert_embeddings_position_embeddings": "bert.embeddings.position_embeddings.weight",
    "bert_embeddings_token_type_embeddings": "bert.embeddings.token_type_embeddings.weight",
    "bert_embeddings_layernorm_gamma": "bert.embeddings.LayerNorm.weight",
    "bert_embeddings_layernorm_beta": "bert.embeddings.LayerNorm.bias",
    "cls_squad_output_weights": "qa_outputs.weight",
    "cls_squad_output_bias": "qa_outputs.bias",
}


# ---------------------------------------------------------------------------------------------------- the map
def required_shapes(config):
    """{canonical name: shape} of every tensor the builders need."""
    e, i = config.hidden_size, config.intermediate_size
    shapes = {
        "bert_embeddings_word_embeddings": (config.vocab_size, e),
        "bert_embeddings_position_embeddings": (config.max_position_embeddings, e),
        "bert_embeddings_token_type_embeddings": (config.type_vocab_size, e),
        "bert_embeddings_layernorm_gamma": (e,),
        "bert_embeddings_layernorm_beta": (e,),
        "cls_squad_output_weights": (2, e),
        "cls_squad_output_bias": (2,),
    }
    layer = {suffix: (e,) for suffix in _LAYER_TENSORS if not suffix.endswith("kernel")}
    layer.update({f"attention_self_{qkv}_kernel": (e, e) for qkv in ("query", "key", "value")})
    layer.update({"attention_output_dense_kernel": (e, e), "intermediate_dense_kernel": (i, e),
                  "intermediate_dense_bias": (i,), "output_dense_kernel": (e, i)})
    for n in range(config.num_hidden_layers):
        shapes.update({f"l{n}_{suffix}": shape for suffix, shape in layer.items()})
    return shapes


def _listing(items, limit=12):
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def validate(weights, config):
    """Raise BertError naming every required tensor that is missing or has the wrong shape."""
    missing, wrong = [], []
    for name, shape in required_shapes(config).items():
        if name not in weights:
            missing.append(name)
        elif tuple(weights[name].shape) != shape:
            wrong.append(f"{name} {list(weights[name].shape)} (expected {list(shape)})")
    problems = []
    extra = num_layers(weights) - config.num_hidden_layers
    if extra > 0:  # a config with fewer layers than the weights would silently run a truncated model
        problems.append(f"the weights have {num_layers(weights)} layers")
    if missing:
        problems.append(f"missing {len(missing)} tensor(s): {_listing(missing)}")
    if wrong:
        problems.append(f"wrong shape: {_listing(wrong)}")
    if problems:
        raise BertError(f"weights do not fit the model config ({config.num_hidden_layers} layers, hidden "
                        f"{config.hidden_size}, intermediate {config.intermediate_size}): {'; '.join(problems)}")


def num_layers(weights):
    """The number of encoder layers in a canonical map (from its `l{n}_` names)."""
    layers = {int(m.group(1)) for name in weights if (m := re.match(r"l(\d+)_", name))}
    return max(layers) + 1 if layers else 0


def fuse_layer_qkv(weights, config, n, interleaved=False):
    """Layer n's fused QKV kernel [3E, E] and bias [3E] (see fuse_qkv for the layouts)."""
    heads, size, e = config.num_attention_heads, config.head_size, config.hidden_size
    prefix = f"l{n}_attention_self_"
    kernel = np.stack([weights[f"{prefix}{x}_kernel"] for x in ("query", "key", "value")])
    bias = np.stack([weights[f"{prefix}{x}_bias"] for x in ("query", "key", "value")])
    if not interleaved:
        kernel = kernel.reshape(3, heads, size, e).transpose(1, 0, 2, 3)
        bias = bias.reshape(3, heads, size).transpose(1, 0, 2)
    return (np.ascontiguousarray(kernel.reshape(3 * e, e), dtype=np.float32),
            np.ascontiguousarray(bias.reshape(3 * e), dtype=np.float32))


def fuse_qkv(weights, config, interleaved=False):
    """TensorRT's fused QKV weights: `l{n}_attention_self_qkv_kernel` [3E, E] and `..._qkv_bias` [3E].

    Default (head-major): for head h, its H query rows, then H key rows, then H value rows -- upstream views
    [Wq; Wk; Wv] as (3, N, H, E) and transposes to (N, 3, H, E). Interleaved (`-il` INT8): plain [Q | K | V].
    """
    fused = {}
    for n in range(config.num_hidden_layers):
        kernel, bias = fuse_layer_qkv(weights, config, n, interleaved)
        fused[f"l{n}_attention_self_qkv_kernel"] = kernel
        fused[f"l{n}_attention_self_qkv_bias"] = bias
    return fused


def to_hf_state_dict(weights):
    """Canonical map -> Hugging Face `BertForQuestionAnswering` names ([out, in] weights, as stored)."""
    state = {hf: weights[name] for name, hf in _GLOBAL_TENSORS.items()}
    for n in range(num_layers(weights)):
        for suffix, (module, param) in _LAYER_TENSORS.items():
            state[f"bert.encoder.layer.{n}.{module}.{param}"] = weights[f"l{n}_{suffix}"]
    return state


def to_dle_state_dict(weights):
    """Canonical map -> DeepLearningExamples names (HF names, but `intermediate.dense_act`), what `-pt` expects."""
    return {name.replace(".intermediate.dense.", ".intermediate.dense_act."): value
            for name, value in to_hf_state_dict(weights).items()}


# ---------------------------------------------------------------------------------------------------- renaming
def tf_to_trt_name(name):
    """Upstream `load_tf_weights` renaming: `bert/encoder/layer_0/attention/self/query/kernel` ->
    `l0_attention_self_query_kernel`; outside the encoder all tokens are joined with `_`."""
    tokens = name.lower().split("/")
    if "encoder" not in name:
        return "_".join(tokens)
    digits = re.search(r"\d+", name)
    if "layer" not in name or digits is None or len(tokens) < 4:
        raise BertError(f"TensorFlow variable {name} is in the encoder but names no layer")
    return f"l{digits.group(0)}_" + "_".join(tokens[3:])


_MATMUL_QUANTIZERS = {"matmul_q_quantizer": "qv_a_input_quantizer", "matmul_k_quantizer": "qv_b_input_quantizer",
                      "matmul_v_quantizer": "av_b_input_quantizer", "matmul_a_quantizer": "av_a_input_quantizer"}
_QKV_TOKENS = {"key", "value", "query", "query_key_value"}
# LayerNorm parameters: `weight`/`bias` (PyTorch), `gamma`/`beta` (pytorch-pretrained-bert's state dicts)
_LAYERNORM_PARAMS = {"weight": "gamma", "gamma": "gamma", "bias": "beta", "beta": "beta"}


def onnx_to_trt_name(name):
    """Upstream's `onnx_to_trt_name`: PyTorch/ONNX names -> weight-map names (spec §3.3).

    `bert.encoder.layer.3.attention.self.query._input_quantizer._amax` -> `l3_attention_self_query_input_amax`,
    `qa_outputs.weight` -> `cls_squad_output_weights`. Unknown layouts raise BertError (upstream asserts).
    """
    lowered = name.lower()
    tokens = [t.strip("_") for t in lowered.split(".")]
    try:
        if tokens[0] == "bert" and tokens[1] == "encoder":
            _rename_encoder_tokens(tokens)
            if "final_input_quantizer" not in tokens[2]:
                start = tokens.index("layers") + 1 if "layers" in tokens else 3
                tokens = tokens[start:]
                tokens[0] = f"l{int(tokens[0])}"
        elif tokens[0] == "bert":
            if tokens[-2] == "layernorm":
                tokens[-1] = _LAYERNORM_PARAMS[tokens[-1]]
            else:  # embeddings: drop the trailing `weight`, keeping a trailing `amax` in its place
                if tokens[-1] == "amax":
                    tokens[-2] = "amax"
                tokens = tokens[:-1]
        elif "qa" in lowered:
            return "cls_squad_output_bias" if tokens[-1] == "bias" else "cls_squad_output_weights"
        else:
            raise ValueError
    except (IndexError, KeyError, ValueError):
        raise BertError(f"unknown weight name {name!r} (not a BERT question-answering tensor)") from None
    return "_".join(tokens)


def _rename_encoder_tokens(tokens):
    """The encoder part of onnx_to_trt_name, in place: sparse `dense_act`, matmul quantizers, kernel/input amax."""
    if tokens[-2] == "dense_act":
        tokens[-2] = "dense"
    elif tokens[-3] == "dense_act":
        tokens[-2] = {"input_quantizer": "input", "weight_quantizer": "kernel"}.get(tokens[-2], tokens[-2])
        tokens[-3] = "dense"
    elif tokens[-2].startswith("matmul"):
        tokens[-2] = _MATMUL_QUANTIZERS[tokens[-2].replace("input_", "")]
    if tokens[-2] == "layernorm":
        tokens[-1] = _LAYERNORM_PARAMS[tokens[-1]]
    elif (tokens[-2] == "dense" or tokens[-2] in _QKV_TOKENS) and tokens[-1] == "weight":
        tokens[-1] = "kernel"
    elif (tokens[-3] == "dense" or tokens[-3] in _QKV_TOKENS) and tokens[-1] == "amax":
        tokens[-2] = {"weight_quantizer": "kernel", "input_quantizer": "input"}.get(tokens[-2], tokens[-2])


def _integer_weight(name, array):
    """An integer or bool array under a name other than a sparsity mask's: no BERT weight is one."""
    return array.dtype.kind in "biu" and not name.endswith("_mask")


def _canonical_value(name, array):
    """float32 for weights and scales; sparsity masks (`_mask`) stay int8 as upstream reads them."""
    try:
        array = np.asarray(array)
        if np.iscomplexobj(array):   # the cast would drop the imaginary part with only a warning
            raise BertError(f"weight {name} holds complex numbers")
        if _integer_weight(name, array):   # a cast would make a wrong model, silently
            raise BertError(f"weight {name} holds {array.dtype} values, not floating-point numbers")
        with np.errstate(all="ignore"):   # values beyond float32 become inf, which validation names
            return array.astype(np.int8 if name.endswith("_mask") else np.float32)
    except (TypeError, ValueError):
        raise BertError(f"weight {name} holds no numbers ({type(array).__name__})") from None


def _add_weight(weights, key, array, source, name):
    """weights[key] = array, refusing a second tensor for the same weight (the last one would silently win)."""
    if key in weights:
        raise BertError(f"{source}: two tensors map to the weight {key} (one is {name})")
    weights[key] = array


def _named_items(state, source):
    """A loaded state's (name, value) pairs; a pickle may hold keys of any type, and one that is no name is an
    error rather than a traceback further on."""
    for name, value in state.items():
        if not isinstance(name, str):
            raise BertError(f"{source}: key {name!r} is not a tensor name")
        yield name, value


def _unpickled(load, what, path):
    """load() of the pickle-based file `what` at `path`. Unpickling runs the file's own constructors, which may
    raise anything: all of it is one line, but for running out of memory (run_cli says so)."""
    try:
        return load()
    except MemoryError:
        raise
    except IsADirectoryError:
        raise BertError(f"{what} is a directory: {path}") from None
    except Exception as exc:  # noqa: BLE001 -- see above
        if isinstance(exc, OSError) and not os.path.exists(path):
            raise BertError(f"{what} not found: {path}") from None
        raise BertError(f"cannot read {what} {path}: {' '.join(str(exc).split())[:200]}") from None


def from_state_dict(state, source="state dict"):
    """A PyTorch-style {name: array} (Hugging Face or DeepLearningExamples names) -> canonical map."""
    weights = {}
    for name, value in _named_items(state, source):
        if _STATE_SKIPPED.search(name):
            continue
        key = onnx_to_trt_name(name)
        _add_weight(weights, key, _canonical_value(key, value), source, name)
    return weights


# ---------------------------------------------------------------------------------------------------- loaders
def _qa_model_key(tf_name):
    """A TensorFlow variable's canonical name if it is one of the question-answering model's tensors, else None
    (every encoder tensor is a layer's, so one in the encoder naming no layer is not)."""
    try:
        key = tf_to_trt_name(tf_name)
    except BertError:
        return None
    layer = re.fullmatch(r"l\d+_(\w+)", key)
    return key if (layer.group(1) in _LAYER_TENSORS if layer else key in _GLOBAL_TENSORS) else None


def load_tf_checkpoint(path):
    """TensorFlow V2 checkpoint (prefix, `.index` file or folder) -> canonical map of the QA model's tensors.
    Training checkpoints hold more, all dropped: the pooler, optimizer slots (Adam's, LAMB's, momentum,
    accumulators), the step counter and mixed precision's loss-scaling state (`current_loss_scale`, 2^32 in
    DeepLearningExamples' AMP runs, beyond float16). Upstream carries them into its weight map unused."""
    checkpoint = tf_checkpoint.TFCheckpoint(path)
    weights = {}
    named = [(name, key) for name in sorted(checkpoint.names()) if (key := _qa_model_key(name)) is not None]
    with progress_bar(len(named), "tensor", "reading the TensorFlow checkpoint") as bar:   # BERT-Large: ~15 s
        for name, key in named:
            array = checkpoint.read(name)
            bar.update()
            array = _canonical_value(key, array)
            if "kernel" in name:  # TF dense kernels are [in, out]
                array = np.ascontiguousarray(array.T)
            _add_weight(weights, key, array, f"TensorFlow checkpoint {path}", name)
    return weights


def _import_torch():
    try:
        import torch
    except ImportError:
        raise BertError("reading a PyTorch checkpoint needs the torch package (pip install torch)") from None
    return torch


def _torch_to_numpy(value, name, source):
    torch = _import_torch()
    if isinstance(value, np.ndarray):
        return value
    if not isinstance(value, torch.Tensor):
        raise BertError(f"{source}: entry {name} is a {type(value).__name__}, not a tensor")
    value = value.detach().cpu()
    if value.is_quantized or value.is_complex():
        raise BertError(f"{source}: {name} is a {value.dtype} tensor, not real numbers")
    if value.is_floating_point() and value.dtype not in (torch.float16, torch.float32, torch.float64):
        value = value.float()   # bfloat16, float8: numpy has no such type; widening loses nothing
    try:
        return value.numpy()
    except (TypeError, RuntimeError):
        raise BertError(f"{source}: {name} is a {value.dtype} tensor, which cannot be read as numbers") from None


def load_pytorch_checkpoint(path):
    """`torch.save({"model": state_dict})` (DeepLearningExamples names) or a bare state dict -> canonical map."""
    torch = _import_torch()

    def load():
        with warnings.catch_warnings():   # torch's warnings about the file would precede the one-line error
            warnings.simplefilter("ignore")
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                # Holds objects beyond tensors and containers: unpickle fully, as upstream always does.
                return torch.load(path, map_location="cpu", weights_only=False)

    obj = _unpickled(load, "PyTorch checkpoint", path)
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not state:
        raise BertError(f"PyTorch checkpoint {path} holds no state dict (expected {{'model': state_dict}})")
    return from_state_dict({k: _torch_to_numpy(v, k, path) for k, v in state.items()}, path)


_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64,
                       "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    """A `.safetensors` file -> {name: array} (BF16 widened to float32). The format: u64 header length,
    a JSON header of dtype/shape/byte offsets, then the raw little-endian data."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        (header_size,) = struct.unpack_from("<Q", data, 0)
        header = json.loads(data[8:8 + header_size])
        base = 8 + header_size
        tensors = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<")
            if base + end > len(data) or begin > end:
                raise BertError(f"safetensors file {path} is truncated (tensor {name})")
            array = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=base + begin)
            array = array.reshape(info["shape"])
            if info["dtype"] == "BF16":
                array = (array.astype(np.uint32) << np.uint32(16)).view(np.float32)
            tensors[name] = array
    except (struct.error, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BertError(f"{path} is not a valid safetensors file ({type(exc).__name__}: {exc})") from None
    return tensors


def write_safetensors(path, tensors, metadata=None):
    """{name: array} -> a `.safetensors` file (tensors in name order, 8-byte aligned header)."""
    codes = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items() if k != "BF16"}
    header, chunks, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": codes[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    with atomic_open(path) as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded)
        for raw in chunks:
            f.write(raw)


def load_safetensors(path):
    """A `.safetensors` file with Hugging Face (or DeepLearningExamples) names -> canonical map."""
    return from_state_dict(read_safetensors(path), path)


def load_hf_folder(folder):
    """A Hugging Face model folder: `model.safetensors`, else `pytorch_model.bin`, either whole or sharded (an
    `.index.json` whose weight_map names the shard of each tensor)."""
    for name, loader in (("model.safetensors", load_safetensors), ("pytorch_model.bin", load_pytorch_checkpoint)):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return loader(candidate)
        index = candidate + ".index.json"
        if os.path.isfile(index):
            weights = {}
            for shard in sorted(set(_shard_map(index).values())):
                for key, array in loader(os.path.join(folder, shard)).items():
                    _add_weight(weights, key, array, index, f"in {shard}")
            return weights
    raise BertError(f"no model.safetensors or pytorch_model.bin (or their .index.json) in folder {folder}")


def _shard_map(index):
    index_data = read_json_file(index, "shard index")
    try:
        weight_map = index_data["weight_map"]
        if not isinstance(weight_map, dict) or not weight_map or not all(
                isinstance(v, str) and v and os.path.basename(v) == v for v in weight_map.values()):
            raise ValueError("weight_map must map tensor names to shard file names in the folder")
    except (ValueError, KeyError, TypeError) as exc:
        raise BertError(f"{index} is not a valid shard index: {exc}") from None
    return weight_map


def load_onnx(path):
    """A (fake-quant) ONNX model's initializers -> canonical map, keeping the `_amax` scales."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise BertError("reading an ONNX model needs the onnx package (pip install onnx)") from None
    if not os.path.isfile(path):
        raise BertError(f"ONNX model {'is not a file' if os.path.exists(path) else 'not found'}: {path}")
    try:
        model = onnx.load(path)
    except Exception as exc:  # noqa: BLE001 -- protobuf raises its own DecodeError and friends
        raise BertError(f"cannot read ONNX model {path}: {' '.join(str(exc).split())[:200]}") from None
    state = {}
    for init in model.graph.initializer:
        try:
            state[init.name] = numpy_helper.to_array(init)
        except Exception as exc:  # noqa: BLE001 -- onnx raises plain exceptions for malformed tensors
            raise BertError(f"ONNX model {path}: cannot read initializer {init.name}: {exc}") from None
    if not state:
        raise BertError(f"ONNX model {path} has no initializers (weights)")
    return from_state_dict(state, path)


_MEGATRON_REPLACEMENTS = (("embedding_", "embeddings_"), ("tokentype_", "token_type_"), ("_av", "_self_av"),
                          ("_qv", "_self_qv"), ("query_key_value", "self_qkv"))


def load_megatron_pickle(path, config):
    """Upstream's Megatron state-dict pickle (spec §3.4) -> canonical map.

    Its fused `query_key_value` kernels are [3E, E] = [Wq; Wk; Wv] (the `-il` layout, not transposed); they are
    split into the canonical query/key/value kernels so `fuse_qkv` can lay them out for either plugin.
    """
    def load():
        with open(path, "rb") as f:
            return pickle.load(f)

    state = _unpickled(load, "Megatron pickle", path)
    if not isinstance(state, dict):
        raise BertError(f"Megatron pickle {path} does not hold a dict of tensors")
    e = config.hidden_size
    source = f"Megatron pickle {path}"
    weights = {}
    for name, value in _named_items(state, source):
        if "scale" in name:
            continue
        key = onnx_to_trt_name(name)
        for old, new in _MEGATRON_REPLACEMENTS:
            key = key.replace(old, new)
        if type(value).__module__.startswith("torch"):   # torch tensors (bfloat16 ones too) as -pt reads them
            value = _torch_to_numpy(value, name, source)
        array = _canonical_value(key, value)
        if key == f"l{config.num_hidden_layers - 1}_output_layernorm_output_quantizer_amax":
            key = "bert_encoder_final_input_quantizer_amax"
        if key.endswith("self_qkv_kernel") or key.endswith("self_qkv_bias"):
            kind = "kernel" if key.endswith("kernel") else "bias"
            expected = (3 * e, e) if kind == "kernel" else (3 * e,)
            if array.shape != expected:   # the same count in another shape ([E, 3E]) would split into wrong parts
                raise BertError(f"{source}: {name} has shape {list(array.shape)}, expected {list(expected)}")
            parts = array.reshape(3, e, e) if kind == "kernel" else array.reshape(3, e)
            for part, qkv in zip(parts, ("query", "key", "value"), strict=True):
                _add_weight(weights, key.replace("qkv_" + kind, f"{qkv}_{kind}"), np.ascontiguousarray(part), source,
                            name)
            continue
        _add_weight(weights, key, array, source, name)
        if key.endswith("_qkv_input_amax"):
            for qkv in ("query", "key", "value"):
                _add_weight(weights, key.replace("_qkv_", f"_{qkv}_"), array, source, name)
    return weights


# ---------------------------------------------------------------------------------------------------- one entry
def _sniff_pytorch_source(path):
    """What `-pt` points at, by content: 'folder', 'safetensors' or 'torch' (zip or pickle)."""
    if os.path.isdir(path):
        return "folder"
    if not os.path.isfile(path):
        raise BertError(f"PyTorch checkpoint {'is not a regular file' if os.path.exists(path) else 'not found'}: "
                        f"{path}")
    with open(path, "rb") as f:
        head = f.read(16)
    # safetensors first: its first byte is the header length's lowest, which may be a pickle's 0x80 or a zip's "P";
    # neither a zip (compression method) nor a pickle (frame or key length) has "{" at byte 8
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    raise BertError(f"{path} is neither a PyTorch checkpoint, a safetensors file nor a model folder")


def load_pytorch_source(path):
    """`-pt PATH`: a torch checkpoint, a `.safetensors` file or a Hugging Face folder, told apart by content."""
    kind = _sniff_pytorch_source(path)
    if kind == "folder":
        return load_hf_folder(path)
    return load_safetensors(path) if kind == "safetensors" else load_pytorch_checkpoint(path)


def load_weights(config, ckpt=None, onnx=None, pytorch=None, pickle=None, priority=FIXED_PRIORITY):
    """The canonical map from the first source given in `priority` order (upstream's), validated against config."""
    sources = {"ckpt": ckpt, "onnx": onnx, "pytorch": pytorch, "pickle": pickle}
    loaders = {"ckpt": load_tf_checkpoint, "onnx": load_onnx, "pytorch": load_pytorch_source,
               "pickle": lambda p: load_megatron_pickle(p, config)}
    for kind in priority:
        if sources[kind] is not None:
            weights = loaders[kind](os.fspath(sources[kind]))
            validate(weights, config)
            not_finite = [name for name, array in weights.items() if not np.isfinite(array).all()]
            if not_finite:   # an engine built from them would answer every question with NaN
                raise BertError(f"weights {sources[kind]} hold NaN or infinite values in {_listing(not_finite)}")
            return weights
    flags = {"ckpt": "--ckpt", "onnx": "--onnx", "pytorch": "--pytorch", "pickle": "--pickle"}
    raise BertError("no weights given: use " + " or ".join(flags[k] for k in priority))


# ---------------------------------------------------------------------------------------------------- writers
def save_pytorch_checkpoint(weights, path):
    """`torch.save({"model": state_dict})` with DeepLearningExamples names, float32 -- upstream's `-pt` input."""
    torch = _import_torch()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in to_dle_state_dict(weights).items()}
    with atomic_open(path) as f:
        torch.save({"model": state}, f)


_MEGATRON_AMAX = {  # canonical layer suffix -> Megatron state-dict name under bert.encoder.layers.{n}.
    "attention_self_qkv_input_amax": "attention.query_key_value._input_quantizer._amax",
    "attention_self_qv_a_input_quantizer_amax": "attention.matmul_q_input_quantizer._amax",
    "attention_self_qv_b_input_quantizer_amax": "attention.matmul_k_input_quantizer._amax",
    "attention_self_av_b_input_quantizer_amax": "attention.matmul_v_input_quantizer._amax",
    "attention_self_av_a_input_quantizer_amax": "attention.matmul_a_input_quantizer._amax",
    "attention_output_dense_input_amax": "attention.output.dense._input_quantizer._amax",
    "attention_output_add_local_input_quantizer_amax": "attention.output.add_local_input_quantizer._amax",
    "attention_output_add_residual_input_quantizer_amax": "attention.output.add_residual_input_quantizer._amax",
    "intermediate_dense_input_amax": "intermediate.dense._input_quantizer._amax",
    "output_dense_input_amax": "output.dense._input_quantizer._amax",
    "output_add_local_input_quantizer_amax": "output.add_local_input_quantizer._amax",
    "output_add_residual_input_quantizer_amax": "output.add_residual_input_quantizer._amax",
}


def save_megatron_pickle(weights, config, path):
    """The canonical map as a Megatron-style pickle (spec §3.4 names, fused [Q|K|V]); known `_amax` scales too."""
    state = {}
    for name, array in to_hf_state_dict(weights).items():
        if ".attention.self." in name:  # stored fused below
            continue
        name = name.replace("bert.embeddings.", "bert.embedding.").replace("token_type_", "tokentype_")
        state[name.replace("bert.encoder.layer.", "bert.encoder.layers.")] = np.asarray(array, dtype=np.float32)
    for n in range(config.num_hidden_layers):
        kernel, bias = fuse_layer_qkv(weights, config, n, interleaved=True)
        state[f"bert.encoder.layers.{n}.attention.query_key_value.weight"] = kernel
        state[f"bert.encoder.layers.{n}.attention.query_key_value.bias"] = bias
    for key, value in weights.items():
        if not key.endswith("_amax"):
            continue
        match = re.fullmatch(r"l(\d+)_attention_self_query_input_amax", key)
        if match:  # Megatron quantizes the fused QKV input once
            key = f"l{match.group(1)}_attention_self_qkv_input_amax"
        match = re.fullmatch(r"l(\d+)_(.+)", key)
        if key == "bert_encoder_final_input_quantizer_amax":
            name = f"bert.encoder.layers.{config.num_hidden_layers - 1}.output.layernorm._output_quantizer._amax"
        elif match and match.group(2) in _MEGATRON_AMAX:
            name = f"bert.encoder.layers.{match.group(1)}.{_MEGATRON_AMAX[match.group(2)]}"
        elif re.fullmatch(r"l\d+_attention_self_(key|value)_input_amax", key):
            continue  # the same scale as the query's, written once as the fused input's
        else:
            raise BertError(f"cannot write {key} into a Megatron pickle (no Megatron name for it)")
        state[name] = np.asarray(value, dtype=np.float32)
    with atomic_open(path) as f:
        pickle.dump(state, f, protocol=4)
