"""The rules every generated text passes: no teacher error, not empty, not cut off, long enough. Repetition
and the other published quality rules are rule sets of their own (filters/rules/rule_sets.py)."""

from __future__ import annotations

import numpy as np

from filters.rules.base import Filter


class SanityFilter(Filter):
    """Drops teacher errors, empty texts, truncated texts (optionally) and too-short texts.

    Args:
        drop_truncated: Drop rows that hit the token limit and were not trimmed by the cleaner.
        min_words: Minimum whitespace words.
        text_column: Column holding the text.
    """

    name = "sanity"

    def __init__(
        self,
        drop_truncated: bool = True,
        min_words: int = 40,
        text_column: str = "text",
    ):
        self.drop_truncated = drop_truncated
        self.min_words = min_words
        self.text_column = text_column

    def needs(self) -> tuple[str, ...]:
        return (self.text_column,)

    def reasons(self) -> tuple[str, ...]:
        return ("teacher_error", "empty", "truncated", "too_short")

    def checks(self, batch: dict):
        texts = [str(t) for t in batch[self.text_column]]
        finish = np.asarray(batch["finish_reason"], dtype=object) if "finish_reason" in batch else None
        if finish is not None:
            yield finish == "error", "teacher_error"
        yield np.array([not t.strip() for t in texts], dtype=bool), "empty"
        if self.drop_truncated and finish is not None:
            trimmed = np.asarray(batch.get("trimmed", np.zeros(len(texts), bool)), dtype=bool)
            yield (finish == "length") & ~trimmed, "truncated"
        words = (
            np.asarray(batch["n_words"]) if "n_words" in batch else np.array([len(t.split()) for t in texts])
        )
        yield words < self.min_words, "too_short"


class LengthFilter(Filter):
    """Drops texts longer than ``max_chars`` characters as ``too_long``, before anything scores them.

    Args:
        max_chars: Longest text kept; None = no bound.
        text_column: Column holding the text.
    """

    name = "length"

    def __init__(self, max_chars: int | None = 1_000_000, text_column: str = "text"):
        self.max_chars = max_chars
        self.text_column = text_column

    def needs(self) -> tuple[str, ...]:
        return (self.text_column,)

    def reasons(self) -> tuple[str, ...]:
        return ("too_long",)

    def checks(self, batch: dict):
        if self.max_chars is not None:
            yield (
                np.array([len(str(t)) > self.max_chars for t in batch[self.text_column]], dtype=bool),
                "too_long",
            )
