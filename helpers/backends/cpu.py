"""The portable CPU engine: numpy float32, packed tokens (no compute spent on padding).

Same math as helpers/reference.py, arranged for speed: fused QKV projection over all tokens of all sequences at once
(one large GEMM per projection instead of one per sequence), attention per sequence on its real tokens only,
in-place element-wise work, and scipy's C erf for the exact GELU.
"""
import math
import time

import numpy as np
from scipy.special import erf

from ..engine_format import EngineFile
from ..errors import BertError

TOKENS_PER_CHUNK = 16384  # bounds activation memory (about 100 MB for BERT-Large) when many sequences come at once


class CpuLayer:
    """One encoder layer's float32 weights, laid out for `x @ W` (kernels stored [in, out])."""

    def __init__(self, w, n):
        p = f"l{n}_"

        def kernel(name):
            return np.ascontiguousarray(np.asarray(w[f"{p}{name}_kernel"], dtype=np.float32).T)

        def vec(name):
            return np.asarray(w[f"{p}{name}"], dtype=np.float32)

        self.qkv_w = np.concatenate([kernel(f"attention_self_{t}") for t in ("query", "key", "value")], axis=1)
        self.qkv_b = np.concatenate([vec(f"attention_self_{t}_bias") for t in ("query", "key", "value")])
        self.ao_w, self.ao_b = kernel("attention_output_dense"), vec("attention_output_dense_bias")
        self.ln1 = (vec("attention_output_layernorm_gamma"), vec("attention_output_layernorm_beta"))
        self.mid_w, self.mid_b = kernel("intermediate_dense"), vec("intermediate_dense_bias")
        self.out_w, self.out_b = kernel("output_dense"), vec("output_dense_bias")
        self.ln2 = (vec("output_layernorm_gamma"), vec("output_layernorm_beta"))


def layer_norm_(x, gamma, beta, eps):
    """LayerNorm over the last axis, in place."""
    mean = x.mean(-1, keepdims=True)
    x -= mean
    var = np.einsum("ij,ij->i", x, x)[:, None] / x.shape[-1]
    x *= 1.0 / np.sqrt(var + eps)
    x *= gamma
    x += beta
    return x


def gelu_(x, kind):
    if kind == "tanh":
        inner = x * x
        inner *= 0.044715
        inner += 1.0
        inner *= x
        inner *= math.sqrt(2.0 / math.pi)
        np.tanh(inner, out=inner)
    else:
        inner = x * (1.0 / math.sqrt(2.0))
        erf(inner, out=inner)
    inner += 1.0
    inner *= 0.5
    x *= inner
    return x


