"""demoBERT's TensorRT plugins: the lookup table of spec §3.9 and how a plugin is created and added to a network.

All plugins live in TensorRT's plugin library (libnvinfer_plugin), namespace "". Each has an IPluginV2DynamicExt
version (`--use-deprecated-plugins`, upstream's default) and an IPluginV3 port (`--use-v3-plugins`) with the same
fields and I/O. TensorRT 11 removed them; see `bert_plugins_shipped`.
"""
import ctypes
import sys
from dataclasses import dataclass

import numpy as np

from .errors import BertError

INSTALL_HINT = ("install TensorRT 10 (pip install 'tensorrt>=10,<11' cuda-python, or use NVIDIA's TensorRT "
                "container) or build a native engine with --backend native")


@dataclass(frozen=True)
class PluginInfo:
    name: str          # the TensorRT plugin (creator) name
    v2_version: str    # IPluginV2DynamicExt version
    v3_version: str    # IPluginV3 version


BERT_PLUGINS_INFO_MAP = {
    "qkv_to_context": PluginInfo("CustomQKVToContextPluginDynamic", "1", "4"),
    "qkv_to_context_varseqlen": PluginInfo("CustomQKVToContextPluginDynamic", "2", "5"),
    "qkv_to_context_interleaved": PluginInfo("CustomQKVToContextPluginDynamic", "3", "6"),
    "skip_layer_norm": PluginInfo("CustomSkipLayerNormPluginDynamic", "1", "5"),
    "skip_layer_norm_varseqlen": PluginInfo("CustomSkipLayerNormPluginDynamic", "2", "6"),
    "skip_layer_norm_huggingface": PluginInfo("CustomSkipLayerNormPluginDynamic", "3", "7"),
    "skip_layer_norm_megatron": PluginInfo("CustomSkipLayerNormPluginDynamic", "4", "8"),
    "emb_layer_norm": PluginInfo("CustomEmbLayerNormPluginDynamic", "1", "6"),
    "emb_layer_norm_huggingface": PluginInfo("CustomEmbLayerNormPluginDynamic", "2", "4"),
    "emb_layer_norm_megatron": PluginInfo("CustomEmbLayerNormPluginDynamic", "3", "5"),
}


def import_tensorrt():
    """The tensorrt module, or a one-line BertError saying how to get it."""
    try:
        import tensorrt
    except ImportError:
        raise BertError(f"TensorRT is not installed here: {INSTALL_HINT}") from None
    return tensorrt


def tensorrt_major(trt):
    return int(trt.__version__.split(".")[0])


def bert_plugins_shipped(trt):
    """TensorRT 11.0 removed the BERT plugins (and demoBERT); 10.x still ships them."""
    return tensorrt_major(trt) < 11


def load_plugin_library(trt, logger):
    """Make the plugin library's creators visible to the registry (upstream's start-up, spec §3.1).

    The tensorrt wheels link libnvinfer_plugin into their bindings, so a failed dlopen of the unversioned name is
    only fatal if the creators then turn out to be missing (create_plugin says so).
    """
    major = tensorrt_major(trt)   # never another TensorRT's library (and its libnvinfer) beside this one's
    if sys.platform == "win32":
        names = [f"nvinfer_plugin_{major}.dll"]
    else:
        names = [f"libnvinfer_plugin.so.{major}", "libnvinfer_plugin.so"]
    for name in names:
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
            break
        except OSError:
            continue
    trt.init_libnvinfer_plugins(logger, "")
    return trt.get_plugin_registry()


# ---------------------------------------------------------------------------------------------------- fields
def int_field(trt, name, value):
    return trt.PluginField(name, np.array([value], dtype=np.int32), trt.PluginFieldType.INT32)


def float_field(trt, name, value):
    return trt.PluginField(name, np.array([value], dtype=np.float32), trt.PluginFieldType.FLOAT32)


def weights_field(trt, name, array):
    """A FLOAT32 weights field (flattened); the caller keeps `array` alive until the build, as TensorRT reads it
    by reference."""
    return trt.PluginField(name, array, trt.PluginFieldType.FLOAT32)


# ---------------------------------------------------------------------------------------------------- plugins
def create_plugin(trt, registry, key, fields, use_deprecated):
    """Create plugin `key` of BERT_PLUGINS_INFO_MAP in its V2 or V3 version from a list of PluginField."""
    info = BERT_PLUGINS_INFO_MAP[key]
    version = info.v2_version if use_deprecated else info.v3_version
    creator = registry.get_creator(info.name, version, "")
    if creator is None:
        raise BertError(f"TensorRT plugin {info.name} version {version} is not registered: TensorRT "
                        f"{trt.__version__}'s plugin library (libnvinfer_plugin) was not loaded or lacks it")
    collection = trt.PluginFieldCollection(fields)
    if use_deprecated:
        plugin = creator.create_plugin(key, collection)
    else:
        plugin = creator.create_plugin(key, collection, trt.TensorRTPhase.BUILD)
    if plugin is None:
        raise BertError(f"TensorRT plugin {info.name} version {version} rejected its fields "
                        f"({', '.join(f.name for f in fields)}); see TensorRT's message above")
    return plugin


def add_plugin_to_network(trt, network, registry, key, inputs, fields, use_deprecated):
    """Add plugin `key` on `inputs`: add_plugin_v2(inputs, plugin) or add_plugin_v3(inputs, [], plugin)."""
    plugin = create_plugin(trt, registry, key, fields, use_deprecated)
    if use_deprecated:
        return network.add_plugin_v2(inputs, plugin)
    return network.add_plugin_v3(inputs, [], plugin)
