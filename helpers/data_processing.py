"""SQuAD reading, feature windows and answer decoding, as demoBERT's `helpers/data_processing.py` does them.

Differences from upstream, all deliberate:
  * bad files and arguments raise `BertError` naming the problem (upstream: KeyError, assert, or no feature);
  * the SQuAD v2 null answer works (`version_2_with_negative=True`); upstream left it dead;
  * `do_lower_case` reaches `get_final_text` (upstream hard-codes True, which breaks cased models);
  * a passage's WordPieces are computed once per paragraph, not once per question
    (`tokenize_doc`, `convert_examples_to_features`), the n-best search partitions the logits
    instead of sorting them, and `get_best_prediction` skips the n-best list when only the answer
    is wanted; the features and answers are the same.
"""
import bisect
import collections
import functools
import itertools
import math
import re
import sys
import unicodedata
from dataclasses import dataclass
from operator import itemgetter

import numpy as np

from .errors import BertError, read_json_file, require_unicode
from .tokenization import BasicTokenizer, is_blank, is_punctuation, separates_words

Example = collections.namedtuple("Example", ["id", "question_text", "doc_tokens"])
# leading_pieces: how many WordPieces of the window's first passage word lie before the window (a window may start
# inside a word), so that a position's place among its word's pieces is known
Feature = collections.namedtuple(
    "Feature", ["input_ids", "input_mask", "segment_ids", "tokens", "token_to_orig_map", "token_is_max_context",
                "leading_pieces"], defaults=(0,))
NetworkOutput = collections.namedtuple("NetworkOutput", ["start_logits", "end_logits", "feature_index"])
_NbestPrediction = collections.namedtuple("NbestPrediction", ["text", "start_logit", "end_logit"])
_NullAnswer = collections.namedtuple("NullAnswer", ["score", "start_logit", "end_logit"])

# The passage's word boundaries: wherever the tokenizer ends a word at whitespace (all such characters are Python
# whitespace, none beyond U+3000: isspace() narrows the ~30 the tokenizer's table is asked about at import).
# demoBERT split only at space, tab, CR, LF and U+202F, so that words joined by a no-break space were one passage
# word and came back whole as the answer ('31 March 1889' for '1889').
_DOC_WHITESPACE = re.compile("[" + "".join(re.escape(chr(cp)) for cp in range(0x3001)
                                           if chr(cp).isspace() and separates_words(chr(cp))) + "]+")


def convert_doc_tokens(paragraph_text):
    """The passage split into words at whitespace; answers are reported in these words."""
    return [token for token in _DOC_WHITESPACE.split(paragraph_text) if token]


# ---------------------------------------------------------------------------------------------------------------
# Reading SQuAD json

