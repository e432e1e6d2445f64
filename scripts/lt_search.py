#!/usr/bin/env python3
"""Probe: how much faster than PyTorch's cuBLAS call can any cuBLASLt configuration run BERT-Large's products?

Three candidate sets per product shape, each timed in a CUDA graph over 24 weight copies (one per layer):
  heur   cuBLASLt's heuristic, best-fit mode (what the engine's tuning times now)
  byid   the heuristic limited to each algorithm id in turn (CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID)
  enum   every tile x stages x split-K x reduction x swizzle x custom option x cluster shape that AlgoCheck accepts
         (capped per shape), for the few-row shapes
"""
import ctypes
import itertools
import json
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from helpers.backends import cublaslt as L  # noqa: E402
from helpers.backends.gpu import _rel_err, _signature  # noqa: E402

vp, i32, u32, u16, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_uint16, ctypes.c_size_t
CAP_SPLITK, CAP_RED, CAP_SWZ, CAP_TILES, CAP_CUSTOM, CAP_STAGES = 0, 1, 2, 6, 7, 13
CFG_ID, CFG_TILE, CFG_SPLITK, CFG_RED, CFG_SWZ, CFG_CUSTOM, CFG_STAGES, CFG_INNER, CFG_CLUSTER = range(9)
CLUSTERS = (0, 2, 3, 5, 4, 7)   # auto, 1x1x1, 2x1x1, 1x2x1, 4x1x1, 4x2x1


def bind(lib):
    A = ctypes.POINTER(L._Algo)
    sigs = {"cublasLtMatmulAlgoGetIds": [vp, i32, i32, i32, i32, i32, i32, i32, ctypes.POINTER(i32),
                                         ctypes.POINTER(i32)],
            "cublasLtMatmulAlgoInit": [vp, i32, i32, i32, i32, i32, i32, i32, A],
            "cublasLtMatmulAlgoCapGetAttribute": [A, i32, vp, sz, ctypes.POINTER(sz)],
            "cublasLtMatmulAlgoConfigSetAttribute": [A, i32, vp, sz],
            "cublasLtMatmulAlgoConfigGetAttribute": [A, i32, vp, sz, ctypes.POINTER(sz)],
            "cublasLtMatmulAlgoCheck": [vp, vp, vp, vp, vp, vp, A, ctypes.POINTER(L._Heuristic)]}
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


