"""demoBERT's TensorRT network definitions with the BERT plugins (spec §3.5 fixed length, §3.8 variable length).

Function names follow upstream's (emb_layernorm, attention_layer_opt, transformer_layer_opt, skipln, add_gelu,
squad_output); docs/TENSORRT.md maps each spec paragraph to the lines here. Layout conventions: fixed-length
tensors are sequence-major (S, B, E, 1, 1); variable-length ones are packed (T, E, 1, 1), or (1, E, T, 1) in the
interleaved INT8 layout. Every dense layer is a 1x1 convolution over the channel axis.
"""
from dataclasses import dataclass

import numpy as np

from .errors import BertError
from .trt_plugins import add_plugin_to_network, float_field, int_field, weights_field
from .weights import fuse_qkv

GELU_SQRT_2_OVER_PI = 0.79788456080286535587989211986876  # sqrt(2 / pi)


@dataclass(frozen=True)
class NetworkOptions:
    """The builder flags that shape the network (upstream's BertConfig use_* fields)."""
    fp16: bool = False
    int8: bool = False
    qat: bool = False                    # INT8 scales come from the weights' _amax entries
    calib_mode: bool = False             # the throw-away build that produces the PTQ calibration cache
    int8_skipln: bool = False            # -iln
    int8_multihead: bool = False         # -imh
    use_deprecated_plugins: bool = True  # V2 plugins (default) or V3 (--use-v3-plugins)
    interleaved: bool = False            # -il (variable length, INT8 CHW32 plugins)
    megatron: bool = False               # --megatron (variable length, interleaved)


class NetworkWriter:
    """Adds layers to one INetworkDefinition and keeps every weight array alive until the build (TensorRT holds
    Weights and plugin fields by reference, it does not copy them when a layer is added)."""

    def __init__(self, trt, network, weights, config, opts):
        self.trt, self.network = trt, network
        self.config, self.opts = config, opts
        self.w = dict(weights)
        self.kept = []

    def array(self, name, dtype=np.float32):
        if name not in self.w:
            raise BertError(f"the weights lack {name}")
        array = np.ascontiguousarray(np.asarray(self.w[name], dtype=dtype).reshape(-1))
        self.kept.append(array)
        return array

    def weights(self, name, dtype=np.float32):
        return self.trt.Weights(self.array(name, dtype))

    def constant(self, values, shape, dtype=np.float32):
        array = np.ascontiguousarray(np.asarray(values, dtype=dtype).reshape(-1))
        self.kept.append(array)
        return self.network.add_constant(tuple(shape), self.trt.Weights(array))

    # -- GELU (spec §3.5 step 7): y = x * 0.5 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), no plugin
    def add_gelu(self, x, float_precision=False, dtype=np.float32):
        """13 layers: 5 constants of shape (1,)*rank, POW, PROD, SUM, PROD, TANH, SUM, PROD, PROD. With
        `float_precision` (builder_varseqlen) every one is set to FLOAT precision "to enable elementwise fusing"."""
        net, op = self.network, self.trt.ElementWiseOperation
        shape = (1,) * len(x.shape)
        layers = []

        def constant(value):
            layers.append(self.constant([value], shape, dtype))
            return layers[-1].get_output(0)

        def elementwise(a, b, kind):
            layers.append(net.add_elementwise(a, b, kind))
            return layers[-1].get_output(0)

        power, multiply, sqrt_2_over_pi = constant(3.0), constant(0.044715), constant(GELU_SQRT_2_OVER_PI)
        one, half = constant(1.0), constant(0.5)
        cube = elementwise(x, power, op.POW)
        inner = elementwise(x, elementwise(cube, multiply, op.PROD), op.SUM)
        layers.append(net.add_activation(elementwise(inner, sqrt_2_over_pi, op.PROD), self.trt.ActivationType.TANH))
        cdf = elementwise(elementwise(layers[-1].get_output(0), one, op.SUM), half, op.PROD)
        gelu = net.add_elementwise(cdf, x, op.PROD)
        layers.append(gelu)
        if float_precision:
            for layer in layers:
                layer.precision = self.trt.DataType.FLOAT
        return gelu


def set_output_name(layer, prefix, name):
    """Name a layer and its output `prefix + name` (upstream's set_output_name)."""
    layer.name = prefix + name
    layer.get_output(0).name = prefix + name


