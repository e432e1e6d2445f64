"""Execution backends for native engines: CPU (numpy) and GPU (PyTorch + Triton)."""
