"""The portable CPU engine: numpy float32, packed tokens (no compute spent on padding).

Same math as helpers/reference.py, arranged for speed on a few cores:
- all tokens of all sequences go through each projection together (large GEMMs), attention runs per sequence on its
  real tokens only;
- the work of a layer is split across a thread pool (numpy releases the GIL in GEMMs and ufuncs), each worker with
  single-threaded BLAS, so element-wise work (softmax, GELU, LayerNorm) runs on every core too, not only the GEMMs;
- element-wise work runs on row blocks that stay in cache, in place; the exact GELU uses a float32 erf polynomial
  (Abramowitz-Stegun 7.1.26, |error| < 1e-6) because scipy's erf is five times slower.
"""
import functools
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from ..engine_format import EngineFile
from .inputs import check_packed_inputs, pack_fixed_inputs, perf_inputs, perf_loop

ROW_BLOCK = 64            # rows per element-wise block: 64 x 1536 floats stay in a core's L2
TOKENS_PER_CHUNK = 16384  # bounds activation memory when many sequences come at once


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
    x -= x.mean(-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x)[:, None] / x.shape[-1]
    x *= 1.0 / np.sqrt(var + eps)
    x *= gamma
    x += beta
    return x


def erf_(x):
    """erf in place, float32, Abramowitz-Stegun 7.1.26."""
    sign = np.sign(x)
    np.abs(x, out=x)
    t = x * np.float32(0.3275911)
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(c)
        poly *= t
    np.square(x, out=x)
    np.negative(x, out=x)
    np.exp(x, out=x)
    x *= poly
    np.subtract(1.0, x, out=x)
    x *= sign
    return x


def gelu_(x, kind):
    """GELU in place: 'erf' (exact) or 'tanh' (approximation)."""
    if kind == "tanh":
        inner = x * x
        inner *= np.float32(0.044715)
        inner += 1.0
        inner *= x
        inner *= np.float32(math.sqrt(2.0 / math.pi))
        np.tanh(inner, out=inner)
    else:
        inner = x * np.float32(1.0 / math.sqrt(2.0))
        erf_(inner)
    inner += 1.0
    inner *= 0.5
    x *= inner
    return x


def usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=None)
def _shared_pool(threads):
    """One thread pool per size for the whole process (runners share it): a pool collected with its runner would
    run its weakref callback wherever that happens, and a Ctrl-C landing in it prints "Exception ignored"."""
    return ThreadPoolExecutor(threads)