class CpuRunner:
    """Runs a native engine on the CPU. Inputs are validated; logits come back as float32."""

    device = "cpu"

    def __init__(self, engine: EngineFile):
        self.engine_info = engine
        self.config = c = engine.config
        numerics = engine.numerics or {}
        self.gelu = numerics.get("gelu", c.gelu)
        self.emb_eps = float(numerics.get("emb_eps", c.layer_norm_eps))
        self.ln_eps = float(numerics.get("layer_norm_eps", c.layer_norm_eps))
        w = engine.weights
        f32 = lambda name: np.asarray(w[name], dtype=np.float32)  # noqa: E731
        self.word = f32("bert_embeddings_word_embeddings")
        self.pos = f32("bert_embeddings_position_embeddings")
        self.tok = f32("bert_embeddings_token_type_embeddings")
        self.emb_ln = (f32("bert_embeddings_layernorm_gamma"), f32("bert_embeddings_layernorm_beta"))
        self.layers = [CpuLayer(w, n) for n in range(c.num_hidden_layers)]
        self.squad_w = np.ascontiguousarray(f32("cls_squad_output_weights").T)
        self.squad_b = f32("cls_squad_output_bias")

    # ---- public runner contract ---------------------------------------------------------------------------------
    def infer_fixed(self, input_ids, segment_ids, input_mask):
        """Padded (B, S) int inputs -> (B, S, 2) logits. Each row's length is its mask's first 0, as upstream;
        logits at padding positions are 0 (no compute is spent there)."""
        ids, segs, cu, rows, (B, S) = pack_fixed_inputs(input_ids, segment_ids, input_mask)
        packed = self.infer_packed(ids, segs, cu, S)
        out = np.zeros((B * S, 2), dtype=np.float32)
        out[rows] = packed.T
        return out.reshape(B, S, 2)

    def infer_packed(self, input_ids, segment_ids, cu_seqlens, max_seqlen=None):
        """Packed int (T,) inputs with cu_seqlens (B+1,) -> (2, T) logits (row 0 start, row 1 end), as upstream's
        variable-length engines lay them out."""
        input_ids, segment_ids = np.asarray(input_ids).reshape(-1), np.asarray(segment_ids).reshape(-1)
        cu = np.asarray(cu_seqlens, dtype=np.int64).reshape(-1)
        check_packed_inputs(self.config, input_ids, segment_ids, cu)
        out = np.empty((2, len(input_ids)), dtype=np.float32)
        # Chunk whole sequences so activations stay bounded however many sequences come at once.
        first = 0
        while first < len(cu) - 1:
            last = first + 1
            while last < len(cu) - 1 and cu[last + 1] - cu[first] <= TOKENS_PER_CHUNK:
                last += 1
            lo, hi = cu[first], cu[last]
            out[:, lo:hi] = self._forward(input_ids[lo:hi], segment_ids[lo:hi], cu[first:last + 1] - lo).T
            first = last
        return out

    def benchmark(self, batch_size, seq_len, warmup, iterations, duration, seed):
        """Per-iteration wall times (ms) of full-length synthetic batches, as upstream's perf.py feeds them."""
        rng = np.random.RandomState(seed)
        ids = rng.randint(0, self.config.vocab_size, size=(batch_size, seq_len)).astype(np.int32)
        segs = rng.randint(0, self.config.type_vocab_size, size=(batch_size, seq_len)).astype(np.int32)
        mask = np.ones_like(ids)
        for _ in range(warmup):
            self.infer_fixed(ids, segs, mask)
        times, started = [], time.perf_counter()
        while len(times) < iterations or time.perf_counter() - started < duration:
            t0 = time.perf_counter()
            self.infer_fixed(ids, segs, mask)
            times.append((time.perf_counter() - t0) * 1e3)
        return times

    # ---- internals ----------------------------------------------------------------------------------------------
    def _forward(self, ids, segs, cu):
        lengths = np.diff(cu)
        positions = np.concatenate([np.arange(n) for n in lengths])
        x = self.word[ids] + self.tok[segs]
        x += self.pos[positions]
        layer_norm_(x, *self.emb_ln, self.emb_eps)
        for layer in self.layers:
            x = self._layer(x, layer, cu)
        return x @ self.squad_w + self.squad_b

    def _layer(self, x, layer, cu):
        c = self.config
        N, H, E = c.num_attention_heads, c.head_size, c.hidden_size
        qkv = x @ layer.qkv_w
        qkv += layer.qkv_b
        qkv[:, :E] *= 1.0 / math.sqrt(H)  # scale queries once instead of every score matrix
        context = np.empty_like(x)
        for lo, hi in zip(cu[:-1], cu[1:]):
            t = qkv[lo:hi].reshape(hi - lo, 3, N, H).transpose(1, 2, 0, 3)  # (3, N, L, H)
            scores = t[0] @ t[1].transpose(0, 2, 1)                          # (N, L, L)
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            context[lo:hi] = (scores @ t[2]).transpose(1, 0, 2).reshape(hi - lo, E)
        attn = context @ layer.ao_w
        attn += layer.ao_b
        attn += x
        layer_norm_(attn, *layer.ln1, self.ln_eps)
        h = attn @ layer.mid_w
        h += layer.mid_b
        gelu_(h, self.gelu)
        out = h @ layer.out_w
        out += layer.out_b
        out += attn
        return layer_norm_(out, *layer.ln2, self.ln_eps)


def sequence_lengths(input_mask):
    """Per row, the index of the first 0 in the mask (its length if none): upstream's mask semantics."""
    mask = np.asarray(input_mask) != 0
    return np.where(mask.all(1), mask.shape[1], np.argmin(mask, axis=1)).astype(np.int64)


def check_packed_inputs(c, ids, segs, cu):
    """Raise BertError unless packed inputs are consistent and within the model's vocabularies and positions."""
    if ids.shape != segs.shape:
        raise BertError(f"input_ids and segment_ids differ in length ({len(ids)} vs {len(segs)})")
    if len(cu) < 2 or cu[0] != 0 or cu[-1] != len(ids) or np.any(np.diff(cu) <= 0):
        raise BertError("cu_seqlens must start at 0, rise strictly and end at the token count")
    if np.diff(cu).max() > c.max_position_embeddings:
        raise BertError(f"a sequence of {np.diff(cu).max()} tokens exceeds the model's "
                        f"{c.max_position_embeddings} positions")
    if len(ids) and (ids.min() < 0 or ids.max() >= c.vocab_size):
        raise BertError(f"token id out of range [0, {c.vocab_size})")
    if len(segs) and (segs.min() < 0 or segs.max() >= c.type_vocab_size):
        raise BertError(f"segment id out of range [0, {c.type_vocab_size})")


def pack_fixed_inputs(input_ids, segment_ids, input_mask):
    """Padded (B, S) inputs -> packed ids, segments, cu_seqlens, the padded rows they came from, and (B, S)."""
    input_ids, segment_ids, input_mask = (np.asarray(a) for a in (input_ids, segment_ids, input_mask))
    if input_ids.ndim != 2 or input_ids.shape != segment_ids.shape or input_ids.shape != input_mask.shape:
        raise BertError(f"inputs must be three (batch, seq) arrays of one shape, got "
                        f"{input_ids.shape}, {segment_ids.shape}, {input_mask.shape}")
    B, S = input_ids.shape
    lengths = sequence_lengths(input_mask)
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    rows = np.concatenate([np.arange(n) + b * S for b, n in enumerate(lengths)]).astype(np.int64)
    return input_ids.reshape(-1)[rows], segment_ids.reshape(-1)[rows], cu, rows, (B, S)