class PluginNetwork(NetworkWriter):
    """What both plugin networks share: fused QKV weights, plugins, 1x1-convolution dense layers, INT8 scales."""

    def __init__(self, trt, network, registry, weights, config, opts):
        super().__init__(trt, network, weights, config, opts)
        self.registry = registry
        # the QKV convolution's weights: head-major [N][3][H] rows, or [Q | K | V] for the interleaved plugins
        self.w.update(fuse_qkv(weights, config, interleaved=opts.interleaved))

    def weights_field(self, field_name, name):
        return weights_field(self.trt, field_name, self.array(name))

    def plugin(self, key, inputs, fields):
        return add_plugin_to_network(self.trt, self.network, self.registry, key, inputs, fields,
                                     self.opts.use_deprecated_plugins)

    def conv(self, input_tensor, outputs, kernel, bias):
        """A dense layer: 1x1 convolution over the channel axis with weights `kernel` [out, in] and `bias`."""
        return self.network.add_convolution_nd(input_tensor, outputs, (1, 1), self.weights(kernel),
                                               self.weights(bias))

    def dense(self, input_tensor, outputs, prefix):
        return self.conv(input_tensor, outputs, prefix + "kernel", prefix + "bias")

    def amax(self, name):
        if name not in self.w:
            raise BertError(f"INT8 with quantization scales: the weights lack {name} (a QAT _amax scale)")
        return float(np.max(np.abs(np.asarray(self.w[name], dtype=np.float64))))

    def qkv_projection(self, prefix, x):
        """The fused QKV 1x1 convolution `l{n}_attention_qkv_mult` with its QAT ranges (spec §3.5 steps 1-2)."""
        if self.opts.qat:
            self.set_range(x, f"{prefix}self_query_input_amax")
        qkv = self.dense(x, 3 * self.config.hidden_size, f"{prefix}self_qkv_")
        set_output_name(qkv, prefix, "qkv_mult")
        if self.opts.qat:
            amax = max(self.amax(f"{prefix}self_{q}_quantizer_amax")
                       for q in ("qv_a_input", "qv_b_input", "av_b_input"))
            qkv.get_output(0).dynamic_range = (-amax, amax)
        return qkv

    def set_range(self, tensor, amax_name):
        amax = self.amax(amax_name)
        tensor.dynamic_range = (-amax, amax)


