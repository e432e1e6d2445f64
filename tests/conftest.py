"""Shared test fixtures: where the repo and the optional shared data are, and the fixture's TF checkpoint unpacked.

The shared data folder (`../shared` beside the repo: SQuAD files, the minilm-l6-squad11 fixture) is optional;
tests that need it skip cleanly when it is absent.
"""
import lzma
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "minilm-l6-squad11"
sys.path.insert(0, str(ROOT))


def shared_dir():
    """The shared data folder beside the repo, or None when it is absent."""
    path = ROOT.parent / "shared"
    return path if path.is_dir() else None


def shared_path(*parts):
    """A path inside the shared folder; skips the calling test when it does not exist."""
    base = shared_dir()
    path = base.joinpath(*parts) if base is not None else None
    if path is None or not path.exists():
        pytest.skip(f"shared data not available: {'/'.join(parts)}")
    return path


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def fixture_dir():
    """The minilm-l6-squad11 fixture folder (config, vocab, tf/, reference/)."""
    return shared_path("fixtures", "minilm-l6-squad11")


@pytest.fixture(scope="session")
def fixture_ckpt(fixture_dir, tmp_path_factory):
    """The fixture's TensorFlow checkpoint with its data file decompressed; returns the checkpoint prefix (str)."""
    folder = tmp_path_factory.mktemp("fixture_tf")
    for source in (fixture_dir / "tf").iterdir():
        if source.suffix == ".xz":
            with lzma.open(source, "rb") as src, open(folder / source.stem, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        else:
            shutil.copyfile(source, folder / source.name)
    return str(folder / "model.ckpt")
