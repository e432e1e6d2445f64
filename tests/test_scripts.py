"""The command-line scripts end to end on the embedded model, as a user runs them, and every bad input."""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import MODEL_DIR, ROOT, load_script, shared_path
from helpers.errors import BertError

VOCAB = str(MODEL_DIR / "vocab.txt")
VOCAB_LINES = open(VOCAB, encoding="utf-8").readlines()
PASSAGE = ("TensorRT is a high performance deep learning inference platform that delivers low latency and high "
           "throughput for apps such as recommenders, speech and image/video on NVIDIA GPUs. It includes parsers to "
           "import models, and plugins to support novel ops and layers before applying optimizations for inference. "
           "Today NVIDIA is open-sourcing parsers and plugins in TensorRT so that the deep learning community can "
           "customize and extend these components to take advantage of powerful TensorRT optimizations for your apps.")


def run(script, *args, stdin=None, check=True):
    proc = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          input=stdin, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def build(tmp, name, *flags, script="builder.py", source=("-pt", MODEL_DIR)):
    path = tmp / name
    run(script, *source, "-c", MODEL_DIR, "-o", path, *flags)
    return path


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engines")
    return {
        "fixed128": build(tmp, "fixed128.engine", "-s", "128", "-b", "1"),
        "fixed384x4": build(tmp, "fixed384x4.engine", "-s", "384", "-b", "4", "-b", "1"),
        "var384": build(tmp, "var384.engine", "-s", "384", "-b", "16", "-b", "1", script="builder_varseqlen.py"),
    }


def assert_one_line_error(proc, pattern):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and re.search(pattern, lines[0]), lines[0]


# ---- the main job ------------------------------------------------------------------------------------------------
def test_builder_prints_upstream_lines(tmp_path):
    proc = run("builder.py", "-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", tmp_path / "e.engine", "-s", "64", "--fp16")
    # 103 = 16 tensors in each of the 6 layers + 7 outside them
    assert re.search(r"Using configuration file: .*\nFound 103 entries in weight map\nbuild engine in \d+\.\d{3} Sec\n"
                     r"Saving Engine to .*e\.engine\nDone\.\n$", proc.stdout), proc.stdout


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_builder_numerics_demobert_gives_the_tensorrt_plugins_numerics(tmp_path, fixture_model, precision):
    """--numerics demobert: the native engine computes what demoBERT's TensorRT plugins do (tanh GELU, no epsilon
    in the embedding LayerNorm, the precision's epsilon in skip-LayerNorm), checked against the reference."""
    from conftest import random_inputs
    from helpers import reference
    from helpers.runtime import open_engine
    config, weights = fixture_model
    path = tmp_path / "demobert.engine"
    run("builder.py", "-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", path, "-s", "128", "--numerics", "demobert",
        *(["--fp16"] if precision == "fp16" else []))
    runner = open_engine(str(path), "cpu")
    ids, segs, mask = random_inputs(config, 2, 128, seed=41, lengths=[128, 77])
    out = runner.infer_fixed(ids, segs, mask)
    demobert = reference.forward(weights, config, ids, segs, mask, reference.Numerics.demobert(precision))
    own = reference.forward(weights, config, ids, segs, mask)
    for b, n in enumerate(mask.sum(1)):
        err = np.abs(out[b, :n] - demobert[b, :n]).max() / np.abs(demobert[b, :n]).max()
        assert err < (1e-4 if precision == "fp32" else 2e-2), err
    assert np.abs(demobert - own).max() > 1e-3   # the two numerics differ enough for the check to mean something


def test_inference_answers_the_readme_question(engines):
    proc = run("inference.py", "-e", engines["fixed128"], "-s", "128", "-v", VOCAB, "-p", PASSAGE, "-q",
               "What is TensorRT?")
    assert re.search(r"\nPassage: TensorRT is .*\n\nQuestion: What is TensorRT\?\n-{24}\nRunning inference in "
                     r"\d+\.\d{3} Sentences/Sec\n-{24}\nAnswer: 'high performance deep learning inference "
                     r"platform'\nWith probability: \d+\.\d{3}\n$", proc.stdout), proc.stdout


@pytest.mark.parametrize("space", ["\u00a0", "\u2003", "\u3000", "\u2028"])
def test_unicode_spaces_in_the_passage_separate_words(engines, space):
    """Words joined by a no-break (or other Unicode) space are separate words of the answer: upstream returned the
    whole run of them ('31 March 1889' for '1889')."""
    passage = PASSAGE.replace(" ", space)
    proc = run("inference.py", "-e", engines["fixed128"], "-s", "128", "-v", VOCAB, "-p", passage, "-q",
               "What is TensorRT?")
    assert "\nAnswer: 'high performance deep learning inference platform'\n" in proc.stdout, proc.stdout


def test_files_and_interactive_questions(engines, tmp_path):
    (tmp_path / "p.txt").write_text(PASSAGE, encoding="utf-8")
    (tmp_path / "q.txt").write_text("What does TensorRT include?", encoding="utf-8")
    proc = run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-pf", tmp_path / "p.txt",
               "-qf", tmp_path / "q.txt")
    assert "Answer: 'parsers to import models, and plugins" in proc.stdout
    proc = run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-pf", tmp_path / "p.txt",
               stdin="What is TensorRT?\n\n\u200b\nWhat does TensorRT include?\nexit\n")
    answers = re.findall(r"Answer: '(.*)'", proc.stdout)
    assert answers[0] == "high performance deep learning inference platform"
    assert answers[1].startswith("parsers to import models, and plugins") and len(answers) == 2
    # a blank line, and one the tokenizer leaves nothing of, ask again instead of ending the loop
    assert proc.stderr.splitlines() == ["error: the question is empty",
                                        "error: the question has no tokens after tokenization: '\\u200b'"]


def test_closed_standard_input_reads_as_its_end(engines):
    """`<&-` (no standard input at all, sys.stdin is None) ends the prompts as an empty input does: the question
    prompt ends the run, the paragraph prompt finds the passage empty."""
    for prompt_args, code, stderr in ((["-p", PASSAGE], 0, ""), ([], 2, "error: the passage is empty\n")):
        proc = subprocess.run([sys.executable, str(ROOT / "inference.py"), "-e", str(engines["fixed128"]), "-v",
                               str(VOCAB), *prompt_args], capture_output=True, text=True, cwd=ROOT,
                              stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""},
                              preexec_fn=lambda: os.close(0))
        assert (proc.returncode, proc.stderr) == (code, stderr)


def test_interactive_loop_goes_on_after_a_question_too_long_for_the_window(tmp_path):
    """A question that leaves no room for the passage at this -s is that question's problem: reported, and the
    next one answered."""
    engine = build(tmp_path, "fixed32.engine", "-s", "32", "-b", "1")
    long_question = "Which " + "very " * 30 + "long question is this?"
    proc = run("inference.py", "-e", engine, "-s", "32", "-v", VOCAB, "-p", "The cat sat on the mat.",
               stdin=f"{long_question}\nWhere did the cat sit?\nexit\n")
    assert re.findall(r"Answer: '(.*)'", proc.stdout) == ["the mat"], proc.stdout
    assert len(proc.stderr.splitlines()) == 1 and "leaves no room for the passage" in proc.stderr, proc.stderr


