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
    return int(np.uint64(xxhash.xxh3_64_intdigest(normalize(text).encode())).astype(np.int64))


class ExactHash:
    """Stage: adds ``text_hash`` (int64) of the normalised text."""

    @classmethod
    def columns(cls, text_column: str = "text") -> tuple[tuple, tuple]:
        """``(needs, adds)``: the columns the stage reads and the ones it writes."""
        return (text_column,), ("text_hash",)

    def __init__(self, text_column: str = "text"):
        self.text_column = text_column

    def __call__(self, batch: dict) -> dict:
        batch["text_hash"] = np.array([text_hash(str(t)) for t in batch[self.text_column]], dtype=np.int64)
        return batch


def duplicates_to_drop(ids: list[str], hashes: list[int]) -> dict[str, str]:
    """Within rows sharing a hash, keep the smallest id; return ``{dropped id: kept id}``."""
    keeper: dict[int, str] = {}
    for i, h in sorted(zip(ids, hashes)):
        keeper.setdefault(h, i)
    return {i: keeper[h] for i, h in zip(ids, hashes) if keeper[h] != i}
