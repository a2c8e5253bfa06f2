"""The scorer stage of the published rule sets: every column their rules read, one word split per text.

datatrove runs its filters one document at a time and caches the last few word splits, so Gopher
repetition, Gopher quality and FineWeb tokenize a document once between them; this stage does the
same for a batch (one word split per text, shared by every rule set that needs words), and counts the
sentences of C4's kept lines for the whole batch in one spaCy pass (filters/scores/words.py).

Unlike datatrove's filters, which stop at a document's first failed rule, it computes every column for
every row (the report and ``litho probe`` read them), so it does more work on rows a rule drops early;
bench/results/rules.md measures both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from filters.rules.base import texts_to_score
from filters.scores import quality, repetition
from filters.scores.words import count_sentences, split_words


class ScoreSet(NamedTuple):
    version: str  # written to the shard metadata when the set runs
    columns: tuple[str, ...]
    fn: Callable[[str, list[str]], dict[str, float]]  # (text, words) -> {column: value}


def _c4(text: str, words: list[str]) -> dict[str, float]:
    return quality.c4(text)  # C4 splits lines and sentences, never words (the stage batches its sentences)


SCORE_SETS: dict[str, ScoreSet] = {
    "gopher_repetition": ScoreSet(repetition.VERSION, repetition.COLUMNS, repetition.gopher_repetition),
    "gopher_quality": ScoreSet("gopher_quality_v1", quality.GOPHER_COLUMNS, quality.gopher_quality),
    "c4": ScoreSet("c4_v1", quality.C4_COLUMNS, _c4),
    "fineweb": ScoreSet("fineweb_v1", quality.FINEWEB_COLUMNS, quality.fineweb),
}
NEEDS_WORDS = {"gopher_repetition", "gopher_quality", "fineweb"}


class RuleSetScores:
    """Scorer stage: the columns of each rule set in ``rule_sets`` (see :data:`SCORE_SETS`).

    Args:
        rule_sets: Names of published rule sets (filters/rules/rule_sets.py), e.g. ``("gopher_repetition",)``.
        text_column: Column holding the text.
    """

    # Holds nothing a run changes: a small run keeps one per worker process (pipeline/stages.py).
    shareable = True

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
        split_words(["Load spaCy once."])  # seconds to import: once per actor, not in the first batch

    def __call__(self, batch: dict) -> dict:
        texts = texts_to_score(batch, self.text_column)
        split = any(name in NEEDS_WORDS for name in self.rule_sets)
        words = split_words(texts) if split else [[] for _ in texts]
        c4 = self._c4(texts) if "c4" in self.rule_sets else None
        values: dict[str, list[float]] = {c: [] for name in self.rule_sets for c in SCORE_SETS[name].columns}
        for i, text in enumerate(texts):
            for name in self.rule_sets:
                found = c4[i] if name == "c4" else SCORE_SETS[name].fn(text, words[i])
                for column, value in found.items():
                    values[column].append(value)
        for column, column_values in values.items():
            batch[column] = np.array(column_values, dtype=float)
        return batch

    @staticmethod
    def _c4(texts: list[str]) -> list[dict[str, float]]:
        """The C4 columns of each text, the kept lines of all texts through spaCy in one pass."""
        walks = [quality.c4_walk(text) for text in texts]
        counts = iter(count_sentences([line for kept, _ in walks for line in kept]))
        return [{**out, "c4_sentences": float(sum(next(counts) for _ in kept))} for kept, out in walks]
