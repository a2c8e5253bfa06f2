"""Filters: decide keep or drop on score columns and record why in ``drop_reason``.

Filters mark rows instead of removing them: a row's first failed check is its ``drop_reason``
("" means kept) and later checks leave it alone. The writer splits kept from dropped rows at
the end, so every drop is counted by reason in the manifest and can be written to
``rejected/`` — with Ray Data this costs one pass instead of one count per filter.
"""

from __future__ import annotations

import numpy as np


def _reasons(batch: dict) -> np.ndarray:
    n = len(next(iter(batch.values())))
    current = batch.get("drop_reason")
    return np.array([""] * n if current is None else [str(r) for r in current], dtype=object)


def mark(reasons: np.ndarray, failed: np.ndarray, reason: str) -> None:
    """Set ``reason`` on rows that failed and were not already dropped."""
    reasons[(reasons == "") & failed] = reason


class SanityFilter:
    """Drops teacher errors, empty texts, truncated texts (optionally), too-short and repetitive texts.

    Args:
        drop_truncated: Drop rows that hit the token limit and were not trimmed by the cleaner.
        min_words: Minimum whitespace words.
        max_dup_line_frac: Upper bound on ``rep_dup_line_frac`` (Gopher: 0.30).
        max_dup_ngram_frac: ``{n: bound}`` on ``rep_dup_ngram_frac_{n}`` (Gopher: 5→0.15, 10→0.10).
        text_column: Column holding the text.
    """

    def __init__(
        self,
        drop_truncated: bool = True,
        min_words: int = 40,
        max_dup_line_frac: float = 0.3,
        max_dup_ngram_frac: dict | None = None,
        text_column: str = "text",
    ):
        self.drop_truncated = drop_truncated
        self.min_words = min_words
        self.max_dup_line_frac = max_dup_line_frac
        self.max_dup_ngram_frac = {
            int(k): float(v) for k, v in (max_dup_ngram_frac or {5: 0.15, 10: 0.10}).items()
        }
        self.text_column = text_column

    def __call__(self, batch: dict) -> dict:
        reasons = _reasons(batch)
        texts = [str(t) for t in batch[self.text_column]]
        if "finish_reason" in batch:
            finish = np.asarray(batch["finish_reason"], dtype=object)
            mark(reasons, finish == "error", "teacher_error")
        mark(reasons, np.array([not t.strip() for t in texts], dtype=bool), "empty")
        if self.drop_truncated and "finish_reason" in batch:
            trimmed = np.asarray(batch.get("trimmed", np.zeros(len(texts), bool)), dtype=bool)
            mark(
                reasons,
                (np.asarray(batch["finish_reason"], dtype=object) == "length") & ~trimmed,
                "truncated",
            )
        words = (
            np.asarray(batch["n_words"]) if "n_words" in batch else np.array([len(t.split()) for t in texts])
        )
        mark(reasons, words < self.min_words, "too_short")
        if "rep_dup_line_frac" in batch:
            mark(reasons, np.asarray(batch["rep_dup_line_frac"]) > self.max_dup_line_frac, "repetition")
        for n, bound in self.max_dup_ngram_frac.items():
            column = f"rep_dup_ngram_frac_{n}"
            if column in batch:
                mark(reasons, np.asarray(batch[column]) > bound, "repetition")
        batch["drop_reason"] = reasons
        return batch


class ThresholdFilter:
    """Absolute bounds on any score column: ``{column: {min: x, max: y}}``.

    A row outside a bound is dropped as ``{column}_below_min`` or ``{column}_above_max``. Rows
    whose score is NaN (not scored) pass.
    """

    def __init__(self, bounds: dict | None = None):
        self.bounds = {str(c): dict(b or {}) for c, b in (bounds or {}).items()}
        for column, bound in self.bounds.items():
            extra = set(bound) - {"min", "max"}
            if extra:
                raise ValueError(
                    f"filters.thresholds.{column}: unknown keys {sorted(extra)}; use min and max"
                )

    def __call__(self, batch: dict) -> dict:
        reasons = _reasons(batch)
        for column, bound in self.bounds.items():
            if column not in batch:
                raise KeyError(
                    f"filters.thresholds.{column}: no such score column; enable the scorer that adds it"
                )
            values = np.asarray(batch[column], dtype=float)
            if bound.get("min") is not None:
                mark(reasons, values < float(bound["min"]), f"{column}_below_min")
            if bound.get("max") is not None:
                mark(reasons, values > float(bound["max"]), f"{column}_above_max")
        batch["drop_reason"] = reasons
        return batch
