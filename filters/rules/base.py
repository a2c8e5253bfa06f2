"""The keep/drop contract, after datatrove's ``BaseFilter``: a rule says which rows fail and why; the
base marks them.

Rules mark rows instead of removing them: a row's first failed check is its ``drop_reason`` ("" =
kept) and later checks leave it alone. The base also records which rule dropped the row (the
``DROPPED_BY`` column, internal) so the manifest counts drops per stage and reason in one pass over
the finished dataset, whatever Ray did with the blocks. A rule never adds scores.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

DROP_REASON = "drop_reason"
DROPPED_BY = "_litho_dropped_by"  # internal: never written to a shard


# Rows dropped for a reason here are too big to score: scorers see them as empty texts (their score
# columns are an empty text's), so one 50 MB document cannot stall a tokenizer or the LM scorer.
UNSCORED = ("too_long",)


def texts_to_score(batch: dict, text_column: str) -> list[str]:
    """The batch's texts as strings, "" for rows dropped for a reason in :data:`UNSCORED`."""
    texts = batch[text_column]
    reasons = batch.get(DROP_REASON)
    if reasons is None:
        return [str(t) for t in texts]
    return ["" if r in UNSCORED else str(t) for t, r in zip(texts, reasons)]


def current_reasons(batch: dict) -> np.ndarray:
    """The batch's ``drop_reason`` as a fresh object array ("" for every row when it has none)."""
    n = len(next(iter(batch.values()))) if batch else 0
    current = batch.get(DROP_REASON)
    return np.array(
        [""] * n if current is None else ["" if r is None else str(r) for r in current], dtype=object
    )


def mark(reasons: np.ndarray, failed: np.ndarray, reason: str) -> None:
    """Set ``reason`` on rows that failed and were not already dropped."""
    reasons[(reasons == "") & np.asarray(failed, dtype=bool)] = reason


def record_drops(batch: dict, before: np.ndarray, reasons: np.ndarray, stage: str) -> None:
    """Write ``reasons`` into the batch and name ``stage`` on the rows it newly dropped."""
    n = len(reasons)
    by = batch.get(DROPPED_BY)
    by = np.full(n, "", dtype=object) if by is None else np.asarray(by, dtype=object).copy()
    by[(before == "") & (reasons != "")] = stage
    batch[DROP_REASON] = reasons
    batch[DROPPED_BY] = by


class Filter:
    """Base of every rule. Subclasses give ``name`` and ``checks``; the base does the bookkeeping.

    ``checks(batch)`` yields ``(failed, reason)`` pairs in priority order (``failed``: a boolean mask
    over the batch's rows). ``reasons()`` lists every reason the rule can give and ``needs()`` the
    columns it reads; the pipeline checks both before it starts.
    """

    name = "filter"

    def needs(self) -> tuple[str, ...]:
        return ()

    def reasons(self) -> tuple[str, ...]:
        return ()

    def checks(self, batch: dict) -> Iterable[tuple[np.ndarray, str]]:
        raise NotImplementedError

    def __call__(self, batch: dict) -> dict:
        before = current_reasons(batch)
        reasons = before.copy()
        for failed, reason in self.checks(batch):
            mark(reasons, failed, reason)
        record_drops(batch, before, reasons, self.name)
        return batch