# ================================================================================================ fixed length
class FixedNetwork(PluginNetwork):
    """builder.py's network (spec §3.5)."""

    def mha_dtype(self):
        o, t = self.opts, self.trt.DataType
        if o.int8 and o.int8_multihead and not o.calib_mode:
            return t.INT8
        return t.HALF if o.fp16 else t.FLOAT

    def skipln_dtype(self):
        o, t = self.opts, self.trt.DataType
        if o.int8 and o.int8_skipln and not o.calib_mode:
            return t.INT8
        return t.HALF if o.fp16 else t.FLOAT

    def define(self, batch_dim, seq_dim):
        """Inputs (B, S) int32 batch-major; -1 marks a dimension an optimization profile covers."""
        int32 = self.trt.DataType.INT32
        inputs = [self.network.add_input(name, int32, (batch_dim, seq_dim))
                  for name in ("input_ids", "segment_ids", "input_mask")]
        x, mask_idx = self.emb_layernorm(inputs)
        for n in range(self.config.num_hidden_layers):
            x = self.transformer_layer_opt(f"l{n}_", x, mask_idx)
        if self.opts.qat:
            self.set_range(x, "bert_encoder_final_input_quantizer_amax")
        self.squad_output("cls_", x)

    def emb_layernorm(self, inputs):
        trt = self.trt
        transposed = []
        for tensor in inputs:  # (B, S) -> (S, B): the plugins are sequence-major
            shuffle = self.network.add_shuffle(tensor)
            shuffle.second_transpose = (1, 0)
            transposed.append(shuffle.get_output(0))
        fields = [self.weights_field(name, name) for name in (
            "bert_embeddings_layernorm_beta", "bert_embeddings_layernorm_gamma", "bert_embeddings_word_embeddings",
            "bert_embeddings_token_type_embeddings", "bert_embeddings_position_embeddings")]
        fields += [int_field(trt, "output_fp16", 1 if self.opts.fp16 else 0),
                   int_field(trt, "mha_type_id", int(self.mha_dtype()))]
        emb = self.plugin("emb_layer_norm", transposed, fields)
        emb.name = "embeddings_layer"
        emb.get_output(0).name = "embeddings_output"
        if self.opts.qat:
            emb.get_output(1).dynamic_range = (-1.0, 1.0)
        return emb.get_output(0), emb.get_output(1)

    def attention_layer_opt(self, prefix, x, mask_idx):
        """prefix = 'l{n}_attention_'."""
        trt, opts = self.trt, self.opts
        e, heads = self.config.hidden_size, self.config.num_attention_heads
        if opts.qat:
            amaxes = {self.amax(f"{prefix}self_{t}_input_amax") for t in ("query", "key", "value")}
            if len(amaxes) != 1:
                raise BertError(f"{prefix}self query/key/value input scales differ ({sorted(amaxes)}): the fused "
                                f"QKV projection needs one input scale")
        qkv = self.qkv_projection(prefix, x)
        fields = [int_field(trt, "type_id", int(self.mha_dtype())), int_field(trt, "hidden_size", e),
                  int_field(trt, "num_heads", heads), int_field(trt, "has_mask", 1)]
        if opts.qat:
            fields.append(float_field(trt, "dq_probs", self.amax(f"{prefix}self_av_a_input_quantizer_amax") / 127.0))
        context = self.plugin("qkv_to_context", [qkv.get_output(0), mask_idx], fields)
        set_output_name(context, prefix, "context_layer")
        if opts.qat:
            self.set_range(context.get_output(0), f"{prefix}output_dense_input_amax")
        return context.get_output(0)

    def skipln(self, prefix, x, skip):
        """prefix = 'l{n}_attention_output_layernorm_' or 'l{n}_output_layernorm_'; the dense bias is already
        applied by the convolution, so the plugin gets none."""
        trt = self.trt
        fields = [int_field(trt, "ld", self.config.hidden_size), self.weights_field("beta", prefix + "beta"),
                  self.weights_field("gamma", prefix + "gamma"), int_field(trt, "type_id", int(self.skipln_dtype()))]
        return self.plugin("skip_layer_norm", [x, skip], fields)

    def dense_output_type(self, layer):
        """With INT8 but FP32/FP16 skip-LayerNorm, the dense layers before it keep their output out of INT8."""
        if self.opts.int8 and not self.opts.int8_skipln:
            layer.set_output_type(0, self.trt.DataType.HALF if self.opts.fp16 else self.trt.DataType.FLOAT)

    def transformer_layer_opt(self, prefix, x, mask_idx):
        """prefix = 'l{n}_'; spec §3.5 steps 1-9."""
        c, opts = self.config, self.opts
        context = self.attention_layer_opt(prefix + "attention_", x, mask_idx)
        attention_dense = self.dense(context, c.hidden_size, prefix + "attention_output_dense_")
        self.dense_output_type(attention_dense)
        if opts.qat:
            self.set_range(attention_dense.get_output(0), prefix + "attention_output_add_local_input_quantizer_amax")
        attention_ln = self.skipln(prefix + "attention_output_layernorm_", attention_dense.get_output(0), x)
        if opts.qat:
            self.set_range(attention_ln.get_output(0), prefix + "intermediate_dense_input_amax")
        intermediate = self.dense(attention_ln.get_output(0), c.intermediate_size, prefix + "intermediate_dense_")
        gelu = self.add_gelu(intermediate.get_output(0))
        set_output_name(gelu, prefix, "gelu")
        if opts.qat:
            self.set_range(gelu.get_output(0), prefix + "output_dense_input_amax")
        elif opts.int8:
            gelu.get_output(0).dynamic_range = (-10.0, 10.0)  # PTQ: upstream's fixed "gelu10" range
        out_dense = self.dense(gelu.get_output(0), c.hidden_size, prefix + "output_dense_")
        set_output_name(out_dense, prefix + "output_", "dense")
        self.dense_output_type(out_dense)
        if opts.qat:
            self.set_range(out_dense.get_output(0), prefix + "output_add_local_input_quantizer_amax")
        out = self.skipln(prefix + "output_layernorm_", out_dense.get_output(0), attention_ln.get_output(0))
        set_output_name(out, prefix + "output_", "reshape")
        return out.get_output(0)

    def squad_output(self, prefix, x):
        """(S, B, 2, 1, 1) from a 1x1 convolution, transposed to (B, S, 2, 1, 1) and marked as `logits_out`."""
        dense = self.conv(x, 2, prefix + "squad_output_weights", prefix + "squad_output_bias")
        shuffle = self.network.add_shuffle(dense.get_output(0))
        shuffle.second_transpose = (1, 0, 2, 3, 4)
        set_output_name(shuffle, prefix, "squad_logits")
        logits = shuffle.get_output(0)
        logits.name = "logits_out"
        self.network.mark_output(logits)