def _get(obj, key, kind, where, path):
    """obj[key] checked to be of `kind`; `where` names obj in the message."""
    if not isinstance(obj, dict):
        raise BertError(f"malformed SQuAD file {path}: {where} is a {_json_type(obj)}, expected an object")
    if key not in obj:
        raise BertError(f"malformed SQuAD file {path}: {where} has no '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        expected = {str: "a string", list: "a list", dict: "an object"}[kind]
        raise BertError(f"malformed SQuAD file {path}: {where}.{key} is a {_json_type(value)}, expected {expected}")
    return value


def _json_type(value):
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def load_squad_json(path, texts=True):
    """The parsed SQuAD file (v1.1 or v2.0, optionally .gz), checked to have the fields questions need.

    Returns the top-level object; its "data" articles each have "paragraphs" with "qas" whose items have a string
    "id", and with `texts` (what answering reads; the evaluators, like the official ones, read neither) a
    "context" string per paragraph and a "question" string per item. Answers are not checked here.
    """
    dataset = read_json_file(path, "SQuAD file")
    for a, article in enumerate(_get(dataset, "data", list, "the top level", path)):
        for p, paragraph in enumerate(_get(article, "paragraphs", list, f"data[{a}]", path)):
            where = f"data[{a}].paragraphs[{p}]"
            if texts:
                require_unicode(_get(paragraph, "context", str, where, path), f"SQuAD file {path}: {where}.context")
            for q, qa in enumerate(_get(paragraph, "qas", list, where, path)):
                for key in ("id", "question") if texts else ("id",):
                    require_unicode(_get(qa, key, str, f"{where}.qas[{q}]", path),
                                    f"SQuAD file {path}: {where}.qas[{q}].{key}")
    return dataset


def iter_squad_questions(dataset):
    """(paragraph, qa) for every question of a SQuAD object, in file order."""
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield paragraph, qa


def read_squad_json(path):
    """Examples in file order; the questions of one paragraph share one `doc_tokens` list object."""
    return squad_examples(load_squad_json(path), path)


def squad_examples(dataset, path):
    """read_squad_json's examples of a SQuAD object load_squad_json read from `path` (named in errors)."""
    examples, seen = [], set()
    for a, article in enumerate(dataset["data"]):
        for p, paragraph in enumerate(article["paragraphs"]):
            doc_tokens = convert_doc_tokens(paragraph["context"])
            if not doc_tokens and paragraph["qas"]:
                raise BertError(f"SQuAD file {path}: data[{a}].paragraphs[{p}] has an empty context")
            for qa in paragraph["qas"]:
                if not qa["question"].strip():
                    raise BertError(f"SQuAD file {path}: question {qa['id']!r} is empty")
                if qa["id"] in seen:  # predictions.json is keyed by id: a repeat would silently drop an answer
                    raise BertError(f"SQuAD file {path}: question id {qa['id']!r} appears more than once")
                seen.add(qa["id"])
                examples.append(Example(id=qa["id"], question_text=qa["question"], doc_tokens=doc_tokens))
    if not examples:
        raise BertError(f"SQuAD file {path} has no questions")
    return examples


# ---------------------------------------------------------------------------------------------------------------
# Features

@dataclass(frozen=True)
class DocWordpieces:
    """A passage's WordPieces, computed once and shared by every question about it."""
    tokens: list             # WordPiece strings of the whole passage
    ids: np.ndarray          # their vocabulary ids (int32)
    tok_to_orig_index: list  # WordPiece -> index of the doc token (whitespace-separated word) it came from


def tokenize_doc(doc_tokens, tokenizer):
    """The passage's WordPieces, their ids and the doc token each came from (FullTokenizer.tokenize_words)."""
    tokens, tok_to_orig_index = tokenizer.tokenize_words(doc_tokens)
    ids = np.asarray(tokenizer.convert_tokens_to_ids(tokens), dtype=np.int32)
    return DocWordpieces(tokens=tokens, ids=ids, tok_to_orig_index=tok_to_orig_index)


_Window = collections.namedtuple("Window", ["start", "length", "is_max_context"])


@functools.lru_cache(maxsize=4096)
def _doc_windows(n_tokens, max_tokens_for_doc, doc_stride):
    """demoBERT's sliding windows over n_tokens WordPieces, with each token's max-context flag per window.

    A token's max-context window maximises min(left context, right context) + 0.01 * window length;
    the first such window wins ties. Depends on three integers only, hence the cache.
    """
    spans = []
    start = 0
    while start < n_tokens:
        length = min(n_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, doc_stride)
    best_score = np.full(n_tokens, -np.inf)
    owner = np.full(n_tokens, -1)
    for index, (start, length) in enumerate(spans):
        position = np.arange(start, start + length)
        score = np.minimum(position - start, start + length - 1 - position) + 0.01 * length
        better = score > best_score[start:start + length]
        best_score[position[better]] = score[better]
        owner[position[better]] = index
    return tuple(_Window(start, length, (owner[start:start + length] == index).tolist())
                 for index, (start, length) in enumerate(spans))


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise BertError(f"{name} must be a positive integer, got {value!r}")


class QuestionError(BertError):
    """A question that cannot be asked: empty, nothing left of it after tokenization, or too long to leave room for
    the passage in a window. The interactive loop reports it and asks again."""


def question_tokens(question_text, tokenizer, max_query_length):
    """The question's word pieces, cut to max_query_length as upstream cuts them; an empty question, or one the
    tokenizer leaves nothing of (zero-width characters only, say), is a QuestionError."""
    if not isinstance(question_text, str) or not question_text.strip():
        raise QuestionError("the question is empty")
    tokens = tokenizer.tokenize(question_text)[:max_query_length]
    if not tokens:
        raise QuestionError(f"the question has no tokens after tokenization: {question_text!r}")
    return tokens


def convert_example_to_features(doc_tokens, question_text, tokenizer, max_seq_length, doc_stride,
                                max_query_length, doc_wordpieces=None):
    """One Feature per window: [CLS] question [SEP] passage window [SEP], zero-padded to max_seq_length.

    `doc_wordpieces` (from `tokenize_doc(doc_tokens, tokenizer)`) skips re-tokenizing a passage
    that several questions share.
    """
    _check_positive("max_seq_length", max_seq_length)
    _check_positive("doc_stride", doc_stride)
    _check_positive("max_query_length", max_query_length)
    query_tokens = question_tokens(question_text, tokenizer, max_query_length)
    if not doc_tokens:
        raise BertError("the passage is empty")
    doc = doc_wordpieces if doc_wordpieces is not None else tokenize_doc(doc_tokens, tokenizer)
    if not doc.tokens:
        raise BertError("the passage has no tokens after tokenization")
    max_tokens_for_doc = max_seq_length - len(query_tokens) - 3  # [CLS], [SEP] and [SEP]
    if max_tokens_for_doc <= 0:   # a property of this question (another may fit): a QuestionError
        raise QuestionError(f"sequence length {max_seq_length} leaves no room for the passage after a "
                            f"{len(query_tokens)}-token question (a window needs at least {len(query_tokens) + 4}: "
                            f"a larger -s, or a smaller --max-query-length)")

    cls_id, sep_id = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    query_ids = tokenizer.convert_tokens_to_ids(query_tokens)
    head = ["[CLS]", *query_tokens, "[SEP]"]
    offset = len(head)  # position of the first passage token in every window
    features = []
    for window in _doc_windows(len(doc.tokens), max_tokens_for_doc, int(doc_stride)):
        end = window.start + window.length
        n = offset + window.length + 1
        input_ids = np.zeros(max_seq_length, dtype=np.int32)
        input_ids[0] = cls_id
        input_ids[1:offset - 1] = query_ids
        input_ids[offset - 1] = sep_id
        input_ids[offset:n - 1] = doc.ids[window.start:end]
        input_ids[n - 1] = sep_id
        input_mask = np.zeros(max_seq_length, dtype=np.int32)
        input_mask[:n] = 1
        segment_ids = np.zeros(max_seq_length, dtype=np.int32)
        segment_ids[offset:n] = 1
        positions = range(offset, n - 1)
        # the word's pieces before the window (piece -> word never decreases: a search, not a walk, for a passage
        # without spaces is one word of thousands of pieces)
        leading = window.start - bisect.bisect_left(doc.tok_to_orig_index, doc.tok_to_orig_index[window.start], 0,
                                                    window.start)
        features.append(Feature(
            input_ids=input_ids,
            input_mask=input_mask,
            segment_ids=segment_ids,
            tokens=head + doc.tokens[window.start:end] + ["[SEP]"],
            token_to_orig_map=dict(zip(positions, doc.tok_to_orig_index[window.start:end])),
            token_is_max_context=dict(zip(positions, window.is_max_context)),
            leading_pieces=leading,
        ))
    return features


def convert_examples_to_features(examples, tokenizer, max_seq_length, doc_stride, max_query_length):
    """Yield each example's feature list, tokenizing every passage (shared `doc_tokens` object) once."""
    passages = {}  # id(doc_tokens) -> (doc_tokens, DocWordpieces); holding doc_tokens keeps the id unique
    for example in examples:
        key = id(example.doc_tokens)
        if key not in passages:
            passages[key] = (example.doc_tokens, tokenize_doc(example.doc_tokens, tokenizer))
        yield convert_example_to_features(example.doc_tokens, example.question_text, tokenizer, max_seq_length,
                                          doc_stride, max_query_length, doc_wordpieces=passages[key][1])


def features_by_example(examples, tokenizer, max_seq_length, doc_stride, max_query_length):
    """convert_examples_to_features whose errors name the question they came from."""
    per_example = convert_examples_to_features(examples, tokenizer, max_seq_length, doc_stride, max_query_length)
    for example in examples:
        try:
            yield next(per_example)
        except BertError as exc:
            raise BertError(f"question {example.id}: {exc}") from None


# ---------------------------------------------------------------------------------------------------------------
# Answers

@functools.lru_cache(maxsize=2)
def _basic_tokenizer(do_lower_case):
    return BasicTokenizer(do_lower_case=do_lower_case)


def get_final_text(pred_text, orig_text, do_lower_case, word_pieces=None, piece_span=None):
    """Map the predicted (normalised) WordPiece text back onto the original passage text.

    Google's heuristic: basic-tokenize orig_text, find pred_text in it, and if both agree character
    for character once spaces are removed, return the matching slice of orig_text (so "steve smith"
    in "Steve Smith's" gives "Steve Smith"). Where they cannot be aligned (pieces unknown to the vocabulary,
    decomposed accents, zero-width characters) Google returned the whole words of orig_text, punctuation and
    all ("深圳." for 深圳); here the basic tokens of orig_text that the prediction's pieces came from, else
    orig_text less the punctuation the prediction lacks at either end.
    do_lower_case must match the model: a cased prediction is never found in lower-cased text. word_pieces (the
    tokenizer's WordPieces of one basic token, FullTokenizer.word_pieces) and piece_span ((first, count): where the
    prediction's pieces lie among the pieces of orig_text's words) go together: with them the tokens are found by
    their place (the answers' path passes both), without them by their text: where the predicted text occurs twice
    ('apple' in 'Apple-apple'), the place says which one the model predicted, where Google took the first. An
    aligned slice that is not what was predicted (Google's count-only check let dropped and expanded characters
    shift it) counts as unaligned.
    """
    basic = _basic_tokenizer(bool(do_lower_case))
    tokens = basic.tokenize(orig_text)
    tok_text = " ".join(tokens)
    starts = []
    if word_pieces is not None and piece_span is not None:   # the prediction's own place, where it is there
        placed = _text_offset(tokens, word_pieces, piece_span[0])
        if placed is not None and tok_text.startswith(pred_text, placed):
            starts.append(placed)
    starts.append(tok_text.find(pred_text))   # Google's: the first place the text is ('Apple' in 'Apple-apple')
    # the alignment compares character counts only: a character the tokenizer drops (a zero-width space) and one it
    # expands (a Hangul syllable: two jamo) balance out and shift the characters between them ('-caf' for 'cafe'),
    # so the slice must tokenize to what was predicted (final and medial sigma alike: a slice's last letter
    # lower-cases as a word's end); printable ASCII has neither kind of character (and is most passages)
    exact = orig_text.isascii() and orig_text.isprintable()
    for start in dict.fromkeys(starts):   # the place is often where the text first is: tried once
        answer = _aligned_slice(orig_text, tok_text, start, len(pred_text))
        if answer is not None and (exact or _sigma_blind("".join(basic.tokenize(answer))) ==
                                   _sigma_blind(pred_text.replace(" ", ""))):
            return answer
    return _unaligned_final_text(orig_text, pred_text, do_lower_case, word_pieces, piece_span)


def _sigma_blind(text):
    return text.replace("\u03c2", "\u03c3")


def _aligned_slice(orig_text, tok_text, start, length):
    """The characters of orig_text under tok_text[start:start + length] (tok_text: orig_text basic-tokenized,
    joined by spaces), matched one for one once spaces are removed; None where they cannot be (not found, a
    different count of characters, or an end on a space)."""
    end = start + length - 1
    if (start == -1 or end < start
            or len(orig_text) - orig_text.count(" ") != len(tok_text) - tok_text.count(" ")
            or tok_text[start] == " " or tok_text[end] == " "):
        return None
    orig_chars = [i for i, c in enumerate(orig_text) if c != " "]
    ns_start = start - tok_text.count(" ", 0, start)
    ns_end = end - tok_text.count(" ", 0, end)
    return orig_text[orig_chars[ns_start]:orig_chars[ns_end] + 1]


def _unaligned_final_text(orig_text, pred_text, do_lower_case, word_pieces=None, piece_span=None):
    """get_final_text where characters cannot be aligned. With the prediction's place (piece_span) and the
    tokenizer's word_pieces: the basic tokens whose pieces it holds. Else by text: the run of orig_text's basic
    tokens that pred_text's are, an unknown piece ([UNK]) standing for any one token, else
    _trim_unmatched_punctuation. Of several runs, the one whose unknown pieces stand for the fewest punctuation
    characters (a vocabulary knows most punctuation, so '[UNK]' in '"ᏣᎳᎩ"' is the word, not the quote), then the
    first: text alone cannot tell 'dog' from 'ᎩᏟ' for the [UNK] of 'dog=ᎩᏟ,', nor two runs of unknown pieces
    apart, which is why the answers' path passes the place."""
    spans = _basic_tokenizer(bool(do_lower_case)).token_spans(orig_text)
    tokens = [token for _, _, token in spans]
    if word_pieces is not None and piece_span is not None:
        placed = _tokens_at(tokens, word_pieces, *piece_span)
        if placed is not None:
            return orig_text[spans[placed[0]][0]:spans[placed[1]][1]]
    pred = pred_text.split()
    if not pred or len(pred) > len(tokens):
        return _trim_unmatched_punctuation(orig_text, pred_text, do_lower_case)
    known = [n for n, p in enumerate(pred) if p != "[UNK]"]
    unknown = [n for n, p in enumerate(pred) if p == "[UNK]"]   # the run's tokens they stand for may be anything
    last = len(tokens) - len(pred)
    punct = [len(token) == 1 and is_punctuation(ord(token)) for token in tokens]
    if known:   # the runs where the first known piece is in place (found through it), and what else they need
        anchor = known[0]
        firsts = (i - anchor for i, token in enumerate(tokens) if token == pred[anchor] and 0 <= i - anchor <= last)
        costs = ((sum(punct[first + n] for n in unknown), first) for first in firsts
                 if all(tokens[first + n] == pred[n] for n in known))
    else:   # every piece unknown: each run's punctuation count, sliding along the tokens
        window = list(itertools.accumulate(punct, initial=0))
        costs = ((window[first + len(pred)] - window[first], first) for first in range(last + 1))
    best = min(costs, default=None)   # the fewest punctuation marks, then the first run
    if best is None:
        return _trim_unmatched_punctuation(orig_text, pred_text, do_lower_case)
    first = best[1]
    return orig_text[spans[first][0]:spans[first + len(pred) - 1][1]]


def _text_offset(tokens, word_pieces, first):
    """Where piece `first` of `tokens`' pieces begins in " ".join(tokens); None beyond the last piece."""
    if first < 0:
        return None
    offset = 0
    for token in tokens:
        pieces = word_pieces(token)
        if first < len(pieces):
            return offset + sum(len(piece[2:] if piece.startswith("##") else piece) for piece in pieces[:first])
        first -= len(pieces)
        offset += len(token) + 1
    return None


def _tokens_at(tokens, word_pieces, first, count):
    """(first, last) index of the basic tokens that hold pieces first .. first + count - 1 of `tokens`' pieces;
    None if they have fewer pieces than that (a tokenizer that is not the one the passage was split with)."""
    ends = list(itertools.accumulate(len(word_pieces(token)) for token in tokens))
    if first < 0 or count < 1 or not ends or first + count > ends[-1]:
        return None
    return bisect.bisect_right(ends, first), bisect.bisect_right(ends, first + count - 1)


def _trim_unmatched_punctuation(orig_text, pred_text, do_lower_case):
    """orig_text less, at either end, what no token holds (spaces, zero-width and control characters; leading
    combining marks, which accent stripping drops) and the punctuation beyond what pred_text has there: every
    punctuation character is a token of its own, so a prediction ending in ')' keeps the ')' of '(深圳).', not '.'."""
    punct = lambda ch: is_punctuation(ord(ch))  # noqa: E731
    blank = lambda ch: is_blank(ch) or ch.isspace()  # noqa: E731
    dropped = lambda ch: blank(ch) or (do_lower_case and unicodedata.category(ch) == "Mn")  # noqa: E731
    pred = pred_text.replace("[UNK]", "x").replace(" ", "")   # an unknown piece stands for word characters
    start, end = 0, len(orig_text)

    def strip_ends():
        nonlocal start, end
        while end > start and blank(orig_text[end - 1]):
            end -= 1
        while start < end and dropped(orig_text[start]):
            start += 1

    def punctuation_run(positions):   # the punctuation characters met from one end, blanks skipped
        run = []
        for i in positions:
            if not blank(orig_text[i]):
                if not punct(orig_text[i]):
                    break
                run.append(i)
        return run

    strip_ends()
    if pred:
        keep_start = next((n for n, ch in enumerate(pred) if not punct(ch)), len(pred))
        keep_end = next((n for n, ch in enumerate(reversed(pred)) if not punct(ch)), len(pred))
        trailing = punctuation_run(range(end - 1, start - 1, -1))
        if len(trailing) > keep_end:
            end = trailing[len(trailing) - keep_end - 1]
        leading = punctuation_run(range(start, end))
        if len(leading) > keep_start:
            start = leading[len(leading) - keep_start - 1] + 1
        strip_ends()
    return orig_text[start:end] or orig_text


def _compute_softmax(scores):
    if not scores:
        return []
    max_score = max(scores)
    exp_scores = [math.exp(score - max_score) for score in scores]
    total = sum(exp_scores)
    return [x / total for x in exp_scores]


def _get_best_indexes(logits, n_best_size):
    """Indexes of the n largest logits, largest first, ties in index order (a stable descending sort)."""
    candidates = np.arange(len(logits))
    if len(logits) > n_best_size:  # only values >= the n-th largest can qualify (ties included)
        nth_largest = np.partition(logits, len(logits) - n_best_size)[len(logits) - n_best_size]
        candidates = np.flatnonzero(logits >= nth_largest)
    return candidates[np.argsort(-logits[candidates], kind="stable")[:n_best_size]].tolist()


def _wordpiece_text(pieces):
    text = " ".join(pieces).replace(" ##", "").replace("##", "")
    return " ".join(text.split())


def _prelim_predictions(features, results, n_best_size, max_answer_length, version_2_with_negative):
    """Valid spans (score, feature, start, end, start logit, end logit), best first, and the null answer."""
    _check_positive("n_best_size", n_best_size)
    _check_positive("max_answer_length", max_answer_length)
    if not results:
        raise BertError("no network outputs to decode")
    prelims = []
    null = None
    for result in results:
        if not 0 <= result.feature_index < len(features):
            raise BertError(f"network output refers to feature {result.feature_index} of {len(features)}")
        feature = features[result.feature_index]
        start_logits = np.asarray(result.start_logits)
        end_logits = np.asarray(result.end_logits)
        if np.isnan(start_logits).any() or np.isnan(end_logits).any():
            raise BertError(f"the network output for feature {result.feature_index} contains NaN")
        if version_2_with_negative:
            score = start_logits[0] + end_logits[0]
            if null is None or score < null.score:
                null = _NullAnswer(score, start_logits[0], end_logits[0])
        # Only the window's real tokens compete for the n-best indexes: upstream ranked padding positions too, and
        # when every real logit was negative, padding could crowd all of them out (the nonce answer "empty").
        n_tokens = len(feature.tokens)
        in_doc, max_context = feature.token_to_orig_map, feature.token_is_max_context
        starts = [s for s in _get_best_indexes(start_logits[:n_tokens], n_best_size)
                  if s in in_doc and max_context.get(s, False)]
        ends = [e for e in _get_best_indexes(end_logits[:n_tokens], n_best_size) if e in in_doc]
        for s in starts:
            for e in ends:
                if s <= e < s + max_answer_length:
                    prelims.append((start_logits[s] + end_logits[e], result.feature_index, s, e,
                                    start_logits[s], end_logits[e]))
    if null is not None:
        prelims.append((null.score, 0, 0, 0, null.start_logit, null.end_logit))
    prelims.sort(key=itemgetter(0), reverse=True)  # stable: equal scores keep their order
    return prelims, null


def _piece_in_word(feature, position):
    """Where the piece at `position` lies among its passage word's WordPieces (0: the word's first)."""
    word, first = feature.token_to_orig_map[position], position
    while feature.token_to_orig_map.get(first - 1) == word:
        first -= 1
    before_window = feature.leading_pieces if first - 1 not in feature.token_to_orig_map else 0
    return position - first + before_window


def _nbest_entries(doc_tokens, features, prelims, do_lower_case, word_pieces):
    """N-best entries in score order, one per distinct answer text; start index 0 is the null answer."""
    seen = set()
    for _, feature_index, start, end, start_logit, end_logit in prelims:
        if start > 0:
            feature = features[feature_index]
            orig_start = feature.token_to_orig_map[start]
            orig_end = feature.token_to_orig_map[end]
            text = get_final_text(_wordpiece_text(feature.tokens[start:end + 1]),
                                  " ".join(doc_tokens[orig_start:orig_end + 1]), do_lower_case, word_pieces,
                                  (_piece_in_word(feature, start), end - start + 1))
            if text in seen:
                continue
        else:
            text = ""
        seen.add(text)
        yield _NbestPrediction(text, start_logit, end_logit)


def _choose(entries, null, null_score_diff_threshold):
    """(prediction, null score minus best non-null score) from entries in n-best order."""
    if null is None:
        first = next(iter(entries), None)
        return (first.text if first is not None else "empty"), 0.0
    best = next((entry for entry in entries if entry.text), None)
    if best is None:  # no span qualifies at all: only the null answer is left
        return "", math.inf
    score_diff = null.score - best.start_logit - best.end_logit
    return ("" if score_diff > null_score_diff_threshold else best.text), float(score_diff)


def get_predictions(doc_tokens, features, results, n_best_size, max_answer_length,
                    version_2_with_negative=False, null_score_diff_threshold=0.0, do_lower_case=True,
                    word_pieces=None):
    """(prediction text, n-best list of dicts, null score difference) for one question.

    With version_2_with_negative, the null score is the smallest start[0] + end[0] over the features,
    and the prediction is "" when null score - best non-null score > null_score_diff_threshold;
    the third value is that difference (math.inf if no span qualifies). Without it, it is 0.0.
    """
    prelims, null = _prelim_predictions(features, results, n_best_size, max_answer_length,
                                        version_2_with_negative)
    entries = _nbest_entries(doc_tokens, features, prelims, do_lower_case, word_pieces)
    nbest = list(itertools.islice(entries, min(n_best_size, sys.maxsize)))   # any larger n: every entry
    if null is not None and all(entry.text for entry in nbest):
        nbest.append(_NbestPrediction("", null.start_logit, null.end_logit))
    if not nbest:  # no valid span (upstream's nonce answer)
        nbest.append(_NbestPrediction("empty", 0.0, 0.0))
    probabilities = _compute_softmax([entry.start_logit + entry.end_logit for entry in nbest])
    nbest_json = [collections.OrderedDict(text=entry.text, probability=float(probability),
                                          start_logit=float(entry.start_logit), end_logit=float(entry.end_logit))
                  for entry, probability in zip(nbest, probabilities)]
    # The best non-null answer may lie past the n-best when the null answer fills it: keep reading entries.
    prediction, score_diff = _choose(itertools.chain(nbest, entries), null, null_score_diff_threshold)
    return prediction, nbest_json, score_diff


def get_best_prediction(doc_tokens, features, results, n_best_size, max_answer_length,
                        version_2_with_negative=False, null_score_diff_threshold=0.0, do_lower_case=True,
                        word_pieces=None):
    """(prediction, null score difference) as get_predictions gives them, without building the n-best list."""
    prelims, null = _prelim_predictions(features, results, n_best_size, max_answer_length,
                                        version_2_with_negative)
    entries = _nbest_entries(doc_tokens, features, prelims, do_lower_case, word_pieces)
    return _choose(entries, null, null_score_diff_threshold)


def best_answers(examples, features_per_example, outputs, n_best_size, max_answer_length, **decode_args):
    """Each example's best answer text; `outputs` are the NetworkOutputs of all the examples' windows, in order."""
    outputs = iter(outputs)
    answers = []
    for example, features in zip(examples, features_per_example):
        results = [next(outputs)._replace(feature_index=k) for k in range(len(features))]
        answers.append(get_best_prediction(example.doc_tokens, features, results, n_best_size, max_answer_length,
                                           **decode_args)[0])
    return answers