def test_each_interactive_answer_reports_its_own_rate(engines, monkeypatch, capsys):
    """Sentences/Sec of an interactive answer is that question's, as upstream times each question: a slow first
    question (0.5 s more in the engine) must not drag down the next one's rate."""
    import io

    from helpers.backends import cpu
    from helpers.errors import StrictParser
    from helpers.qa_app import add_inference_args, parse_inference_args, run_app
    from helpers.runtime import open_engine
    original, calls = cpu.CpuRunner.infer_fixed, []

    def slow_first_call(self, *inputs):
        calls.append(None)
        if len(calls) == 1:
            time.sleep(0.5)
        return original(self, *inputs)
    monkeypatch.setattr(cpu.CpuRunner, "infer_fixed", slow_first_call)
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is TensorRT?\nWhat does TensorRT include?\nexit\n"))
    parser = StrictParser()
    add_inference_args(parser)
    args = parse_inference_args(parser, ["-e", str(engines["fixed128"]), "-v", VOCAB, "-p", PASSAGE])
    assert run_app(args, open_engine(args.engine, "cpu")) == 0
    rates = [float(r) for r in re.findall(r"Running inference in ([\d.]+) Sentences/Sec", capsys.readouterr().out)]
    assert len(calls) == 2 and len(rates) == 2
    assert rates[0] < 2.1 and rates[1] > 5 * rates[0], rates


