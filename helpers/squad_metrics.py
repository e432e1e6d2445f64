"""The official SQuAD metrics: v1.1 (EM/F1 over all questions) and v2.0 (with unanswerable questions).

Definitions follow the official evaluation scripts of https://rajpurkar.github.io/SQuAD-explorer/:
normalise (lower-case, drop ASCII punctuation, drop the words a/an/the, collapse whitespace), then
exact match, or token-level F1 over the bag of normalised tokens; the max over the gold answers.
Malformed inputs raise BertError instead of a traceback; scores are unchanged.
"""
import collections
import math
import os
import re
import string
import sys

from .data_processing import iter_squad_questions, load_squad_json
from .errors import BertError, read_json_file

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


# --------------------------------------------------------------------------------------------------------------
# Inputs

def load_dataset(path):
    """The SQuAD file's parsed object, with each question's answers checked to be a list of {"text": str}."""
    dataset = load_squad_json(path, texts=False)
    for _, qa in iter_squad_questions(dataset):
        answers = qa.get("answers")
        if not isinstance(answers, list) or not all(
                isinstance(a, dict) and isinstance(a.get("text"), str) for a in answers):
            raise BertError(f"malformed SQuAD file {path}: question {qa['id']!r} needs 'answers', "
                            f"a list of objects with a 'text' string")
    return dataset


def question_ids(dataset):
    """The ids of every question of a SQuAD file's "data" list."""
    return {qa["id"] for _, qa in iter_squad_questions({"data": dataset})}


def load_predictions(path, ids=None):
    """{question id: answer text} from a predictions json file. With `ids`, only those questions' answers are
    checked: the official scripts never read the others (a file may carry more)."""
    predictions = read_json_file(path, "prediction file")
    if not isinstance(predictions, dict):
        raise BertError(f"prediction file {path} must hold a json object {{question id: answer text}}")
    for qid, text in predictions.items():
        if not isinstance(text, str) and (ids is None or qid in ids):
            raise BertError(f"prediction file {path}: the answer to {qid} is not a string")
    return predictions


def _finite_float(number):
    """Whether a json number is a finite float (an integer beyond float's range is not: math.isfinite raises)."""
    try:
        return math.isfinite(number)
    except OverflowError:
        return False


def load_na_probs(path, ids=None):
    """{question id: probability of no answer} from a json file; with `ids`, those questions' only (the official
    script's thresholds skip the others, and would fail on their values)."""
    na_probs = read_json_file(path, "no-answer probability file")
    if not isinstance(na_probs, dict):
        raise BertError(f"no-answer probability file {path} must hold a json object {{question id: number}}")
    na_probs = {qid: p for qid, p in na_probs.items() if ids is None or qid in ids}
    for qid, p in na_probs.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not _finite_float(p):
            raise BertError(f"no-answer probability file {path}: the value for {qid} is not a finite number")
    return na_probs


# --------------------------------------------------------------------------------------------------------------
# SQuAD v1.1

def token_f1(prediction_tokens, ground_truth_tokens):
    """The bag-of-tokens F1 both official scripts compute (0 when no token is shared)."""
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def f1_score(prediction, ground_truth):
    return token_f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def exact_match_score(prediction, ground_truth):
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    return max(metric_fn(prediction, ground_truth) for ground_truth in ground_truths)


def evaluate(dataset, predictions, restrict_to=None):
    """{'exact_match', 'f1'} in percent over every question of the v1.1 `dataset` ("data" list).

    A question without a prediction scores 0 and is reported on stderr, as the official script does.
    `restrict_to` (a set of ids) scores only those questions, e.g. a benchmark's first N.
    """
    return score_v1(v1_questions(dataset, predictions, restrict_to), predictions)


def score_v1(questions, predictions):
    """evaluate()'s result over the questions v1_questions chose (unanswered ones reported on stderr)."""
    f1 = exact_match = 0
    for qa in questions:
        if qa["id"] not in predictions:
            print(f"Unanswered question {qa['id']} will receive score 0.", file=sys.stderr)
            continue
        ground_truths = [answer["text"] for answer in qa["answers"]]
        prediction = predictions[qa["id"]]
        exact_match += metric_max_over_ground_truths(exact_match_score, prediction, ground_truths)
        f1 += metric_max_over_ground_truths(f1_score, prediction, ground_truths)
    return {"exact_match": 100.0 * exact_match / len(questions), "f1": 100.0 * f1 / len(questions)}


