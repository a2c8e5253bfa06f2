"""Gopher repetition scores (Rae et al. 2021, "Scaling Language Models: Methods, Analysis & Insights from
Training Gopher", App. A, Table A1), computed by datatrove's own functions (datatrove 0.10.1,
``GopherRepetitionFilter``, the implementation FineWeb used).

litho calls datatrove rather than re-implementing it: the values are then datatrove's by construction,
and its run-time needs are small (loguru and humanize beyond what litho already has) plus spaCy, the
word tokenizer datatrove uses for English (``spacy.blank("en")``: rules only, no model to download).
What litho adds is the score as a number: datatrove's filter stops at the first failed rule and
returns a reason; here every fraction is a column, so the report and ``litho probe`` see them, and
the rule (filters/rules/rule_sets.py) compares them with the published thresholds in datatrove's
order. The semantics, as datatrove computes them for a text of ``len(text)`` characters:

* paragraphs: ``re.split(r"\\n{2,}", text.strip())``; lines: ``re.split("\\n+", text)`` (not stripped);
* a *duplicate* paragraph/line is an occurrence of one seen before: the first occurrence is not
  counted; ``*_frac`` counts them over all paragraphs/lines, ``*_char_frac`` sums their characters
  over ``len(text)``;
* words are datatrove's ``split_into_words`` (spaCy's English tokenizer, stripped, blanks removed;
  computed for a batch by filters/scores/words.py);
* top n-gram (2, 3, 4): characters of the most frequent n-gram (words joined by spaces) times its
  count, over ``len(text)``; 0 when the text has fewer than n words;
* duplicate n-gram (5..10): walking the words, an n-gram (words joined without spaces) seen before
  adds its characters and the walk skips past it (n words), else it is remembered and the walk moves
  one word; the sum over ``len(text)``.
"""

from __future__ import annotations

import re

DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
TOP_NGRAMS = (2, 3, 4)
COLUMNS = (
    "rep_dup_para_frac",
    "rep_dup_para_char_frac",
    "rep_dup_line_frac",
    "rep_dup_line_char_frac",
    *(f"rep_top_ngram_frac_{n}" for n in TOP_NGRAMS),
    *(f"rep_dup_ngram_frac_{n}" for n in DUP_NGRAMS),
)
VERSION = "repetition_v2"

_PARAGRAPH = re.compile(r"\n{2,}")  # datatrove's paragraph and line splitters
_LINE = re.compile("\n+")


def gopher_repetition(text: str, words: list[str]) -> dict[str, float]:
    """The Gopher repetition fractions of one text (every column of :data:`COLUMNS`); 0 for an empty text.

    Args:
        text: The document.
        words: ``datatrove.utils.text.split_into_words(text)`` (:func:`filters.scores.words.split_words`).
    """
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_duplicates,
        find_top_duplicate,
        get_n_grams,
    )

    if not text:
        return dict.fromkeys(COLUMNS, 0.0)
    chars = len(text)
    paragraphs = _PARAGRAPH.split(text.strip())
    para_dups, para_chars = find_duplicates(paragraphs)
    lines = _LINE.split(text)
    line_dups, line_chars = find_duplicates(lines)
    out = {
        "rep_dup_para_frac": para_dups / len(paragraphs),
        "rep_dup_para_char_frac": para_chars / chars,
        "rep_dup_line_frac": line_dups / len(lines),
        "rep_dup_line_char_frac": line_chars / chars,
    }
    for n in TOP_NGRAMS:
        grams = get_n_grams(words, n)
        out[f"rep_top_ngram_frac_{n}"] = find_top_duplicate(grams) / chars if grams else 0.0
    for n in DUP_NGRAMS:
        out[f"rep_dup_ngram_frac_{n}"] = find_all_duplicate(words, n) / chars
    return out
