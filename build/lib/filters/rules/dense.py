"""The rule that keeps a dense rewrite only when it is a real gain (scores: filters/scores/dense.py)."""

from __future__ import annotations

import numpy as np

from filters.rules.base import Filter


class DenseFilter(Filter):
    """Drops rewrites that are not shorter (``dense_not_shorter``), copy the source (``dense_copied``) or
    lost key terms (``dense_lost_key_terms``), in that order.

    Args:
        min_tokens_saved: Least target-tokenizer tokens the rewrite must save.
        max_copied_frac: Most share of the rewrite in 8-grams copied from the source (1.0 allows copies).
        min_key_term_recall: Least share of the source's key terms the rewrite must carry.
    """

    name = "dense"

    def __init__(
        self, min_tokens_saved: int = 1, max_copied_frac: float = 0.9, min_key_term_recall: float = 0.8
    ):
        self.max_copied_frac = max_copied_frac
        self.min_tokens_saved = min_tokens_saved
        self.min_key_term_recall = min_key_term_recall

    def needs(self) -> tuple[str, ...]:
        return ("tokens_saved", "key_term_recall", "copied_frac")

    def reasons(self) -> tuple[str, ...]:
        return ("dense_not_shorter", "dense_copied", "dense_lost_key_terms")

    def checks(self, batch: dict):
        yield np.asarray(batch["tokens_saved"]) < self.min_tokens_saved, "dense_not_shorter"
        yield np.asarray(batch["copied_frac"]) > self.max_copied_frac, "dense_copied"
        recall = np.asarray(batch["key_term_recall"], dtype=float)
        yield ~(recall >= self.min_key_term_recall), "dense_lost_key_terms"
