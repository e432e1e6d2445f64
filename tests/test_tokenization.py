"""helpers/tokenization.py against Hugging Face `tokenizers` (Rust) and a literal reading of Google's algorithm."""
import json
import random
import unicodedata
from pathlib import Path

import pytest

from conftest import ROOT, shared_path
from helpers.data_processing import convert_doc_tokens
from helpers.errors import BertError
from helpers.tokenization import BasicTokenizer, FullTokenizer, WordpieceTokenizer, load_vocab

DEV_V11 = ROOT / "squad" / "dev-v1.1.json"


@pytest.fixture(scope="module")
def uncased_vocab():
    return shared_path("data", "vocab", "bert-base-uncased-vocab.txt")


@pytest.fixture(scope="module")
def cased_vocab():
    return shared_path("data", "vocab", "bert-base-cased-vocab.txt")


def hf_tokenizer(vocab_file, lowercase, max_input_chars_per_word=200):
    """HF's BertWordPieceTokenizer set up as Google's tokenizer: clean text, CJK splitting, accents stripped
    exactly when lower-casing (strip_accents=None). Its WordPiece model allows 100 characters per word by
    default; Google allows 200, so the model is rebuilt with Google's limit."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordPiece
    hf = tokenizers.BertWordPieceTokenizer(str(vocab_file), lowercase=lowercase, strip_accents=None,
                                           clean_text=True, handle_chinese_chars=True)
    hf._tokenizer.model = WordPiece.from_file(str(vocab_file), unk_token="[UNK]",
                                              max_input_chars_per_word=max_input_chars_per_word)
    return hf


def squad_texts():
    data = json.loads(DEV_V11.read_text(encoding="utf-8"))["data"]
    texts = []
    for article in data:
        for paragraph in article["paragraphs"]:
            texts.append(paragraph["context"])
            texts.extend(qa["question"] for qa in paragraph["qas"])
    return texts


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_every_squad_dev_context_and_question_matches_hf(lowercase, uncased_vocab, cased_vocab):
    vocab = uncased_vocab if lowercase else cased_vocab
    texts = squad_texts()
    assert len(texts) == 2067 + 10570
    ours = FullTokenizer(vocab, do_lower_case=lowercase)
    encodings = hf_tokenizer(vocab, lowercase).encode_batch(texts, add_special_tokens=False)
    mismatches = [(text, tokens, enc.tokens) for text, tokens, enc in
                  zip(texts, map(ours.tokenize, texts), encodings) if tokens != enc.tokens]
    assert not mismatches, mismatches[:3]
    # ids too, for a sample (the same dict lookups underneath)
    for text, enc in list(zip(texts, encodings))[::50]:
        assert ours.convert_tokens_to_ids(ours.tokenize(text)) == enc.ids


def test_doc_token_path_equals_whole_text(uncased_vocab):
    """Features tokenize a passage word by word (demoBERT's doc tokens); that must equal the whole-text result."""
    tokenizer = FullTokenizer(uncased_vocab)
    contexts = [text for text in squad_texts() if len(text) > 300][:300]
    contexts.append("a\u202fb\u00a0c\x0bd \tе\u2028f 北京")
    # every character Python calls whitespace, between two words: the passage's words must end where the
    # tokenizer's do, whether it reads the character as a space or deletes it
    contexts.append("w".join(chr(cp) for cp in range(0x3001) if chr(cp).isspace()) + "w")
    for context in contexts:
        doc_tokens = convert_doc_tokens(context)
        tokens, word_index = tokenizer.tokenize_words(doc_tokens)
        assert tokens == tokenizer.tokenize(context)
        assert tokens == [piece for word in doc_tokens for piece in tokenizer.tokenize(word)]
        assert word_index == [i for i, word in enumerate(doc_tokens) for _ in tokenizer.tokenize(word)]


HARD_STRINGS = [
    "Café naïve résumé Ångström façade Øresund",
    "e\u0301cole cafe\u0301 n\u0303",                      # combining marks after the letter
    "北京大学 東京タワー 한국어 日本語のテキスト 中文,标点。",   # CJK ideographs split, kana/hangul not
    "emoji 😀👍🏽 🥰 🧑\u200d🚀 ❤️ 🇫🇷",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom",      # format characters (Cf) are dropped
    "ctrl\x00\x01\x07\x0b\x0c\x1b\x7f\x85x\ufffdy",        # control characters and U+FFFD are dropped
    "nbsp\u00a0narrow\u202fthin\u2009ideo\u3000ogham\u1680end",
    "line\u2028para\u2029end\ttab\r\ncrlf",
    "العربية: مرحبا بالعالم، كيف حالك؟",
    "हिन्दी भाषा। नमस्ते",
    "ภาษาไทยไม่มีช่องว่าง",
    "x" * 250 + " " + "ab" * 99 + " short",              # > 200 chars -> [UNK]; 198 chars -> word pieces
    "Hello,world!...(yes)?--\"quoted\"—dash…‘single’ «guillemets» ¿qué? ¡ay! $5.00 50% a&b ~`^_|",
    "İstanbul ß ẞ ﬁ Ǆ ǅ ǆ Ⅻ ① ² ½",
    "\ue000private use \U000f0000 plane fifteen",
    "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３",
    "Ünïcödé ÅÉÎÕÜ ŁĐĦŦ ΑΒΓ αβγ Кириллица ЁЖЗ",
    "",
    "   \t\n  ",
    "don't can't won't U.S.A. e-mail 3.14 1,000,000",
]


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_hard_strings_match_hf(lowercase, uncased_vocab, cased_vocab):
    vocab = uncased_vocab if lowercase else cased_vocab
    ours = FullTokenizer(vocab, do_lower_case=lowercase)
    hf = hf_tokenizer(vocab, lowercase)
    for text in HARD_STRINGS:
        assert ours.tokenize(text) == hf.encode(text, add_special_tokens=False).tokens, repr(text)


def test_cased_keeps_case_and_accents(cased_vocab, uncased_vocab):
    assert BasicTokenizer(do_lower_case=False).tokenize("Café Ångström!") == ["Café", "Ångström", "!"]
    assert BasicTokenizer(do_lower_case=True).tokenize("Café Ångström!") == ["cafe", "angstrom", "!"]
    cased = FullTokenizer(cased_vocab, do_lower_case=False).tokenize("The Paris")
    assert cased == ["The", "Paris"]
    assert FullTokenizer(uncased_vocab).tokenize("The Paris") == ["the", "paris"]


def test_google_behaviour_where_hf_differs(uncased_vocab):
    ours = FullTokenizer(uncased_vocab)
    # 1. Final sigma: Google lower-cases each word with Python's str.lower(), which applies Unicode's
    #    final-sigma rule (word-final Σ -> ς); HF lower-cases character by character (always σ).
    assert ours.tokenize("ΣΟΦΟΣ") == ours.wordpiece_tokenizer.tokenize("σοφος")
    assert "ς" in "".join(ours.tokenize("ΣΟΦΟΣ"))
    # 2. Unassigned code points (category Cn) are "control characters" for Google (category C*) and are
    #    dropped; HF's character tables keep them as [UNK]. Python's Unicode tables decide, as upstream.
    assert unicodedata.category("\u0378") == "Cn"
    assert ours.tokenize("\u0378 unassigned") == ours.tokenize("unassigned")
    # 3. Word length limit: Google's WordPiece allows 200 characters per word, HF's default model 100.
    word = "ab" * 75
    assert len(ours.tokenize(word)) > 1 and "[UNK]" not in ours.tokenize(word)
    hf_default = hf_tokenizer(uncased_vocab, True, max_input_chars_per_word=100)
    assert hf_default.encode(word, add_special_tokens=False).tokens == ["[UNK]"]
    assert ours.tokenize("ab" * 101) == ["[UNK]"]


# A literal, character-by-character reading of Google's tokenizer (spec: clean, CJK, lower + strip accents,
# punctuation split, greedy WordPiece), independent of the optimised module.
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _spec_basic_tokenize(text, lower):
    cleaned = []
    for ch in text:
        category = unicodedata.category(ch)
        if ch in " \t\n\r" or category == "Zs":
            cleaned.append(" ")
        elif ord(ch) in (0, 0xFFFD) or category.startswith("C"):
            continue
        elif any(lo <= ord(ch) <= hi for lo, hi in _CJK):
            cleaned.append(" " + ch + " ")
        else:
            cleaned.append(ch)
    tokens = []
    for word in "".join(cleaned).split():
        if lower:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                           if unicodedata.category(c) != "Mn")
        current = ""
        for ch in word:
            cp = ord(ch)
            if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or \
                    unicodedata.category(ch).startswith("P"):
                tokens += [current, ch] if current else [ch]
                current = ""
            else:
                current += ch
        if current:
            tokens.append(current)
    return " ".join(tokens).split()