def test_text_the_terminal_cannot_encode_is_escaped(engines):
    proc = subprocess.run([sys.executable, str(ROOT / "inference.py"), "-e", str(engines["fixed128"]), "-v", VOCAB,
                           "-p", "The caf\u00e9 was opened by Jos\u00e9.", "-q", "Who opened the caf\u00e9?"],
                          capture_output=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "",
                                                              "PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    assert b"Passage: The caf\\xe9 was opened by Jos\\xe9." in proc.stdout
    assert b"Answer: 'Jos\\xe9'" in proc.stdout


@pytest.mark.parametrize("locale, answer", [({}, "Answer: 'Jos\u00e9'".encode()),
                                            # ASCII argv, stdin and stdout: the answer printed escaped
                                            ({"LC_ALL": "C", "PYTHONUTF8": "0"}, b"Answer: 'Jos\\xe9'")])
def test_words_and_standard_input_must_be_utf8(engines, locale, answer):
    """UTF-8 words and lines are read as text in any locale (in C without UTF-8 mode Python hands them over as
    escaped bytes); bytes that are not UTF-8 are one line (the tokenizer would drop them silently)."""
    def inference(*args, stdin=None):
        return subprocess.run([sys.executable, str(ROOT / "inference.py"), "-e", str(engines["fixed128"]), "-v",
                               str(VOCAB), *args], capture_output=True, cwd=ROOT, input=stdin,
                              env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", **locale})
    passage = "The caf\u00e9 was opened by Jos\u00e9 in 1900.".encode()
    proc = inference(b"-p", passage, b"-q", "Who opened the caf\u00e9?".encode())
    assert proc.returncode == 0 and answer in proc.stdout, proc.stderr
    proc = inference(b"-p", passage, stdin="Who opened the caf\u00e9?\nexit\n".encode())
    assert proc.returncode == 0 and answer in proc.stdout, proc.stderr
    proc = inference(b"-p", b"The caf\xe9 was opened.", b"-q", b"What?")   # Latin-1, not UTF-8
    assert (proc.returncode, proc.stderr) == (2, b"error: the passage (-p) is not UTF-8 text (it holds bytes or "
                                                 b"escapes that are no characters)\n")
    proc = inference(b"-p", passage, stdin=b"Who opened the caf\xe9?\n")
    assert proc.returncode == 2 and proc.stderr.startswith(b"error: standard input is not") and \
        len(proc.stderr.splitlines()) == 1, proc.stderr


def test_long_passage_uses_several_windows(engines):
    filler = " ".join(f"Sentence number {i} talks about nothing in particular." for i in range(60))
    passage = filler + " The secret code of the vault is 7291. " + filler
    proc = run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-p", passage, "-q",
               "What is the secret code of the vault?")
    assert "Answer: '7291" in proc.stdout


def squad_subset(tmp_path, count):
    data = json.loads(shared_path("data", "squad", "dev-v1.1.json").read_text(encoding="utf-8"))
    article = data["data"][0]
    kept, total = [], 0
    for paragraph in article["paragraphs"]:
        if total >= count:
            break
        kept.append(paragraph)
        total += len(paragraph["qas"])
    path = tmp_path / "subset.json"
    path.write_text(json.dumps({"version": "1.1", "data": [dict(article, paragraphs=kept)]}), encoding="utf-8")
    return path


@pytest.mark.parametrize("script, engine, extra", [("inference_varseqlen.py", "var384", []),
                                                   ("inference.py", "fixed384x4", ["-b", "4"])])
def test_squad_predictions_match_the_reference(engines, tmp_path, script, engine, extra):
    subset = squad_subset(tmp_path, 30)
    out = tmp_path / "predictions.json"
    proc = run(script, "-e", engines[engine], "-s", "384", "-v", VOCAB, "-sq", subset, "-o", out, *extra)
    assert f"Output dump to {out}" in proc.stdout
    predictions = json.loads(out.read_text(encoding="utf-8"))
    reference = json.loads(shared_path("fixtures", "minilm-l6-squad11", "reference", "predictions_300.json")
                           .read_text(encoding="utf-8"))
    assert len(predictions) >= 30
    assert predictions == {k: reference[k] for k in predictions}
    proc = run("squad/evaluate-v1.1.py", subset, out, "80")
    assert proc.stdout.startswith("&&&& PASSED TensorRT BERT Squad Accuracy matches reference.")


def test_squad_answers_from_host_worker_processes(engines, tmp_path):
    """The front end's worker-process pipeline (GPU runs on big machines take it) gives the reference's answers,
    and a bad question in a worker comes back as the one-line error naming it."""
    import argparse
    from helpers import data_processing as dp
    from helpers.qa_app import QuestionAnswerer, default_host_workers, make_tokenizer
    from helpers.runtime import open_engine
    runner = open_engine(str(engines["var384"]), "cpu")
    assert default_host_workers(runner) == 0   # CPU engines keep the cores
    args = argparse.Namespace(sequence_length=384, doc_stride=128, max_query_length=64, n_best_size=20,
                              max_answer_length=30, version_2_with_negative=False, null_score_diff_threshold=None)
    qa = QuestionAnswerer(runner, make_tokenizer(VOCAB, runner.engine_info), args, batch_size=4, host_workers=2)
    examples = dp.read_squad_json(str(squad_subset(tmp_path, 20)))[:20]   # 3 blocks of 8: the workers' path
    reference = json.loads(shared_path("fixtures", "minilm-l6-squad11", "reference", "predictions_300.json")
                           .read_text(encoding="utf-8"))
    try:
        assert qa.answer_squad(examples) == {e.id: reference[e.id] for e in examples}
        examples[11] = examples[11]._replace(question_text="  ")
        with pytest.raises(BertError, match=f"question {examples[11].id}: the question is empty"):
            qa.answer_squad(examples)
    finally:
        qa.close()


@pytest.mark.parametrize("device, cores, expected", [("gpu", 16, 8), ("gpu", 8, 6), ("gpu", 5, 0), ("cpu", 64, 0)])
def test_host_worker_count_follows_the_engine_and_the_cores(monkeypatch, device, cores, expected):
    from types import SimpleNamespace
    from helpers import qa_app
    monkeypatch.setattr(qa_app.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert qa_app.default_host_workers(SimpleNamespace(device=device)) == expected


def test_engines_from_tf_pytorch_and_safetensors_agree(tmp_path, fixture_ckpt):
    from helpers.engine_format import EngineFile
    from helpers.runtime import open_engine
    from helpers.weights import load_hf_folder, save_pytorch_checkpoint
    save_pytorch_checkpoint(load_hf_folder(str(MODEL_DIR)), tmp_path / "dle.pt")
    paths = [build(tmp_path, "tf.engine", "-s", "64", source=("-m", fixture_ckpt)),
             build(tmp_path, "pt.engine", "-s", "64", source=("-pt", tmp_path / "dle.pt")),
             build(tmp_path, "st.engine", "-s", "64", source=("-pt", MODEL_DIR / "model.safetensors"))]
    weights = [EngineFile.load(p).weights for p in paths]
    for other in weights[1:]:
        assert other.keys() == weights[0].keys()
        for name in weights[0]:
            np.testing.assert_array_equal(other[name], weights[0][name])
    rng = np.random.default_rng(0)
    ids, segs, mask = rng.integers(0, 30522, (2, 64)), rng.integers(0, 2, (2, 64)), np.ones((2, 64), int)
    logits = [open_engine(str(p), "cpu").infer_fixed(ids, segs, mask) for p in paths]
    for other in logits[1:]:
        np.testing.assert_array_equal(other, logits[0])


def test_perf_reports_each_batch(engines, tmp_path):
    engine = build(tmp_path, "perf.engine", "-s", "64", "-b", "1", "-b", "2")
    proc = run("perf.py", "-e", engine, "-b", "2", "-b", "1", "-b", "2", "-s", "64", "-i", "3", "-w", "1")
    pattern = (r"Running 3 iterations with Batch Size: {}\n\tTotal Time: [\d.e-]+ ms \tAverage Time: [\d.e-]+ ms\t"
               r"95th Percentile Time: [\d.e-]+ ms\t99th Percentile Time: [\d.e-]+\n")
    assert re.fullmatch(pattern.format(1) + pattern.format(2), proc.stdout), proc.stdout
    proc = run("perf_varseqlen.py", "-e", engines["var384"], "-b", "2", "-s", "32", "-i", "2", "-w", "0")
    assert re.fullmatch(pattern.format(2).replace("3 iterations", "2 iterations"), proc.stdout), proc.stdout


# ---- bad input: one line, exit status 2, no traceback, no half-written file -------------------------------------
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "trt.engine").write_bytes(b"ftrt" + bytes(100))
    (tmp / "text.engine").write_text("not an engine")
    (tmp / "malformed.json").write_text('{"data": [')
    (tmp / "nodata.json").write_text('{"version": "1.1"}')
    (tmp / "short_vocab.txt").write_text("".join(VOCAB_LINES[:3000]))
    (tmp / "vocab_less_a_line.txt").write_text("".join(VOCAB_LINES[:500] + VOCAB_LINES[501:]))
    data = json.loads(shared_path("data", "squad", "dev-v1.1.json").read_text(encoding="utf-8"))
    article = dict(data["data"][0], paragraphs=data["data"][0]["paragraphs"][:1])
    (tmp / "one.json").write_text(json.dumps({"version": "1.1", "data": [article]}))
    os.symlink(tmp / "loop2", tmp / "loop1")
    os.symlink(tmp / "loop1", tmp / "loop2")
    return tmp


def test_corrupt_engine(engines, tmp_path):
    damaged = tmp_path / "damaged.engine"
    damaged.write_bytes(engines["fixed128"].read_bytes()[:-1000])
    assert_one_line_error(run("inference.py", "-e", damaged, "-v", VOCAB, "-p", "x", "-q", "y", check=False),
                          "corrupt or truncated")


@pytest.mark.parametrize("case, args, pattern", [
    ("missing engine", ["-e", "nowhere.engine", "-v", VOCAB, "-p", "a b", "-q", "c"], "engine not found"),
    ("no engine", ["-v", VOCAB, "-p", "a", "-q", "b"], "no engine given"),
    ("text engine", ["-e", "{bad}/text.engine", "-v", VOCAB, "-p", "a", "-q", "b"], "not an engine file"),
    ("tensorrt engine", ["-e", "{bad}/trt.engine", "-v", VOCAB, "-p", "a", "-q", "b"], "TensorRT engine"),
    ("varseqlen engine", ["-e", "{var384}", "-v", VOCAB, "-p", "a", "-q", "b"], "inference_varseqlen.py"),
    ("missing vocab", ["-e", "{fixed128}", "-v", "nowhere.txt", "-p", "a", "-q", "b"], "nowhere.txt"),
    ("no vocab", ["-e", "{fixed128}", "-p", "a", "-q", "b"], "vocab"),
    ("malformed json", ["-e", "{fixed128}", "-v", VOCAB, "-sq", "{bad}/malformed.json"], "malformed.json"),
    ("json without data", ["-e", "{fixed128}", "-v", VOCAB, "-sq", "{bad}/nodata.json"], "data"),
    ("missing json", ["-e", "{fixed128}", "-v", VOCAB, "-sq", "{bad}/none.json"], "none.json"),
    ("sequence beyond engine", ["-e", "{fixed128}", "-s", "256", "-v", VOCAB, "-p", "a", "-q", "b"],
     "Could not find any profile"),
    ("sequence beyond model", ["-e", "{var384}", "-s", "600", "-v", VOCAB, "-p", "a", "-q", "b"], "512 positions"),
    ("empty passage", ["-e", "{fixed128}", "-v", VOCAB, "-p", "", "-q", "b"], "passage is empty"),
    ("blank question", ["-e", "{fixed128}", "-v", VOCAB, "-p", "a b", "-q", "   "], "question is empty"),
    # -q / -p with no words give an empty question or passage (upstream joined the empty list), not the prompt
    ("bare -q", ["-e", "{fixed128}", "-v", VOCAB, "-p", "a b", "-q"], "question is empty"),
    ("bare -p", ["-e", "{fixed128}", "-v", VOCAB, "-q", "c", "-p"], "passage is empty"),
    ("doc stride 0", ["-e", "{fixed128}", "-v", VOCAB, "-p", "a b", "--doc-stride", "0"],
     "--doc-stride must be at least 1"),
    ("question too long for -s", ["-e", "{fixed128}", "-v", VOCAB, "-p", "a b", "--max-query-length", "200", "-q",
                                  *["word"] * 130], "sequence length 128 leaves no room for the passage after a "
     "130-token question .*a larger -s, or a smaller --max-query-length"),
    ("unwritable output", ["-e", "{var384}", "-s", "384", "-v", VOCAB, "-sq", "squad/dev-v1.1.json", "-o",
                           "{bad}/missing/predictions.json"], "does not exist"),
    ("unknown flag", ["-e", "{fixed128}", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ("abbreviated flag", ["-e", "{fixed128}", "--seq", "128"], "unrecognized arguments"),
    ("passage twice", ["-e", "{fixed128}", "-v", VOCAB, "-p", "a b", "-pf", "nowhere.txt", "-q", "c"],
     "-p and -pf both give the passage"),
    ("question twice", ["-e", "{fixed128}", "-v", VOCAB, "-p", "a b", "-q", "c", "-qf", "nowhere.txt"],
     "-q and -qf both give the question"),
    ("passage and SQuAD file", ["-e", "{fixed128}", "-v", VOCAB, "-p", "a b", "-sq", "{bad}/one.json"],
     "-sq answers every question of the SQuAD file: -p cannot go with it"),
    ("question and SQuAD file", ["-e", "{fixed128}", "-v", VOCAB, "-sq", "{bad}/one.json", "-qf", "q.txt"],
     "-qf cannot go with it"),
    ("predictions file without SQuAD", ["-e", "{fixed128}", "-v", VOCAB, "-p", "a b", "-q", "c", "-o", "x.json"],
     "-o names the predictions file of a SQuAD run: it needs -sq"),
    ("empty SQuAD path", ["-e", "{fixed128}", "-v", VOCAB, "-sq", "", "-o", "x.json"], "-sq is an empty path"),
    ("empty predictions path", ["-e", "{fixed128}", "-v", VOCAB, "-sq", "{bad}/one.json", "-o", ""],
     "-o is an empty path"),
    ("empty passage file path", ["-e", "{fixed128}", "-v", VOCAB, "-pf", "", "-q", "c"], "-pf is an empty path"),
    ("device as vocabulary", ["-e", "{fixed128}", "-v", "/dev/zero", "-p", "a", "-q", "b"],
     "vocabulary file is a device, not a file: /dev/zero"),
    ("device as passage file", ["-e", "{fixed128}", "-v", VOCAB, "-pf", "/dev/zero", "-q", "b"],
     "passage file is a device"),
    ("device as SQuAD file", ["-e", "{fixed128}", "-v", VOCAB, "-sq", "/dev/zero"], "is a device"),
    ("bad batch", ["-e", "{fixed128}", "-b", "0", "-v", VOCAB, "-p", "a", "-q", "b"], "batch size"),
    ("another model's vocabulary", ["-e", "{fixed128}", "-v", "{bad}/short_vocab.txt", "-p", "a", "-q", "b"],
     "has 3000 tokens but the engine's model has 30522"),
    ("vocabulary missing a line", ["-e", "{fixed128}", "-v", "{bad}/vocab_less_a_line.txt", "-p", "a", "-q", "b"],
     "has 30521 tokens but the engine's model has 30522"),
    ("question given twice", ["-e", "{fixed128}", "-v", VOCAB, "-p", "a b", "-q", "c", "-q", "d"],
     "argument -q/--question: given more than once"),
    ("engine given twice", ["-e", "{fixed128}", "-e", "{fixed128}", "-v", VOCAB, "-p", "a b", "-q", "c"],
     "argument -e/--engine: given more than once"),
    ("predictions over the SQuAD json", ["-e", "{var384}", "-s", "384", "-v", VOCAB, "-sq", "{bad}/one.json", "-o",
                                         "{bad}/one.json"], "would overwrite the SQuAD json"),
    ("predictions over the engine", ["-e", "{var384}", "-s", "384", "-v", VOCAB, "-sq", "{bad}/one.json", "-o",
                                     "{var384}"], "would overwrite the engine"),
    ("output link loop", ["-e", "{var384}", "-s", "384", "-v", VOCAB, "-sq", "{bad}/one.json", "-o",
                          "{bad}/loop1"], "symbolic link"),
    ("engine link loop", ["-e", "{bad}/loop1", "-v", VOCAB, "-p", "a", "-q", "b"],
     "engine path .*loop1 cannot be reached: Too many levels of symbolic links"),
])
def test_inference_bad_input(engines, bad_files, case, args, pattern):
    script = "inference_varseqlen.py" if "{var384}" in args and case not in ("varseqlen engine",) else "inference.py"
    args = [a.format(bad=bad_files, **engines) for a in args]
    assert_one_line_error(run(script, *args, check=False), pattern)


def test_inference_input_files_survive_and_outputs_keep_their_mode(engines, tmp_path):
    """A byte-order mark is no part of a passage; a predictions file written again keeps its permissions."""
    passage = tmp_path / "bom.txt"
    passage.write_bytes("\ufeffThe cafe was built in 1900.".encode("utf-8"))
    proc = run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-pf", passage, "-q", "What was built in 1900?")
    assert "Answer: 'The cafe'" in proc.stdout, proc.stdout
    out = tmp_path / "private.json"
    out.write_text("{}")
    out.chmod(0o600)
    subset = squad_subset(tmp_path, 3)
    run("inference_varseqlen.py", "-e", engines["var384"], "-s", "384", "-v", VOCAB, "-sq", subset, "-o", out)
    assert json.loads(out.read_text(encoding="utf-8")) and (out.stat().st_mode & 0o777) == 0o600


def test_builder_never_overwrites_its_inputs(tmp_path):
    import shutil
    model = tmp_path / "model"
    shutil.copytree(MODEL_DIR, model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    for target in ("model.safetensors", "config.json", "vocab.txt"):
        proc = run("builder.py", "-pt", model, "-c", model, "-o", model / target, "-s", "64", check=False)
        assert_one_line_error(proc, "would overwrite a file of the PyTorch weights folder this run reads")
    proc = run("builder.py", "-pt", model / "model.safetensors", "-c", model, "-o", model / "model.safetensors",
               check=False)
    assert_one_line_error(proc, "would overwrite the PyTorch weights this run reads")
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    run("builder.py", "-pt", model, "-c", model, "-o", model / "qa.engine", "-s", "64")   # a new file beside them
    run("builder.py", "-pt", model, "-c", model, "-o", model / "qa.engine", "-s", "64")   # and rebuilt in place


def test_builder_never_overwrites_the_checkpoint_state_file_it_read(tmp_path):
    """-m FOLDER reads FOLDER/checkpoint to find the prefix: that file is an input too."""
    maker = load_script("make_random_checkpoint")
    from helpers import tf_checkpoint
    config = json.loads((MODEL_DIR / "config.json").read_text(encoding="utf-8"))
    folder = tmp_path / "tf"
    folder.mkdir()
    tf_checkpoint.write_checkpoint(str(folder / "plain"), maker.random_tf_variables(config, seed=1))
    (folder / "checkpoint").write_text('model_checkpoint_path: "plain"\n', encoding="utf-8")
    proc = run("builder.py", "-m", folder, "-c", MODEL_DIR, "-o", folder / "checkpoint", "-s", "64", check=False)
    assert_one_line_error(proc, "would overwrite the TensorFlow checkpoint this run reads")
    assert (folder / "checkpoint").read_text(encoding="utf-8") == 'model_checkpoint_path: "plain"\n'
    run("builder.py", "-m", folder, "-c", MODEL_DIR, "-o", folder / "qa.engine", "-s", "64")


def test_builder_refuses_an_empty_output_and_its_own_caches_as_output(tmp_path):
    """-o "" is refused before any work; the timing cache (-tcf) and calibration cache (-p) are inputs a TensorRT
    build reads and writes back, existing or not, so the engine may not take their path."""
    proc = run("builder.py", "-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "", "-s", "64", check=False)
    assert_one_line_error(proc, "output path is empty")
    assert "Saving Engine" not in proc.stdout
    cache = tmp_path / "timing.cache"
    for flag, what in (("-tcf", "timing cache"), ("-p", "calibration cache")):
        proc = run("builder.py", "-pt", MODEL_DIR, "-c", MODEL_DIR, flag, cache, "-o", cache, "-s", "64", check=False)
        assert_one_line_error(proc, f"would overwrite the {what}")   # the cache does not exist yet
        cache.write_bytes(b"cache")
        link = tmp_path / "link.engine"
        link.hardlink_to(cache)
        proc = run("builder.py", "-pt", MODEL_DIR, "-c", MODEL_DIR, flag, cache, "-o", link, "-s", "64", check=False)
        assert_one_line_error(proc, f"would overwrite the {what}")
        assert cache.read_bytes() == b"cache"
        cache.unlink()
        link.unlink()
    proc = run("builder_varseqlen.py", "-pt", MODEL_DIR, "-c", MODEL_DIR, "-tcf", cache, "-o", cache, check=False)
    assert_one_line_error(proc, "would overwrite the timing cache")
    assert not cache.exists()


def test_builder_given_a_plain_pickle_as_pytorch_weights_prints_one_line(tmp_path):
    """torch.load's warnings about such a file stay out of the one-line error."""
    import pickle
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump({"a": 1}, f, protocol=4)
    proc = run("builder.py", "-pt", tmp_path / "plain.pkl", "-c", MODEL_DIR, "-o", tmp_path / "e.engine", "-s", "64",
               check=False)
    assert_one_line_error(proc, "cannot read PyTorch checkpoint")


CLI_SCRIPTS = ["builder.py", "builder_varseqlen.py", "inference.py", "inference_c.py", "inference_varseqlen.py",
               "perf.py", "perf_varseqlen.py", "squad/evaluate-v1.1.py", "squad/evaluate-v2.0.py"]


@pytest.mark.parametrize("script", CLI_SCRIPTS)
def test_scripts_quiet_interrupts_before_their_heavy_imports(script):
    """Each script hands Ctrl-C and SIGTERM to quiet_interrupts before any import beyond os, sys and
    helpers.interrupts (argparse, numpy, torch, ... load after it), and helpers.interrupts itself loads nothing that
    Python has not loaded before any script runs."""
    lines = (ROOT / script).read_text(encoding="utf-8").splitlines()
    call = lines.index("quiet_interrupts()   # a Ctrl-C while the modules below load ends with one line, not a "
                       "traceback")
    imports = [n for n, line in enumerate(lines) if line.startswith(("from ", "import "))]
    early = [lines[n] for n in imports if n < call]
    assert early == ["import os", "import sys",
                     "from helpers.interrupts import quiet_interrupts  # noqa: E402 (loads nothing Python has not "
                     "already)"]
    proc = run_python("import sys; before = set(sys.modules); sys.path.insert(0, '.'); import helpers.interrupts; "
                      "print(sorted(set(sys.modules) - before))")
    assert proc.stdout == "['helpers', 'helpers.interrupts']\n", proc.stdout + proc.stderr


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("signum, message", [("SIGINT", "error: interrupted"), ("SIGTERM", "error: terminated")])
def test_interrupts_at_the_first_and_the_last_moment_give_one_line(signum, message):
    """While the modules load (here: the signal comes just before numpy's import), the one line and status 2; once
    a script's main has returned, a signal that lands in the interpreter's shutdown (here: an atexit callback) is
    ignored instead of printing a traceback from there."""
    proc = run_python("import os, signal, sys; sys.path.insert(0, '.'); from helpers.interrupts import "
                      f"quiet_interrupts; quiet_interrupts(); os.kill(os.getpid(), signal.{signum}); import numpy; "
                      "print('survived')")
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", message + "\n")
    proc = run_python("import atexit, os, signal, sys, time; sys.path.insert(0, '.'); "
                      "from helpers.errors import run_cli\n"
                      f"atexit.register(lambda: (os.kill(os.getpid(), signal.{signum}), time.sleep(0.1)))\n"
                      "def main(argv):\n    print('done')\n"
                      "run_cli(main)")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "done\n", "")


def exit_status_of_run_cli(main):
    """run_cli(main) in this process, the signal handlers it installs put back afterwards; its exit status."""
    import signal
    from helpers.errors import run_cli
    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_info:
            run_cli(main, [])
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
    return exit_info.value.code


def test_sigterm_during_an_atomic_write_leaves_no_temporary_file(tmp_path, capsys):
    """SIGTERM is handled like Ctrl-C: one line, exit status 2, the half-written temporary file removed and the
    old file intact."""
    import signal
    from helpers.atomic import atomic_open
    target = tmp_path / "out.engine"
    target.write_bytes(b"old")

    def main(argv):
        with atomic_open(target) as f:
            f.write(b"partial")
            os.kill(os.getpid(), signal.SIGTERM)
            f.write(b"never")
    assert exit_status_of_run_cli(main) == 2
    assert capsys.readouterr().err == "error: terminated\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.engine"] and target.read_bytes() == b"old"


def test_a_missing_package_is_one_line(capsys):
    """Run with a Python that lacks the project's dependencies (outside .venv): one line naming the package."""
    def main(argv):
        import threadpoolctl_that_is_not_installed  # noqa: F401
    assert exit_status_of_run_cli(main) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: the Python package 'threadpoolctl_that_is_not_installed'"
                                                    " is missing: run the scripts with .venv/bin/python"), err

    def broken(argv):   # the project's own module missing is a bug: shown whole, not blamed on the environment
        import helpers.no_such_module  # noqa: F401
    with pytest.raises(ModuleNotFoundError, match="helpers.no_such_module"):
        exit_status_of_run_cli(broken)


def test_builder_never_overwrites_a_tensorflow_checkpoint(tmp_path, fixture_ckpt):
    """However the checkpoint is named (prefix or .index), its index and data shards are inputs; -c elsewhere."""
    import glob
    files = sorted(glob.glob(fixture_ckpt + ".*"))
    before = [open(f, "rb").read(64) for f in files]
    for given in (fixture_ckpt, fixture_ckpt + ".index"):
        for target in files:
            proc = run("builder.py", "-m", given, "-c", MODEL_DIR, "-o", target, "-s", "64", check=False)
            assert_one_line_error(proc, "would overwrite the TensorFlow checkpoint this run reads")
    assert [open(f, "rb").read(64) for f in files] == before


def test_builder_refuses_non_finite_weights(tmp_path):
    import shutil
    from safetensors.numpy import load_file, save_file
    model = tmp_path / "model"
    shutil.copytree(MODEL_DIR, model)
    tensors = load_file(str(model / "model.safetensors"))
    name = next(k for k in sorted(tensors) if k.endswith("attention.output.LayerNorm.bias"))
    tensors[name] = tensors[name].copy()
    tensors[name][3] = np.nan
    save_file(tensors, str(model / "model.safetensors"))
    proc = run("builder.py", "-pt", model, "-c", model, "-o", tmp_path / "e.engine", "-s", "64", check=False)
    assert_one_line_error(proc, "NaN or infinite values in l0_attention_output_layernorm_beta")
    assert not (tmp_path / "e.engine").exists()
    tensors[name][3] = 0.5
    kernel = next(k for k in sorted(tensors) if k.endswith("intermediate.dense.weight"))
    tensors[kernel] = tensors[kernel].astype(np.float32)   # the shipped weights are float16: widen this one
    tensors[kernel][0, 3] = 1e6   # finite, but beyond float16 (LayerNorm vectors stay float32 in fp16 engines)
    save_file(tensors, str(model / "model.safetensors"))
    run("builder.py", "-pt", model, "-c", model, "-o", tmp_path / "e.engine", "-s", "64")   # fp32: fine
    proc = run("builder.py", "-pt", model, "-c", model, "-o", tmp_path / "e16.engine", "-s", "64", "--fp16",
               check=False)
    assert_one_line_error(proc, "beyond float16's range")


@pytest.mark.parametrize("flags, pattern", [(["-r", "-1"], "random-seed"), (["-r", str(2 ** 64)], "random-seed"),
                                            (["-d", "inf"], "duration"), (["-d", "nan"], "duration"),
                                            (["-i", "-1"], "iterations"), (["-i", "0"], "nothing to time")])
def test_perf_bad_values(engines, flags, pattern):
    iterations = [] if "-i" in flags else ["-i", "1"]
    assert_one_line_error(run("perf.py", "-e", engines["fixed128"], "-s", "128", *iterations, *flags, check=False),
                          pattern)


def test_perf_runs_for_a_duration_without_an_iteration_count(engines):
    """Upstream times while either -i or -d is unmet: -i 0 -d 0.3 runs for 0.3 s, many times a forward here."""
    started = time.perf_counter()
    proc = run("perf.py", "-e", engines["fixed128"], "-s", "128", "-i", "0", "-d", "0.3", "-w", "0")
    runs = int(re.match(r"Running (\d+) iterations with Batch Size: 1\n", proc.stdout).group(1))
    assert runs > 1 and time.perf_counter() - started > 0.3


def test_single_question_with_a_huge_n_best(engines):
    proc = run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-p", "The cat sat in 1999.", "-q", "When?",
               "--n-best-size", str(2 ** 64))
    assert "Answer: '1999'" in proc.stdout, proc.stdout


def test_fixed_engine_refused_by_varseqlen_scripts(engines):
    assert_one_line_error(run("inference_varseqlen.py", "-e", engines["fixed128"], "-v", VOCAB, "-p", "a", "-q",
                              "b", check=False), "inference.py")
    assert_one_line_error(run("perf_varseqlen.py", "-e", engines["fixed128"], check=False), "perf.py")
    assert_one_line_error(run("perf.py", "-e", engines["fixed128"], "-s", "384", check=False),
                          "None of the dynamic shape profiles")


@pytest.mark.parametrize("script, args, pattern", [
    ("builder.py", ["-o", "{tmp}/e.engine", "-c", MODEL_DIR], "--ckpt"),
    ("builder.py", ["-pt", MODEL_DIR, "-o", "{tmp}/e.engine"], "-c/--config-dir"),
    ("builder.py", ["-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/e.engine", "--int8"], "TensorRT"),
    ("builder.py", ["-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/e.engine", "-s", "1024"], "512 position"),
    ("builder.py", ["-pt", "{tmp}/none.pt", "-c", MODEL_DIR, "-o", "{tmp}/e.engine"], "none.pt"),
    ("builder.py", ["-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/nodir/e.engine"], "does not exist"),
    ("builder.py", ["-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/e.engine/"], "names a directory"),
    ("builder.py", ["-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/e.engine", "--fp32"], "unrecognized"),
    ("builder.py", ["-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/e.engine", "-w", str(2 ** 44)],
     "workspace-size must be"),
    ("builder.py", ["-m", "", "-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/e.engine"], "-m/--ckpt is an empty path"),
    ("builder.py", ["-x", "", "-c", MODEL_DIR, "-o", "{tmp}/e.engine"], "-x/--onnx is an empty path"),
    ("builder.py", ["-pt", "/dev/zero", "-c", MODEL_DIR, "-o", "{tmp}/e.engine"], "not a regular file: /dev/zero"),
    ("builder_varseqlen.py", ["-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/e.engine", "--megatron"], "megatron"),
    ("builder_varseqlen.py", ["-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/e.engine", "--strict"],
     "unrecognized"),
    # single-dash names are never abbreviated: -t and -tc are not -tcf
    ("builder_varseqlen.py", ["-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/e.engine", "-t", "{tmp}/cache"],
     "unrecognized arguments: -t"),
    ("builder_varseqlen.py", ["-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", "{tmp}/e.engine", "-tc", "{tmp}/cache"],
     "unrecognized arguments: -tc"),
])
def test_builder_bad_input(tmp_path, script, args, pattern):
    args = [str(a).format(tmp=tmp_path) for a in args]
    assert_one_line_error(run(script, *args, check=False), pattern)
    assert not (tmp_path / "e.engine").exists()


def test_builder_protects_the_tokenizer_config_beside_a_config_file(tmp_path):
    """-c may name the config file; the run also reads the tokenizer_config.json beside it (do_lower_case)."""
    shutil.copytree(MODEL_DIR, tmp_path / "m")
    target = tmp_path / "m" / "tokenizer_config.json"
    before = target.read_bytes()
    proc = run("builder.py", "-pt", tmp_path / "m" / "model.safetensors", "-c", tmp_path / "m" / "bert_config.json",
               "-o", target, "-s", "64", check=False)
    assert_one_line_error(proc, "would overwrite the tokenizer config this run reads")
    assert target.read_bytes() == before


def test_builder_writes_an_output_whose_name_nearly_fills_the_file_system_limit(tmp_path):
    """The temporary file beside it must fit the 255-byte limit too; a name beyond it is refused before work (the
    look at what the path reaches meets the file system's limit)."""
    run("builder.py", "-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", tmp_path / ("e" * 250), "-s", "64")
    assert [p.name for p in tmp_path.iterdir()] == ["e" * 250]
    proc = run("builder.py", "-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", tmp_path / ("e" * 256), "-s", "64", check=False)
    assert_one_line_error(proc, "output path .* cannot be reached: File name too long")
    assert "Found" not in proc.stdout


def test_builder_outlives_the_reader_of_its_output(tmp_path):
    """`builder.py ... | head -1` with unbuffered output: the pipe's reader goes away, the build does not."""
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "builder.py"), "-pt", str(MODEL_DIR), "-c", str(MODEL_DIR),
                             "-o", str(tmp_path / "e.engine"), "-s", "64"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT, env=env)
    assert proc.stdout.readline().startswith(b"Using configuration file")
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    assert (proc.returncode, err) == (0, b"")
    from helpers.engine_format import EngineFile
    assert EngineFile.load(tmp_path / "e.engine").profiles


