"""The native GPU engine: PyTorch for memory and cuBLAS, Triton kernels (gpu_kernels.py) for the rest, CUDA graphs.

One forward function runs every engine, fixed-length or variable-length, on packed tokens (no compute on padding).
Many tokens (more than 128 rows):

    embedding + LayerNorm                                    1 Triton kernel
    per layer:  QKV product (one [3E, E] GEMM, bias fused)   cuBLAS
                attention over cu_seqlens (flash-style)      1 Triton kernel (perf.py's dense batches: cuDNN's, SDPA)
                attention-output product                     cuBLAS, accumulated into the residual (beta = 1)
                bias + LayerNorm                             1 Triton kernel
                intermediate product + bias + GELU           tanh: cuBLASLt's GELU epilogue; erf: cuBLAS and a
                                                             bias + GELU kernel
                output product                               cuBLAS, accumulated into the residual
                bias + LayerNorm (+ SQuAD head, last)        1 Triton kernel

Few tokens (at most 128 rows, FP16, Hopper): every kernel is a Triton kernel chained by programmatic dependent
launch (PDL: each starts while its predecessor drains); the products carry bias and GELU in their epilogue, and the
two that feed a LayerNorm are split-K products whose float32 partials the LayerNorm kernel sums with the bias and
the residual; the kernels between products bring the next products' weights into L2 while they run. Up to 512 rows
the products are cuBLAS's, which cannot be PDL-launched, but the Triton kernels between them still are.

All activations live in buffers allocated once, sized for the engine's largest profile, so a forward allocates
nothing (but SDPA's output, in the graphs' shared pool) and can be captured in a CUDA graph; graphs are captured per
(token bucket, grid batch, max length, dense) and replayed after that. docs/PERF_NOTES.md has the measurements
behind each choice.
"""
import dataclasses
import os
from collections import OrderedDict

import numpy as np
import torch

from ..engine_format import EngineFile
from ..errors import BertError
from . import gpu_kernels as K
from .cublaslt import LtProducts
from .inputs import check_packed_inputs, pack_fixed_inputs, perf_inputs, perf_loop

MAX_GRAPHS = 64   # captured graphs kept per runner (each holds only kernel nodes: its buffers are shared)
ATTENTION_ROUTES = ("auto", "triton", "sdpa")
SDPA_MIN_QUERY_BLOCKS = 1024   # (sequences x heads x 64-query blocks) from which "auto" takes SDPA on Hopper
PRODUCT_CHECK_TOLERANCE = 1e-2   # a tuned algorithm's output signature against PyTorch's (FP16 rounding: ~1e-3)
TUNING_MARGIN = 0.02             # a cuBLASLt algorithm replaces PyTorch's call only if this much faster
LT_SPLITS = (2, 4, 8)            # split-K factors tried for products that feed a LayerNorm ...
MAX_LT_SPLITS = LT_SPLITS[-1]
LT_SPLIT_MAX_ROWS = 512          # ... up to this many rows (the partials buffer is sized for it)
LT_NEIGHBOUR_MAX_ROWS = 512      # cuBLASLt picks' neighbours are timed up to this many rows (a timing is cheap)
SPLIT_CANDIDATES = 3             # cuBLASLt's first picks timed per split factor
PDL_KERNELS_MAX_ROWS = 512       # our kernels are PDL-launched up to this many rows (products too up to 128)
TUNING_ROUNDS = 3                # interleaved timing passes over a product's candidates
CONTEXT_TUNING_MAX_ROWS = 512    # up to this many rows the close runners-up are timed again in the whole forward
CONTEXT_CANDIDATES = 6           # ... at most this many plans per product (the winner included)
CONTEXT_SLACK = 0.10             # ... those within this fraction of the product's fastest time alone
CONTEXT_PASSES = 2               # ... in this many passes over the four products and our kernels' tiles:
CONTEXT_ATTENTION_CONFIGS = tuple(K.AttentionTile(*t) for t in (
    (64, 128, 4, 3), (64, 64, 4, 3), (64, 128, 4, 2), (64, 128, 8, 3), (128, 128, 8, 3),
    (64, 128, 4, 3, True), (64, 128, 4, 2, True), (64, 128, 4, 4, True), (64, 128, 8, 3, True)))
CONTEXT_LAYERNORM_CONFIGS = ((2, 8), (1, 4), (2, 4), (1, 8), (4, 8))


@dataclasses.dataclass
class Dense:
    """One dense layer on the GPU: weight [out, in] (the layout cuBLAS and the Triton product both read), bias;
    role: which of a layer's four products it is (products of one role share a tuned algorithm)."""
    weight: torch.Tensor
    bias: torch.Tensor
    role: str

    def __post_init__(self):
        self.weight_t = self.weight.t()   # the view cuBLAS takes, made once: eager forwards are Python-bound


@dataclasses.dataclass
class Layer:
    qkv: Dense            # Q, K and V stacked: [3E, E], each part head-major as in the weight map
    attn_out: Dense
    ln1: tuple            # (gamma, beta) float32
    ffn_in: Dense
    ffn_out: Dense
    ln2: tuple