def _spec_wordpiece(word, vocab):
    if len(word) > 200:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = ("##" if start else "") + word[start:end]
            if piece in vocab:
                break
        else:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_matches_literal_algorithm_on_random_unicode(lowercase, uncased_vocab, cased_vocab):
    vocab_file = uncased_vocab if lowercase else cased_vocab
    ours = FullTokenizer(vocab_file, do_lower_case=lowercase)
    rng = random.Random(1234)
    frequent = list("  aeiouAEIOUnst.,'-\t") + ["\u0301", "\u00e9", "\u03a3", "\u4e2d", "\u200b", "\x00"]
    for _ in range(3000):
        chars = []
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.35:
                cp = rng.randrange(0x110000)
                chars.append(chr(cp) if not 0xD800 <= cp <= 0xDFFF else "a")
            else:
                chars.append(rng.choice(frequent))
        text = "".join(chars)
        expected = [p for token in _spec_basic_tokenize(text, lowercase) for p in _spec_wordpiece(token, ours.vocab)]
        assert ours.tokenize(text) == expected, repr(text)
        assert ours.basic_tokenizer.tokenize(text) == _spec_basic_tokenize(text, lowercase), repr(text)
        spans = ours.basic_tokenizer.token_spans(text)
        assert [token for _, _, token in spans] == _spec_basic_tokenize(text, lowercase), repr(text)
        for start, end, token in spans:   # each token comes from the characters its span names (casefold: a
            # word's lower-casing is contextual, a final sigma becomes 'ς')
            alone = [t.casefold() for t in _spec_basic_tokenize(text[start:end], lowercase)]
            assert token.casefold() in alone, (repr(text), start, end)