def test_a_closed_standard_output(tmp_path):
    """Started with standard output closed (`>&-`): a builder, whose result is a file, builds it; a script whose
    result is printed says it cannot print it (print() would drop it silently: exit 0 and no answer)."""
    def closed_stdout(script, *args):
        return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=False,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=lambda: os.close(1),
                              env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": ""})
    proc = closed_stdout("builder.py", "-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", tmp_path / "e.engine", "-s", "64")
    assert (proc.returncode, proc.stderr) == (0, "")
    from helpers.engine_format import EngineFile
    assert EngineFile.load(tmp_path / "e.engine").profiles
    proc = closed_stdout("inference.py", "-e", tmp_path / "e.engine", "-s", "64", "-v", VOCAB, "-p", PASSAGE,
                         "-q", "What is TensorRT?")
    assert (proc.returncode, proc.stderr) == (2, "error: standard output is closed: the results could not be "
                                                 "printed\n")


def test_an_interrupt_after_the_rename_says_the_file_was_written(tmp_path, capsys, monkeypatch):
    """A Ctrl-C that lands while the finished file is renamed into place is raised after the rename, and its one
    line says the new file is there (it read as 'nothing was written' before)."""
    import signal
    from helpers import atomic
    target = tmp_path / "out.engine"
    target.write_bytes(b"old")
    replace = os.replace

    def replace_then_interrupt(src, dst):
        os.kill(os.getpid(), signal.SIGINT)   # held until the rename is recorded
        replace(src, dst)
    monkeypatch.setattr(atomic.os, "replace", replace_then_interrupt)

    def main(argv):
        atomic.write_bytes_atomic(target, b"new")
        return 0
    assert exit_status_of_run_cli(main) == 2 and target.read_bytes() == b"new"
    assert capsys.readouterr().err == f"error: interrupted after {target} was written\n"


