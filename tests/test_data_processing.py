"""helpers/data_processing.py: features against the fixture and Hugging Face windows; answer decoding by hand."""
import gzip
import json
import random
import unicodedata

import numpy as np
import pytest

from conftest import ROOT, shared_path
from helpers import data_processing as dp
from helpers.errors import BertError
from helpers.tokenization import FullTokenizer

DEV_V11 = ROOT / "squad" / "dev-v1.1.json"


@pytest.fixture(scope="module")
def tokenizer():
    return FullTokenizer(shared_path("data", "vocab", "bert-base-uncased-vocab.txt"))


@pytest.fixture(scope="module")
def dev_examples():
    return dp.read_squad_json(DEV_V11)


# ---------------------------------------------------------------------------------------------------------------
# Reading

def test_read_squad_json_examples_share_paragraph_tokens(dev_examples):
    data = json.loads(DEV_V11.read_text(encoding="utf-8"))["data"]
    qas = [qa for a in data for p in a["paragraphs"] for qa in p["qas"]]
    assert len(dev_examples) == len(qas) == 10570
    for example, qa in zip(dev_examples, qas, strict=True):
        assert example.id == qa["id"] and example.question_text == qa["question"]
    assert dev_examples[0].doc_tokens == dev_examples[0].doc_tokens  # same paragraph, same object
    assert dev_examples[0].doc_tokens is dev_examples[1].doc_tokens
    assert len({id(e.doc_tokens) for e in dev_examples}) == 2067


def test_convert_doc_tokens_splits_at_every_space_the_tokenizer_sees():
    text = " The\tquick\r\nbrown\u202ffox\u00a0jumps\u3000over\u2028the\u2009lazy\x0bdog  "
    # demoBERT split only at space, tab, CR, LF and U+202F; the tokenizer deletes the vertical tab (a control
    # character), which therefore joins its neighbours
    assert dp.convert_doc_tokens(text) == ["The", "quick", "brown", "fox", "jumps", "over", "the", "lazy\x0bdog"]
    assert dp.convert_doc_tokens(" \t\u00a0\u2003 ") == []


def test_read_squad_v2_gzip():
    examples = dp.read_squad_json(shared_path("data", "squad", "dev-v2.0.recon.json.gz"))
    assert len(examples) == 11873
    assert examples[0].question_text == "In what country is Normandy located?"


def _write(path, obj):
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


@pytest.mark.parametrize("obj, message", [
    ([], "the top level is a list, expected an object"),
    ({"version": "1.1"}, "the top level has no 'data'"),
    ({"data": {}}, "the top level.data is a object, expected a list"),
    ({"data": [{"title": "x"}]}, r"data\[0\] has no 'paragraphs'"),
    ({"data": [{"paragraphs": [{"qas": []}]}]}, r"data\[0\].paragraphs\[0\] has no 'context'"),
    ({"data": [{"paragraphs": [{"context": 3, "qas": []}]}]}, "context is a number, expected a string"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q1"}]}]}]}, r"qas\[0\] has no 'question'"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": 7, "question": "q"}]}]}]}, "id is a number"),
    ({"data": [{"paragraphs": [{"context": " ", "qas": [{"id": "q1", "question": "q"}]}]}]}, "empty context"),
    ({"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q1", "question": " "}]}]}]}, "'q1' is empty"),
])
def test_read_squad_json_rejects_malformed_files(tmp_path, obj, message):
    path = _write(tmp_path / "bad.json", obj)
    with pytest.raises(BertError, match=message) as info:
        dp.read_squad_json(path)
    assert str(path) in str(info.value)