def test_bytes_input_is_utf8_with_bad_bytes_dropped(uncased_vocab):
    tokenizer = FullTokenizer(uncased_vocab)
    assert tokenizer.tokenize("Café".encode() + b"\xff ok") == tokenizer.tokenize("Café ok")
    with pytest.raises(BertError, match="str or bytes"):
        tokenizer.tokenize(42)


def test_vocab_indexes_are_line_numbers_and_round_trip(tmp_path, uncased_vocab):
    vocab = load_vocab(uncased_vocab)
    lines = Path(uncased_vocab).read_text(encoding="utf-8").splitlines()
    assert len(vocab) == len(lines) == 30522
    assert all(vocab[line.strip()] == i for i, line in enumerate(lines))
    tokenizer = FullTokenizer(uncased_vocab)
    tokens = tokenizer.tokenize("The quick brown fox jumped over the lazy dog's unaffable kennel.")
    assert tokenizer.convert_ids_to_tokens(tokenizer.convert_tokens_to_ids(tokens)) == tokens
    with pytest.raises(BertError, match="token id 99999999"):
        tokenizer.convert_ids_to_tokens([99999999])


def test_wordpiece_greedy_longest_match(tmp_path):
    vocab = {t: i for i, t in enumerate(["[UNK]", "un", "una", "##aff", "##able", "##a", "##ff", "##ffable"])}
    wordpiece = WordpieceTokenizer(vocab)
    assert wordpiece.tokenize("unaffable") == ["una", "##ffable"]   # longest first piece wins, not "un"
    assert wordpiece.tokenize("unaffablex") == ["[UNK]"]            # one unmatched position: the whole word
    assert wordpiece.tokenize("una una") == ["una", "una"]


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    (b"", "empty"),
    (b"\n\n  \n", "empty"),
    (b"[PAD]\n\xff\xfe bad\n", "not UTF-8"),
])
def test_bad_vocab_files(tmp_path, content, message):
    path = tmp_path / "vocab.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BertError, match=message) as info:
        FullTokenizer(path)
    assert str(path) in str(info.value)
    with pytest.raises(BertError, match="directory"):
        load_vocab(tmp_path)