def v1_questions(dataset, predictions, restrict_to=None):
    """The questions of a v1.1 "data" list that evaluate() scores; a BertError, before anything is printed, where
    there are none or an answered one has no gold answer (a v2.0 file; the official script fails there, and scores
    an unanswered one 0)."""
    questions = [qa for _, qa in iter_squad_questions({"data": dataset})
                 if restrict_to is None or qa["id"] in restrict_to]
    if not questions:
        raise BertError("the dataset has no questions")
    for qa in questions:
        if not qa["answers"] and qa["id"] in predictions:
            raise BertError(f"question {qa['id']!r} has no answers: is this a SQuAD v2.0 file? "
                            f"(use evaluate-v2.0.py)")
    return questions


def accuracy_passes(f1, f1_acc):
    """demoBERT's accuracy gate: the F1 may fall short of the reference by at most 0.5."""
    return not f1 < f1_acc - 0.5


def accuracy_line(passed):
    return f"&&&& {'PASSED' if passed else 'FAILED'} TensorRT BERT Squad Accuracy matches reference."


# --------------------------------------------------------------------------------------------------------------
# SQuAD v2.0

def make_qid_to_has_ans(dataset):
    return {qa["id"]: bool(qa["answers"]) for article in dataset
            for paragraph in article["paragraphs"] for qa in paragraph["qas"]}


def get_tokens(s):
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold, a_pred):
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold, a_pred):
    """v1.1's F1, except that v2.0 scores a no-answer (no tokens) on either side 1 if both agree, else 0."""
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    if not gold_toks or not pred_toks:
        return int(gold_toks == pred_toks)
    return token_f1(pred_toks, gold_toks)


def get_raw_scores(dataset, preds):
    """Per-question (exact, f1) dicts; an unanswerable question's only gold answer is ""."""
    missing = [qa["id"] for article in dataset for paragraph in article["paragraphs"]
               for qa in paragraph["qas"] if qa["id"] not in preds]
    if missing:
        # The official script crashes here (KeyError); a complete prediction file is required.
        raise BertError(f"the prediction file has no answer for {len(missing)} question(s), e.g. {missing[0]}")
    exact_scores = {}
    f1_scores = {}
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                qid = qa["id"]
                gold_answers = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])] or [""]
                a_pred = preds[qid]
                exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
                f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold_answers)
    if not exact_scores:
        raise BertError("the dataset has no questions")
    return exact_scores, f1_scores


def apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):
    new_scores = {}
    for qid, s in scores.items():
        if qid not in na_probs:
            raise BertError(f"the no-answer probabilities have no entry for question {qid}")
        if na_probs[qid] > na_prob_thresh:
            new_scores[qid] = float(not qid_to_has_ans[qid])
        else:
            new_scores[qid] = s
    return new_scores


def make_eval_dict(exact_scores, f1_scores, qid_list=None):
    qids = qid_list if qid_list else list(exact_scores)
    total = len(qids)
    return collections.OrderedDict([
        ("exact", 100.0 * sum(exact_scores[k] for k in qids) / total),
        ("f1", 100.0 * sum(f1_scores[k] for k in qids) / total),
        ("total", total),
    ])


def merge_eval(main_eval, new_eval, prefix):
    for k in new_eval:
        main_eval[f"{prefix}_{k}"] = new_eval[k]


def find_best_thresh(preds, scores, na_probs, qid_to_has_ans):
    """(best score in percent, the no-answer probability threshold that gives it)."""
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def find_all_best_thresh(main_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans):
    best_exact, exact_thresh = find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh = find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    main_eval["best_exact"] = best_exact
    main_eval["best_exact_thresh"] = exact_thresh
    main_eval["best_f1"] = best_f1
    main_eval["best_f1_thresh"] = f1_thresh


