"""Repetition scores, as in the Gopher quality rules (Rae et al. 2021, "Scaling Language Models", App. A).

Small teachers loop; these scores catch it. ``rep_dup_line_frac`` is the share of lines that
repeat an earlier line; ``rep_dup_ngram_frac_n`` is the share of word characters covered by
word n-grams that occur more than once.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from filters.rules.base import texts_to_score


def dup_line_frac(text: str) -> float:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return 0.0
    return 1.0 - len(set(lines)) / len(lines)


def dup_ngram_char_frac(words: list[str], n: int) -> float:
    """Share of characters (of words) inside word n-grams that appear at least twice."""
    if len(words) < n:
        return 0.0
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    counts = Counter(grams)
    covered = np.zeros(len(words), dtype=bool)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            covered[i : i + n] = True
    lengths = np.array([len(w) for w in words])
    return float(lengths[covered].sum() / max(lengths.sum(), 1))


class RepetitionMetrics:
    """Scorer stage: adds ``rep_dup_line_frac`` and ``rep_dup_ngram_frac_{n}`` for each n in ``ngrams``.

    Args:
        ngrams: Word n-gram sizes (Gopher uses 5 to 10).
        text_column: Column holding the text.
    """

    version = "repetition_v1"

    @classmethod
    def columns(cls, ngrams: tuple[int, ...] = (5, 10), text_column: str = "text") -> tuple[tuple, tuple]:
        """``(needs, adds)``: the columns the stage reads and the ones it writes."""
        return (text_column,), ("rep_dup_line_frac", *(f"rep_dup_ngram_frac_{n}" for n in ngrams))

    def __init__(self, ngrams: tuple[int, ...] = (5, 10), text_column: str = "text"):
        self.ngrams = tuple(ngrams)
        self.text_column = text_column

    def __call__(self, batch: dict) -> dict:
        texts = texts_to_score(batch, self.text_column)
        words = [t.lower().split() for t in texts]
        batch["rep_dup_line_frac"] = np.array([dup_line_frac(t) for t in texts])
        for n in self.ngrams:
            batch[f"rep_dup_ngram_frac_{n}"] = np.array([dup_ngram_char_frac(w, n) for w in words])
        return batch