def test_vocab_without_unk_raises_bert_error_when_needed(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[CLS]\n[SEP]\nhello\nworld\n", encoding="utf-8")
    tokenizer = FullTokenizer(path)
    assert tokenizer.convert_tokens_to_ids(tokenizer.tokenize("Hello world")) == [2, 3]
    tokens = tokenizer.tokenize("hello zebra")
    assert tokens == ["hello", "[UNK]"]
    with pytest.raises(BertError, match=r"'\[UNK\]' is not in the vocabulary"):
        tokenizer.convert_tokens_to_ids(tokens)


def test_case_is_read_from_the_vocabulary_when_nothing_says_it(uncased_vocab, cased_vocab, tmp_path):
    """TensorRT engines carry no model config, and Google's bert_config.json does not say whether to lower-case:
    then the vocabulary tells. Google's uncased vocabulary holds 'ℝ', which str.isupper() calls upper case
    although it has no lower-case form. A config that says wins over the vocabulary."""
    from types import SimpleNamespace

    from helpers.config import load_config
    from helpers.qa_app import make_tokenizer
    from helpers.tokenization import vocab_is_uncased
    model_vocab = ROOT / "models" / "minilm-l6-squad11" / "vocab.txt"
    assert "ℝ" in load_vocab(model_vocab)
    assert vocab_is_uncased(load_vocab(model_vocab)) and vocab_is_uncased(load_vocab(uncased_vocab))
    assert not vocab_is_uncased(load_vocab(cased_vocab))
    no_config = SimpleNamespace(config=None)
    question = "Which NFL team represented the AFC at Super Bowl 50?"
    tokenizer = make_tokenizer(str(model_vocab), no_config)
    assert tokenizer.tokenize(question) == hf_tokenizer(model_vocab, lowercase=True).encode(
        question, add_special_tokens=False).tokens
    assert make_tokenizer(str(cased_vocab), no_config).tokenize("Super Bowl") == ["Super", "Bowl"]

    # a native engine's config read from a Google-style bert_config.json (no do_lower_case, no tokenizer_config)
    google = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
              "vocab_size": len(load_vocab(cased_vocab)), "hidden_act": "gelu", "type_vocab_size": 2}
    (tmp_path / "bert_config.json").write_text(json.dumps(google))
    config = load_config(str(tmp_path))
    assert config.do_lower_case is None
    cased = make_tokenizer(str(cased_vocab), SimpleNamespace(config=config))
    assert cased.tokenize("Where is Paris?") == hf_tokenizer(cased_vocab, lowercase=False).encode(
        "Where is Paris?", add_special_tokens=False).tokens == ["Where", "is", "Paris", "?"]
    (tmp_path / "bert_config.json").write_text(json.dumps({**google, "do_lower_case": True}))
    stated = make_tokenizer(str(cased_vocab), SimpleNamespace(config=load_config(str(tmp_path))))
    assert stated.tokenize("Where is Paris?")[0] == "where"