def test_a_signal_while_the_held_handlers_are_put_back_is_passed_on(tmp_path, monkeypatch):
    """A Ctrl-C that lands between putting back SIGINT's handler and SIGTERM's must not leave SIGTERM's holding
    handler in place swallowing every later SIGTERM: it passes them on."""
    import signal
    from helpers import atomic
    seen = []
    real = signal.signal

    def put_back_then_interrupt(signum, handler):
        previous = real(signum, handler)
        if signum == signal.SIGINT and handler is signal.default_int_handler:
            os.kill(os.getpid(), signal.SIGINT)
        return previous
    saved = real(signal.SIGINT, signal.default_int_handler), real(signal.SIGTERM, lambda *_: seen.append("term"))
    try:
        monkeypatch.setattr(atomic.signal, "signal", put_back_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            atomic.write_bytes_atomic(tmp_path / "out.bin", b"new")
        monkeypatch.undo()
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == ["term"] and (tmp_path / "out.bin").read_bytes() == b"new"
    finally:
        real(signal.SIGINT, saved[0])
        real(signal.SIGTERM, saved[1])


def test_a_file_another_user_owns_in_a_sticky_folder_is_refused_before_work(tmp_path, monkeypatch):
    """Only its owner (or the folder's, or root) may rename over a file in a sticky folder such as /tmp."""
    from helpers import atomic
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    (folder / "e.engine").write_bytes(b"theirs")
    monkeypatch.setattr(atomic.os, "geteuid", lambda: os.stat(folder).st_uid + 4242)
    with pytest.raises(BertError, match="belongs to another user"):
        atomic.check_writable(folder / "e.engine")
    atomic.check_writable(folder / "new.engine")   # a new file there is fine


def test_perf_shows_progress_on_a_terminal_only(engines, monkeypatch):
    import io
    from helpers.perf_cli import run_perf

    class Terminal(io.StringIO):
        def isatty(self):
            return True
    for stream, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr("sys.stderr", stream)
        run_perf(["-e", str(engines["fixed128"]), "-s", "128", "-i", "3", "-w", "1", "--device", "cpu"], False)
        assert ("batch 1" in stream.getvalue()) is shown


def test_engines_that_are_not_regular_files_or_lie_about_their_header(engines, tmp_path):
    data = engines["fixed128"].read_bytes()
    huge = tmp_path / "huge_header.engine"
    huge.write_bytes(data[:8] + (2 ** 63).to_bytes(8, "little") + data[16:])
    assert_one_line_error(run("perf.py", "-e", huge, "-s", "128", check=False), "corrupt")
    fifo = tmp_path / "engine.fifo"
    os.mkfifo(fifo)
    assert_one_line_error(run("perf.py", "-e", fifo, "-s", "128", check=False), "not a regular file")


@pytest.mark.parametrize("flags, pattern", [(["--limit", "-1"], "--limit must be at least 0"),
                                            (["--threads", "0"], "--threads must be between 1"),
                                            (["--max-batch", "0"], "--max-batch must be at least 1"),
                                            (["--host-workers", "-1"], "--host-workers must be at least 0"),
                                            (["--squad", "nowhere.json"], "SQuAD file not found"),
                                            (["--bogus"], "unrecognized arguments: --bogus")])
def test_squad_benchmark_bad_arguments(flags, pattern):
    assert_one_line_error(run("scripts/squad_benchmark.py", *flags, check=False), pattern)


@pytest.mark.parametrize("variable, value, pattern", [("BENCH_MODELS", "", "BENCH_MODELS is empty"),
                                                      ("BENCH_MODELS", "huge", "unknown model huge"),
                                                      ("BENCH_SEQS", "128 abc", "abc is not a positive whole"),
                                                      ("BENCH_BATCHES", "0", "0 is not a positive whole"),
                                                      ("BENCH_ITERATIONS", "-1", "-1 is not a positive whole")])
def test_inference_benchmark_checks_its_matrix_before_any_work(variable, value, pattern):
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "inference_benchmark.sh"), "--gpu", "Hopper"],
                          capture_output=True, text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin", variable: value})
    assert proc.stdout == ""   # before the GPU query and any checkpoint
    assert_one_line_error(proc, pattern)


