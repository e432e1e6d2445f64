"""The Hopper product's CUDA source (helpers/backends/sm90_gemm.cu) compiles for sm_90a with NVRTC, every variant
the GPU runner may launch, without spilling registers. Needs no GPU: NVRTC is a library (the nvidia-cuda-nvrtc
wheel of the test extra); tests/test_gpu.py runs the kernels on an H200."""
import re

import pytest

pytest.importorskip("torch")
from helpers.backends import sm90_gemm  # noqa: E402
from helpers.errors import BertError  # noqa: E402


@pytest.fixture(scope="module")
def nvrtc():
    try:
        return sm90_gemm.load_nvrtc()
    except BertError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("block_n", [128, 256])
@pytest.mark.parametrize("epilogue", list(sm90_gemm.EPILOGUES))
def test_every_variant_compiles_without_spills(nvrtc, block_n, epilogue):
    log = []
    cubin = sm90_gemm.compile_cubin(block_n, epilogue, log_to=log)
    assert cubin[:4] == b"\x7fELF"
    assert "Compiling entry function 'sm90_gemm' for 'sm_90a'" in log[0]
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log[0])
    assert spills == [("0", "0")], log[0]
    assert "warning" not in log[0].lower(), log[0]


def test_shared_memory_fits_hopper():
    for block_n in (128, 256):
        assert sm90_gemm.stages_for(block_n) >= 3
        assert sm90_gemm.shared_bytes(block_n) <= sm90_gemm.SHARED_MEMORY_LIMIT
        # the epilogue stages both consumers' 64 x (block_n + 8) float32 tiles in the pipeline's stages
        stage_bytes = (sm90_gemm.BLOCK_M + block_n) * sm90_gemm.BLOCK_K * 2
        assert 2 * 64 * (block_n + 8) * 4 <= sm90_gemm.stages_for(block_n) * stage_bytes