class DeviceWeights:
    """The engine's weights on the GPU: matrices in the activation dtype, LayerNorm vectors and the head float32."""

    def __init__(self, weights, config, dtype, device):
        def upload(array, as_dtype=dtype):
            # np.array copies: engine files are read into read-only buffers, which torch.from_numpy warns about.
            return torch.from_numpy(np.array(array)).to(device=device, dtype=as_dtype)

        def tensor(name, as_dtype=dtype):
            return upload(weights[name], as_dtype)

        def dense(prefix, role):
            return Dense(tensor(f"{prefix}_kernel"), tensor(f"{prefix}_bias"), role)

        def norm(prefix):
            return tensor(f"{prefix}_gamma", torch.float32), tensor(f"{prefix}_beta", torch.float32)

        self.word = tensor("bert_embeddings_word_embeddings")
        self.position = tensor("bert_embeddings_position_embeddings")
        self.token_type = tensor("bert_embeddings_token_type_embeddings")
        self.emb_ln = norm("bert_embeddings_layernorm")
        self.layers = []
        for n in range(config.num_hidden_layers):
            p = f"l{n}_"
            parts = ("query", "key", "value")
            qkv = Dense(upload(np.concatenate([weights[f"{p}attention_self_{t}_kernel"] for t in parts])),
                        upload(np.concatenate([weights[f"{p}attention_self_{t}_bias"] for t in parts])), "qkv")
            self.layers.append(Layer(qkv=qkv, attn_out=dense(f"{p}attention_output_dense", "attn_out"),
                                     ln1=norm(f"{p}attention_output_layernorm"),
                                     ffn_in=dense(f"{p}intermediate_dense", "ffn_in"),
                                     ffn_out=dense(f"{p}output_dense", "ffn_out"),
                                     ln2=norm(f"{p}output_layernorm")))
        self.head_w = tensor("cls_squad_output_weights", torch.float32)
        self.head_b = tensor("cls_squad_output_bias", torch.float32)


class Activations:
    """Preallocated activations for up to `tokens` packed tokens in `batch` sequences.

    Four (tokens, features) buffers suffice because the layer reuses them in place:
    x (layer input) -> big[:, :3E] (QKV) -> ctx (attention) -> y (attention output, then LN1 in place)
    -> big[:, :I] (intermediate) -> ctx (output product) -> x (LN2, the next layer's input).
    """

    def __init__(self, tokens, batch, config, dtype, device, split_rows):
        E, I = config.hidden_size, config.intermediate_size
        self.tokens, self.batch = tokens, batch
        self.ids = torch.zeros(tokens, dtype=torch.int32, device=device)
        self.segs = torch.zeros(tokens, dtype=torch.int32, device=device)
        self.cu_seqlens = torch.zeros(batch + 1, dtype=torch.int32, device=device)
        self.x = torch.zeros(tokens, E, dtype=dtype, device=device)
        self.ctx = torch.zeros(tokens, E, dtype=dtype, device=device)
        self.y = torch.zeros(tokens, E, dtype=dtype, device=device)
        self.big = torch.zeros(tokens * max(3 * E, I), dtype=dtype, device=device)
        self.logits = torch.zeros(tokens, 2, dtype=torch.float32, device=device)
        # float32 partial products of split-K GEMMs (up to split_rows rows), summed by the next LayerNorm
        split_rows = min(tokens, split_rows) if dtype == torch.float16 else 0
        self.partials = torch.zeros(max(K.MAX_SPLITS, MAX_LT_SPLITS) * split_rows * E, dtype=torch.float32,
                                    device=device)
        # page-locked staging for inputs and logits: copies that neither block nor take the GIL twice per call
        pinned = device.type == "cuda"
        self.host_inputs = torch.zeros(2 * tokens + batch + 1, dtype=torch.int32, pin_memory=pinned)
        self.host_logits = torch.zeros(tokens, 2, dtype=torch.float32, pin_memory=pinned)

    def wide(self, T, width):
        """A (T, width) contiguous view of the shared QKV / intermediate buffer."""
        return self.big[:T * width].view(T, width)


