"""The BERT network from standard TensorRT layers only, for TensorRT 11, which removed the BERT plugins.

Same inputs, output name and output layout as the plugin networks (so the same runtime and scripts work), and the
plugins' numerics: no epsilon in the embedding LayerNorm, the compute type's machine epsilon in the others, the
tanh GELU. The network is strongly typed (TensorRT 11 has no other kind): FP32, or FP16 with half-precision
constants and casts; INT8 needs the plugins. Attention masks keys by the input mask (0 = padding) for fixed length,
and to the token's own sequence for variable length (every packed token attends over all T tokens, masked: fine
for correctness, quadratic in T).
"""
import math

import numpy as np

from .trt_network import NetworkWriter

MASKED = -10000.0  # added to the scores of masked keys: exp underflows to exactly 0 in FP32 and FP16


class PlainNetwork(NetworkWriter):
    def __init__(self, trt, network, weights, config, opts):
        super().__init__(trt, network, weights, config, opts)
        self.np_dtype = np.float16 if opts.fp16 else np.float32
        self.dtype = trt.DataType.HALF if opts.fp16 else trt.DataType.FLOAT
        self.ln_eps = float(np.finfo(self.np_dtype).eps)

    # -- building blocks
    def tensor_constant(self, name, shape):
        return self.constant(self.w[name], shape, self.np_dtype).get_output(0)

    def scalar(self, value, rank, dtype=None):
        return self.constant([value], (1,) * rank, dtype or self.np_dtype).get_output(0)

    def cast(self, x, dtype):
        return self.network.add_cast(x, dtype).get_output(0)

    def elementwise(self, a, b, op):
        return self.network.add_elementwise(a, b, op).get_output(0)

    def shuffle(self, x, reshape=None, first=None, second=None):
        layer = self.network.add_shuffle(x)
        if first is not None:
            layer.first_transpose = first
        if reshape is not None:
            layer.reshape_dims = reshape
        if second is not None:
            layer.second_transpose = second
        return layer.get_output(0)

    def dense(self, x, kernel, bias, outputs, inputs):
        """x @ kernel^T + bias with kernel [out, in], broadcast over x's leading dimensions."""
        rank = len(x.shape)
        w = self.tensor_constant(kernel, (1,) * (rank - 2) + (outputs, inputs))
        mm = self.network.add_matrix_multiply(x, self.trt.MatrixOperation.NONE, w, self.trt.MatrixOperation.TRANSPOSE)
        b = self.tensor_constant(bias, (1,) * (rank - 1) + (outputs,))
        return self.elementwise(mm.get_output(0), b, self.trt.ElementWiseOperation.SUM)

    def layer_norm(self, x, prefix, eps):
        rank, e = len(x.shape), self.config.hidden_size
        scale = self.tensor_constant(prefix + "gamma", (1,) * (rank - 1) + (e,))
        bias = self.tensor_constant(prefix + "beta", (1,) * (rank - 1) + (e,))
        norm = self.network.add_normalization(x, scale, bias, 1 << (rank - 1))
        norm.epsilon = eps
        return norm.get_output(0)

    def heads(self, x, batch_major):
        """(B, S, E) -> (B, N, S, H), or (T, E) -> (N, T, H)."""
        n, h = self.config.num_attention_heads, self.config.head_size
        if batch_major:
            return self.shuffle(x, reshape=(0, 0, n, h), second=(0, 2, 1, 3))
        return self.shuffle(x, reshape=(0, n, h), second=(1, 0, 2))

    def merge_heads(self, x, batch_major):
        e = self.config.hidden_size
        if batch_major:
            return self.shuffle(x, first=(0, 2, 1, 3), reshape=(0, 0, e))
        return self.shuffle(x, first=(1, 0, 2), reshape=(0, e))

    def encoder_layer(self, prefix, x, mask_bias, batch_major):
        """Post-LayerNorm BERT layer: a = LN(attention(x) + x), x' = LN(gelu(a W1) W2 + a)."""
        trt, c = self.trt, self.config
        e, op = c.hidden_size, trt.ElementWiseOperation
        q, k, v = (self.heads(self.dense(x, f"{prefix}attention_self_{t}_kernel", f"{prefix}attention_self_{t}_bias",
                                         e, e), batch_major) for t in ("query", "key", "value"))
        rank = len(q.shape)
        scores = self.network.add_matrix_multiply(q, trt.MatrixOperation.NONE, k, trt.MatrixOperation.TRANSPOSE)
        scaled = self.elementwise(scores.get_output(0), self.scalar(1.0 / math.sqrt(c.head_size), rank), op.PROD)
        softmax = self.network.add_softmax(self.elementwise(scaled, mask_bias, op.SUM))
        softmax.axes = 1 << (rank - 1)
        context = self.network.add_matrix_multiply(softmax.get_output(0), trt.MatrixOperation.NONE, v,
                                                   trt.MatrixOperation.NONE)
        attention = self.dense(self.merge_heads(context.get_output(0), batch_major),
                               f"{prefix}attention_output_dense_kernel", f"{prefix}attention_output_dense_bias", e, e)
        a = self.layer_norm(self.elementwise(attention, x, op.SUM), f"{prefix}attention_output_layernorm_",
                            self.ln_eps)
        h = self.add_gelu(self.dense(a, f"{prefix}intermediate_dense_kernel", f"{prefix}intermediate_dense_bias",
                                     c.intermediate_size, e), dtype=self.np_dtype).get_output(0)
        out = self.dense(h, f"{prefix}output_dense_kernel", f"{prefix}output_dense_bias", e, c.intermediate_size)
        return self.layer_norm(self.elementwise(out, a, op.SUM), f"{prefix}output_layernorm_", self.ln_eps)

    def embeddings(self, ids, segs, positions):
        """LN(word[ids] + token_type[segs] + positions) with no epsilon, as the emb-LayerNorm plugin."""
        c, op = self.config, self.trt.ElementWiseOperation
        word = self.network.add_gather(self.tensor_constant("bert_embeddings_word_embeddings",
                                                            (c.vocab_size, c.hidden_size)), ids, 0)
        tok = self.network.add_gather(self.tensor_constant("bert_embeddings_token_type_embeddings",
                                                           (c.type_vocab_size, c.hidden_size)), segs, 0)
        summed = self.elementwise(self.elementwise(word.get_output(0), tok.get_output(0), op.SUM), positions, op.SUM)
        return self.layer_norm(summed, "bert_embeddings_layernorm_", 0.0)

    def logits(self, x):
        e = self.config.hidden_size
        rank = len(x.shape)
        w = self.tensor_constant("cls_squad_output_weights", (1,) * (rank - 2) + (2, e))
        mm = self.network.add_matrix_multiply(x, self.trt.MatrixOperation.NONE, w, self.trt.MatrixOperation.TRANSPOSE)
        b = self.tensor_constant("cls_squad_output_bias", (1,) * (rank - 1) + (2,))
        return self.cast(self.elementwise(mm.get_output(0), b, self.trt.ElementWiseOperation.SUM),
                         self.trt.DataType.FLOAT)

    def mark_logits(self, logits):
        logits.name = "logits_out"
        self.network.mark_output(logits)

    # -- fixed length: inputs (B, S), output (B, S, 2, 1, 1)
    def define_fixed(self, batch_dim, seq_dim):
        trt, c, net = self.trt, self.config, self.network
        op, int32, int64 = trt.ElementWiseOperation, trt.DataType.INT32, np.int64
        ids, segs, mask = (net.add_input(name, int32, (batch_dim, seq_dim))
                           for name in ("input_ids", "segment_ids", "input_mask"))
        # position embeddings: the first S rows of the table, S read from the input's shape at run time
        seq_len = net.add_slice(net.add_shape(ids).get_output(0), (1,), (1,), (1,)).get_output(0)
        size = net.add_concatenation([seq_len, self.constant([c.hidden_size], (1,), int64).get_output(0)])
        rows = net.add_slice(self.tensor_constant("bert_embeddings_position_embeddings",
                                                  (c.max_position_embeddings, c.hidden_size)), (0, 0), (0, 0), (1, 1))
        rows.set_input(2, size.get_output(0))
        positions = self.shuffle(rows.get_output(0), reshape=(1, -1, c.hidden_size))
        x = self.embeddings(ids, segs, positions)
        # padding keys: (mask - 1) * 10000, broadcast (B, 1, 1, S) over heads and queries
        keep = self.cast(mask, self.dtype)
        bias = self.elementwise(self.elementwise(keep, self.scalar(1.0, 2), op.SUB), self.scalar(-MASKED, 2), op.PROD)
        mask_bias = self.shuffle(bias, reshape=(0, 1, 1, -1))
        for n in range(c.num_hidden_layers):
            x = self.encoder_layer(f"l{n}_", x, mask_bias, batch_major=True)
        self.mark_logits(self.shuffle(self.logits(x), reshape=(0, 0, 2, 1, 1)))

    # -- variable length: packed inputs (T), (T), (B+1), (S); output (2, T, 1, 1)
    def define_varseqlen(self, max_tokens):
        """`max_tokens`: the largest T any optimization profile allows (sizes the token-index constant)."""
        trt, c, net = self.trt, self.config, self.network
        op, int32 = trt.ElementWiseOperation, trt.DataType.INT32
        ids, segs, cu_seqlens, _max_seqlen = (net.add_input(name, int32, (-1,)) for name in (
            "input_ids", "segment_ids", "cu_seqlens", "max_seqlen"))  # max_seqlen: shape only, as upstream
        index = net.add_slice(self.constant(np.arange(max_tokens), (max_tokens,), np.int32).get_output(0),
                              (0,), (0,), (1,))
        index.set_input(2, net.add_shape(ids).get_output(0))
        token = index.get_output(0)                                                   # t = 0 .. T-1
        one = self.constant([1], (1,), np.int32).get_output(0)
        # sequence of token t = #{j : cu_seqlens[j] <= t} - 1 (cu_seqlens[0] = 0 counts for every token)
        started = self.elementwise(self.shuffle(cu_seqlens, reshape=(1, -1)),
                                   self.shuffle(self.elementwise(token, one, op.SUM), reshape=(-1, 1)), op.LESS)
        count = net.add_reduce(self.cast(started, trt.DataType.FLOAT), trt.ReduceOperation.SUM, 1 << 1, False)
        sequence = self.elementwise(self.cast(count.get_output(0), int32), one, op.SUB)         # (T,)
        start = net.add_gather(cu_seqlens, sequence, 0).get_output(0)
        position = self.elementwise(token, start, op.SUB)                                # restarts at each sequence
        positions = net.add_gather(self.tensor_constant("bert_embeddings_position_embeddings",
                                                        (c.max_position_embeddings, c.hidden_size)), position, 0)
        x = self.embeddings(ids, segs, positions.get_output(0))
        same = self.elementwise(self.shuffle(sequence, reshape=(1, -1, 1)), self.shuffle(sequence, reshape=(1, 1, -1)),
                                op.EQUAL)                                                # (1, T, T)
        mask_bias = self.elementwise(self.elementwise(self.cast(same, self.dtype), self.scalar(1.0, 3), op.SUB),
                                     self.scalar(-MASKED, 3), op.PROD)
        for n in range(c.num_hidden_layers):
            x = self.encoder_layer(f"l{n}_", x, mask_bias, batch_major=False)
        self.mark_logits(self.shuffle(self.logits(x), first=(1, 0), reshape=(2, -1, 1, 1)))