def test_inference_c_names_a_missing_file_whether_or_not_it_is_built(engines):
    for flags, pattern in ((["-e", "nowhere.engine"], "engine not found: nowhere.engine"),
                           (["-e", engines["fixed128"], "-v", "nowhere.txt"], "vocabulary file not found")):
        assert_one_line_error(run("inference_c.py", *flags, "-p", "a", "-q", "b", check=False), pattern)


def test_builder_names_missing_tensors(tmp_path):
    import torch
    from helpers.weights import load_hf_folder, to_dle_state_dict
    state = to_dle_state_dict(load_hf_folder(str(MODEL_DIR)))
    del state["bert.encoder.layer.3.output.dense.weight"], state["qa_outputs.bias"]
    torch.save({"model": {k: torch.from_numpy(v.copy()) for k, v in state.items()}}, tmp_path / "partial.pt")
    proc = run("builder.py", "-pt", tmp_path / "partial.pt", "-c", MODEL_DIR, "-o", tmp_path / "e.engine",
               check=False)
    assert_one_line_error(proc, "l3_output_dense_kernel")
    assert "cls_squad_output_bias" in proc.stderr and not (tmp_path / "e.engine").exists()


def test_squad_v2_null_answers_follow_the_threshold(engines, tmp_path):
    import gzip
    with gzip.open(shared_path("data", "squad", "dev-v2.0.recon.json.gz"), "rt", encoding="utf-8") as f:
        data = json.load(f)
    article = dict(data["data"][0], paragraphs=data["data"][0]["paragraphs"][:2])
    subset = tmp_path / "v2.json"
    subset.write_text(json.dumps({"version": "v2.0", "data": [article]}), encoding="utf-8")
    ids = [qa["id"] for p in article["paragraphs"] for qa in p["qas"]]

    def predict(threshold):
        out = tmp_path / f"pred{threshold}.json"
        run("inference_varseqlen.py", "-e", engines["var384"], "-s", "384", "-v", VOCAB, "-sq", subset, "-o", out,
            "--version-2-with-negative", "--null-score-diff-threshold", threshold)
        return json.loads(out.read_text(encoding="utf-8"))

    always_answer, never_answer, default = predict(1e9), predict(-1e9), predict(0.0)
    assert sorted(always_answer) == sorted(ids) and all(always_answer.values())
    assert set(never_answer.values()) == {""}
    assert {k for k, v in default.items() if v} <= set(ids)
    proc = run("squad/evaluate-v2.0.py", subset, tmp_path / "pred-1000000000.0.json")
    scores = json.loads(proc.stdout)
    assert scores["HasAns_f1"] == 0.0 and scores["NoAns_f1"] == 100.0