def token_bucket(T, capacity):
    """Round a token count up so that few graphs serve all batches: steps of 1/8 of the power of two below T,
    at least 64 tokens (at most 12.5% padding rows)."""
    step = max(64, (1 << max(T - 1, 1).bit_length()) // 16)
    return min(capacity, -(-T // step) * step)


def _torch_product(a, dense, out, epilogue, accumulate=None):
    """PyTorch's cuBLAS(Lt) call for one of GpuRunner._dense's products (cuBLAS's heuristic picks the algorithm)."""
    if epilogue == "bias":
        torch.addmm(dense.bias, a, dense.weight_t, out=out)
    elif epilogue == "gelu_bias":
        torch._addmm_activation(dense.bias, a, dense.weight_t, use_gelu=True, out=out)
    elif accumulate is None:
        torch.mm(a, dense.weight_t, out=out)
    elif accumulate is out:
        out.addmm_(a, dense.weight_t)
    else:
        torch.addmm(accumulate, a, dense.weight_t, out=out)


def _signature(out):
    """Float32 column sums and row norms of a (T, N) product: enough to tell a wrong algorithm from rounding
    without a second copy of a possibly 400 MB output."""
    return torch.cat([out.sum(dim=0, dtype=torch.float32), torch.linalg.vector_norm(out, dim=1, dtype=torch.float32)])


def _rel_err(x, ref):
    return float(torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-30))


def graphs_ms(calls_by_key, rounds=TUNING_ROUNDS, replays=3):
    """Median GPU ms of a CUDA graph of each `calls()` (captured on the current stream, which must not be the
    default one; scripts/gpu_bench.py times with it too), timed in `rounds` passes over all of them in turn: the
    clock of a GPU at its power limit drifts with what ran before, so candidates timed one after another would
    be ranked by that drift; interleaved, each sees the same mix."""
    graphs = {}
    for key, calls in calls_by_key.items():
        calls()   # compiles what is not compiled yet outside the capture
        graph = graphs[key] = torch.cuda.CUDAGraph()
        graph.capture_begin()
        try:
            calls()
        finally:
            graph.capture_end()
        graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = {key: [] for key in graphs}
    for _ in range(rounds):
        for key, graph in graphs.items():
            for _ in range(replays):
                start.record()
                graph.replay()
                end.record()
                end.synchronize()
                times[key].append(start.elapsed_time(end))
    return {key: sorted(t)[len(t) // 2] for key, t in times.items()}


class GpuRunner:
    """Runs a native FP32 or FP16 engine on a CUDA GPU (runner contract: docs/DESIGN.md)."""

    device = "gpu"

    def __init__(self, engine: EngineFile, use_graphs=True, gemm="auto", pdl=None, attention="auto",
                 tune_products=True, tune_in_context=True, prefetch=True):
        # Under Triton's interpreter (TRITON_INTERPRET=1) the same forward runs on CPU tensors, eagerly: that is how
        # CI checks this module's composition of kernels without a GPU (tests/test_gpu_kernels_interpreted.py).
        self.interpreted = os.environ.get("TRITON_INTERPRET") == "1"
        if not self.interpreted and not torch.cuda.is_available():
            raise BertError("the GPU engine needs a CUDA GPU and PyTorch built with CUDA")
        if engine.precision not in ("fp32", "fp16"):
            raise BertError(f"the native GPU engine runs fp32 and fp16 engines, not {engine.precision}")
        if gemm not in ("auto", "cublas", "triton"):
            raise BertError(f"unknown GEMM choice {gemm!r}")
        if attention not in ATTENTION_ROUTES:
            raise BertError(f"unknown attention choice {attention!r}")
        c = engine.config
        if c.head_size not in (16, 32, 64, 128):
            raise BertError(f"the GPU attention kernel supports head sizes 16, 32, 64 and 128, not {c.head_size}")
        self.engine_info = dataclasses.replace(engine, weights={})   # what the scripts read; weights live on the GPU
        self.config = c
        self.device_index = None if self.interpreted else torch.cuda.current_device()
        self.dtype = torch.float16 if engine.precision == "fp16" else torch.float32
        numerics = engine.numerics or {}
        self.gelu = numerics.get("gelu", c.gelu)
        if self.gelu not in K.GELU_KINDS:
            raise BertError(f"engine numerics: unknown GELU {self.gelu!r}")
        self.emb_eps = float(numerics.get("emb_eps", c.layer_norm_eps))
        self.ln_eps = float(numerics.get("layer_norm_eps", c.layer_norm_eps))
        self.use_graphs = use_graphs and not self.interpreted
        self.gemm = gemm
        # PDL chains the few-token path's kernels (gpu_kernels.py); it needs FP16 products (all Triton there)
        self.pdl = (pdl is not False and not self.interpreted and K.pdl_supported(self.device_index)
                    and self.dtype == torch.float16)
        self.attention = attention
        # on the all-Triton PDL chain (up to K.PDL_MAX_ROWS rows) each of our kernels between products also asks for
        # the next products' weights to be brought into L2 (forward): such products stream their weights from memory
        self.prefetch = prefetch
        # benchmark runs time cuBLASLt's candidate algorithms per product and row count (_tune_product); inference
        # keeps PyTorch's heuristic choice: no tuning cost per new batch shape, and the same answers every run
        self.tune_products = tune_products and self.dtype == torch.float16 and not self.interpreted
        self._lt = None           # LtProducts, made on the first tuning
        self._lt_plans = {}       # (role, rows) -> the LtPlan measured fastest, or None for PyTorch's call
        self._lt_runners_up = {}  # (role, rows) -> the plans timed close to the fastest alone, fastest first
        self._kernel_configs = {}  # (kernel, graph key) -> its tile config chosen in the forward (default: None)
        self.tune_in_context = tune_in_context and self.use_graphs
        self._tuning = False
        self.product_tuning = []  # what each tuning measured (gpu_bench.py prints it)
        self.context_tuning = []  # what each timing of close choices in the whole forward measured
        # cuDNN's attention, which "auto" takes for perf.py's full batches, was measured on Hopper only
        self.sdpa_measured = not self.interpreted and torch.cuda.get_device_capability(self.device_index)[0] == 9
        device = torch.device("cpu") if self.interpreted else torch.device("cuda", self.device_index)
        self.weights = DeviceWeights(engine.weights, c, self.dtype, device)
        tokens = max(p.batch[2] * p.seq[2] for p in engine.profiles)
        # cuBLASLt's split-K plans (up to LT_SPLIT_MAX_ROWS rows) come only from tuning: size their partials only then
        split_rows = max(K.SPLIT_MAX_ROWS, LT_SPLIT_MAX_ROWS if self.tune_products else 0)
        self.buffers = Activations(tokens, max(p.batch[2] for p in engine.profiles), c, self.dtype, device, split_rows)
        self._graphs = OrderedDict()
        # shared by all graphs: they replay one at a time on one stream
        self._graph_pool = None if self.interpreted else torch.cuda.graph_pool_handle()
        self._warmed = set()   # graph keys run once eagerly (kernels compiled); captured from their second use
        # All of the runner's GPU work runs on its own stream: graphs need a non-default stream for capture, and
        # one stream means one cuBLAS workspace for eager runs and captures alike.
        self.stream = None if self.interpreted else torch.cuda.Stream(device)   # torch.cuda.stream(None): no-op

    # ---- runner contract ----------------------------------------------------------------------------------------
    def infer_fixed(self, input_ids, segment_ids, input_mask):
        """Padded (B, S) inputs -> (B, S, 2) float32 logits; each row's length is its mask's first 0 (upstream's
        semantics), and logits at padding positions are 0 (padding is stripped before the forward)."""
        ids, segs, cu, rows, (B, S) = pack_fixed_inputs(input_ids, segment_ids, input_mask)
        check_packed_inputs(self.config, ids, segs, cu)
        if self.engine_info.select_profile(B, S) is None:
            raise BertError(f"Could not find any profile that can run batch size {B} and sequence length {S}.")
        packed = self._run(ids, segs, cu, S)
        out = np.zeros((B * S, 2), dtype=np.float32)
        out[rows] = packed
        return out.reshape(B, S, 2)

    def infer_packed(self, input_ids, segment_ids, cu_seqlens, max_seqlen=None):
        """Packed (T,) inputs with cu_seqlens (B+1,) -> (2, T) float32 logits, upstream's varseqlen layout."""
        ids = np.asarray(input_ids).reshape(-1)
        segs = np.asarray(segment_ids).reshape(-1)
        cu = np.asarray(cu_seqlens, dtype=np.int64).reshape(-1)
        check_packed_inputs(self.config, ids, segs, cu)
        longest = int(np.diff(cu).max())
        B = len(cu) - 1
        profile = next((p for p in self.engine_info.profiles if p.batch[2] >= B and p.seq[2] >= longest), None)
        if profile is None:
            raise BertError(f"no profile of the engine runs {B} sequences of up to {longest} tokens")
        return self._run(ids, segs, cu, profile.seq[2]).T.copy()

    def benchmark(self, batch_size, seq_len, warmup, iterations, duration, seed, progress=None):
        """Per-iteration GPU times (ms, CUDA events) of CUDA-graph replays on full-length synthetic batches, fed as
        upstream's perf.py feeds them (uniform random ids and segments, all-ones mask)."""
        run = self.benchmark_forward(batch_size, seq_len, seed)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def time_run():
            start.record()
            run()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        with torch.cuda.stream(self.stream):
            return perf_loop(run, time_run, warmup, iterations, duration, progress,
                             after_warmup=self.stream.synchronize)

    def benchmark_forward(self, batch_size, seq_len, seed):
        """The callable that runs one forward of benchmark()'s synthetic batch (a CUDA-graph replay; call it on
        self.stream), its products tuned and its graph captured now."""
        if self.engine_info.select_profile(batch_size, seq_len) is None:
            raise BertError(f"None of the dynamic shape profiles meets the requirement batch = {batch_size} and "
                            f"sequence = {seq_len}.")
        T = batch_size * seq_len
        ids, segs = perf_inputs(batch_size, seq_len, seed, self.config.vocab_size, self.config.type_vocab_size)
        cu = np.arange(0, T + 1, seq_len, dtype=np.int64)
        with torch.cuda.stream(self.stream):
            return self._prepare(ids, segs, cu, seq_len, benchmark=True)

    # ---- running ------------------------------------------------------------------------------------------------
    def _run(self, ids, segs, cu, max_seqlen):
        """(T, 2) float32 logits for validated packed inputs."""
        T, buf = len(ids), self.buffers
        with torch.cuda.stream(self.stream):
            self._prepare(ids, segs, cu, max_seqlen)()
            buf.host_logits[:T].copy_(buf.logits[:T], non_blocking=True)
            if self.stream is not None:
                self.stream.synchronize()
            return buf.host_logits[:T].numpy().copy()

    def _prepare(self, ids, segs, cu, max_seqlen, benchmark=False):
        """Copy the inputs into the static buffers; return the callable that runs the forward on them (call both on
        self.stream). A shape's first inference runs eagerly and its second one captures a graph, so that one-off
        shapes never pay for a capture; the benchmark captures at once and computes exactly the tokens it asks for.

        Graphs are keyed by (token bucket, grid batch, max length, dense): a ragged batch's kernel grids cover the
        next power of two of sequences (the extra ones empty: programs past a sequence's end return at once), so
        that batches of 65 to 128 windows share one graph."""
        buf = self.buffers
        T, B = len(ids), len(cu) - 1
        rows = T if benchmark else token_bucket(T, buf.tokens)
        # perf.py's dense (B, S) blocks of full sequences may take SDPA; inference never does: cuDNN builds a plan
        # for every new batch shape (~0.1 s each on an H200), which a stream of SQuAD batches would keep paying
        uniform = benchmark and rows == B * max_seqlen and bool((np.diff(cu) == max_seqlen).all())
        grid_batch = B if uniform else min(buf.batch, 1 << (B - 1).bit_length())
        staged = buf.host_inputs.numpy()
        staged[:T] = ids
        staged[T:2 * T] = segs
        staged[2 * T:2 * T + B + 1] = cu
        staged[2 * T + B + 1:2 * T + grid_batch + 1] = cu[-1]
        buf.ids[:T].copy_(buf.host_inputs[:T], non_blocking=True)
        buf.segs[:T].copy_(buf.host_inputs[T:2 * T], non_blocking=True)
        buf.cu_seqlens[:grid_batch + 1].copy_(buf.host_inputs[2 * T:2 * T + grid_batch + 1], non_blocking=True)
        key = (rows, grid_batch, max_seqlen, uniform)
        if benchmark and key not in self._warmed:
            # compiles the Triton kernels, sets up cuBLAS and tunes the products, outside any capture
            self._warmed.add(key)
            self._tuning = self.tune_products
            try:
                self.forward(*key)
            finally:
                self._tuning = False
            if self.tune_products and self.tune_in_context and rows <= CONTEXT_TUNING_MAX_ROWS:
                self._tune_in_context(key)
        if not self.use_graphs:
            return lambda: self.forward(*key)
        graph = self._graphs.get(key)
        if graph is None:
            if key not in self._warmed:
                self._warmed.add(key)
                return lambda: self.forward(*key)
            graph = self._capture(key)
        self._graphs.move_to_end(key)
        return graph.replay

    def reset_graphs(self):
        """Forget every captured graph (and the memory pool they shared), e.g. after changing plans by hand."""
        self._graphs.clear()
        self._warmed.clear()
        self._graph_pool = None if self.interpreted else torch.cuda.graph_pool_handle()

    def _capture(self, key):
        # capture_begin/end rather than torch.cuda.graph(), whose entry also runs gc.collect() and empties the
        # allocator's cache: with a SQuAD file's objects on the heap that costs about 0.1 s per captured shape
        graph = torch.cuda.CUDAGraph()
        self.stream.synchronize()
        graph.capture_begin(pool=self._graph_pool)
        try:
            self.forward(*key)
        finally:
            graph.capture_end()
        self._graphs[key] = graph
        if len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)
        return graph

    # ---- the forward pass ---------------------------------------------------------------------------------------
    def forward(self, T, num_seqs, max_seqlen, uniform=False):
        """Logits of the T packed tokens in the buffers (rows past the sequences' tokens are computed but unused).
        uniform: all num_seqs sequences are max_seqlen long and T = num_seqs * max_seqlen (a dense batch)."""
        c, w, buf = self.config, self.weights, self.buffers
        E, I = c.hidden_size, c.intermediate_size
        pdl = self.pdl and self.gemm == "auto" and T <= K.PDL_MAX_ROWS   # the whole chain, products included
        early = self._pdl_kernels(T)
        key = (T, num_seqs, max_seqlen, uniform)   # the graph's: tiles chosen in context are kept per graph
        layernorm_config = self._kernel_configs.get(("layernorm", key))
        attention_config = self._kernel_configs.get(("attention", key))

        # The weights that one of our kernels brings into L2 for the products after it: only where those products
        # are Triton's (Large b1 s128 0.664 -> 0.642 ms). Before cuBLAS's products (up to 512 rows) it cost more
        # than hot weights saved (b1 s384 0.92 -> 0.98 ms, every way of issuing it tried; PERF_NOTES session 8).
        prefetch = pdl and self.prefetch

        def ahead(*denses):
            return tuple(d.weight for d in denses) if prefetch else ()

        x, ctx, y = buf.x[:T], buf.ctx[:T], buf.y[:T]
        K.embed_layernorm(buf.ids, buf.segs, buf.cu_seqlens, num_seqs, max_seqlen, w.word, w.position,
                          w.token_type, *w.emb_ln, self.emb_eps, out=x, pdl=early, prefetch=ahead(w.layers[0].qkv))
        last = len(w.layers) - 1
        for n, layer in enumerate(w.layers):
            qkv = buf.wide(T, 3 * E)
            self._dense(x, layer.qkv, qkv, pdl=pdl)
            # attention lasts long enough to fetch two products' weights; each LayerNorm fetches the next one's
            attended = self._attention(qkv, ctx, key, early, attention_config,
                                       prefetch=ahead(layer.attn_out, layer.ffn_in))
            summands = self._dense_before_layernorm(attended, layer.attn_out, x, y, pdl, norm=layer.ln1)
            K.add_layernorm(*summands, *layer.ln1, self.ln_eps, out=y, pdl=early, config=layernorm_config,
                            prefetch=ahead(layer.ffn_out))
            h = buf.wide(T, I)
            self._dense(y, layer.ffn_in, h, gelu=self.gelu, pdl=pdl)
            summands = self._dense_before_layernorm(h, layer.ffn_out, y, ctx, pdl, norm=layer.ln2)
            if n == last:
                K.add_layernorm_head(*summands, *layer.ln2, self.ln_eps, w.head_w, w.head_b,
                                     logits=buf.logits[:T], pdl=early)
            else:
                K.add_layernorm(*summands, *layer.ln2, self.ln_eps, out=x, pdl=early, config=layernorm_config,
                                prefetch=ahead(w.layers[n + 1].qkv))

    def _pdl_kernels(self, T):
        """Whether our kernels are PDL-launched: up to a few hundred rows they are, between cuBLAS's products too
        (they are set up while the product before them drains)."""
        return self.pdl and T <= PDL_KERNELS_MAX_ROWS

    def _attention(self, qkv, ctx, key, pdl, config, prefetch=()):
        """The attention context (T, E) of the graph key's batch: our Triton kernel (tile `config`, None for the
        default), or, for perf.py's dense FP16 batches off the PDL path, PyTorch's fused attention (on Hopper its
        cuDNN kernel: 12% faster than ours on full batches, slower on small ones; PERF_NOTES.md, run 5), which
        allocates its output (in the graphs' shared pool) rather than writing ctx."""
        T, num_seqs, max_seqlen, uniform = key
        E = ctx.shape[1]
        heads = self.config.num_attention_heads
        if self._attention_route(key) == "sdpa":
            q, k, v = (t.transpose(1, 2) for t in qkv.view(num_seqs, max_seqlen, 3, heads, E // heads).unbind(2))
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)   # (B, S, N, H)
            return out.reshape(T, E) if out.is_contiguous() else ctx.view_as(out).copy_(out).view(T, E)
        K.varlen_attention(qkv, self.buffers.cu_seqlens, num_seqs, max_seqlen, heads, out=ctx, pdl=pdl,
                           config=config, prefetch=prefetch, uniform=uniform)
        return ctx

    def _attention_route(self, key):
        """'triton' or 'sdpa' for the batch of a graph key (T, num_seqs, max_seqlen, uniform)."""
        T, num_seqs, max_seqlen, uniform = key
        if self._pdl_kernels(T) or self.dtype != torch.float16 or not uniform:
            return "triton"
        if self.attention == "auto":   # cuDNN's kernel wins on full batches only (1x384: 8.7 us against our 5.9)
            query_blocks = num_seqs * self.config.num_attention_heads * -(-max_seqlen // 64)
            return "sdpa" if self.sdpa_measured and query_blocks >= SDPA_MIN_QUERY_BLOCKS else "triton"
        return self.attention

    def _dense_before_layernorm(self, a, dense, residual, scratch, pdl, norm):
        """a @ W^T + b + residual, left as the (x, res, bias) summands that the LayerNorm kernel adds up:
        few tokens: float32 split-K partials (the LayerNorm does the reduction) or a Triton product in `scratch`;
        otherwise cuBLAS accumulates the product into the residual itself (beta = 1), so that the LayerNorm reads
        one tensor instead of two, and adds the bias, unless benchmark tuning found a cuBLASLt split-K faster.
        The residual may be overwritten: the layer needs it no more. norm: the consuming LayerNorm's (gamma, beta),
        which tuning times with the product."""
        T, (N, K_) = a.shape[0], dense.weight.shape
        if pdl:
            plan = K.small_plan(T, N, K_, can_split=True)
        else:
            plan = K.split_k_plan(T, N, K_) if self.dtype == torch.float16 and self.gemm != "cublas" else None
        if plan is not None and plan[0] > 1:
            splits, config = plan
            partials = self.buffers.partials[:splits * T * N].view(splits, T, N)
            K.linear(a, dense.weight, dense.bias, partials, config=config, split_k=splits, pdl=pdl)
            return partials, residual, dense.bias
        if pdl or self.gemm == "triton":
            self._dense(a, dense, scratch, pdl=pdl)
            return scratch, residual, None
        choice = self._tuned(a, dense, scratch, "none", accumulate=residual, norm=norm)
        if choice is not None and choice.splits > 1:
            partials = self.buffers.partials[:choice.splits * T * N].view(choice.splits, T, N)
            self._lt.run(choice, a, dense.weight, dense.bias, partials)
            return partials, residual, dense.bias
        if choice is not None:
            self._lt.run(choice, a, dense.weight, dense.bias, residual, accumulate=residual)
        else:
            residual.addmm_(a, dense.weight_t)
        return residual, None, dense.bias

    def _dense(self, a, dense, out, gelu=None, pdl=False):
        """out = [gelu](a @ W^T + b), by the fastest measured route for this precision and GELU (PERF_NOTES.md)."""
        if pdl:
            _, config = K.small_plan(a.shape[0], *dense.weight.shape, can_split=False)
            K.linear(a, dense.weight, dense.bias, out, gelu=gelu, config=config, pdl=True)
            return
        fused_erf = gelu == "erf" and a.shape[0] <= K.FUSED_ERF_MAX_ROWS
        if self.dtype == torch.float16 and (self.gemm == "triton" or (self.gemm == "auto" and fused_erf)):
            K.linear(a, dense.weight, dense.bias, out, gelu=gelu)   # bias + exact GELU in the GEMM epilogue
            return
        # bias in the cuBLASLt epilogue; tanh GELU (FP16) too, as cuBLASLt's GELU epilogue is the tanh form
        epilogue = "bias" if gelu is None else "gelu_bias" if gelu == "tanh" and self.dtype == torch.float16 else "none"
        choice = self._tuned(a, dense, out, epilogue)
        if choice is not None:
            self._lt.run(choice, a, dense.weight, dense.bias, out)
        else:
            _torch_product(a, dense, out, epilogue)
        if epilogue == "none":
            K.bias_gelu_(out, dense.bias, gelu)

    def _tuned(self, a, dense, out, epilogue, accumulate=None, norm=None):
        """The cuBLASLt plan measured fastest for this product and row count, or None for PyTorch's call (nothing
        measured, as in inference, or nothing beat it); measured now if this is a tuning forward."""
        key = (dense.role, a.shape[0])
        if key not in self._lt_plans and self._tuning:
            self._lt_plans[key] = self._tune_product(a, dense, out, epilogue, accumulate, norm)
        return self._lt_plans.get(key)

    def _tune_product(self, a, dense, out, epilogue, accumulate, norm):
        """Time PyTorch's call and cuBLASLt's candidate algorithms for this product, each inside a CUDA graph that
        runs it with every layer's weights in turn (as a forward does: weights come from memory, not L2); keep
        the fastest whose result agrees with PyTorch's. Returns its plan, or None for PyTorch's call.

        An accumulating product (out is then a scratch buffer: timing accumulates into it in place, as the forward
        does into the residual, without summing into the residual repeatedly) is timed together with its
        LayerNorm, and split-K plans compete too: float32 partials that the LayerNorm sums, which pay for few rows
        (more output tiles than SMs otherwise idle)."""
        if self._lt is None:
            try:
                self._lt = LtProducts(a.device)
            except (BertError, OSError) as exc:   # no usable cuBLASLt: PyTorch's calls, as in inference
                self.tune_products = self._tuning = False
                self.product_tuning.append({"role": dense.role, "rows": a.shape[0], "error": str(exc)})
                return None
        T, (N, K_) = a.shape[0], dense.weight.shape
        layers = [getattr(layer, dense.role) for layer in self.weights.layers]
        gamma, beta = norm if norm is not None else (None, None)

        def layernorm(x, res):
            if norm is not None:
                K.add_layernorm(x, res, dense.bias, gamma, beta, self.ln_eps, out=out)

        def partials(plan):
            return self.buffers.partials[:plan.splits * T * N].view(plan.splits, T, N)

        def run(plan, d):   # one layer's product (and LayerNorm) as the forward would run it
            in_place = None if accumulate is None else out   # accumulating: in place, on the scratch
            if plan is None:
                _torch_product(a, d, out, epilogue, in_place)
                layernorm(out, None)
            elif plan.splits > 1:
                self._lt.run(plan, a, d.weight, d.bias, partials(plan))
                layernorm(partials(plan), accumulate)
            else:
                self._lt.run(plan, a, d.weight, d.bias, out, in_place)
                layernorm(out, None)

        def result(plan):   # the product's value (before any LayerNorm), float32
            if plan is not None and plan.splits > 1:
                self._lt.run(plan, a, dense.weight, dense.bias, partials(plan))
                return partials(plan).sum(dim=0) + accumulate.float()
            if plan is None:
                _torch_product(a, dense, out, epilogue, accumulate)
            else:
                self._lt.run(plan, a, dense.weight, dense.bias, out, accumulate)
            return out

        # few rows: the heuristic's picks' neighbours too (other cluster shapes and custom options), for split-K
        # plans too
        few = T <= LT_NEIGHBOUR_MAX_ROWS
        plans = self._lt.candidates(T, N, K_, epilogue, dense.bias, neighbours=few)
        if norm is not None and T * N <= self.buffers.partials.numel() // MAX_LT_SPLITS:
            for splits in LT_SPLITS:
                if K_ % (8 * splits) == 0:
                    plans += self._lt.candidates(T, N, K_, "none", dense.bias, splits=splits,
                                                 limit=SPLIT_CANDIDATES, neighbours=few)
        reference = _signature(result(None))
        runs = {None: lambda: [run(None, d) for d in layers]}
        for index, plan in enumerate(plans):
            try:
                if _rel_err(_signature(result(plan)), reference) < PRODUCT_CHECK_TOLERANCE:
                    runs[index] = lambda plan=plan: [run(plan, d) for d in layers]
            except BertError:   # an algorithm cuBLASLt offered but will not run: not a candidate
                continue
        timed = graphs_ms(runs)
        best = min(timed, key=timed.get)
        if best is not None and timed[best] > timed[None] * (1 - TUNING_MARGIN):
            best = None
        if T <= CONTEXT_TUNING_MAX_ROWS:   # what _tune_in_context times again
            close = sorted((k for k in timed if k != best and timed[k] <= timed[best] * (1 + CONTEXT_SLACK)),
                           key=timed.get)
            self._lt_runners_up[(dense.role, T)] = [None if k is None else plans[k]
                                                    for k in [best, *close][:CONTEXT_CANDIDATES]]
        chosen = "torch" if best is None else f"cublasLt #{best}" + (
            f" split-K {plans[best].splits}" if plans[best].splits > 1 else "")
        self.product_tuning.append({"role": dense.role, "rows": T, "epilogue": epilogue,
                                    "with_layernorm": norm is not None, "candidates": len(plans),
                                    "torch_us": 1e3 * timed[None] / len(layers), "chosen": chosen,
                                    "chosen_us": 1e3 * timed[best] / len(layers)})
        return None if best is None else plans[best]

    def _tune_in_context(self, key):
        """For few rows a product's time alone may rank close candidates differently from the forward, where each
        follows one of our PDL-launched kernels rather than another product, and kernels differ in how soon they
        start and let the next one start (at Large b1 s384 QKV's third plan alone made the forward 2.2% faster
        than its first; PERF_NOTES session 7). So each product's close runners-up (_tune_product), and a few tile
        configs of the attention and LayerNorm kernels, are timed again in the whole forward's graph, one choice
        after another, the others held at their best so far."""
        rows = key[0]
        choices = [(role, (role, rows), self._lt_plans, self._lt_runners_up.get((role, rows), []))
                   for role in ("qkv", "attn_out", "ffn_in", "ffn_out")]
        kernels = ("attention", "layernorm") if self._attention_route(key) == "triton" else ("layernorm",)
        choices += [(kernel, (kernel, key), self._kernel_configs, self._tile_options(kernel, key))
                    for kernel in kernels]
        for name, choice, table, options in choices * CONTEXT_PASSES:
            if len(options) < 2:
                continue

            def forward_with(option, choice=choice, table=table):
                table[choice] = option
                self.forward(*key)

            timed = graphs_ms({index: (lambda option=option: forward_with(option))
                               for index, option in enumerate(options)}, replays=5)
            best = min(timed, key=timed.get)
            table[choice] = options[best]
            self.context_tuning.append({"choice": name, "rows": rows,
                                        "forward_ms": [timed[i] for i in sorted(timed)], "chosen": best})

    def _tile_options(self, kernel, key):
        """The tiles the in-forward search times for one of our kernels: None (the default for this batch) and
        each CONTEXT_*_CONFIGS tile other than that default, which would only be timed twice."""
        T, num_seqs, max_seqlen, _ = key
        c = self.config
        if kernel == "attention":
            default = K.attention_config(num_seqs, max_seqlen, c.num_attention_heads, c.head_size, self.dtype)
            tiles = CONTEXT_ATTENTION_CONFIGS
        else:
            default, tiles = K.layernorm_config(c.hidden_size, T), CONTEXT_LAYERNORM_CONFIGS
        return [None, *(tile for tile in tiles if tuple(tile) != tuple(default))]

    def memory_report(self):
        """GPU memory held by this process after loading (bytes), and what the engine's tensors account for."""
        w = self.weights
        tensors = [w.word, w.position, w.token_type, *w.emb_ln, w.head_w, w.head_b]
        for layer in w.layers:
            tensors += [layer.qkv.weight, layer.qkv.bias, layer.attn_out.weight, layer.attn_out.bias, *layer.ln1,
                        layer.ffn_in.weight, layer.ffn_in.bias, layer.ffn_out.weight, layer.ffn_out.bias, *layer.ln2]
        b = self.buffers
        activations = [b.ids, b.segs, b.cu_seqlens, b.x, b.ctx, b.y, b.big, b.logits, b.partials]
        nbytes = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
        return {"weights": nbytes(tensors), "activations": nbytes(activations),
                "allocated": torch.cuda.memory_allocated(self.device_index),
                "reserved": torch.cuda.memory_reserved(self.device_index)}

