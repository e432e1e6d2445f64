"""squad/evaluate-v1.1.py and squad/evaluate-v2.0.py against the metric definitions, computed independently here."""
import gzip
import json
import re
import string
import subprocess
import sys

import pytest

from conftest import ROOT, shared_path

EVAL_V1 = ROOT / "squad" / "evaluate-v1.1.py"
EVAL_V2 = ROOT / "squad" / "evaluate-v2.0.py"
DEV_V11 = ROOT / "squad" / "dev-v1.1.json"
PASSED = "&&&& PASSED TensorRT BERT Squad Accuracy matches reference."
FAILED = "&&&& FAILED TensorRT BERT Squad Accuracy matches reference."


def run(script, *args, cwd=None):
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


# The official definitions, written out plainly: lower-case; delete ASCII punctuation; the words a/an/the
# become spaces (regex word boundaries); split on whitespace. EM compares the normalised strings; F1 is the
# harmonic mean of precision and recall of the common tokens counted with multiplicity.
def reference_tokens(text):
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return re.sub(r"\b(a|an|the)\b", " ", text).split()


def reference_exact(prediction, gold):
    return float(reference_tokens(prediction) == reference_tokens(gold))


def reference_f1(prediction, gold):
    pred, remaining = reference_tokens(prediction), reference_tokens(gold)
    gold_len = len(remaining)
    common = 0
    for token in pred:
        if token in remaining:
            remaining.remove(token)
            common += 1
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / gold_len
    return 2 * precision * recall / (precision + recall)


def reference_v1(dataset, predictions):
    em = f1 = 0.0
    questions = [qa for a in dataset["data"] for p in a["paragraphs"] for qa in p["qas"]]
    for qa in questions:
        if qa["id"] in predictions:
            golds = [a["text"] for a in qa["answers"]]
            em += max(reference_exact(predictions[qa["id"]], g) for g in golds)
            f1 += max(reference_f1(predictions[qa["id"]], g) for g in golds)
    return 100 * em / len(questions), 100 * f1 / len(questions)


def squad(questions, version="1.1"):
    """A one-article SQuAD object from (id, [answer texts]) pairs."""
    qas = [{"id": qid, "question": f"question {qid}?", "answers": [{"text": t, "answer_start": 0} for t in answers]}
           for qid, answers in questions]
    return {"version": version, "data": [{"title": "t", "paragraphs": [{"context": "some context", "qas": qas}]}]}