def test_single_question_prints_the_probability_of_the_answer_it_prints(engines):
    """With SQuAD v2's threshold the printed answer may be the null answer or a lower n-best entry: the printed
    probability is that answer's own (as in the n-best list), not the first entry's."""
    passage = "TensorRT is a high performance deep learning inference platform by NVIDIA."

    def ask(*extra):
        proc = run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-p", passage, "-q", "What is TensorRT?",
                   *extra)
        answer = re.search(r"Answer: '(.*)'", proc.stdout).group(1)
        return answer, float(re.search(r"With probability: ([0-9.]+)", proc.stdout).group(1))

    plain = ask()
    null = ask("--version-2-with-negative", "--null-score-diff-threshold=-1e9")
    assert plain[0] and null[0] == ""
    assert 0 <= null[1] < plain[1]   # the null answer scores far below the span here; it used to print the span's


def test_null_threshold_without_squad_v2_is_an_error(engines):
    proc = run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-p", "Paris is in France.", "-q",
               "Where is Paris?", "--null-score-diff-threshold", "1", check=False)
    assert_one_line_error(proc, "applies only with --version-2-with-negative")


def test_failed_squad_run_keeps_the_previous_predictions(engines, tmp_path):
    out = tmp_path / "predictions.json"
    out.write_text('{"previous": "run"}', encoding="utf-8")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Some text.", "qas": [
        {"id": "a", "question": "What?"}, {"id": "b", "question": "\u0001\u0002"}]}]}]}), encoding="utf-8")
    proc = run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-sq", bad, "-o", out, check=False)
    assert_one_line_error(proc, "question b: .*no tokens")  # found mid-run, after the output was checked
    assert out.read_text(encoding="utf-8") == '{"previous": "run"}' and sorted(os.listdir(tmp_path)) == \
        ["bad.json", "predictions.json"]


def test_negative_passage_logits_still_give_a_span(engines):
    """Every real start/end logit is negative here; padding (logit 0 from native engines) must not crowd the real
    tokens out of the n-best indexes (the answer was the nonce 'empty' before)."""
    proc = run("inference.py", "-e", engines["fixed384x4"], "-s", "384", "-v", VOCAB, "-p",
               "The tower was built in 1889 by Gustave Eiffel in Paris.", "-q",
               "Quand la tour Eiffel a-t-elle été construite?")
    answer = re.search(r"Answer: '(.*)'", proc.stdout).group(1)
    assert answer != "empty" and answer in "The tower was built in 1889 by Gustave Eiffel in Paris."


