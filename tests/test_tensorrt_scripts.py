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


@pytest.mark.parametrize("cache, pattern", [("{tmp}/nodir/tc.bin", "timing cache \\(-tcf\\) folder does not exist"),
                                            ("{tmp}", "timing cache \\(-tcf\\) path is a directory")])
def test_a_timing_cache_path_is_checked_before_the_build(trt, tmp_path, monkeypatch, capsys, cache, pattern):
    """A TensorRT build writes its timing cache after the build (minutes for BERT-Large): a path that cannot take
    it is refused before the weights load."""
    import builder
    monkeypatch.setattr(trt, "Builder", None)   # any build would fail loudly
    with pytest.raises(BertError, match=pattern):
        builder.main(["-pt", str(MODEL_DIR), "-c", str(MODEL_DIR), "-o", str(tmp_path / "x.plan"), "-s", "16",
                      "-tcf", cache.format(tmp=tmp_path)])
    assert "Found" not in capsys.readouterr().out and not (tmp_path / "x.plan").exists()


def test_a_calibration_cache_is_checked_before_the_calibration_build(trt, tmp_path, monkeypatch):
    """INT8 calibration writes its cache when there is none: a path that cannot take it is refused before that
    build; an existing cache is only read, so a read-only place for it is fine (checked in trt_builder, which knows
    whether it exists)."""
    import builder
    from helpers import trt_builder
    monkeypatch.setattr(trt_builder, "build_fixed", None)   # any build would fail loudly
    with pytest.raises(BertError, match="calibration cache \\(-p\\) folder does not exist"):
        builder.main(["-pt", str(MODEL_DIR), "-c", str(MODEL_DIR), "-o", str(tmp_path / "x.plan"), "-s", "16",
                      "--int8", "-p", str(tmp_path / "nodir" / "calib.cache")])
    assert not (tmp_path / "x.plan").exists()


def test_a_repeated_batch_size_counts_once_in_both_backends(trt, tmp_path):
    """-b 4 -b 4 is -b 4: a static batch for TensorRT (no profile) and one profile of batch 4 for the native
    engine; before, the native engine got two identical dynamic profiles and TensorRT a static network."""
    import builder
    from helpers.engine_format import EngineFile
    assert builder.main(["--backend", "native", "-pt", str(MODEL_DIR), "-c", str(MODEL_DIR), "-o",
                         str(tmp_path / "n.engine"), "-b", "4", "-b", "4", "-s", "16", "-s", "16"]) == 0
    assert [(p.batch, p.seq) for p in EngineFile.load(tmp_path / "n.engine").profiles] == [((4, 4, 4), (16, 16, 16))]
    assert builder.main(["-pt", str(MODEL_DIR), "-c", str(MODEL_DIR), "-o", str(tmp_path / "t.plan"),
                         "-b", "4", "-b", "4", "-s", "16"]) == 0
    engine = StandinEngine(trt, (tmp_path / "t.plan").read_bytes()).engine
    assert tuple(engine.get_tensor_shape("input_ids")) == (4, 16)   # static: the same network as a single -b 4
