"""Shared test fixtures: where the repo and the optional shared data are, and the fixture's TF checkpoint unpacked.

The shared data folder (`../shared` beside the repo, or $BERT_SHARED_DATA: SQuAD files, the minilm-l6-squad11
fixture) is optional: the repo ships copies of the SQuAD v1.1 dev set and the uncased vocabulary, and tests that
need anything else from it skip cleanly when it is absent.
"""
import importlib.util
import lzma
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "minilm-l6-squad11"
sys.path.insert(0, str(ROOT))


def load_script(name):
    """scripts/NAME.py as a module (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_dir():
    """The shared data folder ($BERT_SHARED_DATA, else `shared` beside the repo), or None when it is absent."""
    path = Path(os.environ.get("BERT_SHARED_DATA") or ROOT.parent / "shared")
    return path if path.is_dir() else None


# Shared files the repo ships byte-identical copies of (test_shipped_copies_equal_the_shared_files checks it):
# tests that need only these run on any clone.
SHIPPED_COPIES = {("data", "squad", "dev-v1.1.json"): ROOT / "squad" / "dev-v1.1.json",
                  ("data", "vocab", "bert-base-uncased-vocab.txt"): MODEL_DIR / "vocab.txt"}


def shared_path(*parts):
    """A path inside the shared folder, else the repo's copy of it; skips the calling test when neither exists."""
    base = shared_dir()
    path = base.joinpath(*parts) if base is not None else None
    if path is not None and path.exists():
        return path
    if parts in SHIPPED_COPIES and SHIPPED_COPIES[parts].exists():
        return SHIPPED_COPIES[parts]
    pytest.skip(f"shared data not available: {'/'.join(parts)}")


def load_fixture_model():
    """(config, canonical weights) of the minilm-l6-squad11 fixture shipped in models/; skips when it is absent."""
    from helpers.config import load_config
    from helpers.weights import load_hf_folder
    if not (MODEL_DIR / "model.safetensors").is_file():
        pytest.skip("models/minilm-l6-squad11 is not available")
    return load_config(MODEL_DIR), load_hf_folder(MODEL_DIR)


def random_weights(config, seed):
    """A canonical weight map with every tensor random: no zero bias or unit gain can hide a missing term."""
    from helpers.weights import required_shapes
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in required_shapes(config).items():
        if name.endswith("_gamma"):
            weights[name] = (1.0 + 0.2 * rng.standard_normal(shape)).astype(np.float32)
        elif name.endswith(("_beta", "_bias")):
            weights[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            scale = 0.5 if "embeddings" in name else 1.0 / np.sqrt(shape[-1])
            weights[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return weights


def random_inputs(config, batch, seq, seed, lengths=None):
    """int32 (batch, seq) token ids, segment ids and an input mask of `lengths` real tokens (random when None)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, config.vocab_size, (batch, seq)).astype(np.int32)
    segs = rng.integers(0, config.type_vocab_size, (batch, seq)).astype(np.int32)
    if lengths is None:
        lengths = rng.integers(1, seq + 1, batch)
    assert len(lengths) == batch
    mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
    return ids, segs, mask


@pytest.fixture(scope="module")
def fixture_model():
    """The shipped fixture model as (config, weights); module-scoped so no test module sees another's changes."""
    return load_fixture_model()


@pytest.fixture(scope="module")
def trt():
    """The stand-in `tensorrt` module, for the TensorRT tests that ask for it; removed again after the module
    (see tests/trt_support.py's standin_module)."""
    from trt_support import standin_module
    yield from standin_module()


@pytest.fixture(scope="session")
def fixture_dir():
    """The minilm-l6-squad11 fixture folder (config, vocab, tf/, reference/)."""
    return shared_path("fixtures", "minilm-l6-squad11")


@pytest.fixture(scope="session")
def fixture_ckpt(fixture_dir, tmp_path_factory):
    """The fixture's TensorFlow checkpoint with its data file decompressed; returns the checkpoint prefix (str)."""
    tf_dir = shared_path("fixtures", "minilm-l6-squad11", "tf")   # a copy of the fixture may leave it out
    folder = tmp_path_factory.mktemp("fixture_tf")
    for source in tf_dir.iterdir():
        if source.suffix == ".xz":
            with lzma.open(source, "rb") as src, open(folder / source.stem, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        else:
            shutil.copyfile(source, folder / source.name)
    return str(folder / "model.ckpt")
