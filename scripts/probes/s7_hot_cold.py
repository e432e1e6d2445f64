"""Session 7 probe (PERF_NOTES call 3): us per BERT-Large product at 384 rows, PyTorch's call in a CUDA graph of 24,
weights from L2 (one copy) against from memory (24 copies). Run from the repository root."""
import torch
from torch.cuda import Event

for name, (N, K) in {"qkv": (3072, 1024), "attn_out": (1024, 1024), "ffn_in": (4096, 1024),
                     "ffn_out": (1024, 4096)}.items():
    a = torch.randn(384, K, device="cuda").half()
    out = torch.empty(384, N, device="cuda").half()
    ws = [(torch.randn(N, K, device="cuda") / 32).half() for _ in range(24)]
    b = torch.randn(N, device="cuda").half()
    res = {}
    for label, seq in (("hot", [ws[0]] * 24), ("cold", ws)):
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            for w in seq:
                torch.addmm(b, a, w.t(), out=out)
            g = torch.cuda.CUDAGraph()
            g.capture_begin()
            for w in seq:
                torch.addmm(b, a, w.t(), out=out)
            g.capture_end()
            t = []
            for _ in range(20):
                e0, e1 = Event(enable_timing=True), Event(enable_timing=True)
                e0.record()
                g.replay()
                e1.record()
                e1.synchronize()
                t.append(e0.elapsed_time(e1))
            res[label] = sorted(t)[10] * 1e3 / 24
    print(f"{name}: hot {res['hot']:.2f} us, cold {res['cold']:.2f} us")
