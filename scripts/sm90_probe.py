"""Where the sm90 product's time goes: the kernel with parts removed (wgmma, TMA, epilogue), timed in CUDA graphs of
24 launches over 24 weight matrices (as the runner's tuning times products), beside PyTorch's product."""
import ctypes
import sys

import torch

sys.path.insert(0, ".")
from helpers.backends import sm90_gemm as g  # noqa: E402
from helpers.backends.gpu import graph_ms  # noqa: E402

PATCHES = {
    "full": [],
    "no_mma": [("wgmma_m64k16(acc, a_desc + 2 * kk, w_desc + 2 * kk, (i > 0 || kk > 0) ? 1 : 0);", ";")],
    "no_tma": [("barrier_expect_bytes(full + 8 * i, STAGE_BYTES);", "barrier_arrive(full + 8 * i);"),
               ("barrier_expect_bytes(bar, STAGE_BYTES);", "barrier_arrive(bar);"),
               ("tma_load(stages + i * STAGE_BYTES + A_STAGE_BYTES, &map_w, full + 8 * i, (kb_begin + i) * BLOCK_K, n0);", ""),
               ("tma_load(stage + A_STAGE_BYTES, &map_w, bar, k, n0);", ""),
               ("tma_load(stage, &map_a, bar, k, m0);", "")],
    "no_epi": [('asm volatile("griddepcontrol.launch_dependents;");', 'asm volatile("griddepcontrol.launch_dependents;"); return;')],
}
PATCHES["no_store"] = [("*(uint4*)((f16*)out + (size_t)row * N + col) =", "if (v[0] == 12345.f) *(uint4*)((f16*)out + (size_t)row * N + col) =")]
PATCHES["no_mma_no_tma"] = PATCHES["no_mma"] + PATCHES["no_tma"]
PATCHES["no_mma_no_epi"] = PATCHES["no_mma"] + PATCHES["no_epi"]


def function(products, block_n, epilogue, variant, stages=None):
    src = g.kernel_source(block_n, epilogue)
    if stages:
        src = src.replace(f"#define STAGES {g.stages_for(block_n)}", f"#define STAGES {stages}")
    for old, new in PATCHES[variant]:
        assert old in src, (variant, old)
        src = src.replace(old, new)
    nvrtc = g.load_nvrtc()
    prog = ctypes.c_void_p()
    nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"p.cu", 0, None, None)
    opts = [b"--gpu-architecture=sm_90a", b"-std=c++17"]
    assert nvrtc.nvrtcCompileProgram(prog, 2, (ctypes.c_char_p * 2)(*opts)) == 0, variant
    size = ctypes.c_size_t()
    nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(size))
    cubin = ctypes.create_string_buffer(size.value)
    nvrtc.nvrtcGetCUBIN(prog, cubin)
    module, fn = ctypes.c_void_p(), ctypes.c_void_p()
    g._check(g._driver().cuModuleLoadData(ctypes.byref(module), cubin.raw), "load")
    g._check(g._driver().cuModuleGetFunction(ctypes.byref(fn), module, b"sm90_gemm"), "get")
    g._check(g._driver().cuFuncSetAttribute(fn, g._FUNC_MAX_DYNAMIC_SHARED, g.shared_bytes(block_n)), "attr")
    products._functions[(block_n, epilogue)] = (module, fn)


def main():
    dev = torch.device("cuda")
    products = g.Sm90Products(dev)
    stream = torch.cuda.Stream()
    cases = [(384, 3072, 1024, 128, 1, "bias"), (384, 3072, 1024, 256, 1, "bias"), (384, 3072, 1024, 128, 2, "bias"),
             (384, 1024, 4096, 128, 4, "partials"), (384, 4096, 1024, 128, 1, "gelu_bias"),
             (49152, 3072, 1024, 256, 1, "bias"), (49152, 3072, 1024, 128, 1, "bias")]
    with torch.cuda.stream(stream):
        for M, N, K, bn, splits, epi in cases:
            a = torch.randn(M, K, device=dev, dtype=torch.float16)
            ws = [torch.randn(N, K, device=dev, dtype=torch.float16) / 32 for _ in range(24)]
            bias = torch.randn(N, device=dev, dtype=torch.float16)
            out = torch.empty((splits, M, N) if epi == "partials" else (M, N), device=dev,
                              dtype=torch.float32 if epi == "partials" else torch.float16)
            t = graph_ms(lambda: [torch.addmm(bias, a, w.t(), out=out if epi != "partials" else out[0].half())
                                  for w in ws]) if epi != "partials" else graph_ms(lambda: [torch.mm(a, w.t()) for w in ws])
            print(f"M{M} N{N} K{K} n{bn} s{splits} {epi}: torch {1e3 * t / 24:.2f}", end="", flush=True)
            plan = g.Sm90Plan(bn, splits, products)
            variants = [("full", None), ("no_epi", None), ("no_mma", None), ("no_mma_no_epi", None)]
            if epi != "partials":
                variants.append(("no_store", None))
            variants += [("full", st) for st in ((3, 4, 5) if bn == 128 else (3,))]
            variants += [("no_tma", None), ("no_mma_no_tma", None)]
            for variant, stages in variants:
                function(products, bn, epi, variant, stages)
                print(f", {variant}{'' if stages is None else f'/st{stages}'} ", end="", flush=True)
                plan.run(a, ws[0], bias, out, epilogue=epi)
                torch.cuda.synchronize()
                if variant == "full" and stages is None:
                    ref = a.float() @ ws[0].float().t()
                    got = out.float().sum(0) if epi == "partials" else out.float()
                    if epi != "partials":
                        ref += bias.float()
                    if epi == "gelu_bias":
                        ref = torch.nn.functional.gelu(ref, approximate="tanh")
                    print(f"(err {((got - ref).norm() / ref.norm()).item():.1e}) ", end="", flush=True)
                t = graph_ms(lambda: [plan.run(a, w, bias, out, epilogue=epi) for w in ws])
                print(f"{1e3 * t / 24:.2f}", end="", flush=True)
            print(flush=True)
            products._functions.clear()


if __name__ == "__main__":
    main()