class Shape:
    def __init__(self, lt, M, N, K, epilogue, accumulate, layers=24):
        self.lt, self.M, self.N, self.K, self.epilogue, self.accumulate = lt, M, N, K, epilogue, accumulate
        g = torch.Generator(device="cuda").manual_seed(0)
        self.a = torch.randn(M, K, device="cuda", dtype=torch.float16, generator=g)
        self.ws = [torch.randn(N, K, device="cuda", dtype=torch.float16, generator=g) * 0.03 for _ in range(layers)]
        self.wts = [w.t() for w in self.ws]
        self.bs = [torch.randn(N, device="cuda", dtype=torch.float16, generator=g) for _ in range(layers)]
        self.out = torch.empty(M, N, device="cuda", dtype=torch.float16)
        self.res = torch.randn(M, N, device="cuda", dtype=torch.float16, generator=g)
        self.w_layout, self.a_layout = lt._layout(K, N, K), lt._layout(K, M, K)
        self.d_layout = lt._layout(N, M, N)
        self.descs = [lt._desc(epilogue, b) for b in self.bs]

    def torch_call(self, i):
        w, b = self.wts[i], self.bs[i]
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

    def reference(self):
        self.res_copy()
        self.torch_call(0)
        return _signature(self.out)

    def res_copy(self):
        self.out.copy_(self.res)

    def signature(self, algo, wsize):
        self.res_copy()
        self.lt_call(algo, wsize, 0)
        return _signature(self.out)

    def time(self, calls, replays):
        calls()
        graph = torch.cuda.CUDAGraph()
        graph.capture_begin()
        try:
            calls()
        finally:
            graph.capture_end()
        graph.replay()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        ts = []
        for _ in range(replays):
            s.record()
            graph.replay()
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e))
        return 1e3 * sorted(ts)[len(ts) // 2] / len(self.ws)


def heuristic(lt, shape, limit=16, algo_id=None):
    lib = lt.lib
    pref = vp()
    L._check(lib.cublasLtMatmulPreferenceCreate(ctypes.byref(pref)), "pref")
    lb = ctypes.c_uint64(L.WORKSPACE_BYTES)
    lib.cublasLtMatmulPreferenceSetAttribute(pref, 1, ctypes.byref(lb), 8)
    results = (L._Heuristic * limit)()
    if algo_id is not None:
        mode = u32(1)
        lib.cublasLtMatmulPreferenceSetAttribute(pref, 0, ctypes.byref(mode), 4)
        for r in results:
            lib.cublasLtMatmulAlgoInit(lt.handle, 68, 0, 2, 2, 2, 2, algo_id, ctypes.byref(r.algo))
    count = i32(0)
    st = lib.cublasLtMatmulAlgoGetHeuristic(lt.handle, shape.descs[0], shape.w_layout, shape.a_layout,
                                            shape.d_layout, shape.d_layout, pref, limit, results, ctypes.byref(count))
    lib.cublasLtMatmulPreferenceDestroy(pref)
    if st != 0:
        return []
    return [(r.algo, r.workspace_size) for r in results[:count.value] if r.state == 0]


def enumerate_configs(lt, shape, ids, splits_too):
    """Every configuration AlgoCheck accepts for the algorithms `ids`: each tile they offer, with each cluster
    shape and custom option (stages left to the library), split-K too where asked."""
    lib = lt.lib
    found, checked = [], 0
    for algo_id in ids:
        base = L._Algo()
        if lib.cublasLtMatmulAlgoInit(lt.handle, 68, 0, 2, 2, 2, 2, algo_id, ctypes.byref(base)) != 0:
            continue
        redmask = cap_scalar(lib, base, CAP_RED)
        custom = cap_scalar(lib, base, CAP_CUSTOM, i32)
        stages = cap_array(lib, base, CAP_STAGES)
        stage = 35 if 35 in stages else (stages[0] if stages else 0)
        splits = [(1, 0)] + ([(s, 2) for s in (2, 3, 4)] if splits_too and redmask & 2 else [])
        for tile in cap_array(lib, base, CAP_TILES) or [0]:
            for (sk, red), cu, cl in itertools.product(splits, range(custom + 1), CLUSTERS):
                algo = L._Algo()
                ctypes.memmove(ctypes.byref(algo), ctypes.byref(base), ctypes.sizeof(algo))
                ok = (set_cfg(lib, algo, CFG_TILE, tile, u32) == 0 and set_cfg(lib, algo, CFG_STAGES, stage, u32) == 0
                      and set_cfg(lib, algo, CFG_SPLITK, sk, i32) == 0 and set_cfg(lib, algo, CFG_RED, red, u32) == 0
                      and set_cfg(lib, algo, CFG_CUSTOM, cu, u32) == 0 and set_cfg(lib, algo, CFG_CLUSTER, cl, u16) == 0)
                checked += 1
                if not ok:
                    continue
                res = L._Heuristic()
                if lib.cublasLtMatmulAlgoCheck(lt.handle, shape.descs[0], shape.w_layout, shape.a_layout,
                                               shape.d_layout, shape.d_layout, ctypes.byref(algo),
                                               ctypes.byref(res)) != 0:
                    continue
                if res.workspace_size <= L.WORKSPACE_BYTES:
                    found.append((algo, res.workspace_size))
    random.Random(0).shuffle(found)
    return found, f"{len(found)} valid of {checked} checked"


def main():
    enum_ids = [int(i) for i in os.environ.get("ENUM_IDS", "66").split(",")]
    byid_limit = int(os.environ.get("BYID_LIMIT", "3"))
    enum_seconds = float(os.environ.get("ENUM_SECONDS", "40"))
    skip_byid = os.environ.get("SKIP_BYID") == "1"
    rows = [int(r) for r in os.environ.get("ROWS", "384,49152").split(",")]
    lt = L.LtProducts("cuda")
    bind(lt.lib)
    torch.cuda.set_stream(torch.cuda.Stream())
    ids = (i32 * 512)()
    n = i32(0)
    L._check(lt.lib.cublasLtMatmulAlgoGetIds(lt.handle, 68, 0, 2, 2, 2, 2, 512, ids, ctypes.byref(n)), "GetIds")
    ids = list(ids[:n.value])
    print("algo ids:", ids, flush=True)
    report = []
    products = [("qkv", 3072, 1024, "bias", False), ("attn_out", 1024, 1024, "none", True),
                ("ffn_in", 4096, 1024, "gelu_bias", False), ("ffn_out", 1024, 4096, "none", True)]
    for M in rows:
        replays = 20 if M < 4096 else 5
        for name, N, K, epi, acc in products:
            t0 = time.time()
            shape = Shape(lt, M, N, K, epi, acc)
            ref = shape.reference()
            torch_us = shape.time(lambda: [shape.torch_call(i) for i in range(24)], replays)
            sets = {"heur": heuristic(lt, shape)}
            byid = []
            for algo_id in ([] if skip_byid else ids):
                byid += heuristic(lt, shape, 16 if M < 4096 else byid_limit, algo_id)
            sets["byid"] = byid
            total = ""
            if M < 4096:
                sets["enum"], total = enumerate_configs(lt, shape, enum_ids, acc)
            best, seen = {}, set()
            for set_name, cands in sets.items():
                timed, deadline = [], time.time() + enum_seconds
                for algo, wsize in cands:
                    if time.time() > deadline:
                        break
                    key = tuple(describe(lt.lib, algo).values())
                    if key in seen:
                        continue
                    seen.add(key)
                    try:
                        if _rel_err(shape.signature(algo, wsize), ref) > 1e-2:
                            continue
                        us = shape.time(lambda: [shape.lt_call(algo, wsize, i) for i in range(24)], replays)
                    except Exception:   # noqa: BLE001 - a configuration that does not run
                        torch.cuda.synchronize()
                        continue
                    timed.append((us, describe(lt.lib, algo)))
                timed.sort(key=lambda t: t[0])
                best[set_name] = {"n": len(cands), "timed": len(timed), "top": timed[:5]}
            line = {"M": M, "product": name, "torch_us": torch_us, "enum_total": total, **best,
                    "seconds": time.time() - t0}
            report.append(line)
            print(f"{name:>8} M={M:<6} torch {torch_us:8.2f} us | " + " | ".join(
                f"{k} {v['top'][0][0]:8.2f} us ({v['timed']}/{v['n']}) {v['top'][0][1]}" if v["top"] else f"{k} none"
                for k, v in best.items()) + f" | enum {total} | {time.time() - t0:.1f} s", flush=True)
            torch.cuda.empty_cache()
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "lt_search.json"), "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
