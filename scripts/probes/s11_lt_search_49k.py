#!/usr/bin/env python3
"""Probe (session 11): at 49,152 rows (BERT-Large b128 s384) can another cuBLASLt configuration run a product
faster than the engine's tuner finds? The tuner times, at that size, only the heuristic's picks and the picks for
simpler epilogues; the neighbours (cluster shape x custom option) and the full tile enumeration were only ever
searched up to 512 rows (session 6).

Candidate sets per product (in place, as the forward runs it: attn-out and FFN-out accumulate into their output):
  engine  LtProducts.candidates(), the tuner's set at this size
  near    the same with neighbours=True, minus engine
  enum    every tile x cluster shape x custom option of the algorithm ids the picks use (stages left to the library)
Screening: each candidate runs eagerly over SCREEN_LAYERS weight copies, timed once, in a random order. Then torch,
the engine set's best 3 and the TOP fastest screened of near + enum are timed in interleaved rounds (gpu.graphs_ms)
in CUDA graphs over 24 weight copies, each checked against torch's output.
    OUT=/tmp/x python3 scripts/probes/s11_lt_search_49k.py
"""
import ctypes
import itertools
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from helpers.backends import cublaslt as L  # noqa: E402
from helpers.backends.gpu import _rel_err, _signature, graphs_ms  # noqa: E402

vp, i32, u32, u16, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_uint16, ctypes.c_size_t
CAP_TILES, CAP_CUSTOM, CAP_STAGES = 6, 7, 13
CFG_ID, CFG_TILE, CFG_SPLITK, CFG_RED, CFG_SWZ, CFG_CUSTOM, CFG_STAGES, CFG_INNER, CFG_CLUSTER = range(9)
CLUSTERS = (0, 2, 3, 4, 5, 6, 8)   # auto, 1x1x1, 2x1x1, 4x1x1, 1x2x1, 2x2x1, 1x4x1
LAYERS = 24
SCREEN_LAYERS = int(os.environ.get("SCREEN_LAYERS", "4"))
SCREEN_SECONDS = float(os.environ.get("SCREEN_SECONDS", "60"))
TOP = int(os.environ.get("TOP", "24"))
ROWS = int(os.environ.get("ROWS", "49152"))


def bind(lib):
    A = ctypes.POINTER(L._Algo)
    sigs = {"cublasLtMatmulAlgoInit": [vp, i32, i32, i32, i32, i32, i32, i32, A],
            "cublasLtMatmulAlgoConfigGetAttribute": [A, i32, vp, sz, ctypes.POINTER(sz)]}
    for name, argtypes in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, i32