def write_text(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def write_json(path, obj):
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


V1_QUESTIONS = [
    ("q1", ["Denver Broncos", "The Denver Broncos"]),
    ("q2", ["an apple"]),
    ("q3", ["  Carolina   Panthers "]),
    ("q4", ["unanswered"]),
    ("q5", ["Santa Clara, California", "Levi's Stadium"]),
    ("q6", ["the\u2014end"]),           # a non-ASCII dash is not punctuation for SQuAD: "the" still goes
    ("q7", ["A Tale of Two Cities"]),
]
V1_PREDICTIONS = {"q1": "the denver broncos!", "q2": "Apple pie", "q3": "Carolina\tPanthers.",
                  "q5": "Levi's Stadium in Santa Clara", "q6": "\u2014end", "q7": "tale two cities",
                  "not-in-dataset": "ignored"}


def test_v1_scores_match_definition(tmp_path):
    dataset = squad(V1_QUESTIONS)
    result = run(EVAL_V1, write_json(tmp_path / "d.json", dataset), write_json(tmp_path / "p.json", V1_PREDICTIONS),
                 0, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == PASSED and len(lines) == 2
    scores = json.loads(lines[1])
    assert list(scores) == ["exact_match", "f1"]
    em, f1 = reference_v1(dataset, V1_PREDICTIONS)
    assert scores["exact_match"] == pytest.approx(em, abs=1e-12)
    assert scores["f1"] == pytest.approx(f1, abs=1e-12)
    # hand check: q1, q3, q6 exact; F1 q2 2/3, q5 max(1/2, 4/7), q7 6/7 ("of" missing); q4 unanswered
    assert em == pytest.approx(100 * 3 / 7)
    assert f1 == pytest.approx(100 * (3 + 2 / 3 + 4 / 7 + 6 / 7) / 7)
    assert result.stderr.strip() == "Unanswered question q4 will receive score 0."


def test_v1_on_dev_with_fixture_predictions(tmp_path):
    predictions_file = shared_path("fixtures", "minilm-l6-squad11", "reference", "predictions_300.json")
    metrics = json.loads(shared_path("fixtures", "minilm-l6-squad11", "reference", "metrics_300.json").read_text())
    gz = tmp_path / "dev-v1.1.json.gz"
    gz.write_bytes(gzip.compress(DEV_V11.read_bytes()))
    result = run(EVAL_V1, gz, predictions_file, 90)
    assert result.returncode == 1  # FAILED: 10,270 questions unanswered
    assert result.stdout.splitlines()[0] == FAILED
    scores = json.loads(result.stdout.splitlines()[1])
    total = 10570
    assert scores["exact_match"] == pytest.approx(metrics["exact_match"] * 300 / total, abs=1e-9)
    assert scores["f1"] == pytest.approx(metrics["f1"] * 300 / total, abs=1e-9)
    em, f1 = reference_v1(json.loads(DEV_V11.read_text()), json.loads(predictions_file.read_text()))
    assert (scores["exact_match"], scores["f1"]) == (pytest.approx(em, abs=1e-9), pytest.approx(f1, abs=1e-9))
    assert result.stderr.count("Unanswered question") == total - 300


def test_v1_restricted_to_a_subset(capsys):
    from helpers.squad_metrics import evaluate
    dataset = squad(V1_QUESTIONS)
    subset = {"q2", "q4", "q5"}
    scores = evaluate(dataset["data"], V1_PREDICTIONS, restrict_to=subset)
    em, f1 = reference_v1(squad([q for q in V1_QUESTIONS if q[0] in subset]), V1_PREDICTIONS)
    assert (scores["exact_match"], scores["f1"]) == (pytest.approx(em), pytest.approx(f1))
    assert f1 == pytest.approx(100 * (2 / 3 + 4 / 7) / 3)
    assert capsys.readouterr().err.strip() == "Unanswered question q4 will receive score 0."


def test_v1_gate_boundary_and_exit_status(tmp_path):
    dataset = write_json(tmp_path / "d.json", squad([("a", ["yes"]), ("b", ["no"])]))
    predictions = write_json(tmp_path / "p.json", {"a": "Yes."})  # F1 = EM = 50 exactly
    passed = run(EVAL_V1, dataset, predictions, 50.5)  # 50 < 50.5 - 0.5 is false: PASSED
    assert (passed.returncode, passed.stdout.splitlines()) == (0, [PASSED, '{"exact_match": 50.0, "f1": 50.0}'])
    failed = run(EVAL_V1, dataset, predictions, 50.625)
    assert (failed.returncode, failed.stdout.splitlines()[0]) == (1, FAILED)


def test_v1_version_mismatch_is_a_warning(tmp_path):
    dataset = write_json(tmp_path / "d.json", squad([("a", ["yes"])], version="9.9"))
    result = run(EVAL_V1, dataset, write_json(tmp_path / "p.json", {"a": "yes"}), 100)
    assert result.returncode == 0
    assert "Evaluation expects v-1.1, but got dataset with v-9.9" in result.stderr
    # first, as upstream prints it, before the unanswered questions
    dataset = write_json(tmp_path / "d.json", squad([("a", ["yes"]), ("b", ["no"]), ("c", ["x"])], version="9.9"))
    result = run(EVAL_V1, dataset, write_json(tmp_path / "p.json", {"b": "no"}), 0)
    assert result.stderr.splitlines() == ["Evaluation expects v-1.1, but got dataset with v-9.9",
                                          "Unanswered question a will receive score 0.",
                                          "Unanswered question c will receive score 0."]


def test_v1_an_unanswered_question_without_gold_answers_scores_0(tmp_path):
    """As the official script: only an answered question needs gold answers (an unanswered one scores 0)."""
    dataset = write_json(tmp_path / "d.json", squad([("q1", ["The cat"]), ("q2", [])]))
    result = run(EVAL_V1, dataset, write_json(tmp_path / "p.json", {"q1": "cat"}), 0)
    assert result.returncode == 0 and json.loads(result.stdout.splitlines()[1]) == {"exact_match": 50.0, "f1": 50.0}
    assert result.stderr == "Unanswered question q2 will receive score 0.\n"


def test_the_evaluators_need_no_passages_or_questions(tmp_path):
    """As the official scripts: scoring reads ids and gold answers only; a file without 'context' or 'question'
    (an answer key) is scored."""
    data = squad([("a", ["yes"]), ("b", [])], version="v2.0")
    paragraph = data["data"][0]["paragraphs"][0]
    del paragraph["context"], paragraph["qas"][0]["question"], paragraph["qas"][1]["question"]
    v2 = write_json(tmp_path / "v2.json", data)
    assert v2_json(run(EVAL_V2, v2, write_json(tmp_path / "p.json", {"a": "yes", "b": ""})))["exact"] == 100.0
    v1 = write_json(tmp_path / "v1.json", {"version": "1.1", "data": [{"paragraphs": [{"qas": [
        {"id": "a", "answers": [{"text": "yes"}]}]}]}]})
    result = run(EVAL_V1, v1, write_json(tmp_path / "p1.json", {"a": "yes"}), 100)
    assert result.returncode == 0 and json.loads(result.stdout.splitlines()[1])["exact_match"] == 100.0


def test_answers_under_other_ids_are_not_read(tmp_path):
    """The official scripts read the answers (and no-answer probabilities) of the dataset's questions only: a
    file that carries other entries, of any type, scores the same."""
    dataset = write_json(tmp_path / "d.json", squad([("a", ["yes"]), ("b", ["no"])]))
    result = run(EVAL_V1, dataset, write_json(tmp_path / "p.json", {"a": "yes", "b": "x", "meta": {"v": 1},
                                                                    "zzz": None}), 0)
    assert result.returncode == 0 and json.loads(result.stdout.splitlines()[1]) == {"exact_match": 50.0,
                                                                                     "f1": 50.0}
    v2 = write_json(tmp_path / "v2.json", squad([("a", ["yes"]), ("b", [])], version="v2.0"))
    preds = write_json(tmp_path / "p2.json", {"a": "yes", "b": "", "zzz": 3})
    na = write_json(tmp_path / "na.json", {"a": 0.1, "b": 0.9, "zzz": "junk", "yyy": None})
    result = run(EVAL_V2, v2, preds, "-n", na)
    assert result.returncode == 0 and v2_json(result)["exact"] == 100.0 and v2_json(result)["best_exact"] == 100.0
    bad = write_json(tmp_path / "bad.json", {"a": 0.1, "b": "junk"})
    assert "the value for b is not a finite number" in run(EVAL_V2, v2, preds, "-n", bad).stderr


@pytest.mark.parametrize("make_args, message", [
    (lambda d, p, t: [t / "missing.json", p, 90], "SQuAD file not found"),
    (lambda d, p, t: [d, t / "missing.json", 90], "prediction file not found"),
    (lambda d, p, t: [d, write_json(t / "list.json", ["x"]), 90], "must hold a json object"),
    (lambda d, p, t: [d, write_json(t / "num.json", {"a": 3}), 90], "answer to a is not a string"),
    (lambda d, p, t: [d, write_text(t / "huge.json", '{"a": 1' + "0" * 5000 + "}"), 90],
     "huge.json (Exceeds the limit (4300 digits) for integer string conversion)"),
    (lambda d, p, t: [write_json(t / "v2.json", squad([("a", ["yes"]), ("b", [])], version="9.9")),
                      write_json(t / "none.json", {"b": "x"}), 90], "question 'b' has no answers"),   # the error alone
    (lambda d, p, t: [write_json(t / "noans.json", {"data": [{"paragraphs": [{"context": "c", "qas": [
        {"id": "a", "question": "q"}]}]}]}), p, 90], "needs 'answers'"),
    (lambda d, p, t: [write_json(t / "v2.json", squad([("a", [])])), p, 90], "SQuAD v2.0 file"),
    (lambda d, p, t: [d, p, "abc"], "invalid float value"),
    (lambda d, p, t: [d, p, "nan"], "finite"),
    (lambda d, p, t: [d, p], "required: f1_acc"),
    (lambda d, p, t: [d, p, 90, "--verbose"], "unrecognized arguments"),
])
def test_v1_bad_input_is_one_error_line(tmp_path, make_args, message):
    dataset = write_json(tmp_path / "d.json", squad([("a", ["yes"])]))
    predictions = write_json(tmp_path / "p.json", {"a": "yes"})
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    result = run(EVAL_V1, *make_args(dataset, predictions, tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_v1_malformed_json_is_one_error_line(tmp_path):
    (tmp_path / "broken.json").write_text('{"data": [', encoding="utf-8")
    result = run(EVAL_V1, tmp_path / "broken.json", tmp_path / "broken.json", 90)
    assert result.returncode == 2 and result.stderr.startswith("error: SQuAD file is not valid json")


# ---------------------------------------------------------------------------------------------------------------
# v2.0

@pytest.fixture(scope="module")
def v2_sample(tmp_path_factory):
    """The first three articles of the SQuAD v2.0 dev set, written as .json.gz."""
    with gzip.open(shared_path("data", "squad", "dev-v2.0.recon.json.gz"), "rt", encoding="utf-8") as f:
        full = json.load(f)
    sample = {"version": full["version"], "data": full["data"][:3]}
    path = tmp_path_factory.mktemp("v2") / "sample.json.gz"
    path.write_bytes(gzip.compress(json.dumps(sample).encode()))
    questions = [qa for a in sample["data"] for p in a["paragraphs"] for qa in p["qas"]]
    assert any(qa["answers"] for qa in questions) and any(not qa["answers"] for qa in questions)
    return path, questions


def v2_json(result):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_v2_perfect_and_empty_predictions(tmp_path, v2_sample):
    path, questions = v2_sample
    n_total = len(questions)
    n_no_ans = sum(1 for qa in questions if not qa["answers"])
    perfect = {qa["id"]: qa["answers"][0]["text"] if qa["answers"] else "" for qa in questions}
    scores = v2_json(run(EVAL_V2, path, write_json(tmp_path / "perfect.json", perfect)))
    assert list(scores) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
                            "NoAns_exact", "NoAns_f1", "NoAns_total"]
    assert scores == {"exact": 100.0, "f1": 100.0, "total": n_total,
                      "HasAns_exact": 100.0, "HasAns_f1": 100.0, "HasAns_total": n_total - n_no_ans,
                      "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": n_no_ans}
    empty = {qa["id"]: "" for qa in questions}
    scores = v2_json(run(EVAL_V2, path, write_json(tmp_path / "empty.json", empty)))
    assert scores["exact"] == pytest.approx(100 * n_no_ans / n_total) == scores["f1"]
    assert (scores["HasAns_exact"], scores["HasAns_f1"], scores["NoAns_exact"]) == (0.0, 0.0, 100.0)


def test_v2_partial_credit_matches_definition(tmp_path):
    questions = [("a", ["Denver Broncos", "the Broncos"]), ("b", []), ("c", []), ("d", ["an apple pie"]),
                 ("e", ["!!", "Paris"])]  # "!!" normalises to nothing and is not a gold answer
    predictions = {"a": "Broncos", "b": "", "c": "something", "d": "apple", "e": "paris"}
    dataset = squad(questions, version="v2.0")
    scores = v2_json(run(EVAL_V2, write_json(tmp_path / "d.json", dataset),
                         write_json(tmp_path / "p.json", predictions)))

    def best(metric, qid, golds):
        golds = [g for g in golds if reference_tokens(g)] or [""]
        if not golds[0]:  # unanswerable: only the empty answer is right
            return float(not reference_tokens(predictions[qid]))
        return max(metric(predictions[qid], g) for g in golds)
    exact = [best(reference_exact, q, g) for q, g in questions]
    f1 = [best(reference_f1, q, g) for q, g in questions]
    assert scores["exact"] == pytest.approx(100 * sum(exact) / 5)
    assert scores["f1"] == pytest.approx(100 * sum(f1) / 5)
    assert scores["HasAns_f1"] == pytest.approx(100 * (f1[0] + f1[3] + f1[4]) / 3)
    assert scores["NoAns_exact"] == 50.0
    assert f1 == [1.0, 1.0, 0.0, 2 / 3, 1.0]  # hand check: "Broncos" vs "the Broncos"; "apple" vs "apple pie"


def test_v2_no_answer_probabilities(tmp_path, v2_sample):
    path, questions = v2_sample
    predictions = {qa["id"]: qa["answers"][0]["text"] if qa["answers"] else "a wrong guess" for qa in questions}
    na_probs = {qa["id"]: 0.0 if qa["answers"] else 1.0 for qa in questions}
    n_has = sum(1 for qa in questions if qa["answers"])
    preds_file = write_json(tmp_path / "p.json", predictions)
    na_file = write_json(tmp_path / "na.json", na_probs)
    scores = v2_json(run(EVAL_V2, path, preds_file, "-n", na_file))
    assert scores["exact"] == pytest.approx(100 * n_has / len(questions))  # default threshold 1.0 never fires
    assert (scores["best_exact"], scores["best_exact_thresh"]) == (100.0, 0.0)
    assert (scores["best_f1"], scores["best_f1_thresh"]) == (100.0, 0.0)
    thresholded = v2_json(run(EVAL_V2, path, preds_file, "--na-prob-file", na_file, "-t", "0.5"))
    assert thresholded["exact"] == 100.0 and thresholded["NoAns_exact"] == 100.0
    out = tmp_path / "eval.json"
    written = run(EVAL_V2, path, preds_file, "-n", na_file, "-o", out)
    assert written.returncode == 0 and written.stdout == ""
    assert json.loads(out.read_text()) == scores


def test_v2_cli_errors(tmp_path, v2_sample):
    path, questions = v2_sample
    preds = write_json(tmp_path / "p.json", {qa["id"]: "" for qa in questions[1:]})
    help_ = run(EVAL_V2)
    assert help_.returncode == 1 and help_.stdout.startswith("usage:")
    missing = run(EVAL_V2, path, preds)
    assert missing.returncode == 2 and f"e.g. {questions[0]['id']}" in missing.stderr
    complete = write_json(tmp_path / "all.json", {qa["id"]: "" for qa in questions})
    na = write_json(tmp_path / "na.json", {questions[0]["id"]: 0.5})
    no_prob = run(EVAL_V2, path, complete, "-n", na)
    assert no_prob.returncode == 2 and "no entry for question" in no_prob.stderr
    bad_flag = run(EVAL_V2, path, complete, "--na-prob", "x.json")  # no prefix abbreviations
    assert bad_flag.returncode == 2 and bad_flag.stderr.startswith("error: ")
    nan_threshold = run(EVAL_V2, path, complete, "-t", "nan")
    assert nan_threshold.returncode == 2 and "--na-prob-thresh must be a number" in nan_threshold.stderr
    all_na = write_json(tmp_path / "all_na.json", {qa["id"]: 0.5 for qa in questions})
    never = run(EVAL_V2, path, complete, "-n", all_na, "-t", "inf")   # the official script's way to turn it off
    assert never.returncode == 0 and json.loads(never.stdout)["exact"] == \
        json.loads(run(EVAL_V2, path, complete).stdout)["exact"]
    (tmp_path / "nan.json").write_text(json.dumps({qa["id"]: 0.5 for qa in questions}).replace("0.5", "NaN", 1))
    nan_prob = run(EVAL_V2, path, complete, "-n", tmp_path / "nan.json")
    assert nan_prob.returncode == 2 and "is not a finite number" in nan_prob.stderr
    (tmp_path / "big.json").write_text(json.dumps({qa["id"]: 0.5 for qa in questions}).replace("0.5", "1" + "0" * 400,
                                                                                               1))
    big_prob = run(EVAL_V2, path, complete, "-n", tmp_path / "big.json")   # an integer beyond float's range
    assert big_prob.returncode == 2 and "is not a finite number" in big_prob.stderr
    over_input = run(EVAL_V2, path, complete, "-o", complete)
    assert over_input.returncode == 2 and "would overwrite the predictions" in over_input.stderr
    for result in (missing, no_prob, bad_flag, nan_threshold, nan_prob, big_prob, over_input):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    # a byte-order mark before the json is no error
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + complete.read_bytes())
    assert v2_json(run(EVAL_V2, path, bom))["total"] == len(questions)


def test_v2_plots_need_matplotlib(tmp_path, v2_sample):
    path, questions = v2_sample
    preds = write_json(tmp_path / "p.json", {qa["id"]: "" for qa in questions})
    na = write_json(tmp_path / "na.json", {qa["id"]: 0.5 for qa in questions})
    result = run(EVAL_V2, path, preds, "-n", na, "-p", tmp_path / "images")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result.returncode == 2 and "needs matplotlib" in result.stderr
    else:
        scores = v2_json(result)
        assert {"pr_exact_ap", "pr_f1_ap", "pr_oracle_ap"} <= set(scores)
        assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [
            "na_prob_hist_hasAns.png", "na_prob_hist_noAns.png", "pr_exact.png", "pr_f1.png", "pr_oracle.png"]