def make_precision_recall_eval(scores, na_probs, num_true_pos, qid_to_has_ans, plot=None):
    """Average precision (percent) of answering in order of rising no-answer probability.

    `plot(precisions, recalls)` draws the curve when given.
    """
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    true_pos = 0.0
    precisions = [1.0]
    recalls = [0.0]
    avg_prec = 0.0
    for i, qid in enumerate(qid_list):
        if qid_to_has_ans[qid]:
            true_pos += scores[qid]
        cur_p = true_pos / float(i + 1)
        cur_r = true_pos / float(num_true_pos)
        if i == len(qid_list) - 1 or na_probs[qid] != na_probs[qid_list[i + 1]]:
            # a threshold can be put after this point
            avg_prec += cur_p * (cur_r - recalls[-1])
            precisions.append(cur_p)
            recalls.append(cur_r)
    if plot:
        plot(precisions, recalls)
    return {"ap": 100.0 * avg_prec}


def load_pyplot():
    """matplotlib.pyplot with a file-only backend; BertError when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        raise BertError("--out-image-dir needs matplotlib, which is not installed (pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _pr_curve_plotter(out_image, title):
    def plot(precisions, recalls):
        plt = load_pyplot()
        plt.step(recalls, precisions, color="b", alpha=0.2, where="post")
        plt.fill_between(recalls, precisions, step="post", alpha=0.2, color="b")
        plt.xlabel("Recall")
        plt.ylabel("Precision")
        plt.xlim([0.0, 1.05])
        plt.ylim([0.0, 1.05])
        plt.title(title)
        plt.savefig(out_image)
        plt.clf()
    return plot


def run_precision_recall_analysis(main_eval, exact_raw, f1_raw, na_probs, qid_to_has_ans, out_image_dir):
    """Average precisions (pr_exact_ap, pr_f1_ap, pr_oracle_ap) and their curves saved under out_image_dir."""
    os.makedirs(out_image_dir, exist_ok=True)
    num_true_pos = sum(1 for v in qid_to_has_ans.values() if v)
    if num_true_pos == 0:
        return
    oracle_scores = {k: float(v) for k, v in qid_to_has_ans.items()}
    for name, scores, title in (
            ("exact", exact_raw, "Precision-Recall curve for Exact Match score"),
            ("f1", f1_raw, "Precision-Recall curve for F1 score"),
            ("oracle", oracle_scores, "Oracle Precision-Recall curve (binary task of HasAns vs. NoAns)")):
        plot = _pr_curve_plotter(os.path.join(out_image_dir, f"pr_{name}.png"), title)
        merge_eval(main_eval, make_precision_recall_eval(scores, na_probs, num_true_pos, qid_to_has_ans, plot),
                   f"pr_{name}")


def histogram_na_prob(na_probs, qid_list, image_dir, name):
    if not qid_list:
        return
    plt = load_pyplot()
    x = [na_probs[k] for k in qid_list]
    plt.hist(x, weights=[1.0 / len(x)] * len(x), bins=20, range=(0.0, 1.0))
    plt.xlabel("Model probability of no-answer")
    plt.ylabel("Proportion of dataset")
    plt.title(f"Histogram of no-answer probability: {name}")
    plt.savefig(os.path.join(image_dir, f"na_prob_hist_{name}.png"))
    plt.clf()


def evaluate_v2(dataset, preds, na_probs=None, na_prob_thresh=1.0, out_image_dir=None):
    """The official v2.0 result: exact, f1, total, HasAns_*, NoAns_*, and best_* when na_probs are given.

    With na_probs and out_image_dir it also adds the precision-recall averages and saves the plots.
    """
    have_na_probs = na_probs is not None
    if not have_na_probs:
        na_probs = {k: 0.0 for k in preds}
    qid_to_has_ans = make_qid_to_has_ans(dataset)
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = get_raw_scores(dataset, preds)
    exact_thresh = apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out_eval = make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids), "HasAns")
    if no_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids), "NoAns")
    if have_na_probs:
        # only questions of the dataset take part (the official script would fail on any other id)
        na_probs = {k: v for k, v in na_probs.items() if k in qid_to_has_ans}
        find_all_best_thresh(out_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans)
        if out_image_dir:
            run_precision_recall_analysis(out_eval, exact_raw, f1_raw, na_probs, qid_to_has_ans, out_image_dir)
            histogram_na_prob(na_probs, has_ans_qids, out_image_dir, "hasAns")
            histogram_na_prob(na_probs, no_ans_qids, out_image_dir, "noAns")
    return out_eval
