"""builder.py and builder_varseqlen.py themselves, with `tensorrt` importable (the stand-in): the scripts take the
TensorRT path, write the plan atomically, and the plan computes the reference logits."""
import numpy as np
import pytest
from conftest import MODEL_DIR, load_fixture_model
from trt_support import StandinEngine, pack, sample_inputs

from helpers.errors import BertError
from helpers.reference import Numerics, forward


def test_builder_script_builds_a_tensorrt_plan(trt, tmp_path, capsys):
    import builder
    config, weights = load_fixture_model()
    out = tmp_path / "bert.plan"
    assert builder.main(["-pt", str(MODEL_DIR), "-c", str(MODEL_DIR), "-o", str(out), "-b", "2", "-s", "24"]) == 0
    printed = capsys.readouterr().out
    assert "Saving Engine to" in printed and printed.endswith("Done.\n")
    ids, segs, mask = sample_inputs(config, lengths=[24, 11], seq_len=24)
    logits = StandinEngine(trt, out.read_bytes()).run_fixed(ids, segs, mask)
    expected = forward(weights, config, ids, segs, mask, numerics=Numerics.demobert("fp32"))
    assert np.abs(logits[mask == 1] - expected[mask == 1]).max() < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert.plan"]  # no temporary file left behind


def test_builder_varseqlen_script_builds_a_tensorrt_plan(trt, tmp_path):
    import builder_varseqlen
    config, weights = load_fixture_model()
    out = tmp_path / "bert_var.plan"
    assert builder_varseqlen.main(["-pt", str(MODEL_DIR), "-c", str(MODEL_DIR), "-o", str(out), "-b", "3",
                                   "-s", "32", "--fp16"]) == 0
    ids, segs, mask = sample_inputs(config, lengths=[32, 5, 17], seq_len=32)
    packed = StandinEngine(trt, out.read_bytes()).run_packed(*pack(ids, segs, mask))
    expected = forward(weights, config, ids, segs, mask, numerics=Numerics.demobert("fp16"))
    assert np.abs(packed.T - expected[mask == 1]).max() < 1e-4


def test_native_backend_can_still_be_chosen(trt, tmp_path):
    import builder
    from helpers.engine_format import engine_kind
    out = tmp_path / "native.engine"
    assert builder.main(["--backend", "native", "-pt", str(MODEL_DIR), "-c", str(MODEL_DIR), "-o", str(out),
                         "-s", "16"]) == 0
    assert engine_kind(out) == "native"


def test_tensorrt_engines_refuse_the_models_own_numerics(trt, tmp_path):
    import builder
    with pytest.raises(BertError, match="--numerics model: TensorRT engines compute demoBERT's numerics"):
        builder.main(["-pt", str(MODEL_DIR), "-c", str(MODEL_DIR), "-o", str(tmp_path / "x.plan"),
                      "--numerics", "model"])
    assert not list(tmp_path.iterdir())