class CpuRunner:
    """Runs a native engine on the CPU. Inputs are validated; logits come back as float32."""

    device = "cpu"

    def __init__(self, engine: EngineFile, threads=None):
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
        self.threads = threads or usable_cores()
        self.pool = _shared_pool(self.threads) if self.threads > 1 else None

    # ---- public runner contract ---------------------------------------------------------------------------------
    def infer_fixed(self, input_ids, segment_ids, input_mask):
        """Padded (B, S) int inputs -> (B, S, 2) logits. Each row's length is its mask's first 0, as upstream;
        logits at padding positions are 0 (no compute is spent there)."""
        ids, segs, cu, rows, (B, S) = pack_fixed_inputs(input_ids, segment_ids, input_mask)
        out = np.zeros((B * S, 2), dtype=np.float32)
        out[rows] = self.infer_packed(ids, segs, cu, S).T
        return out.reshape(B, S, 2)

    def infer_packed(self, input_ids, segment_ids, cu_seqlens, max_seqlen=None):
        """Packed int (T,) inputs with cu_seqlens (B+1,) -> (2, T) logits (row 0 start, row 1 end), as upstream's
        variable-length engines lay them out."""
        input_ids, segment_ids = np.asarray(input_ids).reshape(-1), np.asarray(segment_ids).reshape(-1)
        cu = np.asarray(cu_seqlens, dtype=np.int64).reshape(-1)
        check_packed_inputs(self.config, input_ids, segment_ids, cu)
        out = np.empty((2, len(input_ids)), dtype=np.float32)
        with threadpool_limits(limits=1 if self.pool else None, user_api="blas"):
            first = 0
            while first < len(cu) - 1:  # whole sequences per chunk, so activations stay bounded
                last = first + 1
                while last < len(cu) - 1 and cu[last + 1] - cu[first] <= TOKENS_PER_CHUNK:
                    last += 1
                lo, hi = cu[first], cu[last]
                out[:, lo:hi] = self._forward(input_ids[lo:hi], segment_ids[lo:hi], cu[first:last + 1] - lo).T
                first = last
        return out

    def benchmark(self, batch_size, seq_len, warmup, iterations, duration, seed, progress=None):
        """Per-iteration wall times (ms) of full-length synthetic batches, as upstream's perf.py feeds them."""
        ids, segs = (a.reshape(batch_size, seq_len) for a in perf_inputs(
            batch_size, seq_len, seed, self.config.vocab_size, self.config.type_vocab_size))
        mask = np.ones_like(ids)

        def run():
            self.infer_fixed(ids, segs, mask)

        def time_run():
            t0 = time.perf_counter()
            run()
            return (time.perf_counter() - t0) * 1e3
        return perf_loop(run, time_run, warmup, iterations, duration, progress)

    # ---- internals ----------------------------------------------------------------------------------------------
    def _parallel(self, fn, items):
        if self.pool is None or len(items) == 1:
            for item in items:
                fn(item)
        else:
            list(self.pool.map(fn, items))

    def _row_blocks(self, T):
        """Contiguous row ranges, one per worker, for GEMM work split by rows."""
        edges = np.linspace(0, T, min(self.threads, T) + 1).astype(int)
        return list(zip(edges[:-1], edges[1:]))

    def _forward(self, ids, segs, cu):
        positions = np.concatenate([np.arange(n) for n in np.diff(cu)])
        x = self.word[ids] + self.tok[segs]
        x += self.pos[positions]
        layer_norm_(x, *self.emb_ln, self.emb_eps)
        for layer in self.layers:
            x = self._layer(x, layer, cu)
        return x @ self.squad_w + self.squad_b

    def _layer(self, x, layer, cu):
        c = self.config
        T, E = x.shape
        N, H = c.num_attention_heads, c.head_size
        qkv = np.empty((T, 3 * E), dtype=np.float32)

        def project(rows):
            lo, hi = rows
            np.matmul(x[lo:hi], layer.qkv_w, out=qkv[lo:hi])
            qkv[lo:hi] += layer.qkv_b
            qkv[lo:hi, :E] *= np.float32(1.0 / math.sqrt(H))  # scale queries once, not every score matrix
        self._parallel(project, self._row_blocks(T))

        context = np.empty_like(x)

        def attend(seq):
            lo, hi = seq
            L = hi - lo
            t = np.ascontiguousarray(qkv[lo:hi].reshape(L, 3, N, H).transpose(1, 2, 0, 3))  # (3, N, L, H)
            scores = t[0] @ t[1].transpose(0, 2, 1)                                        # (N, L, L)
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            ctx = scores @ t[2]                                                            # (N, L, H)
            ctx /= scores.sum(-1, keepdims=True)  # normalise after PV: an (N, L, H) pass instead of (N, L, L)
            context[lo:hi] = ctx.transpose(1, 0, 2).reshape(L, E)
        # Longest sequences first so the workers finish together.
        seqs = sorted(zip(cu[:-1], cu[1:]), key=lambda s: s[0] - s[1])
        self._parallel(attend, seqs)

        out = np.empty_like(x)

        def finish(rows):
            lo, hi = rows
            for b in range(lo, hi, ROW_BLOCK):
                e = min(b + ROW_BLOCK, hi)
                a = context[b:e] @ layer.ao_w
                a += layer.ao_b
                a += x[b:e]
                layer_norm_(a, *layer.ln1, self.ln_eps)
                h = a @ layer.mid_w
                h += layer.mid_b
                gelu_(h, self.gelu)
                o = np.matmul(h, layer.out_w, out=out[b:e])
                o += layer.out_b
                o += a
                layer_norm_(o, *layer.ln2, self.ln_eps)
        self._parallel(finish, self._row_blocks(T))
        return out