def test_read_squad_json_rejects_unreadable_files(tmp_path):
    with pytest.raises(BertError, match="not found"):
        dp.read_squad_json(tmp_path / "missing.json")
    with pytest.raises(BertError, match="is a directory"):
        dp.read_squad_json(tmp_path)
    (tmp_path / "trunc.json").write_text('{"data": [', encoding="utf-8")
    with pytest.raises(BertError, match="not valid json.*line 1"):
        dp.read_squad_json(tmp_path / "trunc.json")
    (tmp_path / "bad.json.gz").write_bytes(gzip.compress(b'{"data": []}')[:-6])
    with pytest.raises(BertError, match="damaged gzip"):
        dp.read_squad_json(tmp_path / "bad.json.gz")
    (tmp_path / "latin1.json").write_bytes('{"data": [], "x": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(BertError, match="not UTF-8"):
        dp.read_squad_json(tmp_path / "latin1.json")


# ---------------------------------------------------------------------------------------------------------------
# Features

def test_features_equal_fixture_reference(tokenizer, dev_examples):
    """The fixture's inputs were made with Hugging Face's pipeline (384/128/64): first window of 10 questions."""
    reference = np.load(shared_path("fixtures", "minilm-l6-squad11", "reference", "logits_first10.npz"))
    for i in range(10):
        example = dev_examples[i]
        assert example.id == str(reference["qas_ids"][i])
        feature = dp.convert_example_to_features(example.doc_tokens, example.question_text, tokenizer, 384, 128, 64)[0]
        for name in ("input_ids", "segment_ids", "input_mask"):
            value = getattr(feature, name)
            assert value.dtype == np.int32 and value.shape == (384,)
            np.testing.assert_array_equal(value, reference[name][i], err_msg=f"{name} of question {i}")


def _hf_window_tokenizer():
    transformers = pytest.importorskip("transformers")
    if tuple(int(v) for v in transformers.__version__.split(".")[:2]) < (5, 24):
        # e.g. 5.17 ends the last overflowing window of dev question 56bf301c3aeaaa14008c954f 30 tokens before the
        # passage does (its own one-shot encoding of the pair has them); 5.24 does not
        pytest.skip(f"transformers {transformers.__version__} cuts overflowing windows short: no reference")
    from tokenizers.models import WordPiece
    fixture = shared_path("fixtures", "minilm-l6-squad11")
    hf = transformers.AutoTokenizer.from_pretrained(str(fixture))
    # Google's WordPiece allows 200 characters per word, HF's default 100 (see test_tokenization.py).
    hf.backend_tokenizer.model = WordPiece.from_file(str(fixture / "vocab.txt"), unk_token="[UNK]",
                                                     max_input_chars_per_word=200)
    return hf


def _hf_windows(hf, pairs, max_seq_length, doc_stride, max_tokens_for_doc):
    """HF's overflowing windows; its `stride` is the overlap, so overlap = window size - demoBERT's stride."""
    enc = hf([q for q, _ in pairs], [c for _, c in pairs], truncation="only_second", max_length=max_seq_length,
             stride=max_tokens_for_doc - doc_stride, return_overflowing_tokens=True, padding="max_length")
    windows = [[] for _ in pairs]
    for row, sample in enumerate(enc["overflow_to_sample_mapping"]):
        windows[sample].append((enc["input_ids"][row], enc["token_type_ids"][row], enc["attention_mask"][row]))
    return windows


def test_every_dev_question_windows_equal_hf(tokenizer, dev_examples):
    hf = _hf_window_tokenizer()
    all_features = list(dp.convert_examples_to_features(dev_examples, tokenizer, 384, 128, 64))
    assert sum(map(len, all_features)) > len(dev_examples)  # some passages need several windows
    by_room = {}  # HF takes one stride per call: group questions by the room their length leaves
    for example, features in zip(dev_examples, all_features):
        n_query = len(tokenizer.tokenize(example.question_text))
        assert n_query <= 64  # HF would not truncate a longer question
        by_room.setdefault(384 - n_query - 3, []).append((example, features))
    for room, group in by_room.items():
        pairs = [(e.question_text, " ".join(e.doc_tokens)) for e, _ in group]
        for (example, features), hf_windows in zip(group, _hf_windows(hf, pairs, 384, 128, room), strict=True):
            assert len(features) == len(hf_windows), example.id
            for feature, (ids, segments, mask) in zip(features, hf_windows, strict=True):
                assert feature.input_ids.tolist() == ids, example.id
                assert feature.segment_ids.tolist() == segments, example.id
                assert feature.input_mask.tolist() == mask, example.id


def _long_passage(seed, n_words):
    rng = random.Random(seed)
    words = ("the of and to in a is was for on that by with as at from Normandy Beyoncé café naïve "
             "1,000 3.14 U.S. don't (parenthesis) semi;colon 北京 supercalifragilistic "
             "electroencephalographically unaffable").split()
    return " ".join(rng.choice(words) for _ in range(n_words))


@pytest.mark.parametrize("max_seq_length, doc_stride, max_query_length", [
    (64, 16, 16), (48, 7, 8), (128, 50, 20), (40, 100, 8), (32, 1, 4)])
def test_multi_window_spans_and_max_context(tokenizer, max_seq_length, doc_stride, max_query_length):
    passage = _long_passage(max_seq_length + doc_stride, 400)
    question = "Which of the words in this passage are the longest ones, and why? " * 2
    doc_tokens = dp.convert_doc_tokens(passage)
    features = dp.convert_example_to_features(doc_tokens, question, tokenizer, max_seq_length, doc_stride,
                                              max_query_length)
    query = tokenizer.tokenize(question)[:max_query_length]
    pieces = [(p, i) for i, word in enumerate(doc_tokens) for p in tokenizer.tokenize(word)]
    room = max_seq_length - len(query) - 3
    # windows as the spec describes them: advance by min(length, stride) until one reaches the end
    spans, start = [], 0
    while True:
        length = min(room, len(pieces) - start)
        spans.append((start, length))
        if start + length == len(pieces):
            break
        start += min(length, doc_stride)
    assert len(features) == len(spans) > 3
    offset = len(query) + 2
    owners = {}
    for index, (feature, (start, length)) in enumerate(zip(features, spans, strict=True)):
        n = offset + length + 1
        assert feature.tokens == ["[CLS]", *query, "[SEP]", *[p for p, _ in pieces[start:start + length]], "[SEP]"]
        assert feature.input_ids[:n].tolist() == tokenizer.convert_tokens_to_ids(feature.tokens)
        assert not feature.input_ids[n:].any() and not feature.segment_ids[n:].any()
        assert feature.input_mask.tolist() == [1] * n + [0] * (max_seq_length - n)
        assert feature.segment_ids[:n].tolist() == [0] * offset + [1] * (length + 1)
        assert feature.token_to_orig_map == {offset + k: pieces[start + k][1] for k in range(length)}
        for k in range(length):
            position = start + k
            # brute force: best min(left, right) + 0.01 * length over the windows holding it, first on ties
            candidates = [(min(position - s, s + n_ - 1 - position) + 0.01 * n_, -i)
                          for i, (s, n_) in enumerate(spans) if s <= position < s + n_]
            best = -max(candidates)[1]
            assert feature.token_is_max_context[offset + k] == (best == index)
            if best == index:
                owners[position] = owners.get(position, 0) + 1
    assert owners == {position: 1 for position in range(len(pieces))}  # each token owned exactly once

    if doc_stride < room:  # HF expresses the same windows as an overlap of room - stride tokens
        hf = _hf_window_tokenizer()
        truncated_question = " ".join(query).replace(" ##", "")  # HF does not truncate questions itself
        assert hf.tokenize(truncated_question) == query
        hf_windows = _hf_windows(hf, [(truncated_question, passage)], max_seq_length, doc_stride, room)[0]
        assert [f.input_ids.tolist() for f in features] == [ids for ids, _, _ in hf_windows]
        assert [f.segment_ids.tolist() for f in features] == [segments for _, segments, _ in hf_windows]


def test_batched_features_equal_single_and_tokenize_each_paragraph_once(dev_examples):
    vocab = shared_path("data", "vocab", "bert-base-uncased-vocab.txt")

    class CountingTokenizer(FullTokenizer):
        passages = 0

        def tokenize_words(self, words):
            CountingTokenizer.passages += 1
            return super().tokenize_words(words)

    counting = CountingTokenizer(vocab)
    plain = FullTokenizer(vocab)
    examples = dev_examples[:400]
    batched = list(dp.convert_examples_to_features(examples, counting, 128, 64, 32))
    assert CountingTokenizer.passages == len({id(e.doc_tokens) for e in examples})
    for example, features in zip(examples, batched):
        single = dp.convert_example_to_features(example.doc_tokens, example.question_text, plain, 128, 64, 32)
        assert len(single) == len(features)
        for a, b in zip(single, features, strict=True):
            assert a.tokens == b.tokens and a.token_to_orig_map == b.token_to_orig_map
            assert a.token_is_max_context == b.token_is_max_context
            for name in ("input_ids", "input_mask", "segment_ids"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("doc, question, sizes, message", [
    ("Some passage.", "", (384, 128, 64), "question is empty"),
    ("Some passage.", "  \t", (384, 128, 64), "question is empty"),
    ("Some passage.", "\x00\x01", (384, 128, 64), "question has no tokens"),
    ("", "What?", (384, 128, 64), "passage is empty"),
    ("\x00 \ufffd", "What?", (384, 128, 64), "passage has no tokens"),
    ("Some passage.", "What is this long question about?", (9, 128, 64), "leaves no room"),
    ("Some passage.", "What?", (384, 0, 64), "doc_stride must be a positive integer"),
    ("Some passage.", "What?", (384, -5, 64), "doc_stride"),
    ("Some passage.", "What?", (0, 128, 64), "max_seq_length"),
    ("Some passage.", "What?", (384, 128, 0), "max_query_length"),
    ("Some passage.", "What?", (384, 1.5, 64), "doc_stride"),
])
def test_feature_arguments_are_validated(tokenizer, doc, question, sizes, message):
    with pytest.raises(BertError, match=message):
        dp.convert_example_to_features(dp.convert_doc_tokens(doc), question, tokenizer, *sizes)


def test_smallest_sequence_that_fits(tokenizer):
    question = "what is this long question about"
    n_query = len(tokenizer.tokenize(question))
    features = dp.convert_example_to_features(["alpha", "beta", "gamma"], question, tokenizer, n_query + 4, 1, 64)
    assert [f.tokens[n_query + 2] for f in features] == ["alpha", "beta", "gamma"]


# ---------------------------------------------------------------------------------------------------------------
# Answers

def test_fixture_logits_give_reference_answers(tokenizer, dev_examples):
    reference = np.load(shared_path("fixtures", "minilm-l6-squad11", "reference", "logits_first10.npz"))
    answers = json.loads(shared_path("fixtures", "minilm-l6-squad11", "reference", "predictions_300.json").read_text())
    for i in range(10):
        example = dev_examples[i]
        features = dp.convert_example_to_features(example.doc_tokens, example.question_text, tokenizer, 384, 128, 64)
        assert len(features) == 1  # the reference holds one window per question
        outputs = [dp.NetworkOutput(reference["start_logits"][i], reference["end_logits"][i], 0)]
        prediction, nbest, diff = dp.get_predictions(example.doc_tokens, features, outputs, 20, 30)
        assert prediction == answers[example.id] == nbest[0]["text"]
        assert diff == 0.0
        assert len(nbest) == 20 and len({e["text"] for e in nbest}) == 20
        assert abs(sum(e["probability"] for e in nbest) - 1.0) < 1e-9
        json.dumps(nbest)  # plain floats
        assert dp.get_best_prediction(example.doc_tokens, features, outputs, 20, 30) == (prediction, 0.0)


PASSAGE = "Steve Smith's dog, Rex, barked at the mailman on Tuesday morning."
QUESTION = "Whose dog barked?"


def _single_feature(tokenizer, passage=PASSAGE, question=QUESTION, max_seq_length=64):
    doc_tokens = dp.convert_doc_tokens(passage)
    features = dp.convert_example_to_features(doc_tokens, question, tokenizer, max_seq_length, 16, 16)
    return doc_tokens, features


def _logits(feature, starts=(), ends=(), base=0.0):
    start = np.full(len(feature.input_ids), base, dtype=np.float32)
    end = np.full(len(feature.input_ids), base, dtype=np.float32)
    for position, value in starts:
        start[position] = value
    for position, value in ends:
        end[position] = value
    return start, end


def test_prediction_is_mapped_back_to_original_text(tokenizer):
    doc_tokens, (feature,) = _single_feature(tokenizer)
    steve, smith = feature.tokens.index("steve"), feature.tokens.index("smith")
    start, end = _logits(feature, [(steve, 5.0)], [(smith, 4.0)])
    prediction, nbest, _ = dp.get_predictions(doc_tokens, [feature], [dp.NetworkOutput(start, end, 0)], 5, 30)
    assert prediction == "Steve Smith"  # orig token "Smith's" is trimmed by get_final_text
    assert nbest[0] == {"text": "Steve Smith", "probability": nbest[0]["probability"],
                        "start_logit": 5.0, "end_logit": 4.0}
    scores = [e["start_logit"] + e["end_logit"] for e in nbest]
    assert scores == sorted(scores, reverse=True)
    expected = np.exp(np.array(scores) - max(scores))
    np.testing.assert_allclose([e["probability"] for e in nbest], expected / expected.sum(), rtol=1e-12)


def test_max_answer_length_and_question_positions_are_skipped(tokenizer):
    doc_tokens, (feature,) = _single_feature(tokenizer)
    steve, tuesday = feature.tokens.index("steve"), feature.tokens.index("tuesday")
    dog_in_question = feature.tokens.index("dog")  # first "dog" is the question's
    assert feature.segment_ids[dog_in_question] == 0
    start, end = _logits(feature, [(dog_in_question, 9.0), (steve, 5.0)],
                         [(tuesday, 6.0), (steve + 1, 1.0), (dog_in_question, 9.0)])
    outputs = [dp.NetworkOutput(start, end, 0)]
    span = tuesday - steve + 1  # answer length counts WordPieces, both ends included
    long_answer = "Steve Smith's dog, Rex, barked at the mailman on Tuesday"
    assert dp.get_predictions(doc_tokens, [feature], outputs, 5, 30)[0] == long_answer
    assert dp.get_predictions(doc_tokens, [feature], outputs, 5, span)[0] == long_answer
    assert dp.get_predictions(doc_tokens, [feature], outputs, 5, span - 1)[0] == "Steve Smith"


def test_padding_never_crowds_real_tokens_out_of_the_nbest(tokenizer):
    doc_tokens, (feature,) = _single_feature(tokenizer)
    n = len(feature.tokens)
    assert n < len(feature.input_ids)  # the window has padding
    steve, smith = feature.tokens.index("steve"), feature.tokens.index("smith")
    start, end = _logits(feature, [(steve, -2.0)], [(smith, -2.5)], base=-8.0)
    start[n:] = end[n:] = 0.0  # padding scores above every real token (as native engines return it)
    assert len(feature.input_ids) - n >= 3  # enough padding to fill an n-best of 3 on its own
    outputs = [dp.NetworkOutput(start, end, 0)]
    assert dp.get_predictions(doc_tokens, [feature], outputs, 3, 30)[0] == "Steve Smith"
    assert dp.get_best_prediction(doc_tokens, [feature], outputs, 3, 30)[0] == "Steve Smith"


def test_no_valid_span_gives_empty(tokenizer):
    doc_tokens, (feature,) = _single_feature(tokenizer)
    question_positions = [(p, 10.0 + p) for p in range(1, 4)]
    start, end = _logits(feature, question_positions, question_positions)
    prediction, nbest, diff = dp.get_predictions(doc_tokens, [feature], [dp.NetworkOutput(start, end, 0)], 3, 30)
    assert (prediction, diff) == ("empty", 0.0)
    assert nbest == [{"text": "empty", "probability": 1.0, "start_logit": 0.0, "end_logit": 0.0}]


def test_squad_v2_null_answer(tokenizer):
    doc_tokens, (feature,) = _single_feature(tokenizer)
    steve, smith = feature.tokens.index("steve"), feature.tokens.index("smith")

    def run(null_logit, threshold):
        start, end = _logits(feature, [(0, null_logit), (steve, 6.0)], [(0, null_logit), (smith, 4.0)])
        outputs = [dp.NetworkOutput(start, end, 0)]
        result = dp.get_predictions(doc_tokens, [feature], outputs, 5, 30, version_2_with_negative=True,
                                    null_score_diff_threshold=threshold)
        assert dp.get_best_prediction(doc_tokens, [feature], outputs, 5, 30, True, threshold) == \
            (result[0], result[2])
        return result

    prediction, nbest, diff = run(4.0, 0.0)          # null 8 < best 10
    assert (prediction, diff) == ("Steve Smith", -2.0)
    assert "" in [e["text"] for e in nbest]
    prediction, nbest, diff = run(6.0, 0.0)          # null 12 > best 10
    assert (prediction, diff) == ("", 2.0)
    assert nbest[0]["text"] == ""
    assert run(6.0, 2.5)[0] == "Steve Smith"         # the threshold lets the span win
    assert run(4.0, -3.0)[0] == ""                   # -2 > -3
    # without version_2_with_negative the null logits change nothing
    start, end = _logits(feature, [(0, 50.0), (steve, 6.0)], [(0, 50.0), (smith, 4.0)])
    assert dp.get_predictions(doc_tokens, [feature], [dp.NetworkOutput(start, end, 0)], 5, 30)[0] == "Steve Smith"


def test_squad_v2_null_score_is_minimum_over_windows_and_max_context_is_respected(tokenizer):
    passage = " ".join(["filler words here"] * 10 + ["Steve Smith's dog barked"] + ["more filler text"] * 10)
    doc_tokens, features = _single_feature(tokenizer, passage, "Whose dog?", max_seq_length=32)
    holding = [i for i, f in enumerate(features) if "steve" in f.tokens]
    assert len(holding) >= 2  # the answer lies in an overlap of windows
    owner = next(i for i in holding
                 if features[i].token_is_max_context[features[i].tokens.index("steve")])
    other = next(i for i in holding if i != owner)
    outputs = []
    for i, feature in enumerate(features):
        steve = feature.tokens.index("steve") if "steve" in feature.tokens else None
        smith = feature.tokens.index("smith") if "smith" in feature.tokens else None
        # the non-owner window scores the span higher, but its start is not max-context there
        value = 9.0 if i == other else 3.0 if i == owner else 0.0
        starts = [(0, 1.0 + i)] + ([(steve, value)] if steve is not None else [])
        ends = [(0, 1.0 + i)] + ([(smith, value)] if smith is not None else [])
        outputs.append(dp.NetworkOutput(*_logits(feature, starts, ends, base=-20.0), i))
    prediction, nbest, diff = dp.get_predictions(doc_tokens, features, outputs, 20, 30,
                                                 version_2_with_negative=True)
    assert prediction == "Steve Smith"
    assert nbest[0]["start_logit"] == 3.0  # from the owner window
    assert diff == pytest.approx(2.0 - 6.0)  # null = min over windows of 2 * (1 + i) = 2


def test_get_best_prediction_matches_get_predictions(tokenizer, dev_examples):
    rng = np.random.default_rng(7)
    examples = dev_examples[::40]
    for example, features in zip(examples, dp.convert_examples_to_features(examples, tokenizer, 128, 48, 32)):
        outputs = [dp.NetworkOutput(rng.standard_normal(128).astype(np.float32) * 3,
                                    rng.standard_normal(128).astype(np.float32) * 3, i) for i in range(len(features))]
        for v2, threshold in ((False, 0.0), (True, 0.0), (True, -2.0), (True, 3.0)):
            prediction, nbest, diff = dp.get_predictions(example.doc_tokens, features, outputs, 20, 30, v2, threshold)
            assert dp.get_best_prediction(example.doc_tokens, features, outputs, 20, 30, v2, threshold) == \
                (prediction, diff)
            if not v2:
                assert prediction == nbest[0]["text"]


def test_nan_logits_and_bad_results_raise(tokenizer):
    doc_tokens, (feature,) = _single_feature(tokenizer)
    start, end = _logits(feature)
    start[3] = np.nan
    with pytest.raises(BertError, match="NaN"):
        dp.get_predictions(doc_tokens, [feature], [dp.NetworkOutput(start, end, 0)], 20, 30)
    with pytest.raises(BertError, match="feature 1 of 1"):
        dp.get_predictions(doc_tokens, [feature], [dp.NetworkOutput(end, end, 1)], 20, 30)
    with pytest.raises(BertError, match="n_best_size"):
        dp.get_predictions(doc_tokens, [feature], [dp.NetworkOutput(end, end, 0)], 0, 30)


@pytest.mark.parametrize("pred, orig, lower, expected", [
    ("steve smith", "Steve Smith's", True, "Steve Smith"),
    ("cafe", "Café.", True, "Café"),                       # accents stripped in the prediction only
    ("1 , 000", "($1,000)", True, "1,000"),                # spaces of the WordPiece text are not in the answer
    ("steve smith", "Steve Smith's", False, "Steve Smith's"),  # a lower-cased guess is not found in cased text
    ("Steve Smith", "Steve Smith's", False, "Steve Smith"),
    ("zebra", "Steve Smith's", True, "Steve Smith's"),      # not found: the whole original
    # lengths differ after NFD: Google gives up (the whole original); its basic tokens still match
    (unicodedata.normalize("NFD", "한국"), "한국 사람", True, "한국"),
    ("", "Steve", True, "Steve"),
    # no alignment: the whole words, less the punctuation the prediction does not have at its ends
    ("[UNK] [UNK]", "深圳.", True, "深圳"),                  # pieces unknown to the vocabulary
    ("[UNK] [UNK] .", "深圳.", True, "深圳."),
    ("rise & shine [UNK]", "\u201cRise & Shine \u2600\ufe0f\u201d.", True, "Rise & Shine \u2600\ufe0f"),
    ("eric piolle", "E\u0301ric Piolle,", True, "E\u0301ric Piolle"),   # decomposed accent: lengths differ
    ("anna maria", "(Anna\u200bMaria),", True, "Anna\u200bMaria"),       # zero-width space
    # characters no token holds (zero-width, control) at the ends go too, and let the punctuation behind them go
    ("virginia woolf", "Virginia Woolf.\u200b", True, "Virginia Woolf"),
    ("virginia woolf", "Virginia Woolf\u200b.", True, "Virginia Woolf"),
    ("virginia woolf", "(Virginia Woolf\x7f).", True, "Virginia Woolf"),
    ("virginia woolf", "\u2060Virginia Woolf.\x7f", True, "Virginia Woolf"),
    ("woolf .", "Woolf.\u200b", True, "Woolf."),
    # each punctuation character is a token: the span keeps as many at an end as the prediction has there
    ("( [UNK] [UNK] )", "(\u6df1\u5733).", True, "(\u6df1\u5733)"),
    ("town of ( [UNK] [UNK] )", "town of (\u5733\u53e3),", True, "town of (\u5733\u53e3)"),
    ('" ( [UNK] ) "', '"(\u9c7b)",', True, '"(\u9c7b)"'),
    ("( [UNK] )", "((\u6df1)).", True, "(\u6df1)"),
    # a combining mark that begins a word has nothing to combine with: accent stripping drops it, cased keeps it
    ("zoe adams", "\u0301Zo\u00eb Adams,", True, "Zo\u00eb Adams"),
    ("Zo\u00eb [UNK]", "\u0301Zo\u00eb \u0300\u0301Adams", False, "\u0301Zo\u00eb \u0300\u0301Adams"),
    # an unknown piece at an end may be punctuation the vocabulary lacks (\u2039 \u203a): it stays in the answer;
    # where it is a whole word, the punctuation after that word goes
    ("[UNK] hello \u203a", "\u2039hello\u203a", True, "\u2039hello\u203a"),
    ("hello [UNK]", "hello\u2039", True, "hello\u2039"),
    ("[UNK] hello [UNK]", "\u2039Hello\u203a,", True, "\u2039Hello\u203a"),
    ("[UNK]", "\U0001d534orld.", True, "\U0001d534orld"),
    # ... but where it can stand for a word instead, it does: a vocabulary knows most punctuation
    ("[UNK]", "\u201c\u13e3\u13b3\u13a9\u201d", True, "\u13e3\u13b3\u13a9"),
    ("[UNK] [UNK]", "(\u13e3\u13b3\u13a9 \u13e3\u13b3\u13a9)", True, "\u13e3\u13b3\u13a9 \u13e3\u13b3\u13a9"),
    ("[UNK] (", "((\u13e3\u13b3\u13a9(", True, "\u13e3\u13b3\u13a9("),
])
def test_get_final_text(pred, orig, lower, expected):
    assert dp.get_final_text(pred, orig, lower) == expected


def test_compute_softmax():
    assert dp._compute_softmax([]) == []
    probs = dp._compute_softmax([1000.0, 1000.0, 999.0])
    assert probs[0] == probs[1] and abs(sum(probs) - 1) < 1e-12
    assert probs[2] == pytest.approx(probs[0] / np.e)


def test_best_indexes_equal_a_stable_descending_sort():
    """Upstream takes sorted(enumerate(logits), key=logit, reverse=True)[:n]: ties keep index order."""
    rng = np.random.default_rng(3)
    for trial in range(3000):
        size, n = int(rng.integers(1, 60)), int(rng.integers(1, 30))
        logits = (rng.integers(-3, 4, size) if trial % 2 else rng.standard_normal(size)).astype(np.float32)
        expected = [i for i, _ in sorted(enumerate(logits.tolist()), key=lambda item: item[1], reverse=True)][:n]
        assert dp._get_best_indexes(logits, n) == expected


def _literal_final_text(pred_text, orig_text, do_lower_case):
    """get_final_text as the spec words it: character maps of the space-free texts, both ways."""
    from helpers.tokenization import BasicTokenizer
    tok_text = " ".join(BasicTokenizer(do_lower_case).tokenize(orig_text))
    start = tok_text.find(pred_text)
    if start == -1:
        return _unaligned(orig_text, pred_text, do_lower_case)
    end = start + len(pred_text) - 1

    def without_spaces(text):
        chars, to_spaced = [], {}
        for i, c in enumerate(text):
            if c != " ":
                to_spaced[len(chars)] = i
                chars.append(c)
        return "".join(chars), to_spaced
    orig_ns, orig_map = without_spaces(orig_text)
    tok_ns, tok_map = without_spaces(tok_text)
    if len(orig_ns) != len(tok_ns):
        return _unaligned(orig_text, pred_text, do_lower_case)
    from_spaced = {spaced: ns for ns, spaced in tok_map.items()}
    if start not in from_spaced or end not in from_spaced:
        return _unaligned(orig_text, pred_text, do_lower_case)
    return orig_text[orig_map[from_spaced[start]]:orig_map[from_spaced[end]] + 1]


def _unaligned(orig_text, pred_text, do_lower_case):
    """Where Google's heuristic gave up (whole words back): the shortest substring of orig_text that is a run of
    its basic tokens (cutting the text before and after it changes no token) and whose tokens are the
    prediction's, [UNK] standing for any one token, of those the one whose [UNK]s stand for the fewest punctuation
    characters, then the earliest; else orig_text less the punctuation the prediction lacks at its ends."""
    from helpers.tokenization import BasicTokenizer
    basic = BasicTokenizer(do_lower_case)
    pred, whole = pred_text.split(), basic.tokenize(orig_text)
    found = []   # (punctuation the [UNK]s stand for, start, text)
    if pred and all(p == "[UNK]" or p in whole for p in pred):
        for i in range(len(orig_text)):
            if not basic.tokenize(orig_text[i]):   # no token starts at a blank, dropped or leading-mark character
                continue
            before = basic.tokenize(orig_text[:i])
            if whole[:len(before)] != before:
                continue
            for j in range(i + 1, len(orig_text) + 1):
                tokens = basic.tokenize(orig_text[i:j])
                if before + tokens + basic.tokenize(orig_text[j:]) == whole and len(tokens) == len(pred) and \
                        all(p in ("[UNK]", t) for p, t in zip(pred, tokens)):
                    marks = sum(p == "[UNK]" and len(t) == 1 and not t.isalnum() and t.isprintable()
                                and (t.isascii() or unicodedata.category(t).startswith("P"))
                                for p, t in zip(pred, tokens))
                    found.append((marks, i, orig_text[i:j]))
                    break
    if found:
        return min(found)[2]
    return _without_unmatched_punctuation(orig_text, pred_text)


def _without_unmatched_punctuation(orig_text, pred_text):
    """Where no run of basic tokens matches either, this project keeps at either end only as much
    punctuation as the prediction has there (BERT's punctuation: printable non-alphanumeric ASCII and Unicode P*;
    each character is a token of its own)."""
    def punct(ch):
        return (ch.isascii() and ch.isprintable() and not ch.isalnum() and ch != " ") or \
            unicodedata.category(ch).startswith("P")
    pred = pred_text.replace("[UNK]", "x").replace(" ", "")
    words = orig_text.split()
    if not pred or not words:
        return orig_text
    text = " ".join(words) if orig_text == " ".join(words) else orig_text.strip()
    keep_front = next((n for n, ch in enumerate(pred) if not punct(ch)), len(pred))
    keep_back = next((n for n, ch in enumerate(reversed(pred)) if not punct(ch)), len(pred))
    back = [i for i in range(len(text) - 1, -1, -1) if not text[i].isspace()]   # from the back, spaces skipped
    back = back[:next((n for n, i in enumerate(back) if not punct(text[i])), len(back))]
    if len(back) > keep_back:   # keep the keep_back punctuation characters nearest the words
        text = text[:back[len(back) - keep_back - 1]].rstrip()
    front = [i for i, ch in enumerate(text) if not ch.isspace()]
    front = front[:next((n for n, i in enumerate(front) if not punct(text[i])), len(front))]
    if len(front) > keep_front:
        text = text[front[len(front) - keep_front - 1] + 1:].lstrip()
    return text or orig_text


def test_get_final_text_equals_literal_heuristic(dev_examples):
    from helpers.tokenization import BasicTokenizer
    rng = random.Random(5)
    for example in dev_examples[::7]:
        words = example.doc_tokens + ["Ångström's", "naïve—café", "x\u00a0y", "İstanbul,"]
        first = rng.randrange(len(words))
        orig_text = " ".join(words[first:first + rng.randint(1, 6)])
        for lower in (True, False):
            tokens = BasicTokenizer(lower).tokenize(orig_text)
            i = rng.randrange(len(tokens))
            tok_text = " ".join(tokens)
            a, b = sorted(rng.randrange(len(tok_text) + 1) for _ in range(2))
            run = tokens[i:i + rng.randint(1, 4)]
            unknown = " ".join("[UNK]" if rng.random() < 0.4 else t for t in run)   # pieces the vocabulary lacks
            for pred_text in (" ".join(run), unknown, tok_text[a:b], tok_text.upper()[a:b]):
                assert dp.get_final_text(pred_text, orig_text, lower) == \
                    _literal_final_text(pred_text, orig_text, lower), (pred_text, orig_text, lower)


def test_a_placed_prediction_gives_the_tokens_at_its_place(dev_examples):
    """With its place, an [UNK] of a prediction is the token WordPiece made [UNK] of there, never a known word
    beside it: 'ᎩᏟ' of 'dog=ᎩᏟ,', not 'dog' (what text alone gives). Predictions are whole tokens' pieces of
    passages salted with words of scripts the embedded model's vocabulary lacks; the answer's tokens must be the
    predicted ones."""
    from helpers.tokenization import BasicTokenizer
    tokenizer = FullTokenizer(str(ROOT / "models" / "minilm-l6-squad11" / "vocab.txt"), True)
    basic = BasicTokenizer(True)
    rare = ["\u13a9\u13df", "\u13e3\u13b3\u13a9", "\ua4d0\ua4f3", "\u16a0\u16a2", "\u0f40\u0f41"]
    assert all(tokenizer.word_pieces(basic.tokenize(word)[0]) == ("[UNK]",) for word in rare)
    assert dp.get_final_text("[UNK]", "dog=\u13a9\u13df,", True) == "dog"   # by text: the first run
    assert dp.get_final_text("[UNK]", "dog=\u13a9\u13df,", True, tokenizer.word_pieces, (2, 1)) == "\u13a9\u13df"
    rng = random.Random(11)
    for example in dev_examples[::5]:
        words = list(example.doc_tokens)
        for _ in range(3):
            words.insert(rng.randrange(len(words) + 1), rng.choice(words) + rng.choice("=/-,(") + rng.choice(rare))
        first = rng.randrange(len(words))
        orig_text = " ".join(words[first:first + rng.randint(1, 5)])
        tokens = basic.tokenize(orig_text)
        start = rng.randrange(len(tokens))
        run = tokens[start:start + rng.randint(1, 3)]
        pieces = [p for t in run for p in tokenizer.word_pieces(t)]
        place = (sum(len(tokenizer.word_pieces(t)) for t in tokens[:start]), len(pieces))
        answer = dp.get_final_text(dp._wordpiece_text(pieces), orig_text, True, tokenizer.word_pieces, place)
        assert basic.tokenize(answer) == run, (pieces, orig_text, answer)


def _predict_span(tokenizer, doc, features, k, start, end):
    """The answer get_predictions gives when window k's logits pick (start, end) and every other position loses."""
    starts = np.full(len(features[k].input_ids), -10.0, np.float32)
    ends = starts.copy()
    starts[start], ends[end] = 10.0, 10.0
    outputs = [dp.NetworkOutput(starts if n == k else np.full_like(starts, -10.0),
                                ends if n == k else np.full_like(starts, -10.0), n) for n in range(len(features))]
    return dp.get_predictions(doc, features, outputs, 20, 30, word_pieces=tokenizer.word_pieces)[0]


def test_a_repeated_answer_text_is_taken_at_the_predicted_place(dev_examples):
    """Where the predicted text occurs more than once in the span's words, the answer is the characters of the
    predicted pieces, not the first occurrence (Google's `find`: 'Apple' for the second 'apple' of 'Apple-apple').
    Spans of any pieces, starting and ending inside words too, over ASCII passages salted with words repeated in
    other cases; the reference is Hugging Face's own character offsets of each piece."""
    tokenizers = pytest.importorskip("tokenizers")
    vocab = ROOT / "models" / "minilm-l6-squad11" / "vocab.txt"
    tokenizer = FullTokenizer(str(vocab), True)
    hf = tokenizers.BertWordPieceTokenizer(str(vocab), lowercase=True)
    assert dp.get_final_text("apple", "Apple-apple", True) == "Apple"   # by text: the first
    assert dp.get_final_text("apple", "Apple-apple", True, tokenizer.word_pieces, (2, 1)) == "apple"
    assert dp.get_final_text("cafe", "Caf\u00e9 cafe", True, tokenizer.word_pieces, (1, 1)) == "cafe"
    # a dropped character (combining accent, zero-width space) and an expanded one (a Hangul syllable: two jamo)
    # keep the counts equal and shift the characters between them: the place is not taken where it is shifted
    for passage, word in (("Paris cafe\u0301-cafe-\ud558 open", "cafe"), ("Paris apple\u200b-apple-\ud558 open",
                                                                           "apple")):
        doc = dp.convert_doc_tokens(passage)
        features = dp.convert_example_to_features(doc, "Which?", tokenizer, 64, 64, 16)
        second = features[0].tokens.index("[SEP]") + 4
        assert features[0].tokens[second - 3:second + 1] == ["paris", word, "-", word]
        assert _predict_span(tokenizer, doc, features, 0, second, second) == word
    # Google's first place is shifted the same way where the text occurs once ('-caf'); the tokens are taken then
    assert dp.get_final_text("cafe", "x\u200b-cafe-\ud558", True) == "cafe"
    assert dp.get_final_text("cafe", "x\u200b-cafe-\ud558", True, tokenizer.word_pieces, (2, 1)) == "cafe"
    # a slice ending inside a Greek word keeps its medial sigma (its last letter lower-cases as a word's end)
    assert dp.get_final_text("\u03bf\u03b4\u03bf\u03c3", "\u039f\u0394\u039f\u03a3\u0391", True) == \
        "\u039f\u0394\u039f\u03a3"
    rng = random.Random(17)
    checked = differs_from_first = 0
    for example in dev_examples[::40]:
        words = [w for w in example.doc_tokens[:30] if w.isascii() and w.isprintable()]
        for _ in range(15):
            w = rng.choice(words + ["tokenizers", "heuristics", "sassafras"])   # some of several pieces
            w = "".join(ch for ch in w if ch.isalpha()) or "apple"
            words.insert(rng.randrange(len(words) + 1),
                         rng.choice([f"{w.capitalize()}-{w}", f"{w.upper()} {w}", f"{w}/{w.title()}"]))
        passage = " ".join(words)
        encoding = hf.encode(passage, add_special_tokens=False)
        assert tokenizer.tokenize(passage) == encoding.tokens   # the same pieces, so HF's offsets are theirs
        doc = dp.convert_doc_tokens(passage)
        features = dp.convert_example_to_features(doc, "Which one?", tokenizer, 40, 8, 16)
        for _ in range(15):
            k = rng.randrange(len(features))
            feature, window_start = features[k], 8 * k
            offset = feature.tokens.index("[SEP]") + 1
            first = rng.randrange(len(feature.token_to_orig_map))
            last = min(first + rng.randint(0, 5), len(feature.token_to_orig_map) - 1)
            if not feature.token_is_max_context[offset + first]:
                continue   # another window scores this start
            expected = passage[encoding.offsets[window_start + first][0]:encoding.offsets[window_start + last][1]]
            answer = _predict_span(tokenizer, doc, features, k, offset + first, offset + last)
            assert answer == expected, (feature.tokens[offset + first:offset + last + 1], answer, expected)
            orig = feature.token_to_orig_map
            by_text = dp.get_final_text(dp._wordpiece_text(feature.tokens[offset + first:offset + last + 1]),
                                        " ".join(doc[orig[offset + first]:orig[offset + last] + 1]), True)
            differs_from_first += by_text != expected
            checked += 1
    assert checked > 400 and differs_from_first > 30, (checked, differs_from_first)


def test_answers_come_from_the_predicted_pieces_place(dev_examples):
    """Through the answers' path, an answer's tokens are those at the predicted positions, also where text cannot
    tell them apart: two runs of pieces WordPiece makes [UNK] of ('华为→深圳.' with the model's span on 深圳 gave
    华为). Spans of whole tokens are drawn over passages salted with words of characters the vocabulary lacks, in
    windows that start inside words too."""
    from helpers.tokenization import BasicTokenizer
    tokenizer = FullTokenizer(str(ROOT / "models" / "minilm-l6-squad11" / "vocab.txt"), True)
    basic = BasicTokenizer(True)

    doc = dp.convert_doc_tokens("The headquarters: \u534e\u4e3a\u2192\u6df1\u5733.")
    features = dp.convert_example_to_features(doc, "Where is it?", tokenizer, 128, 128, 64)
    arrow = features[0].tokens.index("\u2192")
    assert features[0].tokens[arrow - 2:arrow + 3] == ["[UNK]", "[UNK]", "\u2192", "[UNK]", "[UNK]"]
    assert _predict_span(tokenizer, doc, features, 0, arrow + 1, arrow + 2) == "\u6df1\u5733"
    assert _predict_span(tokenizer, doc, features, 0, arrow - 2, arrow - 1) == "\u534e\u4e3a"

    rare = ["\u6df1\u5733", "\u534e\u4e3a", "\u13a9\u13df", "\u2600\u2601", "\u16a0\u16a2"]
    rng = random.Random(13)
    checked = 0
    for example in dev_examples[::25]:
        words = list(example.doc_tokens[:60])
        for _ in range(8):   # words of up to a few dozen pieces, which windows of 24 pieces start inside
            parts = [rng.choice(rare + words[:60]) for _ in range(rng.randint(2, 12))]
            joined = "".join(p + rng.choice("→-=,") for p in parts[:-1]) + parts[-1]
            words.insert(rng.randrange(len(words) + 1), joined)
        doc = dp.convert_doc_tokens(" ".join(words))
        # every piece's basic token, counted over the passage, the independent way
        token_of_piece, token_texts = [], []
        for word in doc:
            for token in basic.tokenize(word):
                token_of_piece += [len(token_texts)] * len(tokenizer.word_pieces(token))
                token_texts.append(token)
        features = dp.convert_example_to_features(doc, "Which one?", tokenizer, 40, 8, 16)
        for _ in range(12):
            k = rng.randrange(len(features))
            feature, window_start = features[k], 8 * k
            offset = feature.tokens.index("[SEP]") + 1
            length = len(feature.token_to_orig_map)
            first = rng.randrange(length)
            while first > 0 and token_of_piece[window_start + first - 1] == token_of_piece[window_start + first]:
                first -= 1   # a whole token's first piece
            last = first
            for _ in range(rng.randint(0, 2)):   # one to three whole tokens, inside the window
                nxt = last + 1
                while nxt < length and token_of_piece[window_start + nxt] == token_of_piece[window_start + last]:
                    nxt += 1
                if nxt >= length or token_of_piece[window_start + nxt] == token_of_piece[window_start + last]:
                    break
                last = nxt
            while last + 1 < length and token_of_piece[window_start + last + 1] == token_of_piece[window_start + last]:
                last += 1
            if (window_start + first > 0 and token_of_piece[window_start + first - 1] ==
                    token_of_piece[window_start + first]) or not feature.token_is_max_context[offset + first]:
                continue   # the token began before the window, or another window scores this start
            expected = token_texts[token_of_piece[window_start + first]:token_of_piece[window_start + last] + 1]
            answer = _predict_span(tokenizer, doc, features, k, offset + first, offset + last)
            assert basic.tokenize(answer) == expected, (answer, expected,
                                                        feature.tokens[offset + first:offset + last + 1])
            checked += 1
    assert checked > 100


def test_shipped_copies_equal_the_shared_files():
    """The repo's SQuAD v1.1 dev set and vocabulary stand in for the shared folder's: they must be the same bytes."""
    from conftest import SHIPPED_COPIES, shared_dir
    base = shared_dir()
    if base is None:
        pytest.skip("shared data not available")
    for parts, copy in SHIPPED_COPIES.items():
        original = base.joinpath(*parts)
        if original.exists():
            assert original.read_bytes() == copy.read_bytes(), copy
