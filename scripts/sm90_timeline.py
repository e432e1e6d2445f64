"""Per-CTA timeline of the sm90 product (globaltimer stamps at fixed points, written to the workspace)."""
import ctypes
import sys

import torch

sys.path.insert(0, ".")
from helpers.backends import sm90_gemm as g  # noqa: E402
sys.path.insert(0, "scripts")
from sm90_probe import PATCHES  # noqa: E402,F401

STAMP = ('{ unsigned long long now; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now)); '
         'if (threadIdx.x == 128) ((unsigned long long*)workspace)[((blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x '
         '+ blockIdx.x) * 8 + IDX] = now; }')
POINTS = [
    ("    const int warpgroup = threadIdx.x / 128;\n", 0, "after"),
    ("        barrier_wait(full + 8 * s, (i / STAGES) & 1);\n", 1, "after_first"),
    ('    asm volatile("griddepcontrol.launch_dependents;");\n', 2, "after"),
    ("    const int lanes_per_row = BLOCK_N / 8, t = threadIdx.x % 128, c = 8 * (t % lanes_per_row);\n", 3, "before_x"),
]


def source(block_n, epilogue):
    src = g.kernel_source(block_n, epilogue)
    for anchor, idx, where in POINTS:
        assert anchor in src, anchor
        stamp = STAMP.replace("IDX", str(idx))
        if where == "after":
            src = src.replace(anchor, anchor + "    " + stamp + "\n", 1)
        elif where == "after_first":
            src = src.replace(anchor, anchor + "        if (i == 0) " + stamp + "\n", 1)
    # the epilogue's start (after staging) and end
    staged_sync = '        asm volatile("bar.sync 3, 128;" ::: "memory");\n'
    assert staged_sync in src
    src = src.replace(staged_sync, staged_sync + "    " + STAMP.replace("IDX", "3") + "\n", 1)
    end = src.rindex("}")
    src = src[:end] + "    " + STAMP.replace("IDX", "4") + "\n" + src[end:]
    return src


def load(products, block_n, epilogue):
    src = source(block_n, epilogue)
    nvrtc = g.load_nvrtc()
    prog = ctypes.c_void_p()
    nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), b"t.cu", 0, None, None)
    opts = [b"--gpu-architecture=sm_90a", b"-std=c++17"]
    status = nvrtc.nvrtcCompileProgram(prog, 2, (ctypes.c_char_p * 2)(*opts))
    if status:
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(prog, log)
        raise SystemExit(log.value.decode())
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
    cases = [(384, 3072, 1024, 128, 1, "bias"), (384, 1024, 4096, 128, 4, "partials"),
             (384, 4096, 1024, 128, 1, "gelu_bias"), (49152, 3072, 1024, 256, 1, "bias")]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for M, N, K, bn, splits, epi in cases:
            a = torch.randn(M, K, device=dev, dtype=torch.float16)
            ws = [torch.randn(N, K, device=dev, dtype=torch.float16) / 32 for _ in range(4)]
            bias = torch.randn(N, device=dev, dtype=torch.float16)
            out = torch.empty((splits, M, N) if epi == "partials" else (M, N), device=dev,
                              dtype=torch.float32 if epi == "partials" else torch.float16)
            load(products, bn, epi)
            plan = g.Sm90Plan(bn, splits, products)
            stamps = products.workspace.view(torch.int64)
            for w in ws:   # warm
                plan.run(a, w, bias, out, epilogue=epi)
            stamps.zero_()
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            plan.run(a, ws[1], bias, out, epilogue=epi)
            end.record()
            torch.cuda.synchronize()
            ctas = (N // bn) * -(-M // 128) * splits
            t = stamps[:ctas * 8].view(ctas, 8)[:, :5].cpu().double() / 1000.0   # us
            t0 = t[:, 0].min()
            rel = t - t0
            med = rel.median(dim=0).values
            print(f"M{M} N{N} K{K} n{bn} s{splits} {epi}: event {start.elapsed_time(end) * 1e3:.2f} us, "
                  f"{ctas} CTAs; span {(t[:, 4].max() - t0).item():.2f}; start spread {rel[:, 0].max().item():.2f}; "
                  f"median stamps (entry, first data, mainloop end, staged, end) "
                  f"{', '.join(f'{v:.2f}' for v in med.tolist())}; max {', '.join(f'{v:.2f}' for v in rel.max(dim=0).values.tolist())}",
                  flush=True)
            products._functions.clear()


if __name__ == "__main__":
    main()
