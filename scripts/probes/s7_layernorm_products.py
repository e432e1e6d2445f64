"""Session 7 probe (PERF_NOTES call 5): BERT-Large's products that feed a LayerNorm at 49,152 rows, accumulated into
the residual in place (the engine's way) against a plain product into another buffer and a LayerNorm that adds
the residual; interleaved rounds (gpu.graphs_ms). Run from the repository root."""
import sys

import torch

sys.path.insert(0, ".")
from helpers.backends import gpu_kernels as K  # noqa: E402
from helpers.backends.cublaslt import LtProducts  # noqa: E402
from helpers.backends.gpu import graphs_ms  # noqa: E402

T, E = 49152, 1024
g, bt = torch.rand(E, device="cuda") + 0.5, torch.randn(E, device="cuda")
with torch.cuda.stream(torch.cuda.Stream()):
    lt = LtProducts(torch.device("cuda"))
    for name, Kd in (("attn_out", 1024), ("ffn_out", 4096)):
        a = (torch.randn(T, Kd, device="cuda") / 4).half()
        y = torch.randn(T, E, device="cuda").half()
        o = torch.empty(T, E, device="cuda").half()
        ws = [((torch.randn(E, Kd, device="cuda") / 256).half(), torch.randn(E, device="cuda").half())
              for _ in range(24)]
        runs = {
            "in-place+LN1": lambda: [(y.addmm_(a, w.t()), K.add_layernorm(y, None, b, g, bt, 1e-12, out=o))
                                     for w, b in ws],
            "beta0-bias+LN2": lambda: [(torch.addmm(b, a, w.t(), out=o), K.add_layernorm(o, y, None, g, bt, 1e-12,
                                                                                          out=o)) for w, b in ws],
            "out-of-place-acc+LN1": lambda: [(torch.addmm(y, a, w.t(), out=o),
                                              K.add_layernorm(o, None, b, g, bt, 1e-12, out=o)) for w, b in ws],
            "product-only-in-place": lambda: [y.addmm_(a, w.t()) for w, b in ws],
            "product-only-beta0": lambda: [torch.mm(a, w.t(), out=o) for w, b in ws],
        }
        for i, p in enumerate(lt.candidates(T, E, Kd, "bias", ws[0][1])[:8]):
            runs[f"lt-bias#{i}+LN2"] = lambda p=p: [(lt.run(p, a, w, b, o),
                                                     K.add_layernorm(o, y, None, g, bt, 1e-12, out=o)) for w, b in ws]
        for k, v in sorted(graphs_ms(runs, rounds=3, replays=3).items(), key=lambda kv: kv[1]):
            print(f"{name} {k:>24}: {v * 1e3 / 24:8.1f} us")
