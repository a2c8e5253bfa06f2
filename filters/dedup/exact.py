"""Exact deduplication key: xxh3-64 of the normalised text.

Normalisation (NFKC, lower case, whitespace collapsed) makes texts that differ only in case or
spacing count as the same text. The grouping itself runs in pipeline/ (a Ray Data groupby).
"""

from __future__ import annotations

import numpy as np
import xxhash

from generators.text import normalize


def text_hash(text: str) -> int:
    """Signed 64-bit hash (Arrow and pandas group on int64 without overflow surprises)."""
    return int(text_hashes([text])[0])


def text_hashes(texts) -> np.ndarray:
    """:func:`text_hash` of every text, as one int64 array (the uint64 digests' bits, reinterpreted)."""
    digests = (xxhash.xxh3_64_intdigest(normalize(str(t)).encode()) for t in texts)
    return np.fromiter(digests, np.uint64, len(texts)).view(np.int64)


class ExactHash:
    """Stage: adds ``text_hash`` (int64) of the normalised text."""

    @classmethod
    def columns(cls, text_column: str = "text") -> tuple[tuple, tuple]:
        """``(needs, adds)``: the columns the stage reads and the ones it writes."""
        return (text_column,), ("text_hash",)

    def __init__(self, text_column: str = "text"):
        self.text_column = text_column

    def __call__(self, batch: dict) -> dict:
        batch["text_hash"] = text_hashes(batch[self.text_column])
        return batch


def duplicates_to_drop(ids: list[str], hashes: list[int]) -> dict[str, str]:
    """Within rows sharing a hash, keep the smallest id; return ``{dropped id: kept id}``."""
    keeper: dict[int, str] = {}
    for i, h in sorted(zip(ids, hashes)):
        keeper.setdefault(h, i)
    return {i: keeper[h] for i, h in zip(ids, hashes) if keeper[h] != i}
