"""The scorer stage of the published rule sets: every column their rules read, one word split per text.

datatrove runs its filters one document at a time and caches the last few word splits, so Gopher
repetition, Gopher quality and FineWeb tokenize a document once between them; this stage does the
same for a batch (one ``split_into_words`` per text, shared by every rule set that needs words), so
turning on more rule sets costs only their own arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from filters.rules.base import texts_to_score
from filters.scores import quality, repetition


class ScoreSet(NamedTuple):
    version: str  # written to the shard metadata when the set runs
    columns: tuple[str, ...]
    fn: Callable[[str, list[str]], dict[str, float]]  # (text, words) -> {column: value}


def _c4(text: str, words: list[str]) -> dict[str, float]:
    return quality.c4(text)  # C4 splits lines and sentences, never words


SCORE_SETS: dict[str, ScoreSet] = {
    "gopher_repetition": ScoreSet(repetition.VERSION, repetition.COLUMNS, repetition.gopher_repetition),
    "gopher_quality": ScoreSet("gopher_quality_v1", quality.GOPHER_COLUMNS, quality.gopher_quality),
    "c4": ScoreSet("c4_v1", quality.C4_COLUMNS, _c4),
    "fineweb": ScoreSet("fineweb_v1", quality.FINEWEB_COLUMNS, quality.fineweb),
}
NEEDS_WORDS = {"gopher_repetition", "gopher_quality", "fineweb"}


def words_of(text: str) -> list[str]:
    """datatrove's English word split (spaCy's rule-based tokenizer, tokens stripped, blanks dropped)."""
    from datatrove.utils.text import split_into_words

    return split_into_words(text) if text else []


class RuleSetScores:
    """Scorer stage: the columns of each rule set in ``rule_sets`` (see :data:`SCORE_SETS`).

    Args:
        rule_sets: Names of published rule sets (filters/rules/rule_sets.py), e.g. ``("gopher_repetition",)``.
        text_column: Column holding the text.
    """

    @classmethod
    def columns(
        cls, rule_sets: tuple[str, ...] = ("gopher_repetition",), text_column: str = "text"
    ) -> tuple[tuple, tuple]:
        """``(needs, adds)``: the columns the stage reads and the ones it writes."""
        return (text_column,), tuple(c for name in rule_sets for c in SCORE_SETS[name].columns)

    @classmethod
    def versions(cls, rule_sets: tuple[str, ...] = ("gopher_repetition",), **_) -> tuple[str, ...]:
        """The score versions this stage writes (shard metadata and manifest)."""
        return tuple(SCORE_SETS[name].version for name in rule_sets)

    def __init__(self, rule_sets: tuple[str, ...] = ("gopher_repetition",), text_column: str = "text"):
        unknown = [name for name in rule_sets if name not in SCORE_SETS]
        if unknown:
            raise ValueError(f"unknown rule sets {unknown}; use some of {', '.join(SCORE_SETS)}")
        self.rule_sets = tuple(rule_sets)
        self.text_column = text_column
        if any(name in NEEDS_WORDS for name in self.rule_sets):
            words_of("Load the word splitter once.")  # spaCy: seconds to import, once per actor

    def __call__(self, batch: dict) -> dict:
        texts = texts_to_score(batch, self.text_column)
        sets = [SCORE_SETS[name] for name in self.rule_sets]
        split = any(name in NEEDS_WORDS for name in self.rule_sets)
        values: dict[str, list[float]] = {c: [] for s in sets for c in s.columns}
        for text in texts:
            words = words_of(text) if split else []
            for score_set in sets:
                for column, value in score_set.fn(text, words).items():
                    values[column].append(value)
        for column, column_values in values.items():
            batch[column] = np.array(column_values, dtype=float)
        return batch