# ================================================================================================ variable length
class VarSeqlenNetwork(PluginNetwork):
    """builder_varseqlen.py's network (spec §3.8): packed tokens, cu_seqlens, a shape-only max_seqlen."""

    def plugin_dtype(self):
        o, t = self.opts, self.trt.DataType
        return t.INT8 if o.int8 else t.HALF if o.fp16 else t.FLOAT

    def define(self):
        int32 = self.trt.DataType.INT32
        inputs = [self.network.add_input(name, int32, (-1,))
                  for name in ("input_ids", "segment_ids", "cu_seqlens", "max_seqlen")]
        cu_seqlens, max_seqlen = inputs[2], inputs[3]
        x, second = self.emb_layernorm(inputs)
        mask_idx, residual = None, None
        if self.opts.interleaved:  # (T, E, 1, 1) -> (1, E, T, 1): the INT8 CHW32 plugins' layout
            x = self.to_interleaved(x)
            if self.opts.megatron:
                residual = self.to_interleaved(second)
        else:
            mask_idx = second
        layers = self.config.num_hidden_layers
        for n in range(layers):
            x, residual = self.transformer_layer_opt(f"l{n}_", x, residual, mask_idx, cu_seqlens, max_seqlen,
                                                     last=(n == layers - 1))
        if self.opts.qat:
            self.set_range(x, "bert_encoder_final_input_quantizer_amax")
        self.squad_output("cls_", x)

    def to_interleaved(self, tensor):
        shuffle = self.network.add_shuffle(tensor)
        shuffle.second_transpose = (2, 1, 0, 3)
        return shuffle.get_output(0)

    def emb_layernorm(self, inputs):
        o = self.opts
        fields = [self.weights_field(name, name) for name in (
            "bert_embeddings_layernorm_beta", "bert_embeddings_layernorm_gamma", "bert_embeddings_word_embeddings",
            "bert_embeddings_token_type_embeddings", "bert_embeddings_position_embeddings")]
        fields.append(int_field(self.trt, "output_fp16", 1 if (o.fp16 or o.int8) else 0))
        key = "emb_layer_norm_megatron" if o.megatron else "emb_layer_norm_huggingface"
        emb = self.plugin(key, inputs, fields)
        emb.name = "embeddings_layer"
        emb.get_output(0).name = "embeddings_output"
        if o.qat:
            self.set_range(emb.get_output(0), "l0_attention_self_query_input_amax")
            if o.megatron:
                self.set_range(emb.get_output(1), "l0_attention_output_add_residual_input_quantizer_amax")
        return emb.get_output(0), emb.get_output(1)

    def attention_layer_opt(self, prefix, x, mask_idx, cu_seqlens, max_seqlen):
        """prefix = 'l{n}_attention_'."""
        trt, o = self.trt, self.opts
        e, heads = self.config.hidden_size, self.config.num_attention_heads
        qkv = self.qkv_projection(prefix, x)
        fields = [int_field(trt, "hidden_size", e), int_field(trt, "num_heads", heads)]
        if o.qat:
            fields.append(float_field(trt, "dq_probs", self.amax(f"{prefix}self_av_a_input_quantizer_amax") / 127.0))
        if o.interleaved:
            context = self.plugin("qkv_to_context_interleaved", [qkv.get_output(0), cu_seqlens, max_seqlen], fields)
        else:
            # var_seqlen is an INT32 field (upstream declares it FLOAT32 with int32 data; the plugin reads int32)
            fields += [int_field(trt, "has_mask", 1), int_field(trt, "type_id", int(self.plugin_dtype())),
                       int_field(trt, "var_seqlen", 1)]
            context = self.plugin("qkv_to_context_varseqlen",
                                  [qkv.get_output(0), mask_idx, cu_seqlens, max_seqlen], fields)
        context.name = prefix.rstrip("_") + "_qkv_to_ctx"
        if o.qat:
            self.set_range(context.get_output(0), f"{prefix}output_dense_input_amax")
        return context.get_output(0)

    def skipln(self, prefix, x, skip, megatron):
        """Interleaved: the HuggingFace (1 output) or Megatron (2 outputs: LN and the raw sum) INT8 plugin with
        beta and gamma only; otherwise the variable-length plugin with ld, beta, gamma, type_id."""
        trt = self.trt
        beta, gamma = self.weights_field("beta", prefix + "beta"), self.weights_field("gamma", prefix + "gamma")
        if self.opts.interleaved:
            key = "skip_layer_norm_megatron" if megatron else "skip_layer_norm_huggingface"
            return self.plugin(key, [x, skip], [beta, gamma])
        fields = [int_field(trt, "ld", self.config.hidden_size), beta, gamma,
                  int_field(trt, "type_id", int(self.plugin_dtype()))]
        return self.plugin("skip_layer_norm_varseqlen", [x, skip], fields)

    def transformer_layer_opt(self, prefix, x, residual, mask_idx, cu_seqlens, max_seqlen, last):
        """One encoder layer; returns (output, residual). Megatron (spec §3.8): each skip-LayerNorm adds onto the
        residual stream of raw sums and passes the new sum on as its second output; the LayerNorm outputs feed the
        sublayers. The last layer's second skip-LayerNorm is the single-output HuggingFace plugin."""
        c, o = self.config, self.opts
        context = self.attention_layer_opt(prefix + "attention_", x, mask_idx, cu_seqlens, max_seqlen)
        attention_dense = self.dense(context, c.hidden_size, prefix + "attention_output_dense_")
        if o.qat:
            self.set_range(attention_dense.get_output(0), prefix + "attention_output_add_local_input_quantizer_amax")
        if o.megatron:
            self.set_range(residual, prefix + "attention_output_add_residual_input_quantizer_amax")
            attention_ln = self.skipln(prefix + "attention_output_layernorm_", attention_dense.get_output(0),
                                       residual, megatron=True)
            residual = attention_ln.get_output(1)
            self.set_range(residual, prefix + "output_add_residual_input_quantizer_amax")
        else:
            attention_ln = self.skipln(prefix + "attention_output_layernorm_", attention_dense.get_output(0), x,
                                       megatron=False)
        if o.qat:
            self.set_range(attention_ln.get_output(0), prefix + "intermediate_dense_input_amax")
        intermediate = self.dense(attention_ln.get_output(0), c.intermediate_size, prefix + "intermediate_dense_")
        gelu = self.add_gelu(intermediate.get_output(0), float_precision=True)
        set_output_name(gelu, prefix, "gelu")
        if o.qat:
            self.set_range(gelu.get_output(0), prefix + "output_dense_input_amax")
        out_dense = self.dense(gelu.get_output(0), c.hidden_size, prefix + "output_dense_")
        set_output_name(out_dense, prefix + "output_", "dense")
        if o.qat:
            self.set_range(out_dense.get_output(0), prefix + "output_add_local_input_quantizer_amax")
        skip = residual if o.megatron else attention_ln.get_output(0)
        out = self.skipln(prefix + "output_layernorm_", out_dense.get_output(0), skip, megatron=o.megatron and not last)
        set_output_name(out, prefix + "output_", "reshape")
        if o.megatron and not last:
            residual = out.get_output(1)
        return out.get_output(0), residual

    def squad_output(self, prefix, x):
        """`logits_out` is (2, T, 1, 1): row 0 the start logits of every token, row 1 the end logits."""
        dense = self.conv(x, 2, prefix + "squad_output_weights", prefix + "squad_output_bias")
        shuffle = self.network.add_shuffle(dense.get_output(0))
        # interleaved (1, 2, T, 1) or packed (T, 2, 1, 1) -> (2, T, 1, 1)
        shuffle.second_transpose = (1, 2, 0, 3) if self.opts.interleaved else (1, 0, 2, 3)
        set_output_name(shuffle, prefix, "squad_logits")
        logits = shuffle.get_output(0)
        logits.name = "logits_out"
        self.network.mark_output(logits)