def cap_array(lib, algo, attr):
    n = sz(0)
    if lib.cublasLtMatmulAlgoCapGetAttribute(ctypes.byref(algo), attr, None, 0, ctypes.byref(n)) != 0 or not n.value:
        return []
    arr = (u32 * (n.value // 4))()
    lib.cublasLtMatmulAlgoCapGetAttribute(ctypes.byref(algo), attr, arr, n.value, ctypes.byref(n))
    return list(arr)


def cap_scalar(lib, algo, attr, ctype=u32):
    v, n = ctype(0), sz(0)
    lib.cublasLtMatmulAlgoCapGetAttribute(ctypes.byref(algo), attr, ctypes.byref(v), ctypes.sizeof(v), ctypes.byref(n))
    return v.value


def describe(lib, algo):
    out = {}
    for name, attr, ctype in (("id", CFG_ID, i32), ("tile", CFG_TILE, u32), ("splitk", CFG_SPLITK, i32),
                              ("red", CFG_RED, u32), ("swz", CFG_SWZ, u32), ("custom", CFG_CUSTOM, u32),
                              ("stages", CFG_STAGES, u32), ("inner", CFG_INNER, u16), ("cluster", CFG_CLUSTER, u16)):
        v, n = ctype(0), sz(0)
        lib.cublasLtMatmulAlgoConfigGetAttribute(ctypes.byref(algo), attr, ctypes.byref(v), ctypes.sizeof(v),
                                                 ctypes.byref(n))
        out[name] = v.value
    return out


def set_cfg(lib, algo, attr, value, ctype):
    v = ctype(value)
    return lib.cublasLtMatmulAlgoConfigSetAttribute(ctypes.byref(algo), attr, ctypes.byref(v), ctypes.sizeof(v))


class Product:
    """One product of a BERT-Large layer at ROWS rows, with data distributed as in the model (LayerNorm outputs
    N(0, 1), the FFN-out input a tanh GELU's output, weights N(0, 0.02) as scripts/make_random_checkpoint.py)."""

    def __init__(self, lt, name, N, K, epilogue, accumulate):
        self.lt, self.name, self.N, self.K, self.epilogue, self.accumulate = lt, name, N, K, epilogue, accumulate
        g = torch.Generator(device="cuda").manual_seed(0)
        a = torch.randn(ROWS, K, device="cuda", dtype=torch.float16, generator=g)
        self.a = torch.nn.functional.gelu(a * 0.64, approximate="tanh") if name == "ffn_out" else a
        self.ws = [torch.randn(N, K, device="cuda", dtype=torch.float16, generator=g) * 0.02 for _ in range(LAYERS)]
        self.bs = [torch.randn(N, device="cuda", dtype=torch.float16, generator=g) * 0.02 for _ in range(LAYERS)]
        self.res = torch.randn(ROWS, N, device="cuda", dtype=torch.float16, generator=g)
        self.out = self.res.clone()
        self.w_layout, self.a_layout, self.d_layout = lt._layout(K, N, K), lt._layout(K, ROWS, K), lt._layout(N, ROWS, N)
        self.descs = [lt._desc(epilogue, b) for b in self.bs]

    def torch_call(self, i):
        w, b = self.ws[i].t(), self.bs[i]
        if self.epilogue == "bias":
            torch.addmm(b, self.a, w, out=self.out)
        elif self.epilogue == "gelu_bias":
            torch._addmm_activation(b, self.a, w, use_gelu=True, out=self.out)
        else:
            self.out.addmm_(self.a, w)

    def lt_call(self, algo, wsize, i):
        lt = self.lt
        beta = L._ONE if self.accumulate else L._ZERO
        L._check(lt.lib.cublasLtMatmul(lt.handle, self.descs[i], ctypes.byref(L._ONE), self.ws[i].data_ptr(),
                                       self.w_layout, self.a.data_ptr(), self.a_layout, ctypes.byref(beta),
                                       self.out.data_ptr(), self.d_layout, self.out.data_ptr(), self.d_layout,
                                       ctypes.byref(algo), lt.workspace.data_ptr(), wsize,
                                       torch.cuda.current_stream().cuda_stream), "matmul")

    def signature(self, call):
        self.out.copy_(self.res)
        call(0)
        return _signature(self.out)

    def checked(self, algo):
        r = L._Heuristic()
        if self.lt.lib.cublasLtMatmulAlgoCheck(self.lt.handle, self.descs[0], self.w_layout, self.a_layout,
                                               self.d_layout, self.d_layout, ctypes.byref(algo), ctypes.byref(r)) != 0:
            return None
        return (algo, r.workspace_size) if r.workspace_size <= L.WORKSPACE_BYTES else None


def enumerate_configs(lt, product, ids):
    lib = lt.lib
    found = []
    for algo_id in ids:
        base = L._Algo()
        if lib.cublasLtMatmulAlgoInit(lt.handle, 68, 0, 2, 2, 2, 2, algo_id, ctypes.byref(base)) != 0:
            continue
        custom = cap_scalar(lib, base, CAP_CUSTOM, i32)
        stages = cap_array(lib, base, CAP_STAGES)
        stage = 35 if 35 in stages else (stages[0] if stages else 0)
        for tile, cu, cl in itertools.product(cap_array(lib, base, CAP_TILES) or [0], range(custom + 1), CLUSTERS):
            algo = L._Algo()
            ctypes.memmove(ctypes.byref(algo), ctypes.byref(base), ctypes.sizeof(algo))
            if (set_cfg(lib, algo, CFG_TILE, tile, u32) or set_cfg(lib, algo, CFG_STAGES, stage, u32)
                    or set_cfg(lib, algo, CFG_CUSTOM, cu, u32) or set_cfg(lib, algo, CFG_CLUSTER, cl, u16)):
                continue
            hit = product.checked(algo)
            if hit:
                found.append(hit)
    return found


def screen(product, cands, deadline):
    """(us per product, algo, wsize) of each candidate, eagerly over SCREEN_LAYERS weight copies, timed once."""
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    timed = []
    for algo, wsize in cands:
        if time.time() > deadline:
            break
        try:
            product.lt_call(algo, wsize, 0)   # loads the kernel
            s.record()
            for i in range(SCREEN_LAYERS):
                product.lt_call(algo, wsize, i)
            e.record()
            e.synchronize()
        except Exception:   # noqa: BLE001 - a configuration that does not run
            torch.cuda.synchronize()
            continue
        timed.append((1e3 * s.elapsed_time(e) / SCREEN_LAYERS, algo, wsize))
    timed.sort(key=lambda t: t[0])
    return timed


def main():
    lt = L.LtProducts("cuda")
    bind(lt.lib)
    torch.cuda.set_stream(torch.cuda.Stream())
    report = []
    products = [("qkv", 3072, 1024, "bias", False), ("attn_out", 1024, 1024, "none", True),
                ("ffn_in", 4096, 1024, "gelu_bias", False), ("ffn_out", 1024, 4096, "none", True)]
    only = os.environ.get("PRODUCTS")
    for name, N, K, epi, acc in products:
        if only and name not in only.split(","):
            continue
        t0 = time.time()
        p = Product(lt, name, N, K, epi, acc)
        engine = [(plan.heuristic.algo, plan.heuristic.workspace_size)
                  for plan in lt.candidates(ROWS, N, K, epi, p.bs[0])]
        keyed = lambda cands: {bytes(a.data): (a, w) for a, w in cands}  # noqa: E731
        seen = set(keyed(engine))
        near = [c for k, c in keyed((pl.heuristic.algo, pl.heuristic.workspace_size) for pl in
                                    lt.candidates(ROWS, N, K, epi, p.bs[0], neighbours=True)).items() if k not in seen]
        seen |= set(keyed(near))
        ids = sorted({describe(lt.lib, a)["id"] for a, _ in engine})
        enum = [c for k, c in keyed(enumerate_configs(lt, p, ids)).items() if k not in seen]
        random.Random(0).shuffle(enum)
        screened = {}
        deadline = time.time() + SCREEN_SECONDS
        for set_name, cands in (("engine", engine), ("near", near), ("enum", enum)):
            screened[set_name] = screen(p, cands, deadline if set_name == "enum" else time.time() + 600)
        finalists = {("engine", i): (a, w) for i, (_, a, w) in enumerate(screened["engine"][:3])}
        others = sorted([(t, s_, a, w) for s_ in ("near", "enum") for t, a, w in screened[s_]], key=lambda x: x[0])
        for i, (_, set_name, a, w) in enumerate(others[:TOP]):
            finalists[(set_name, i)] = (a, w)
        reference = p.signature(p.torch_call)
        runs = {("torch", 0): lambda: [p.torch_call(i) for i in range(LAYERS)]}
        errors = {}
        for key, (a, w) in finalists.items():
            errors[key] = _rel_err(p.signature(lambda i, a=a, w=w: p.lt_call(a, w, i)), reference)
            if errors[key] < 1e-2:
                runs[key] = lambda a=a, w=w: [p.lt_call(a, w, i) for i in range(LAYERS)]
        timed = graphs_ms(runs, rounds=5, replays=3)
        rows = []
        for key, ms in sorted(timed.items(), key=lambda kv: kv[1]):
            algo = finalists.get(key, (None,))[0]
            rows.append({"set": key[0], "rank": key[1], "us": 1e3 * ms / LAYERS,
                         "config": describe(lt.lib, algo) if algo is not None else None})
        line = {"product": name, "rows": ROWS, "counts": {k: len(v) for k, v in
                                                          (("engine", engine), ("near", near), ("enum", enum))},
                "screened": {k: len(v) for k, v in screened.items()},
                "screen_best_us": {k: v[0][0] if v else None for k, v in screened.items()},
                "rejected": [str(k) for k, v in errors.items() if v >= 1e-2], "final": rows,
                "seconds": time.time() - t0}
        report.append(line)
        torch_us = next(r["us"] for r in rows if r["set"] == "torch")
        best_engine = min((r["us"] for r in rows if r["set"] == "engine"), default=None)
        print(f"{name:>8} torch {torch_us:7.1f} us | engine best {best_engine} | overall best {rows[0]['us']:7.1f} "
              f"({rows[0]['set']} {rows[0]['config']}) | counts {line['counts']} screened {line['screened']} | "
              f"{line['seconds']:.0f} s", flush=True)
        for r in rows[:8]:
            print(f"    {r['set']:>6} {r['us']:7.1f} us {r['config']}", flush=True)
        p = None   # frees its 0.5-1 GB before the next product
        torch.cuda.empty_cache()
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "lt_search_49k.json"), "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
