"""datatrove's English word and sentence splits (spaCy's rule-based English pipeline), for a batch at once.

datatrove 0.10.1 splits English text with ``spacy.blank("en")`` plus spaCy's ``sentencizer``
(``SpaCyTokenizer``), one text per call: words are the stripped, non-blank token texts; a line's
sentences are the sentencizer's spans (at least one). litho uses that very pipeline object
(``load_word_tokenizer``) but calls it the cheaper way: words from the tokenizer alone (the
sentencizer only marks sentence starts, it never changes tokens) and sentences with ``nlp.pipe`` over
all the lines of a batch, inside one ``memory_zone`` (which keeps spaCy's string store from growing,
as datatrove does). That halves the cost of both (bench/results/rules.md) and gives the same splits;
tests/filters/rules/test_rule_sets_oracle.py holds every value that depends on them to datatrove's.
If spaCy fails on a text, the text goes through datatrove's own functions (which retry without the
string ``IS_ALPHA`` that breaks spaCy's tokenizer).
"""

from __future__ import annotations


def _english():
    from datatrove.utils.typeshelper import Languages
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    return load_word_tokenizer(Languages.english).tokenizer  # cached: built once per process


def split_words(texts: list[str]) -> list[list[str]]:
    """``datatrove.utils.text.split_into_words`` of each text ([] for an empty one)."""
    nlp = _english()
    try:
        with nlp.memory_zone():
            return [[w for w in (t.text.strip() for t in nlp.tokenizer(s)) if w] if s else [] for s in texts]
    except Exception:
        from datatrove.utils.text import split_into_words

        return [split_into_words(s) if s else [] for s in texts]


def count_sentences(lines: list[str]) -> list[int]:
    """``len(datatrove.utils.text.split_into_sentences(line))`` of each (non-empty) line."""
    if not lines:
        return []
    nlp = _english()
    nlp.max_length = max(map(len, lines)) + 10  # datatrove sets it per text the same way
    try:
        with nlp.memory_zone():
            return [max(1, sum(1 for _ in doc.sents)) for doc in nlp.pipe(lines)]
    except Exception:
        from datatrove.utils.text import split_into_sentences

        return [len(split_into_sentences(line)) for line in lines]
