"""Google BERT's WordPiece tokenizer (BasicTokenizer, then WordpieceTokenizer), exact and fast.

The output is token for token the output of Google's `tokenization.py` (the copy demoBERT ships).
Speed comes from three facts about that algorithm:
  * cleaning (drop control characters, map whitespace to a space) and the spaces put around CJK
    ideographs are a per-character map, done in C by one `str.translate` over the whole text;
  * every later step works on one whitespace-separated word at a time and is a pure function of it, so
    each distinct word is tokenized once and remembered;
  * a WordPiece can never be longer than the longest vocabulary entry, which bounds the greedy search.
Character classes come from Python's `unicodedata`, as in Google's code, and are looked up lazily.
"""
import io
import unicodedata

from .errors import BertError, read_bytes

UNK_TOKEN = "[UNK]"
_MAX_CACHED_WORDS = 1 << 20  # bounds memory in long-running processes; cleared wholesale when reached

# Code point blocks Google treats as CJK ideographs (each one becomes its own word).
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
               (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(cp):
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def is_punctuation(cp):
    # Google counts every non-alphanumeric printable ASCII character as punctuation, plus Unicode's P*.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(chr(cp)).startswith("P")


class _LazyTable(dict):
    """A `str.translate` table that computes each code point's entry on first use."""

    def __init__(self, rule):
        super().__init__((cp, rule(cp)) for cp in range(128))  # ASCII up front: nearly all of the input
        self._rule = rule

    def __missing__(self, cp):
        value = self[cp] = self._rule(cp)
        return value


def _clean_rule(cp):
    """Google's _clean_text followed by _tokenize_chinese_chars, for one code point."""
    char = chr(cp)
    if char in "\t\n\r":
        return " "
    category = unicodedata.category(char)
    if cp == 0 or cp == 0xFFFD or category.startswith("C"):
        return None
    if char == " " or category == "Zs":
        return " "
    if _is_cjk(cp):
        return f" {char} "
    return cp


def separates_words(char):
    """Whether the tokenizer ends a word at this character: the ones it reads as a space (ASCII whitespace and every
    Unicode space separator), and the line and paragraph separators it keeps, at which its final split() ends the
    word. Control characters such as vertical tab are deleted instead: they join what surrounds them."""
    mapped = _CLEAN[ord(char)]
    return mapped == " " or (mapped == ord(char) and char.isspace())


def is_blank(char):
    """What the tokenizer drops (control and format characters such as zero-width spaces, U+FFFD) or reads as a
    space: never part of a token."""
    return _CLEAN[ord(char)] in (None, " ")


def _punctuation_rule(cp):
    """Spaces around punctuation: splitting on whitespace afterwards is Google's _run_split_on_punc."""
    return f" {chr(cp)} " if is_punctuation(cp) else cp


def _nonspacing_mark_rule(cp):
    return None if unicodedata.category(chr(cp)) == "Mn" else cp


_CLEAN = _LazyTable(_clean_rule)
_SPLIT_PUNCTUATION = _LazyTable(_punctuation_rule)
_DROP_NONSPACING_MARKS = _LazyTable(_nonspacing_mark_rule)


def convert_to_unicode(text):
    """str as is; bytes decoded as UTF-8, dropping invalid bytes (as Google does)."""
    if isinstance(text, str):
        return text
    if isinstance(text, bytes):
        return text.decode("utf-8", "ignore")
    raise BertError(f"cannot tokenize a {type(text).__name__}: text must be str or bytes")


def _remember(cache, word, pieces):
    """Store a word's tokens; the cache is emptied when full rather than growing without bound."""
    if len(cache) >= _MAX_CACHED_WORDS:
        cache.clear()
    cache[word] = pieces
    return pieces


def _tokenize_cached(text, cache, split_word):
    """Clean `text`, split it on whitespace and concatenate `split_word` of each word, remembered in `cache`."""
    tokens = []
    for word in convert_to_unicode(text).translate(_CLEAN).split():
        pieces = cache.get(word)
        if pieces is None:
            pieces = _remember(cache, word, split_word(word))
        tokens.extend(pieces)
    return tokens


def load_vocab(vocab_file):
    """token -> index, where the index is the line number and the token the stripped line."""
    raw = read_bytes(vocab_file, "vocabulary file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BertError(f"vocabulary file is not UTF-8 text: {vocab_file}") from None
    lines = io.StringIO(text, newline=None).readlines()  # split as a text-mode file would: \n, \r\n or \r
    vocab = {}
    for index, line in enumerate(lines):
        vocab[line.strip()] = index  # a repeated token keeps its last line number, as in Google's code
    if not vocab or set(vocab) == {""}:
        raise BertError(f"vocabulary file is empty: {vocab_file}")
    return vocab


class BasicTokenizer:
    """Cleaning, CJK splitting, optional lower-casing with accent stripping, punctuation splitting."""

    def __init__(self, do_lower_case=True):
        self.do_lower_case = bool(do_lower_case)
        self._words = {}

    def tokenize(self, text):
        return _tokenize_cached(text, self._words, lambda word: tuple(self.split_word(word)))

    def token_spans(self, text):
        """(start, end, token) of each of tokenize(text)'s tokens, with the characters of `text` it comes from.
        A whitespace word's tokens are its runs of non-punctuation characters and its punctuation characters (less,
        when lower-casing, the nonspacing marks that begin a run, which accent stripping drops); in the rare word
        whose tokens do not pair up with those (a character that decomposes into punctuation), each token gets
        the whole word's span."""
        spans, word = [], []   # word: positions of the current word's characters, dropped characters skipped

        def close():
            if not word:
                return
            tokens = self.split_word("".join(text[i] for i in word))   # the whole word: lower() is contextual
            runs, run = [], []
            for i in word:
                if is_punctuation(ord(text[i])):
                    runs += [run, [i]] if run else [[i]]
                    run = []
                else:
                    run.append(i)
            runs += [run] if run else []
            if self.do_lower_case:
                runs = [r[next((n for n, i in enumerate(r) if unicodedata.category(text[i]) != "Mn"), len(r)):]
                        for r in runs]
                runs = [r for r in runs if r]
            if len(runs) != len(tokens):
                runs = [word] * len(tokens)
            spans.extend((r[0], r[-1] + 1, token) for r, token in zip(runs, tokens))
            word.clear()

        for i, char in enumerate(text):
            mapped = _CLEAN[ord(char)]
            if mapped is None:
                continue
            if separates_words(char):
                close()
            elif isinstance(mapped, str):   # a CJK ideograph, spaced by cleaning: a word of its own
                close()
                word.append(i)
                close()
            else:
                word.append(i)
        close()
        return spans

    def split_word(self, word):
        """Basic tokens of one word of cleaned text (no whitespace in it)."""
        if self.do_lower_case:
            word = word.lower()
            if not word.isascii():  # NFD is the identity on ASCII
                word = unicodedata.normalize("NFD", word).translate(_DROP_NONSPACING_MARKS)
        return word.translate(_SPLIT_PUNCTUATION).split()


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece; a word with any unmatchable position becomes `unk_token`."""

    def __init__(self, vocab, unk_token=UNK_TOKEN, max_input_chars_per_word=200):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word
        # No piece can match more characters than the longest entry has (without its "##").
        self._longest_first = max((len(t) for t in vocab), default=0)
        self._longest_next = max((len(t) - 2 for t in vocab if t.startswith("##")), default=0)

    def tokenize(self, text):
        pieces = []
        for word in convert_to_unicode(text).split():
            pieces.extend(self.tokenize_word(word))
        return pieces

    def tokenize_word(self, word):
        n = len(word)
        if n > self.max_input_chars_per_word:
            return [self.unk_token]
        vocab = self.vocab
        pieces = []
        start = 0
        while start < n:
            longest = self._longest_next if start else self._longest_first
            end = min(n, start + longest)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in vocab:
                    break
                end -= 1
            else:
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces


def vocab_is_uncased(vocab):
    """A vocabulary with cased word pieces (e.g. 'The') belongs to a cased model. A character counts as cased only
    if lower-casing changes it: Google's uncased vocabulary holds 'ℝ', upper-case with no lower-case form."""
    return not any(any(ch.lower() != ch for ch in token) for token in vocab if not token.startswith("["))


class FullTokenizer:
    """BasicTokenizer then WordpieceTokenizer, with the vocabulary's id lookups. do_lower_case=None: as the
    vocabulary's case says (vocab_is_uncased), for models whose config does not say."""

    def __init__(self, vocab_file, do_lower_case=True):
        self.vocab_file = vocab_file
        self.vocab = load_vocab(vocab_file)
        self.inv_vocab = {index: token for token, index in self.vocab.items()}
        if do_lower_case is None:
            do_lower_case = vocab_is_uncased(self.vocab)
        self.do_lower_case = bool(do_lower_case)
        self.basic_tokenizer = BasicTokenizer(do_lower_case=self.do_lower_case)
        self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab)
        self._words = {}

    def tokenize(self, text):
        return _tokenize_cached(text, self._words, self._tokenize_word)

    def tokenize_words(self, words):
        """(tokens of every item of `words` in turn, index of the item each token came from)."""
        cache = self._words
        tokens, word_index = [], []
        for index, text in enumerate(words):
            for word in convert_to_unicode(text).translate(_CLEAN).split():
                pieces = cache.get(word)
                if pieces is None:
                    pieces = _remember(cache, word, self._tokenize_word(word))
                tokens.extend(pieces)
                word_index.extend([index] * len(pieces))
        return tokens, word_index

    def word_pieces(self, token):
        """The WordPieces of one basic token (all of it is [UNK] or none of it)."""
        return tuple(self.wordpiece_tokenizer.tokenize_word(token))

    def _tokenize_word(self, word):
        pieces = []
        for token in self.basic_tokenizer.split_word(word):
            pieces.extend(self.wordpiece_tokenizer.tokenize_word(token))
        return tuple(pieces)

    def convert_tokens_to_ids(self, tokens):
        vocab = self.vocab
        try:
            return [vocab[token] for token in tokens]
        except KeyError as exc:
            raise BertError(f"token {exc.args[0]!r} is not in the vocabulary file {self.vocab_file}") from None

    def convert_ids_to_tokens(self, ids):
        inv_vocab = self.inv_vocab
        try:
            return [inv_vocab[int(i)] for i in ids]
        except KeyError as exc:
            raise BertError(f"token id {exc.args[0]} is not in the vocabulary file {self.vocab_file}") from None


# demoBERT's calibrator uses this name for the same tokenizer.
BertTokenizer = FullTokenizer