def squad_file(tmp_path, qas):
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Anna was born in 1847 in Oslo.",
                                                          "qas": qas}]}]}), encoding="utf-8")
    return path


@pytest.mark.parametrize("qas, pattern", [
    ([{"id": "x", "question": "When was Anna born?"}, {"id": "x", "question": "Where?"}], "'x' appears more than once"),
    ([], "has no questions"),
])
def test_squad_files_that_would_lose_answers(engines, tmp_path, qas, pattern):
    out = tmp_path / "predictions.json"
    proc = run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-sq", squad_file(tmp_path, qas), "-o", out,
               check=False)
    assert_one_line_error(proc, pattern)
    assert not out.exists()


def test_outputs_go_through_symlinks_and_never_replace_devices(engines, tmp_path):
    questions = squad_file(tmp_path, [{"id": "a", "question": "When was Anna born?"}])
    target, link = tmp_path / "real.json", tmp_path / "link.json"
    target.write_text("{}", encoding="utf-8")
    link.symlink_to(target)
    run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-sq", questions, "-o", link)
    assert link.is_symlink() and json.loads(target.read_text(encoding="utf-8")) == {"a": "1847"}
    proc = run("inference.py", "-e", engines["fixed128"], "-v", VOCAB, "-sq", questions, "-o", "/dev/null",
               check=False)
    assert_one_line_error(proc, "not a regular file")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


@pytest.mark.parametrize("change, pattern", [(dict(num_hidden_layers=4), "the weights have 6 layers"),
                                             (dict(layer_norm_eps=-1), "layer_norm_eps"),
                                             (dict(num_hidden_layers=10 ** 12), "beyond the supported maximum"),
                                             (dict(vocab_size=10 ** 10), "beyond the supported maximum"),
                                             (dict(hidden_act=["gelu"]), "hidden_act \\['gelu'\\] is not supported"),
                                             (dict(position_embedding_type="relative_key"),
                                              "position_embedding_type 'relative_key' is not supported")])
def test_builder_refuses_configs_that_do_not_fit(tmp_path, change, pattern):
    """Sizes no BERT has are refused before anything is sized by them (10^12 layers used to exhaust memory)."""
    config = json.loads((MODEL_DIR / "config.json").read_text(encoding="utf-8"))
    (tmp_path / "config.json").write_text(json.dumps(dict(config, **change)), encoding="utf-8")
    proc = run("builder.py", "-pt", MODEL_DIR, "-c", tmp_path, "-o", tmp_path / "e.engine", check=False)
    assert_one_line_error(proc, pattern)
    assert not (tmp_path / "e.engine").exists()


@pytest.mark.parametrize("text, pattern", [
    ('{"num_hidden_layers": 1' + "0" * 5000 + "}", "config is not valid json: .*config.json .Exceeds the limit"),
    ("[" * 100000 + "]" * 100000, "config is nested too deeply"),
    ('{"hidden_size": 38', "config is not valid json: .*line 1, column 19"),
])
def test_builder_names_a_config_that_is_no_json(tmp_path, text, pattern):
    """Every json file the scripts read goes through one reader: a number of more digits than Python converts and
    a deeply nested file are one line, as malformed json is."""
    (tmp_path / "config.json").write_text(text, encoding="utf-8")
    proc = run("builder.py", "-pt", MODEL_DIR, "-c", tmp_path, "-o", tmp_path / "e.engine", check=False)
    assert_one_line_error(proc, pattern)
    assert not (tmp_path / "e.engine").exists()


def test_builder_refuses_a_named_weight_source_that_is_missing_and_absurd_batches(tmp_path):
    proc = run("builder.py", "-m", tmp_path / "none" / "model.ckpt", "-pt", MODEL_DIR, "-c", MODEL_DIR,
               "-o", tmp_path / "e.engine", "-s", "64", check=False)
    assert_one_line_error(proc, "-m/--ckpt .*none/model.ckpt: not found")
    (tmp_path / "folder").mkdir()   # a folder whose checkpoint state file names a prefix that is not there
    (tmp_path / "folder" / "checkpoint").write_text('model_checkpoint_path: "other.ckpt"\n')
    proc = run("builder.py", "-m", tmp_path / "folder", "-c", MODEL_DIR, "-o", tmp_path / "e.engine", "-s", "64",
               check=False)
    assert_one_line_error(proc, "folder: not found .its checkpoint index .*folder/other.ckpt.index is missing")
    proc = run("builder.py", "-pt", MODEL_DIR, "-c", MODEL_DIR, "-o", tmp_path / "e.engine", "-s", "64",
               "-b", "2147483648", check=False)
    assert_one_line_error(proc, "batch size must be between 1 and 65536")
    assert not (tmp_path / "e.engine").exists()


def test_random_checkpoint_never_replaces_other_files(tmp_path, monkeypatch):
    """make_random_checkpoint.py writes into a new folder, an empty one or its own earlier output, all files at
    once (a temporary folder takes the output's place), and refuses a folder holding anything else: -o pointed at
    the embedded model once replaced its config with BERT-Base's."""
    maker = load_script("make_random_checkpoint")
    monkeypatch.setitem(maker.SIZES, "base", {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
                                              "intermediate_size": 64})
    model = tmp_path / "model"
    shutil.copytree(MODEL_DIR, model)
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    with pytest.raises(BertError, match=r"holds other files \(README.md, config.json, model.safetensors"):
        maker.main(["--size", "base", "-o", str(model)])
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    for args, pattern in ((["-o", str(tmp_path / "x"), "--seed", "-1"], "--seed must be >= 0"),
                          (["-o", os.devnull], "is not a folder"), (["-o", ""], "output folder is empty")):
        with pytest.raises(BertError, match=pattern):
            maker.main(["--size", "base", *args])
    out = tmp_path / "new" / "random"
    maker.main(["--size", "base", "-o", str(out), "--seed", "1"])
    first = (out / "model.ckpt.data-00000-of-00001").read_bytes()
    (out / "model.ckpt.index").unlink()   # an earlier output, incomplete: made again whole
    maker.main(["--size", "base", "-o", str(out), "--seed", "2"])
    assert sorted(p.name for p in out.iterdir()) == ["bert_config.json", "checkpoint", "model.ckpt.data-00000-of-00001",
                                                     "model.ckpt.index", "vocab.txt"]
    assert (out / "model.ckpt.data-00000-of-00001").read_bytes() != first
    assert sorted(p.name for p in out.parent.iterdir()) == ["random"]   # no temporary folder left
    os.symlink(out, tmp_path / "link")   # through a link: the folder it names is replaced, the link stays
    maker.main(["--size", "base", "-o", str(tmp_path / "link"), "--seed", "3"])
    assert (tmp_path / "link").is_symlink() and (out / "model.ckpt.index").is_file()
    run("builder.py", "-m", out, "-c", out, "-o", tmp_path / "r.engine", "-s", "32")


def test_a_single_valued_option_given_twice_is_refused_in_argument_groups_too():
    from helpers.errors import StrictParser
    parser = StrictParser(prog="x")
    parser.add_argument("-a")
    parser.add_argument("-b", action="append")
    parser.add_argument_group("more").add_argument("-k")
    parser.add_mutually_exclusive_group().add_argument("-m")
    assert vars(parser.parse_args(["-a", "1", "-b", "2", "-b", "3", "-k", "4", "-m", "5"])) == {
        "a": "1", "b": ["2", "3"], "k": "4", "m": "5"}
    for flags in (["-a", "1", "-a", "2"], ["-k", "1", "-k", "2"], ["-m", "1", "-m", "2"]):
        with pytest.raises(BertError, match=f"argument {flags[0]}: given more than once"):
            parser.parse_args(flags)
    assert parser.parse_args(["-a", "1"]).a == "1"   # the parser is reusable after a refusal
